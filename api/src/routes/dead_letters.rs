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
use sea_orm::sea_query::extension::postgres::PgExpr;
use sea_orm::sea_query::{Expr, LikeExpr};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
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

/// Which dead letters a list (or a bulk replay) covers.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `pending`, `replayed` or `discarded`; None for every state.
    pub state: Option<&'static str>,
    pub gift_card_id: Option<Uuid>,
    /// A case-insensitive part of the reason (the console's filter).
    pub reason: Option<String>,
    pub purchase_id: Option<Uuid>,
}

impl Filter {
    /// The `state` parameter: `pending` (default), `replayed`,
    /// `discarded` or `all`.
    pub fn parse_state(s: Option<&str>) -> ApiResult<Option<&'static str>> {
        match s.unwrap_or("pending") {
            "all" => Ok(None),
            "pending" => Ok(Some("pending")),
            "replayed" => Ok(Some("replayed")),
            "discarded" => Ok(Some("discarded")),
            other => Err(ApiError::BadRequest(format!(
                "state {other:?} is not one of pending, replayed, discarded, all"
            ))),
        }
    }

    /// The dead letters this filter covers.
    pub fn select(&self) -> sea_orm::Select<dead_letter::Entity> {
        let mut q = dead_letter::Entity::find();
        if let Some(s) = self.state {
            q = q.filter(dead_letter::Column::State.eq(s));
        }
        if let Some(card) = self.gift_card_id {
            q = q.filter(dead_letter::Column::GiftCardId.eq(card));
        }
        if let Some(purchase) = self.purchase_id {
            q = q.filter(dead_letter::Column::PurchaseId.eq(purchase));
        }
        if let Some(reason) = self.reason.as_deref().filter(|r| !r.is_empty()) {
            // `%`, `_` and `\` in what the operator typed match themselves
            // (backslash is PostgreSQL's default LIKE escape character).
            let escaped: String = reason
                .chars()
                .flat_map(|c| match c {
                    '%' | '_' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            let like = LikeExpr::new(format!("%{escaped}%"));
            q = q.filter(Expr::col(dead_letter::Column::Reason).ilike(like));
        }
        q
    }
}

/// One page of the dead letters `filter` covers, oldest first, after
/// `cursor`: the rows and the next page's cursor.
pub async fn list_page(
    state: &AppState,
    filter: &Filter,
    cursor: Option<&str>,
    limit: u64,
) -> ApiResult<(Vec<dead_letter::Model>, Option<String>)> {
    crate::cursor::page(
        &state.db,
        filter.select(),
        (dead_letter::Column::DeadLetteredAt, dead_letter::Column::Id),
        true,
        cursor,
        limit,
        |r| (r.dead_lettered_at, r.id),
    )
    .await
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
    let filter = Filter {
        state: Filter::parse_state(p.state.as_deref())?,
        gift_card_id: p.gift_card_id,
        ..Default::default()
    };
    let (rows, next_cursor) = list_page(&state, &filter, p.cursor.as_deref(), limit).await?;
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
    Ok(Json(detail(&state, id).await?))
}

/// A dead letter in full: its message as stored in `PURCHASES_DLQ`, every
/// dead-lettering of the same purchase (or, for a message without one, of
/// the same message through its replays) and every action on them.
pub async fn detail(state: &AppState, id: Uuid) -> ApiResult<DeadLetterDetail> {
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
        None => replay_chain(&state.db, id).await?,
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
    Ok(DeadLetterDetail {
        resolved_at: dl.resolved_at,
        resolved_by: dl.resolved_by.clone(),
        replayed_from: dl.replayed_from,
        dead_letter: dl.into(),
        payload,
        headers,
        history: history.into_iter().map(Into::into).collect(),
        events,
    })
}

/// The dead letters one message became through its replays, oldest
/// first: up the `replayed_from` links to the first dead-lettering, then
/// down to every replay of it (for messages without a purchase id).
async fn replay_chain<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
) -> Result<Vec<dead_letter::Model>, sea_orm::DbErr> {
    dead_letter::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "WITH RECURSIVE up AS ( \
                 SELECT id, replayed_from FROM dead_letters WHERE id = $1 \
                 UNION SELECT d.id, d.replayed_from FROM dead_letters d JOIN up ON d.id = up.replayed_from \
             ), down AS ( \
                 SELECT id FROM up WHERE replayed_from IS NULL \
                 UNION SELECT d.id FROM dead_letters d JOIN down ON d.replayed_from = down.id \
             ) \
             SELECT * FROM dead_letters WHERE id IN (SELECT id FROM down) \
             ORDER BY dead_lettered_at, id",
            [id.into()],
        ))
        .all(db)
        .await
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
    replay_one(&state, id, admin.user.as_str()).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayResult {
            replayed: 1,
            ..Default::default()
        }),
    ))
}

