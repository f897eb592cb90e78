//! Admin view of the worker fleet: who owns each partition (the lease
//! bucket), each partition consumer's backlog, the live workers (the worker
//! bucket) and the size of the dead-letter stream. Read from NATS only, so it
//! answers while PostgreSQL is down.

use std::collections::HashMap;

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::kv;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use giftcard_shared::contract::{lease_key, LeaseValue, WorkerInfo};
use giftcard_shared::topology::{open_coordination, Coordination};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Admin;
use crate::state::AppState;

/// How many NATS requests the handler keeps in flight at once.
const CONCURRENCY: usize = 16;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/partitions", get(list))
}

/// Ownership and backlog of every partition, and the live workers.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionsReport {
    /// One entry per partition, `0..GIFTCARD_PARTITIONS`, in order.
    pub partitions: Vec<PartitionStatus>,
    /// Registered (live) workers, by id.
    pub workers: Vec<WorkerStatus>,
    /// Messages in the `PURCHASES_DLQ` stream. Replayed and discarded dead
    /// letters stay in the stream; `GET /v1/admin/dead-letters` lists the
    /// ones still waiting for an operator.
    pub dead_letter_backlog: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionStatus {
    pub partition: u16,
    /// Worker holding the partition's lease; null when nobody does.
    pub owner: Option<String>,
    /// The owner's fencing token.
    pub token: Option<i64>,
    pub acquired_at: Option<DateTime<Utc>>,
    /// Messages not yet delivered to the partition's consumer. Null (like
    /// the next two) while the consumer does not exist, i.e. before any
    /// worker started.
    pub pending: Option<u64>,
    /// Messages delivered but not yet acknowledged.
    pub ack_pending: Option<u64>,
    /// Messages delivered more than once.
    pub redelivered: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerStatus {
    pub id: String,
    pub started_at: DateTime<Utc>,
    /// Where the worker serves `/metrics` and `/readyz`.
    pub ops_addr: String,
    /// How many partitions the worker reports owning.
    pub partitions_owned: u64,
    /// How many leases name this worker right now (may briefly differ from
    /// `partitions_owned`, which the worker refreshes periodically).
    pub leases_held: u64,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "partitions report: {what} failed");
    ApiError::Unavailable(format!("NATS could not answer ({what}); retry shortly"))
}

/// Ownership and backlog of every partition (admin).
#[utoipa::path(get, path = "/v1/admin/partitions", tag = "admin",
    responses((status = 200, body = PartitionsReport), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
) -> ApiResult<Json<PartitionsReport>> {
    Ok(Json(report(&state).await?))
}

/// Reads the report from NATS: every lease, each owner's consumer, the
/// worker registrations and the dead-letter stream's size.
pub async fn report(state: &AppState) -> ApiResult<PartitionsReport> {
    let partitions = state.settings.common.partitions;
    let coordination = open_coordination(&state.topology.js).await;

    let leases = futures::stream::iter(0..partitions)
        .map(|p| read_lease(coordination.as_ref(), p))
        .buffered(CONCURRENCY)
        .try_collect::<Vec<_>>();
    let leases: Vec<Option<LeaseValue>> = leases.await?;
    let names: Vec<Option<String>> = leases
        .iter()
        .map(|l| {
            l.as_ref()
                .map(|l| l.consumer.clone())
                .filter(|n| !n.is_empty())
        })
        .collect();
    let consumers = futures::stream::iter(names)
        .map(|name| read_consumer(state, name))
        .buffered(CONCURRENCY)
        .try_collect::<Vec<_>>();
    let workers = read_workers(coordination.as_ref());
    let dlq = async {
        state
            .topology
            .dlq
            .get_info()
            .await
            .map(|i| i.state.messages)
            .map_err(|e| unavailable("dead-letter stream info", e))
    };
    let (consumers, mut workers, dead_letter_backlog) = tokio::try_join!(consumers, workers, dlq)?;

    let mut held: HashMap<&str, u64> = HashMap::new();
    for lease in leases.iter().flatten() {
        *held.entry(lease.owner.as_str()).or_default() += 1;
    }
    for w in &mut workers {
        w.leases_held = held.get(w.id.as_str()).copied().unwrap_or(0);
    }
    let partitions = (0..partitions)
        .zip(leases.iter().zip(consumers))
        .map(|(partition, (lease, consumer))| PartitionStatus {
            partition,
            owner: lease.as_ref().map(|l| l.owner.clone()),
            token: lease.as_ref().map(|l| l.token),
            acquired_at: lease.as_ref().map(|l| l.acquired_at),
            pending: consumer.map(|c| c.0),
            ack_pending: consumer.map(|c| c.1),
            redelivered: consumer.map(|c| c.2),
        })
        .collect();
    Ok(PartitionsReport {
        partitions,
        workers,
        dead_letter_backlog,
    })
}

