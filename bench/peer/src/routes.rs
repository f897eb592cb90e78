//! The HTTP contract subset the load generator drives: purchases (answered
//! synchronously: `Prefer` is ignored), wallet, gift cards, operations.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SubsecRound, Utc};
use giftcard_shared::contract::PurchaseView;
use giftcard_shared::domain::{
    money_string, purchase_id_for, request_hash, PurchaseStatus, Quantity,
};
use giftcard_shared::purchases::load;
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement};
use serde::{Deserialize, Serialize};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use uuid::Uuid;

use crate::auth::{idempotency_key, ApiJson, ApiPath, Auth};
use crate::errors::{PeerError, PeerResult};
use crate::metrics::Outcome;
use crate::store::Request;
use crate::strategies::{self, Policy};
use crate::AppState;

/// The router with its middleware (request ids, body limit).
pub fn app(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/v1/purchases", post(create_purchase))
        .route("/v1/purchases/{id}", get(get_purchase))
        .route("/v1/wallet", get(get_wallet))
        .route("/v1/gift-cards", get(list_cards))
        .route("/v1/gift-cards/{id}", get(get_card))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { PeerError::NotFound })
        .method_not_allowed_fallback(|| async { PeerError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Body of `POST /v1/purchases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePurchase {
    pub gift_card_id: Uuid,
    /// 1..=10, default 1.
    #[serde(default)]
    pub quantity: Quantity,
}

async fn create_purchase(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreatePurchase>,
) -> PeerResult<Response> {
    let key = idempotency_key(&headers)?;
    let started = Instant::now();
    state.metrics.start();
    let req = Request {
        id: purchase_id_for(&caller.user, key.as_ref()),
        user: caller.user.as_str().to_owned(),
        card: body.gift_card_id,
        quantity: body.quantity,
        key: key.as_ref().map(|k| k.as_str().to_owned()),
        hash: request_hash(body.gift_card_id, body.quantity),
        sequence: state.arrivals.fetch_add(1, Ordering::Relaxed),
        created_at: Utc::now().trunc_subsecs(6),
    };
    let result = answer(&state, &req).await;
    let outcome = match &result {
        Ok((_, o)) => *o,
        Err(PeerError::IdempotencyKeyReused) => Outcome::IdempotencyKeyReused,
        Err(_) => Outcome::Error,
    };
    state.metrics.purchase(outcome, started.elapsed());
    result.map(|(view, _)| terminal_response(view))
}

/// A retry of a stored key is not looked up first (that would cost every
/// purchase a round trip): its purchase row collides with the stored one,
/// the attempt rolls back, and the stored purchase is answered (or refused
/// if the body differs).
async fn answer(state: &AppState, req: &Request) -> PeerResult<(PurchaseView, Outcome)> {
    let policy = Policy {
        strategy: state.strategy,
        retries: state.retries,
        retry_delay: state.retry_delay,
    };
    strategies::purchase(&state.db, policy, &state.metrics, &state.cursors, req).await
}

/// 201 succeeded, 404 unknown card, 409 any other failure.
fn terminal_response(view: PurchaseView) -> Response {
    let status = match (view.status, view.error.as_ref().map(|e| e.code.as_str())) {
        (PurchaseStatus::Succeeded, _) => StatusCode::CREATED,
        (_, Some("GIFT_CARD_NOT_FOUND")) => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    };
    let location = format!("/v1/purchases/{}", view.id);
    (status, [(header::LOCATION, location)], Json(view)).into_response()
}

async fn get_purchase(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> PeerResult<Json<PurchaseView>> {
    match load(&state.db, id).await? {
        Some((view, _)) if caller.admin || view.user_id == caller.user.as_str() => Ok(Json(view)),
        _ => Err(PeerError::NotFound),
    }
}

#[derive(Debug, Serialize)]
struct WalletView {
    user_id: String,
    balance: String,
}

async fn get_wallet(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> PeerResult<Json<WalletView>> {
    #[derive(FromQueryResult)]
    struct Row {
        balance: Decimal,
    }
    let row = Row::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT balance FROM wallets WHERE user_id = $1",
        [caller.user.as_str().into()],
    ))
    .one(&state.db)
    .await?;
    Ok(Json(WalletView {
        user_id: caller.user.as_str().to_owned(),
        balance: money_string(row.map_or(Decimal::ZERO, |r| r.balance)),
    }))
}

/// A gift card with its current stock, as the api shows it.
#[derive(Debug, FromQueryResult)]
struct CardRow {
    id: Uuid,
    name: String,
    price: Decimal,
    value: Decimal,
    active: bool,
    available_codes: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl CardRow {
    fn view(self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "price": money_string(self.price),
            "value": money_string(self.value),
            "active": self.active,
            "available_codes": self.available_codes,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

const CARD_SELECT: &str = "SELECT g.id, g.name, g.price, g.value, g.active, g.created_at, g.updated_at, \
    (SELECT count(*) FROM activation_codes a WHERE a.gift_card_id = g.id AND NOT a.is_used \
       AND a.deleted_at IS NULL AND (a.expires_on IS NULL OR a.expires_on > now())) AS available_codes \
    FROM gift_cards g";

async fn get_card(
    State(state): State<AppState>,
    _auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> PeerResult<Json<serde_json::Value>> {
    CardRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!("{CARD_SELECT} WHERE g.id = $1"),
        [id.into()],
    ))
    .one(&state.db)
    .await?
    .map(|c| Json(c.view()))
    .ok_or(PeerError::GiftCardNotFound(id))
}

async fn list_cards(
    State(state): State<AppState>,
    _auth: Auth,
) -> PeerResult<Json<serde_json::Value>> {
    let rows = CardRow::find_by_statement(Statement::from_string(
        DbBackend::Postgres,
        format!("{CARD_SELECT} ORDER BY g.created_at, g.id"),
    ))
    .all(&state.db)
    .await?;
    let items: Vec<_> = rows.into_iter().map(CardRow::view).collect();
    Ok(Json(serde_json::json!({ "items": items })))
}

/// 200 when PostgreSQL answers, else 503.
async fn readyz(State(state): State<AppState>) -> Response {
    match state.db.execute_unprepared("SELECT 1").await {
        Ok(_) => Json(serde_json::json!({"status": "ready", "database": "up"})).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "database": "down"})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(state.strategy.name()),
    )
}
