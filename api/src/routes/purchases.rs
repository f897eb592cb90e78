//! `POST /v1/purchases`, `GET /v1/purchases/{id}`, `GET /v1/purchases`.
//!
//! The purchase path neither reads nor writes PostgreSQL: it publishes to
//! the card's subject (the PubAck is the durable acceptance) and waits for
//! the worker's reply up to the client's `Prefer: wait`; only when it
//! answers 202 does it record the acceptance in a KV bucket, so that the
//! purchase reads `pending` until the worker stores it. Retries of one
//! idempotency key are deduplicated by the stream (same `Nats-Msg-Id`)
//! within its window and answered from the stored result by the worker
//! after it.

use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::HeaderMap as NatsHeaders;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{SubsecRound, Utc};
use giftcard_shared::contract::{
    purchase_subject, AcceptedPurchase, PurchaseMessage, PurchaseReply, PurchaseView, ReplyOutcome,
    HEADER_REPLY_TO, HEADER_REQUEST_ID, HEADER_TRACEPARENT, HEADER_VERSION, MESSAGE_VERSION,
};
use giftcard_shared::domain::{purchase_id_for, request_hash, PurchaseStatus, Quantity};
use giftcard_shared::entities::purchase;
use giftcard_shared::purchases::{codes_of, load, pending_view, view_of};
use giftcard_shared::signing::{signature_of, SignedParts, HEADER_SIGNATURE};
use giftcard_shared::telemetry;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{idempotency_key, preferred_wait, ApiJson, ApiPath, ApiQuery, Auth, MAX_WAIT};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/purchases", post(create_purchase).get(list_purchases))
        .route("/v1/purchases/{id}", get(get_purchase))
}

/// Body of `POST /v1/purchases`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePurchase {
    #[schema(value_type = String, format = Uuid)]
    pub gift_card_id: Uuid,
    /// 1..=10, default 1.
    #[serde(default)]
    #[schema(value_type = Option<u8>, minimum = 1, maximum = 10)]
    pub quantity: Quantity,
}

