//! Unauthenticated operational routes: health, readiness, metrics, OpenAPI.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// Health, readiness and the OpenAPI document; `/metrics` too unless it
/// has a listener of its own ([`metrics_router`]).
pub fn router(with_metrics: bool) -> Router<AppState> {
    let r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi));
    if with_metrics {
        r.merge(metrics_router())
    } else {
        r
    }
}

/// `/metrics` alone (for `GIFTCARD_API_METRICS_LISTEN`).
pub fn metrics_router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics_text))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `degraded` (PostgreSQL down: purchases still accepted) or
    /// `unavailable` (NATS down: nothing can be accepted).
    pub status: &'static str,
    pub nats: &'static str,
    pub database: &'static str,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200)))]
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// 200 when NATS is reachable (`degraded` if PostgreSQL is not), else 503.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let nats = state.nats_up();
    let db = state.db_up();
    let up = |b: bool| if b { "up" } else { "down" };
    let body = Readiness {
        status: match (nats, db) {
            (false, _) => "unavailable",
            (true, true) => "ready",
            (true, false) => "degraded",
        },
        nats: up(nats),
        database: up(db),
    };
    let status = if nats {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    let (in_flight, waiting) = state.limits.occupancy();
    metrics::gauge!(crate::telemetry::IN_FLIGHT).set(in_flight as f64);
    metrics::gauge!(crate::telemetry::WAITING).set(waiting as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        giftcard_shared::telemetry::render_metrics(&state.metrics),
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, content_type = "application/json")))]
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}
