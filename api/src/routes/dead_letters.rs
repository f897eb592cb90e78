//! Admin dead-letter routes: list, inspect, replay one, replay all (of a
//! card, in bounded batches), discard. The worker indexes dead letters into PostgreSQL; the message
//! itself stays in the `PURCHASES_DLQ` stream and is republished from there.

use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::HeaderMap as NatsHeaders;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use giftcard_shared::contract::{HEADER_REPLAY_OF, HEADER_VERSION, MESSAGE_VERSION};
use giftcard_shared::domain::FailureCode;
use giftcard_shared::entities::dead_letter;
use giftcard_shared::signing::{signature_of, SignedParts, HEADER_SIGNATURE};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, PaginatorTrait,
    QueryFilter, QueryOrder, Statement,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, ConflictCode, ErrorBody, ErrorDetail};
use crate::extract::{json_rejection, Admin, ApiPath, ApiQuery};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/dead-letters", get(list))
        .route("/v1/admin/dead-letters/replay", post(replay_all))
        .route("/v1/admin/dead-letters/{id}/replay", post(replay))
        .route("/v1/admin/dead-letters/{id}", get(inspect).delete(discard))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub purchase_id: Option<Uuid>,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub gift_card_id: Option<Uuid>,
    pub user_id: Option<String>,
    pub reason: String,
    pub attempts: i32,
    pub original_subject: String,
    pub original_sequence: i64,
    pub state: String,
    pub dead_lettered_at: DateTime<Utc>,
}

impl From<dead_letter::Model> for DeadLetterView {
    fn from(m: dead_letter::Model) -> Self {
        Self {
            id: m.id,
            purchase_id: m.purchase_id,
            gift_card_id: m.gift_card_id,
            user_id: m.user_id,
            reason: m.reason,
            attempts: m.attempts,
            original_subject: m.original_subject,
            original_sequence: m.original_sequence,
            state: m.state,
            dead_lettered_at: m.dead_lettered_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    pub items: Vec<DeadLetterView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// 1..=500, default 100.
    pub limit: Option<u64>,
    pub gift_card_id: Option<Uuid>,
    /// `pending` (default: waiting for an operator), `replayed`,
    /// `discarded` or `all`.
    pub state: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Dead letters, oldest first (default: those waiting for an operator).
#[utoipa::path(get, path = "/v1/admin/dead-letters", tag = "dead-letters", params(ListParams),
    responses((status = 200, body = DeadLetterList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<Json<DeadLetterList>> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
    let mut q = dead_letter::Entity::find();
    match p.state.as_deref().unwrap_or("pending") {
        "all" => {}
        s @ ("pending" | "replayed" | "discarded") => {
            q = q.filter(dead_letter::Column::State.eq(s))
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "state {other:?} is not one of pending, replayed, discarded, all"
            )))
        }
    }
    if let Some(card) = p.gift_card_id {
        q = q.filter(dead_letter::Column::GiftCardId.eq(card));
    }
    let (rows, next_cursor) = crate::cursor::page(
        &state.db,
        q,
        (dead_letter::Column::DeadLetteredAt, dead_letter::Column::Id),
        true,
        p.cursor.as_deref(),
        limit,
        |r| (r.dead_lettered_at, r.id),
    )
    .await?;
    Ok(Json(DeadLetterList {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// One entry of a dead letter's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterEvent {
    #[schema(value_type = String, format = Uuid)]
    pub dead_letter_id: Uuid,
    /// `dead_lettered`, `replayed` or `discarded`.
    pub action: String,
    /// `worker`, or the admin who acted.
    pub actor: String,
    pub outcome: String,
    pub at: DateTime<Utc>,
}

/// A dead letter in full.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub dead_letter: DeadLetterView,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    /// The dead letter this message was replayed from, if any.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub replayed_from: Option<Uuid>,
    /// The message as it was dead-lettered (JSON if it parses, else text).
    pub payload: serde_json::Value,
    pub headers: std::collections::BTreeMap<String, String>,
    /// Every dead-lettering of this purchase, oldest first.
    pub history: Vec<DeadLetterView>,
    /// What happened to those dead letters, oldest first.
    pub events: Vec<DeadLetterEvent>,
}

#[derive(sea_orm::FromQueryResult)]
struct EventRow {
    dead_letter_id: Uuid,
    action: String,
    actor: String,
    outcome: String,
    at: DateTime<Utc>,
}

/// A dead letter with its message, headers and history.
#[utoipa::path(get, path = "/v1/admin/dead-letters/{id}", tag = "dead-letters",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 200, body = DeadLetterDetail), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn inspect(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<DeadLetterDetail>> {
    let dl = dead_letter::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such dead letter".into()))?;
    let (payload, headers) = match state.topology.dlq.direct_get(dl.dlq_sequence as u64).await {
        Ok(raw) => {
            let payload = serde_json::from_slice(&raw.payload).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&raw.payload).into_owned())
            });
            let headers = raw
                .headers
                .iter()
                .map(|(k, v)| {
                    let v: Vec<&str> = v.iter().map(|x| x.as_str()).collect();
                    (k.to_string(), v.join(", "))
                })
                .collect();
            (payload, headers)
        }
        Err(e) => {
            tracing::warn!(error = %e, dead_letter = %id, "dead-letter message unreadable");
            (serde_json::Value::Null, Default::default())
        }
    };
    let history: Vec<dead_letter::Model> = match dl.purchase_id {
        Some(pid) => {
            dead_letter::Entity::find()
                .filter(dead_letter::Column::PurchaseId.eq(pid))
                .order_by_asc(dead_letter::Column::DeadLetteredAt)
                .all(&state.db)
                .await?
        }
        None => vec![dl.clone()],
    };
    let ids: Vec<Uuid> = history.iter().map(|h| h.id).collect();
    let events = EventRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT dead_letter_id, action, actor, outcome, at FROM dead_letter_events \
         WHERE dead_letter_id = ANY($1) ORDER BY at, id",
        [ids.into()],
    ))
    .all(&state.db)
    .await?
    .into_iter()
    .map(|e| DeadLetterEvent {
        dead_letter_id: e.dead_letter_id,
        action: e.action,
        actor: e.actor,
        outcome: e.outcome,
        at: e.at,
    })
    .collect();
    Ok(Json(DeadLetterDetail {
        resolved_at: dl.resolved_at,
        resolved_by: dl.resolved_by.clone(),
        replayed_from: dl.replayed_from,
        dead_letter: dl.into(),
        payload,
        headers,
        history: history.into_iter().map(Into::into).collect(),
        events,
    }))
}