/// Buy `quantity` activation codes of a gift card.
#[utoipa::path(
    post, path = "/v1/purchases", tag = "purchases",
    request_body = CreatePurchase,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1..=255 visible ASCII characters",
         pattern = "^[!-~]{1,255}$"),
        ("Prefer" = Option<String>, Header, description = "`wait=<0..=30>` or `respond-async` (RFC 7240; other preferences are ignored)",
         pattern = "^(respond-async|wait=[0-9]{1,2})$"),
    ),
    responses(
        (status = 201, description = "succeeded within the wait", body = PurchaseView,
         headers(("Idempotent-Replayed" = String, description = "`true` when answered from an earlier request with the same Idempotency-Key"))),
        (status = 202, description = "durably queued, not finished within the wait", body = PurchaseView,
         headers(("Location" = String, description = "`/v1/purchases/<id>`"),
                 ("Idempotent-Replayed" = String, description = "`true` when an earlier request with the same Idempotency-Key was already queued"))),
        (status = 404, description = "the card does not exist (the purchase's `error.code` is GIFT_CARD_NOT_FOUND)", body = PurchaseView),
        (status = 409, description = "failed for a business reason (`error.code` ACTIVATION_CODES_NOT_AVAILABLE, INSUFFICIENT_FUNDS or GIFT_CARD_INACTIVE)", body = PurchaseView),
        (status = 422, description = "VALIDATION_FAILED (the body breaks a rule) or IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED: more purchases than GIFTCARD_USER_RATE_LIMIT from this user; nothing was queued", body = ErrorBody,
         headers(("Retry-After" = u64, description = "seconds to wait"))),
        (status = 503, description = "SERVICE_UNAVAILABLE: the queue could not durably accept it (nothing was queued)", body = ErrorBody,
         headers(("Retry-After" = u64, description = "seconds to wait"))),
    ),
    security(("bearer" = []))
)]
pub async fn create_purchase(
    State(state): State<AppState>,
    Auth(caller): Auth,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreatePurchase>,
) -> ApiResult<Response> {
    let started = Instant::now();
    state.limits.check_purchase_rate(&caller.user)?;
    let key = idempotency_key(&headers)?;
    let wait = preferred_wait(&headers, state.settings.default_wait)?;
    let id = purchase_id_for(&caller.user, key.as_ref());
    tracing::Span::current().record("purchase_id", tracing::field::display(id));
    let hash = request_hash(body.gift_card_id, body.quantity);

    let mut waiter = state.replies.register(id);
    let message = PurchaseMessage {
        v: MESSAGE_VERSION,
        purchase_id: id,
        user_id: caller.user.as_str().to_owned(),
        gift_card_id: body.gift_card_id,
        quantity: body.quantity.get(),
        request_hash: hash,
        idempotency_key: key.as_ref().map(|k| k.as_str().to_owned()),
        // Microseconds: what PostgreSQL stores, so every read agrees.
        accepted_at: Utc::now().trunc_subsecs(6),
    };
    let request_id = headers.get(crate::REQUEST_ID).and_then(|v| v.to_str().ok());
    // Until the message is in the stream, any failure is a 503 ("not
    // queued"); once it is, the answer is 201/202/404/409 (or 422 for a
    // reused key), never 503.
    let accepted = tokio::time::timeout(
        state.settings.publish_timeout * ACCEPT_PUBLISHES,
        accept(&state, &message, request_id),
    )
    .await
    .unwrap_or_else(|_| Err(unavailable("no acknowledgement in time")))?;
    metrics::histogram!(crate::telemetry::ACCEPT_SECONDS).record(started.elapsed().as_secs_f64());

    // Hold the request only while there is room among the waiting ones.
    let held = (!wait.is_zero())
        .then(|| state.limits.hold_waiting())
        .flatten();
    let wait = if held.is_some() { wait } else { Duration::ZERO };
    if accepted.duplicate && !wait.is_zero() {
        // A retry may have missed the reply: look the outcome up too.
        let poller = state.clone();
        state
            .replies
            .poll_for(id, move || stored_outcome(poller.clone(), id));
    }
    let outcome = wait_for_outcome(&state, &mut waiter, wait).await;
    drop(held);
    let mut response = match outcome {
        // Replies and polls are shared by every request waiting on this
        // purchase id: one with another body under the same key is told
        // the key is taken, never the purchase's outcome.
        Some(ReplyOutcome::Completed { purchase }) if !describes(&purchase, &message) => {
            return Err(ApiError::IdempotencyKeyReused)
        }
        Some(ReplyOutcome::Completed { purchase }) => {
            let replayed = accepted.duplicate || purchase.sequence != accepted.purchase.sequence;
            replayed_if(replayed, terminal_response(*purchase))
        }
        Some(ReplyOutcome::IdempotencyKeyReused) => return Err(ApiError::IdempotencyKeyReused),
        None => {
            // Only a 202 needs the acceptance recorded: a terminal answer
            // means the worker already stored the purchase in PostgreSQL.
            record_accepted(&state, &accepted.purchase).await;
            pending_response(pending_view(&accepted.purchase))
        }
    };
    if accepted.duplicate {
        response = replayed_if(true, response);
    }
    tracing::debug!(
        status = response.status().as_u16(),
        sequence = accepted.purchase.sequence,
        "purchase answered"
    );
    metrics::counter!(crate::telemetry::PURCHASES, "status" => status_label(response.status()))
        .increment(1);
    metrics::histogram!(crate::telemetry::PURCHASE_SECONDS).record(started.elapsed().as_secs_f64());
    Ok(response)
}

/// The `status` label of [`crate::telemetry::PURCHASES`] (no allocation).
fn status_label(s: StatusCode) -> &'static str {
    match s {
        StatusCode::CREATED => "201",
        StatusCode::ACCEPTED => "202",
        StatusCode::NOT_FOUND => "404",
        _ => "409",
    }
}

