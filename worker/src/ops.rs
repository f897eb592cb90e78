//! The worker's operational HTTP endpoints: `/healthz`, `/readyz` (200 only
//! when both NATS and PostgreSQL are reachable; its body also says how many
//! partitions hold a batch waiting for PostgreSQL), `/metrics`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::{ConnectionTrait, DatabaseConnection};

/// How many partitions are holding a batch until PostgreSQL is usable
/// again (`giftcard_worker_partitions_waiting`, and `/readyz`'s
/// `waiting_partitions`).
#[derive(Clone, Default)]
pub struct Waiting(Arc<AtomicUsize>);

/// One waiting partition; it stops waiting when this is dropped.
pub struct WaitGuard(Waiting);

impl Waiting {
    pub fn enter(&self) -> WaitGuard {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!(crate::telemetry::PARTITIONS_WAITING).set(n as f64);
        WaitGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let n = self.0 .0.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!(crate::telemetry::PARTITIONS_WAITING).set(n as f64);
    }
}

#[derive(Clone)]
pub struct OpsState {
    nats: async_nats::Client,
    db: DatabaseConnection,
    metrics: PrometheusHandle,
    waiting: Waiting,
}

impl OpsState {
    pub fn new(nats: async_nats::Client, db: DatabaseConnection, waiting: Waiting) -> Self {
        Self {
            nats,
            db,
            metrics: giftcard_shared::telemetry::metrics_handle(),
            waiting,
        }
    }
}

pub fn router(state: OpsState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn readyz(State(s): State<OpsState>) -> impl IntoResponse {
    let nats = s.nats.connection_state() == async_nats::connection::State::Connected;
    let db = tokio::time::timeout(Duration::from_secs(2), s.db.execute_unprepared("SELECT 1"))
        .await
        .is_ok_and(|r| r.is_ok());
    let up = |b: bool| if b { "up" } else { "down" };
    let status = if nats && db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if nats && db { "ready" } else { "unavailable" },
        "nats": up(nats),
        "database": up(db),
        // Partitions holding their batch until PostgreSQL is usable again:
        // their purchases are delayed, not failed.
        "waiting_partitions": s.waiting.count(),
    });
    (status, Json(body))
}

async fn metrics_text(State(s): State<OpsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        giftcard_shared::telemetry::render_metrics(&s.metrics),
    )
}
