//! The user-facing catalog (`/v1/gift-cards`) and wallet (`/v1/wallet`).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use giftcard_shared::domain::money_string;
use giftcard_shared::entities::wallet;
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, Statement};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiPath, Auth};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/gift-cards", get(list_cards))
        .route("/v1/gift-cards/{id}", get(get_card))
        .route("/v1/wallet", get(get_wallet))
}

/// A gift card with its current stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct GiftCardView {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub name: String,
    #[schema(example = "10.00")]
    pub price: String,
    #[schema(example = "10.00")]
    pub value: String,
    pub active: bool,
    /// Codes that are unused, not expired and not deleted.
    pub available_codes: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GiftCardList {
    pub items: Vec<GiftCardView>,
}

#[derive(FromQueryResult)]
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

const CARD_SELECT: &str = "SELECT g.id, g.name, g.price, g.value, g.active, g.created_at, g.updated_at, \
    (SELECT count(*) FROM activation_codes a WHERE a.gift_card_id = g.id AND NOT a.is_used \
       AND a.deleted_at IS NULL AND (a.expires_on IS NULL OR a.expires_on > now())) AS available_codes \
    FROM gift_cards g";

impl From<CardRow> for GiftCardView {
    fn from(r: CardRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            price: money_string(r.price),
            value: money_string(r.value),
            active: r.active,
            available_codes: r.available_codes,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// One card with its stock, if it exists.
pub async fn load_card<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
) -> Result<Option<GiftCardView>, DbErr> {
    Ok(CardRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!("{CARD_SELECT} WHERE g.id = $1"),
        [id.into()],
    ))
    .one(db)
    .await?
    .map(Into::into))
}

/// Every gift card with its stock, oldest first.
pub async fn load_cards<C: ConnectionTrait>(db: &C) -> Result<Vec<GiftCardView>, DbErr> {
    let rows = CardRow::find_by_statement(Statement::from_string(
        DbBackend::Postgres,
        format!("{CARD_SELECT} ORDER BY g.created_at, g.id"),
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

#[derive(FromQueryResult)]
struct Count {
    n: i64,
}

/// How many of a card's available codes expire within `days` days.
pub async fn expiring_codes<C: ConnectionTrait>(db: &C, id: Uuid, days: i32) -> Result<i64, DbErr> {
    let row = Count::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT count(*) AS n FROM activation_codes a WHERE a.gift_card_id = $1 \
           AND NOT a.is_used AND a.deleted_at IS NULL \
           AND a.expires_on > now() AND a.expires_on <= now() + make_interval(days => $2)",
        [id.into(), days.into()],
    ))
    .one(db)
    .await?;
    Ok(row.map_or(0, |r| r.n))
}

/// Every gift card with its stock.
#[utoipa::path(get, path = "/v1/gift-cards", tag = "catalog",
    responses((status = 200, body = GiftCardList), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_cards(
    State(state): State<AppState>,
    _auth: Auth,
) -> ApiResult<Json<GiftCardList>> {
    Ok(Json(GiftCardList {
        items: load_cards(&state.db).await?,
    }))
}

/// One gift card.
#[utoipa::path(get, path = "/v1/gift-cards/{id}", tag = "catalog",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = GiftCardView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_card(
    State(state): State<AppState>,
    _auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<GiftCardView>> {
    load_card(&state.db, id)
        .await?
        .map(Json)
        .ok_or(ApiError::GiftCardNotFound(id))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WalletView {
    pub user_id: String,
    #[schema(example = "90.00")]
    pub balance: String,
}

/// The wallet of `user` (balance 0.00 if it has none yet).
pub async fn load_wallet<C: ConnectionTrait>(db: &C, user: &str) -> Result<WalletView, DbErr> {
    let balance = wallet::Entity::find_by_id(user.to_owned())
        .one(db)
        .await?
        .map_or(Decimal::ZERO, |w| w.balance);
    Ok(WalletView {
        user_id: user.to_owned(),
        balance: money_string(balance),
    })
}

/// The caller's wallet.
#[utoipa::path(get, path = "/v1/wallet", tag = "wallet",
    responses((status = 200, body = WalletView), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_wallet(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<WalletView>> {
    Ok(Json(load_wallet(&state.db, caller.user.as_str()).await?))
}