/// Replays one pending dead letter on behalf of `by` (recorded as the
/// actor): 404 if there is none, 409 `DEAD_LETTER_RESOLVED` if it is no
/// longer pending, 409 `DEAD_LETTER_NOT_AUTHENTIC` if no api signed it,
/// 409 `DEAD_LETTER_EXPIRED` if its message is past the stream's retention.
pub async fn replay_one(state: &AppState, id: Uuid, by: &str) -> ApiResult<()> {
    let dl = pending_dead_letter(state, id).await?;
    republish(state, &dl, by).await
}

/// Where a bulk replay has got to: the last dead letter it handled, in
/// original stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayCursor {
    pub original_sequence: i64,
    pub id: Uuid,
}

impl ReplayCursor {
    /// `<original sequence>.<id>`, as forms and cursors carry it.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.original_sequence, self.id)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (seq, id) = s.split_once('.')?;
        Some(Self {
            original_sequence: seq.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

/// Where a bulk replay that begins now ends: the last dead letter indexed
/// so far (its `PURCHASES_DLQ` sequence). A replay that is dead-lettered
/// again lands after it, so one bulk replay never loops on poison.
pub async fn replay_bound(state: &AppState) -> ApiResult<i64> {
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
    Ok(last.map_or(0, |l| l.upto))
}

/// A batch stops taking on dead letters after this long.
const BATCH_TIME: Duration = Duration::from_secs(10);

/// What one batch of a bulk replay did.
#[derive(Debug, Default)]
pub struct ReplayStep {
    pub result: ReplayResult,
    /// Where the next batch starts (the last dead letter handled).
    pub next: Option<ReplayCursor>,
    /// Pending dead letters of the bulk replay after `next`.
    pub remaining: u64,
    /// Why the batch stopped early, if it did (the counts stand).
    pub stopped: Option<ErrorDetail>,
}

/// One batch of a bulk replay: replays up to `limit` pending dead letters
/// that `filter` covers, indexed up to `upto` (see [`replay_bound`]),
/// after `after`, in original stream order (so each card's purchases go
/// back in the order they first came), for about ten seconds at most. A
/// dead letter that is not authentic or past the stream's retention stays
/// pending, is counted, and the cursor moves past it. An error on the
/// first dead letter is the answer; a later one stops the batch and is
/// reported in `stopped`. Every replay is recorded with `by` as the actor.
pub async fn replay_batch(
    state: &AppState,
    filter: &Filter,
    upto: i64,
    after: Option<ReplayCursor>,
    limit: u64,
    by: &str,
) -> ApiResult<ReplayStep> {
    let rows = pending_after(filter, upto, after)
        .order_by_asc(dead_letter::Column::OriginalSequence)
        .order_by_asc(dead_letter::Column::Id)
        .limit(limit)
        .all(&state.db)
        .await?;
    let started = Instant::now();
    let mut step = ReplayStep {
        next: after,
        ..Default::default()
    };
    for (done, dl) in rows.iter().enumerate() {
        if started.elapsed() > BATCH_TIME {
            break;
        }
        match republish(state, dl, by).await {
            Ok(()) => step.result.replayed += 1,
            Err(ApiError::Conflict {
                code: ConflictCode::DeadLetterNotAuthentic,
                ..
            }) => step.result.not_authentic += 1,
            Err(ApiError::Conflict {
                code: ConflictCode::DeadLetterExpired,
                ..
            }) => step.result.expired += 1,
            Err(e) if done == 0 => return Err(e),
            Err(e) => {
                let (_, code) = e.status_and_code();
                step.stopped = Some(ErrorDetail {
                    code: code.to_owned(),
                    message: e.to_string(),
                });
                break;
            }
        }
        step.next = Some(ReplayCursor {
            original_sequence: dl.original_sequence,
            id: dl.id,
        });
    }
    step.remaining = pending_after(filter, upto, step.next)
        .count(&state.db)
        .await?;
    Ok(step)
}

/// The pending dead letters of a bulk replay (see [`replay_batch`]).
pub fn pending_after(
    filter: &Filter,
    upto: i64,
    after: Option<ReplayCursor>,
) -> sea_orm::Select<dead_letter::Entity> {
    use dead_letter::Column as C;
    let pending = Filter {
        state: Some("pending"),
        ..filter.clone()
    };
    let mut q = pending.select().filter(C::DlqSequence.lte(upto));
    if let Some(c) = after {
        q = q.filter(
            Condition::any()
                .add(C::OriginalSequence.gt(c.original_sequence))
                .add(
                    Condition::all()
                        .add(C::OriginalSequence.eq(c.original_sequence))
                        .add(C::Id.gt(c.id)),
                ),
        );
    }
    q
}

/// Most dead letters one replay-all call takes on, and the default.
const BATCH_MAX: u64 = 500;
const BATCH_DEFAULT: u64 = 100;

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

/// Replay pending dead letters (of one card, if given) in original stream
/// order: at most `limit` and about 10 s worth per call; the answer says
/// how many were replayed and how many remain, and `next_cursor` goes on.
/// A pass covers the dead letters indexed when its first call began.
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
    let wanted: ReplayAll = if body.iter().all(u8::is_ascii_whitespace) {
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
    let limit = wanted.limit.unwrap_or(BATCH_DEFAULT);
    if !(1..=BATCH_MAX).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit must be between 1 and {BATCH_MAX}"
        )));
    }
    let pass = match wanted.cursor.as_deref() {
        Some(c) => Pass::decode(c)
            .ok_or_else(|| ApiError::BadRequest("cursor is not one this api issued".into()))?,
        None => Pass {
            upto: replay_bound(&state).await?,
            after: None,
        },
    };
    let filter = Filter {
        gift_card_id: wanted.gift_card_id,
        ..Default::default()
    };
    let step = replay_batch(
        &state,
        &filter,
        pass.upto,
        pass.after,
        limit,
        admin.user.as_str(),
    )
    .await?;
    let next_cursor = (step.remaining > 0).then(|| {
        Pass {
            upto: pass.upto,
            after: step.next,
        }
        .encode()
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(ReplayBatch {
            result: step.result,
            remaining: step.remaining,
            next_cursor,
            stopped: step.stopped,
        }),
    ))
}