async fn record_event<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    action: &str,
    actor: &str,
    outcome: &str,
) -> Result<(), sea_orm::DbErr> {
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO dead_letter_events (dead_letter_id, action, actor, outcome) VALUES ($1, $2, $3, $4)",
        [id.into(), action.into(), actor.into(), outcome.into()],
    ))
    .await?;
    Ok(())
}

async fn pending_dead_letter(state: &AppState, id: Uuid) -> ApiResult<dead_letter::Model> {
    let dl = dead_letter::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such dead letter".into()))?;
    if dl.state != "pending" {
        return Err(ApiError::Conflict {
            code: ConflictCode::DeadLetterResolved,
            message: format!("this dead letter was already {}", dl.state),
        });
    }
    Ok(dl)
}

/// Republishes the dead-lettered message to its card's subject. The message
/// id `<purchase>:replay:<dead letter>` makes concurrent replays of one dead
/// letter publish once; the worker answers an already-processed purchase
/// from its stored result, so a replay never charges or assigns twice.
async fn republish(state: &AppState, dl: &dead_letter::Model, by: &str) -> ApiResult<()> {
    let raw = state
        .topology
        .dlq
        .direct_get(dl.dlq_sequence as u64)
        .await
        .map_err(|e| {
            if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound {
                return ApiError::Conflict {
                    code: ConflictCode::DeadLetterExpired,
                    message: "this dead letter's message is no longer in PURCHASES_DLQ (older \
                              than GIFTCARD_DLQ_MAX_AGE_DAYS); it cannot be replayed: discard it"
                        .into(),
                };
            }
            tracing::warn!(error = %e, dead_letter = %dl.id, "cannot read dead letter");
            ApiError::Unavailable("the dead-letter stream is unavailable; retry shortly".into())
        })?;
    // Only what an api signed may be replayed: a forgery that was
    // dead-lettered as unauthenticated must not become genuine by being
    // re-signed here.
    let original = SignedParts::of_dead_letter(Some(&raw.headers), &raw.payload);
    if let Err(e) = state
        .signer
        .verify(signature_of(Some(&raw.headers)), &original)
    {
        return Err(ApiError::Conflict {
            code: ConflictCode::DeadLetterNotAuthentic,
            message: format!(
                "this dead letter cannot be replayed: {e} (it was not published by an api \
                 holding GIFTCARD_MESSAGE_SECRET, or its secret was retired since); discard it"
            ),
        });
    }
    let msg_id = format!(
        "{}:replay:{}",
        dl.purchase_id.map(|p| p.to_string()).unwrap_or_default(),
        dl.id
    );
    let replay_of = dl.id.to_string();
    let version = MESSAGE_VERSION.to_string();
    let signature = state.signer.sign(&SignedParts {
        subject: &dl.original_subject,
        msg_id: Some(&msg_id),
        reply_to: None,
        request_id: None,
        replay_of: Some(&replay_of),
        version: Some(&version),
        payload: &raw.payload,
    });
    let mut headers = NatsHeaders::new();
    headers.insert(HEADER_VERSION, version.as_str());
    headers.insert(HEADER_REPLAY_OF, replay_of.as_str());
    headers.insert(HEADER_SIGNATURE, signature.as_str());
    let publish = Publish::build()
        .payload(raw.payload)
        .headers(headers)
        .message_id(msg_id);
    state
        .topology
        .js
        .send_publish(dl.original_subject.clone(), publish)
        .await
        .map_err(|e| ApiError::Unavailable(format!("replay could not be published: {e}")))?
        .await
        .map_err(|e| ApiError::Unavailable(format!("replay was not acknowledged: {e}")))?;
    let txn = sea_orm::TransactionTrait::begin(&state.db).await?;
    let claimed = txn
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE dead_letters SET state = 'replayed', resolved_at = now(), resolved_by = $2 \
             WHERE id = $1 AND state = 'pending'",
            [dl.id.into(), by.into()],
        ))
        .await?
        .rows_affected();
    let outcome = if claimed == 1 {
        format!("republished to {}", dl.original_subject)
    } else {
        "already replayed concurrently; the duplicate publish was dropped".to_owned()
    };
    record_event(&txn, dl.id, "replayed", by, &outcome).await?;
    if let Some(pid) = dl.purchase_id {
        // Reads fall back to `pending` until the worker stores the outcome.
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "DELETE FROM purchases WHERE id = $1 AND status = 'dead_lettered'",
            [pid.into()],
        ))
        .await?;
    }
    txn.commit().await?;
    metrics::counter!(crate::telemetry::DLQ_REPLAYED).increment(1);
    tracing::info!(dead_letter = %dl.id, purchase_id = ?dl.purchase_id, by, "dead letter replayed");
    Ok(())
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ReplayResult {
    pub replayed: u64,
    /// Dead letters left pending because their message was not signed by
    /// an api (forgeries, or signed with a retired secret): discard them.
    pub not_authentic: u64,
    /// Dead letters left pending because their message is past the
    /// dead-letter stream's retention: discard them.
    pub expired: u64,
}