/// `response` with `Idempotent-Replayed: true` when `replayed`.
fn replayed_if(replayed: bool, mut response: Response) -> Response {
    if replayed {
        response.headers_mut().insert(
            IDEMPOTENT_REPLAYED,
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
}

/// Set on a purchase answered from an earlier request with the same
/// `Idempotency-Key` (already processed or queued).
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// A purchase in the stream: what was accepted, and whether an earlier
/// request with the same key had already put it there.
struct Accepted {
    purchase: AcceptedPurchase,
    duplicate: bool,
}

fn unavailable(what: &str) -> ApiError {
    ApiError::Unavailable(format!(
        "the purchase queue could not durably accept the request ({what}); nothing was \
         charged; retry with the same Idempotency-Key"
    ))
}

/// Puts the purchase in its card's stream (or finds that an earlier
/// request with the same key did) and compares the bodies of the two.
async fn accept(
    state: &AppState,
    message: &PurchaseMessage,
    request_id: Option<&str>,
) -> ApiResult<Accepted> {
    let id = message.purchase_id;
    let (mut sequence, mut duplicate) =
        publish(state, message, request_id, &id.to_string()).await?;
    let mut accepted_at = message.accepted_at;
    if duplicate {
        // Same key within the duplicate window: the stream kept the first
        // request; compare bodies against it.
        match original_message(state, sequence).await? {
            Some(first)
                if first.request_hash != message.request_hash
                    && !stored_as(state, message).await =>
            {
                return Err(ApiError::IdempotencyKeyReused)
            }
            Some(first) => accepted_at = first.accepted_at,
            None => {
                // The "first request" was not signed by an api: someone
                // published under this purchase's id to block it. Queue
                // the genuine one under an id of its own (the worker
                // dead-letters the forgery and answers later copies of this
                // purchase from its stored result).
                tracing::warn!(
                    "a forged message holds this purchase's id; publishing under a fresh one"
                );
                let fresh = format!("{id}:{}", Uuid::new_v4().simple());
                (sequence, duplicate) = publish(state, message, request_id, &fresh).await?;
            }
        }
    }
    Ok(Accepted {
        purchase: AcceptedPurchase {
            purchase_id: id,
            user_id: message.user_id.clone(),
            gift_card_id: message.gift_card_id,
            quantity: message.quantity,
            request_hash: message.request_hash.clone(),
            sequence,
            accepted_at,
        },
        duplicate,
    })
}

/// Publishes and waits for the PubAck: `(stream sequence, was duplicate)`.
async fn publish(
    state: &AppState,
    m: &PurchaseMessage,
    request_id: Option<&str>,
    msg_id: &str,
) -> ApiResult<(u64, bool)> {
    let payload = serde_json::to_vec(m).map_err(|e| ApiError::Internal(e.into()))?;
    let subject = purchase_subject(m.gift_card_id, state.settings.common.partitions);
    let reply_to = state.replies.subject_for(m.purchase_id);
    let version = MESSAGE_VERSION.to_string();
    // What the worker acts on is signed: it believes nothing else.
    let signature = state.signer.sign(&SignedParts {
        subject: &subject,
        msg_id: Some(msg_id),
        reply_to: Some(&reply_to),
        request_id,
        replay_of: None,
        version: Some(&version),
        payload: &payload,
    });
    let mut headers = NatsHeaders::new();
    headers.insert(HEADER_REPLY_TO, reply_to.as_str());
    headers.insert(HEADER_VERSION, version.as_str());
    if let Some(id) = request_id {
        headers.insert(HEADER_REQUEST_ID, id);
    }
    headers.insert(HEADER_SIGNATURE, signature.as_str());
    // The worker continues this request's trace.
    if let Some(tp) = telemetry::traceparent(&tracing::Span::current()) {
        headers.insert(HEADER_TRACEPARENT, tp.as_str());
    }
    let publish = Publish::build()
        .payload(payload.into())
        .headers(headers)
        .message_id(msg_id);
    let started = Instant::now();
    let ack = tokio::time::timeout(state.settings.publish_timeout, async {
        state
            .topology
            .js
            .send_publish(subject, publish)
            .await?
            .await
            .map_err(anyhow::Error::from)
    })
    .await;
    metrics::histogram!(crate::telemetry::PUBLISH_SECONDS).record(started.elapsed().as_secs_f64());
    match ack {
        Ok(Ok(ack)) => Ok((ack.sequence, ack.duplicate)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "publish failed");
            Err(unavailable("publish failed"))
        }
        Err(_) => {
            tracing::warn!("publish timed out");
            Err(unavailable("no acknowledgement in time"))
        }
    }
}

/// Whether `purchase` is the outcome of the request `m` (same buyer, card
/// and quantity).
fn describes(purchase: &PurchaseView, m: &PurchaseMessage) -> bool {
    purchase.user_id == m.user_id
        && purchase.gift_card_id == m.gift_card_id
        && purchase.quantity == m.quantity
}

/// Whether purchase `m.purchase_id` is stored (or was accepted) as the
/// request `m`. Asked only when the message holding the purchase id in the
/// stream has another body: after the duplicate window, that message may
/// itself be a later request with another body, and the purchase's own
/// record is the truth. If neither can be read, the answer is no.
async fn stored_as(state: &AppState, m: &PurchaseMessage) -> bool {
    if let Ok(Some((view, _))) = load(&state.poll_db, m.purchase_id).await {
        return describes(&view, m);
    }
    let accepted = state.topology.accepted.get(m.purchase_id.to_string()).await;
    match accepted.ok().flatten() {
        Some(raw) => serde_json::from_slice::<AcceptedPurchase>(&raw)
            .is_ok_and(|a| a.user_id == m.user_id && a.request_hash == m.request_hash),
        None => false,
    }
}

/// The message stored at `sequence`, or `None` if it is not one an api
/// signed (a forgery holding a purchase id).
async fn original_message(state: &AppState, sequence: u64) -> ApiResult<Option<PurchaseMessage>> {
    let raw = state
        .topology
        .purchases
        .direct_get(sequence)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, sequence, "could not read the original message");
            ApiError::Unavailable("could not read the original request; retry shortly".into())
        })?;
    let parts = SignedParts::of_message(&raw.subject, Some(&raw.headers), &raw.payload);
    if state
        .signer
        .verify(signature_of(Some(&raw.headers)), &parts)
        .is_err()
    {
        return Ok(None);
    }
    serde_json::from_slice(&raw.payload)
        .map(Some)
        .map_err(|e| ApiError::Internal(e.into()))
}

