//! The worker's operational HTTP endpoints: `/healthz`, `/readyz` (200 only
//! when both NATS and PostgreSQL are reachable), `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::{ConnectionTrait, DatabaseConnection};

#[derive(Clone)]
pub struct OpsState {
    nats: async_nats::Client,
    db: DatabaseConnection,
    metrics: PrometheusHandle,
}

impl OpsState {
    pub fn new(nats: async_nats::Client, db: DatabaseConnection) -> Self {
        Self {
            nats,
            db,
            metrics: giftcard_shared::telemetry::metrics_handle(),
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
    });
    (status, Json(body))
}

async fn metrics_text(State(s): State<OpsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        giftcard_shared::telemetry::render_metrics(&s.metrics),
    )
}