/// Replay one dead letter.
#[utoipa::path(post, path = "/v1/admin/dead-letters/{id}/replay", tag = "dead-letters",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 202, body = ReplayResult), (status = 404, body = ErrorBody),
        (status = 409, description = "DEAD_LETTER_RESOLVED, DEAD_LETTER_NOT_AUTHENTIC or DEAD_LETTER_EXPIRED", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn replay(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<ReplayResult>)> {
    let dl = pending_dead_letter(&state, id).await?;
    republish(&state, &dl, admin.user.as_str()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayResult {
            replayed: 1,
            ..Default::default()
        }),
    ))
}

/// Most dead letters one replay-all call takes on, and the default.
const BATCH_MAX: u64 = 500;
const BATCH_DEFAULT: u64 = 100;
/// A replay-all call stops taking on dead letters after this long.
const BATCH_TIME: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayAll {
    #[schema(value_type = Option<String>, format = Uuid)]
    pub gift_card_id: Option<Uuid>,
    /// Most dead letters this call takes on: 1..=500, default 100.
    #[schema(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous call, to go on where it stopped.
    pub cursor: Option<String>,
}

/// What one replay-all call did, and where the next one goes on.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayBatch {
    #[serde(flatten)]
    pub result: ReplayResult,
    /// Pending dead letters (of the card) after this batch, not yet taken
    /// on by this pass (those left pending above are not counted).
    pub remaining: u64,
    /// Pass as `cursor` to go on; null when this pass is done.
    pub next_cursor: Option<String>,
    /// Why the batch stopped early, if it did (the counts above stand;
    /// call again with `next_cursor` once the cause is fixed).
    pub stopped: Option<ErrorDetail>,
}