/// Records the acceptance so that `GET` reads `pending` before the worker
/// wrote anything. Retries briefly, for at most 2 s: the message is already
/// queued, so a failure here must not turn into an error answer.
async fn record_accepted(state: &AppState, a: &AcceptedPurchase) {
    let value = match serde_json::to_vec(a) {
        Ok(v) => v,
        Err(e) => return tracing::error!(error = %e, "cannot encode acceptance"),
    };
    let attempts = async {
        for attempt in 0..3u32 {
            match state
                .topology
                .accepted
                .create(a.purchase_id.to_string(), value.clone().into())
                .await
            {
                Ok(_) => return,
                Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                    return
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, purchase_id = %a.purchase_id, "recording acceptance failed");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
            }
        }
    };
    if tokio::time::timeout(RECORD_ACCEPTED_TIMEOUT, attempts)
        .await
        .is_err()
    {
        tracing::warn!(purchase_id = %a.purchase_id, "recording acceptance timed out");
    }
}

/// Publish timeouts the acceptance of a purchase may take.
const ACCEPT_PUBLISHES: u32 = 2;

/// The longest [`record_accepted`] takes.
const RECORD_ACCEPTED_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest [`create_purchase`] takes with this publish timeout: its
/// acceptance (bounded by twice the publish timeout: a publish, and a
/// second one under a fresh id if a forgery held the first), the longest
/// wait, and the recording of a 202.
pub fn longest(publish_timeout: Duration) -> Duration {
    publish_timeout * ACCEPT_PUBLISHES + MAX_WAIT + RECORD_ACCEPTED_TIMEOUT
}

/// The outcome of purchase `id` if PostgreSQL has it (the poller of a
/// retried request): on the polling pool, and not while PostgreSQL is
/// known to be down.
async fn stored_outcome(state: AppState, id: Uuid) -> Option<PurchaseReply> {
    if !state.db_up() {
        return None;
    }
    let (view, model) = load(&state.poll_db, id).await.ok()??;
    (model.status != PurchaseStatus::DeadLettered.as_str()).then(|| PurchaseReply {
        v: MESSAGE_VERSION,
        purchase_id: id,
        outcome: ReplyOutcome::Completed {
            purchase: Box::new(view),
        },
    })
}