/// Where a replay-all pass is, carried in its opaque cursor.
struct Pass {
    upto: i64,
    after: Option<ReplayCursor>,
}

impl Pass {
    fn encode(&self) -> String {
        let after = self.after.map(|c| c.encode()).unwrap_or_default();
        hex::encode(format!("{}|{after}", self.upto))
    }

    fn decode(s: &str) -> Option<Self> {
        let raw = String::from_utf8(hex::decode(s).ok()?).ok()?;
        let (upto, after) = raw.split_once('|')?;
        let after = match after {
            "" => None,
            a => Some(ReplayCursor::decode(a)?),
        };
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
    discard_one(&state, id, admin.user.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Discards one pending dead letter on behalf of `by` (recorded as the
/// actor): its purchase, if any, becomes `failed` with `DISCARDED`.
pub async fn discard_one(state: &AppState, id: Uuid, by: &str) -> ApiResult<()> {
    let dl = pending_dead_letter(state, id).await?;
    let txn = sea_orm::TransactionTrait::begin(&state.db).await?;
    let claimed = txn
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE dead_letters SET state = 'discarded', resolved_at = now(), resolved_by = $2 \
             WHERE id = $1 AND state = 'pending'",
            [id.into(), by.into()],
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
        by,
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
    tracing::info!(dead_letter = %id, by, "dead letter discarded");
    Ok(())
}