/// Replay the oldest pending dead letters (of one card, if given): at most
/// `limit` and about 10 s worth per call; the answer says how many were
/// replayed and how many remain, and `next_cursor` goes on.
#[utoipa::path(post, path = "/v1/admin/dead-letters/replay", tag = "dead-letters",
    request_body = ReplayAll,
    responses((status = 202, body = ReplayBatch)),
    security(("bearer" = [])))]
pub async fn replay_all(
    State(state): State<AppState>,
    Admin(admin): Admin,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<(StatusCode, Json<ReplayBatch>)> {
    let body = body.map_err(|e| json_rejection(JsonRejection::BytesRejection(e)))?;
    let filter: ReplayAll = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayAll::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                ApiError::BadRequest("the request body is not valid JSON".into())
            } else {
                ApiError::Unprocessable(format!(
                    "the request body does not match the expected shape: {e}"
                ))
            }
        })?
    };
    let limit = filter.limit.unwrap_or(BATCH_DEFAULT);
    if !(1..=BATCH_MAX).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit must be between 1 and {BATCH_MAX}"
        )));
    }
    let pass = match filter.cursor.as_deref() {
        Some(c) => Pass::decode(c)
            .ok_or_else(|| ApiError::BadRequest("cursor is not one this api issued".into()))?,
        None => Pass::begin(&state).await?,
    };
    // Pending, of the card, and indexed when the pass began: dead letters
    // that replays produce meanwhile are left for the next pass, so a pass
    // always ends.
    let mut pending = dead_letter::Entity::find()
        .filter(dead_letter::Column::State.eq("pending"))
        .filter(dead_letter::Column::DlqSequence.lte(pass.upto));
    if let Some(card) = filter.gift_card_id {
        pending = pending.filter(dead_letter::Column::GiftCardId.eq(card));
    }
    let key = (dead_letter::Column::DeadLetteredAt, dead_letter::Column::Id);
    let (rows, more) = crate::cursor::page(
        &state.db,
        pending.clone(),
        key,
        true,
        pass.after.as_deref(),
        limit,
        |r| (r.dead_lettered_at, r.id),
    )
    .await?;
    let (result, done, stopped) = replay_batch(&state, &rows, admin.user.as_str()).await?;
    let after = match rows.get(..done).and_then(<[_]>::last) {
        _ if done == rows.len() => more,
        Some(last) => Some(crate::cursor::encode(last.dead_lettered_at, last.id)),
        None => pass.after.clone(),
    };
    let (remaining, next_cursor) = match after {
        Some(after) => (
            crate::cursor::after(pending, key, true, Some(&after))?
                .count(&state.db)
                .await?,
            Some(
                Pass {
                    upto: pass.upto,
                    after: Some(after),
                }
                .encode(),
            ),
        ),
        None => (0, None),
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayBatch {
            result,
            remaining,
            next_cursor,
            stopped,
        }),
    ))
}