/// The live lease of partition `p`, if any.
async fn read_lease(coordination: Option<&Coordination>, p: u16) -> ApiResult<Option<LeaseValue>> {
    let Some(c) = coordination else {
        return Ok(None);
    };
    let entry = c
        .leases
        .entry(lease_key(p))
        .await
        .map_err(|e| unavailable("reading a partition lease", e))?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .and_then(|e| match serde_json::from_slice::<LeaseValue>(&e.value) {
            Ok(v) => Some(v),
            Err(err) => {
                tracing::warn!(error = %err, key = %e.key, "undecodable partition lease; shown as unowned");
                None
            }
        }))
}

/// `(pending, ack_pending, redelivered)` of the consumer the partition's
/// current owner reads through, or None when nobody owns it.
async fn read_consumer(
    state: &AppState,
    name: Option<String>,
) -> ApiResult<Option<(u64, u64, u64)>> {
    let Some(name) = name else {
        return Ok(None);
    };
    match state.topology.purchases.consumer_info(&name).await {
        Ok(info) => Ok(Some((
            info.num_pending,
            info.num_ack_pending as u64,
            info.num_redelivered as u64,
        ))),
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => Ok(None),
        Err(e) => Err(unavailable("reading partition consumer info", e)),
    }
}

/// Every registered worker, sorted by id (`leases_held` is filled later).
async fn read_workers(coordination: Option<&Coordination>) -> ApiResult<Vec<WorkerStatus>> {
    let Some(c) = coordination else {
        return Ok(Vec::new());
    };
    let keys: Vec<String> = c
        .workers
        .keys()
        .await
        .map_err(|e| unavailable("listing workers", e))?
        .try_collect()
        .await
        .map_err(|e| unavailable("listing workers", e))?;
    let store = &c.workers;
    let mut workers: Vec<WorkerStatus> = futures::stream::iter(keys)
        .map(|key| async move {
            // A worker that deregistered between `keys` and `get` is gone.
            let value = store
                .get(key.as_str())
                .await
                .map_err(|e| unavailable("reading a worker", e))?;
            Ok::<_, ApiError>(value.and_then(|v| {
                serde_json::from_slice::<WorkerInfo>(&v)
                    .inspect_err(|err| {
                        tracing::warn!(error = %err, key, "undecodable worker registration; skipped");
                    })
                    .ok()
            }))
        })
        .buffered(CONCURRENCY)
        .try_filter_map(|w| async move { Ok(w) })
        .map_ok(|w| WorkerStatus {
            id: w.id,
            started_at: w.started_at,
            ops_addr: w.ops_addr,
            partitions_owned: w.partitions_owned as u64,
            leases_held: 0,
        })
        .try_collect()
        .await?;
    workers.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(workers)
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    #[test]
    fn the_route_and_its_schemas_are_in_the_openapi_document() {
        let doc = serde_json::to_value(super::super::ApiDoc::openapi()).unwrap();
        let op = &doc["paths"]["/v1/admin/partitions"]["get"];
        assert!(op.is_object(), "missing path");
        let schemas = &doc["components"]["schemas"];
        for name in ["PartitionsReport", "PartitionStatus", "WorkerStatus"] {
            assert!(schemas[name].is_object(), "missing schema {name}");
        }
        let props = &schemas["PartitionStatus"]["properties"];
        for field in [
            "partition",
            "owner",
            "token",
            "acquired_at",
            "pending",
            "ack_pending",
            "redelivered",
        ] {
            assert!(props[field].is_object(), "missing field {field}");
        }
    }
}