/// Waits for the purchase's outcome (the worker's reply, or the poller's
/// find), at most `wait` and never past the api's shutdown.
async fn wait_for_outcome(
    state: &AppState,
    waiter: &mut crate::replies::Waiter,
    wait: Duration,
) -> Option<ReplyOutcome> {
    if wait.is_zero() {
        return None;
    }
    tokio::select! {
        r = waiter.recv() => r.map(|r| r.outcome),
        _ = tokio::time::sleep(wait) => None,
        _ = state.shutdown.cancelled() => {
            // Shutting down: answer 202 now rather than hold the drain;
            // the purchase is queued and the client polls its Location.
            tracing::info!("shutting down; answering 202 before the outcome");
            metrics::counter!(crate::telemetry::SHUTDOWN_ANSWERED).increment(1);
            None
        }
    }
}

fn location(id: Uuid) -> String {
    format!("/v1/purchases/{id}")
}

/// 201 succeeded, 404 unknown card, 409 other business failures.
pub fn terminal_response(view: PurchaseView) -> Response {
    let status = match (view.status, view.error.as_ref().map(|e| e.code.as_str())) {
        (PurchaseStatus::Succeeded, _) => StatusCode::CREATED,
        (PurchaseStatus::Failed, Some("GIFT_CARD_NOT_FOUND")) => StatusCode::NOT_FOUND,
        (PurchaseStatus::Failed, _) => StatusCode::CONFLICT,
        (PurchaseStatus::Pending | PurchaseStatus::DeadLettered, _) => StatusCode::ACCEPTED,
    };
    let loc = location(view.id);
    (status, [(header::LOCATION, loc)], Json(view)).into_response()
}

fn pending_response(view: PurchaseView) -> Response {
    let loc = location(view.id);
    (StatusCode::ACCEPTED, [(header::LOCATION, loc)], Json(view)).into_response()
}

/// A purchase, for its owner or an admin.
#[utoipa::path(
    get, path = "/v1/purchases/{id}", tag = "purchases",
    params(("id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = PurchaseView),
        (status = 404, body = ErrorBody),
        (status = 503, description = "PostgreSQL unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_purchase(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<PurchaseView>> {
    let visible = |owner: &str| caller.admin || owner == caller.user.as_str();
    match find(&state, id).await? {
        Some(view) if visible(&view.user_id) => Ok(Json(view)),
        _ => Err(ApiError::not_found()),
    }
}

/// A purchase, whoever bought it: as stored by the worker, else as
/// accepted and still queued (the acceptance bucket), else None.
pub async fn find(state: &AppState, id: Uuid) -> ApiResult<Option<PurchaseView>> {
    if let Some((view, _)) = load(&state.db, id).await? {
        return Ok(Some(view));
    }
    let entry = state
        .topology
        .accepted
        .get(id.to_string())
        .await
        .map_err(|_| ApiError::Unavailable("the queue is unavailable; retry shortly".into()))?;
    Ok(entry
        .and_then(|b| serde_json::from_slice::<AcceptedPurchase>(&b).ok())
        .map(|a| pending_view(&a)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// 1..=100, default 20.
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurchasePage {
    pub items: Vec<PurchaseView>,
    pub next_cursor: Option<String>,
}

/// The caller's processed purchases, newest first.
#[utoipa::path(
    get, path = "/v1/purchases", tag = "purchases", params(ListParams),
    responses((status = 200, body = PurchasePage), (status = 400, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_purchases(
    State(state): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<PurchasePage>> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 100".into(),
        ));
    }
    let q = purchase::Entity::find().filter(purchase::Column::UserId.eq(caller.user.as_str()));
    let (rows, next_cursor) = crate::cursor::page(
        &state.db,
        q,
        (purchase::Column::CreatedAt, purchase::Column::Id),
        false,
        params.cursor.as_deref(),
        limit,
        |r| (r.created_at, r.id),
    )
    .await?;
    let ids: Vec<Uuid> = rows
        .iter()
        .filter(|r| r.status == PurchaseStatus::Succeeded.as_str())
        .map(|r| r.id)
        .collect();
    let mut codes = codes_of(&state.db, &ids).await?;
    let items = rows
        .iter()
        .map(|r| view_of(r, codes.remove(&r.id).unwrap_or_default()))
        .collect();
    Ok(Json(PurchasePage { items, next_cursor }))
}