/// Replays `rows` in order for about [`BATCH_TIME`]: what it did, how many
/// of `rows` it took on, and why it stopped early if it did. An error on
/// the first one is the answer (nothing was done).
async fn replay_batch(
    state: &AppState,
    rows: &[dead_letter::Model],
    by: &str,
) -> ApiResult<(ReplayResult, usize, Option<ErrorDetail>)> {
    let started = Instant::now();
    let mut result = ReplayResult::default();
    let mut done = 0;
    for dl in rows {
        if started.elapsed() > BATCH_TIME {
            break;
        }
        match republish(state, dl, by).await {
            Ok(()) => result.replayed += 1,
            Err(ApiError::Conflict {
                code: ConflictCode::DeadLetterNotAuthentic,
                ..
            }) => result.not_authentic += 1,
            Err(ApiError::Conflict {
                code: ConflictCode::DeadLetterExpired,
                ..
            }) => result.expired += 1,
            Err(e) if done == 0 => return Err(e),
            Err(e) => {
                let (_, code) = e.status_and_code();
                let stopped = ErrorDetail {
                    code: code.to_owned(),
                    message: e.to_string(),
                };
                return Ok((result, done, Some(stopped)));
            }
        }
        done += 1;
    }
    Ok((result, done, None))
}

/// Where a replay-all pass is, carried in its opaque cursor: the dead
/// letters indexed when it began (`dlq_sequence` up to `upto`), after
/// `after` (a [`crate::cursor`] position).
struct Pass {
    upto: i64,
    after: Option<String>,
}

impl Pass {
    /// A pass over everything indexed now.
    async fn begin(state: &AppState) -> ApiResult<Self> {
        #[derive(FromQueryResult)]
        struct Last {
            upto: i64,
        }
        let last = Last::find_by_statement(Statement::from_string(
            DbBackend::Postgres,
            "SELECT COALESCE(max(dlq_sequence), 0) AS upto FROM dead_letters",
        ))
        .one(&state.db)
        .await?;
        Ok(Self {
            upto: last.map_or(0, |l| l.upto),
            after: None,
        })
    }

    fn encode(&self) -> String {
        hex::encode(format!(
            "{}|{}",
            self.upto,
            self.after.as_deref().unwrap_or("")
        ))
    }

    fn decode(s: &str) -> Option<Self> {
        let raw = String::from_utf8(hex::decode(s).ok()?).ok()?;
        let (upto, after) = raw.split_once('|')?;
        let after = (!after.is_empty()).then(|| after.to_owned());
        if after
            .as_deref()
            .is_some_and(|a| crate::cursor::decode(a).is_none())
        {
            return None;
        }
        Some(Self {
            upto: upto.parse().ok()?,
            after,
        })
    }
}

/// Discard a dead letter: its purchase becomes `failed` with `DISCARDED`.
#[utoipa::path(delete, path = "/v1/admin/dead-letters/{id}", tag = "dead-letters",
    params(("id" = String, Path, format = Uuid)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn discard(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let dl = pending_dead_letter(&state, id).await?;
    let txn = sea_orm::TransactionTrait::begin(&state.db).await?;
    let claimed = txn
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE dead_letters SET state = 'discarded', resolved_at = now(), resolved_by = $2 \
             WHERE id = $1 AND state = 'pending'",
            [id.into(), admin.user.as_str().into()],
        ))
        .await?
        .rows_affected();
    if claimed == 0 {
        return Err(ApiError::Conflict {
            code: ConflictCode::DeadLetterResolved,
            message: "this dead letter was resolved concurrently".into(),
        });
    }
    record_event(
        &txn,
        id,
        "discarded",
        admin.user.as_str(),
        "purchase marked failed (DISCARDED)",
    )
    .await?;
    if let Some(pid) = dl.purchase_id {
        let code = FailureCode::Discarded;
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE purchases SET status = 'failed', error_code = $2, error_message = $3, \
             completed_at = now() WHERE id = $1 AND status = 'dead_lettered'",
            [pid.into(), code.as_str().into(), code.message().into()],
        ))
        .await?;
    }
    txn.commit().await?;
    metrics::counter!(crate::telemetry::DLQ_DISCARDED).increment(1);
    tracing::info!(dead_letter = %id, by = admin.user.as_str(), "dead letter discarded");
    Ok(StatusCode::NO_CONTENT)
}
