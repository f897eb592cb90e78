//! The gift-card HTTP api.
//!
//! - [`run`] wires everything: topology check, the reply dispatcher, the
//!   database probe and the HTTP server; tests call it with their own
//!   listener, database, NATS client and shutdown token.
//! - [`routes`]: one module per feature (purchases, catalog, admin,
//!   dead letters, operations), merged over one [`state::AppState`].
//! - [`console`]: the operators' web console under `/console/`.
//! - [`error`]: the error type and its mapping to the contract's body.
//! - [`extract`]: extractors answering bad input with a 4xx.
//! - [`replies`]: routes worker replies to waiting requests.
//! - [`telemetry`]: metric names and help lines.

pub mod console;
pub mod cursor;
pub mod error;
pub mod extract;
pub mod replies;
pub mod routes;
pub mod state;
pub mod telemetry;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::Router;
use giftcard_shared::config::ApiSettings;
use giftcard_shared::telemetry as shared_telemetry;
use giftcard_shared::topology;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::replies::Replies;
use crate::state::{AppState, Inner};

/// Largest JSON body accepted outside code imports.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the `giftcard-api` binary does with its settings: validates them,
/// binds, connects as the `giftcard-api` NATS identity, and [`run`]s until
/// SIGTERM or Ctrl-C.
pub async fn run_with(settings: ApiSettings) -> anyhow::Result<()> {
    let settings = settings.validated()?;
    tracing::info!(?settings, "configuration");
    let s = giftcard_shared::process::start(
        giftcard_shared::nats::API,
        &settings.common,
        settings.listen,
        "GIFTCARD_API_LISTEN",
    )
    .await?;
    run(settings, s.listener, s.db, s.nats, s.shutdown).await
}

/// Runs the api on `listener` until `shutdown` is cancelled, then stops
/// accepting connections and drains in-flight requests: purchases still
/// waiting for their outcome are answered 202 (with their `Location`) at
/// once, everything else finishes.
pub async fn run(
    settings: ApiSettings,
    listener: TcpListener,
    db: DatabaseConnection,
    nats: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let _ = shared_telemetry::metrics_handle();
    telemetry::describe();
    let js = async_nats::jetstream::new(nats.clone());
    let topology = topology::open(&js, settings.common.partitions).await?;
    let replies = Replies::start(&nats, shutdown.clone()).await?;
    let signer = giftcard_shared::signing::MessageSigner::new(&settings.keys);
    let state = AppState::new(Inner {
        signer,
        settings,
        db,
        nats,
        topology,
        replies,
        metrics: shared_telemetry::metrics_handle(),
        db_up: AtomicBool::new(true),
        shutdown: shutdown.clone(),
    });
    state.spawn_db_probe(shutdown.clone());
    shared_telemetry::spawn_nats_connected_gauge(
        state.nats.clone(),
        telemetry::NATS_CONNECTED,
        shutdown.clone(),
    );
    let metrics_server = match state.settings.metrics_listen {
        Some(addr) => {
            let metrics =
                giftcard_shared::process::bind(addr, "GIFTCARD_API_METRICS_LISTEN").await?;
            tracing::info!(addr = %metrics.local_addr()?, "api metrics listening");
            let router = routes::ops::metrics_router().with_state(state.clone());
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                axum::serve(metrics, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }))
        }
        None => None,
    };
    tracing::info!(addr = %listener.local_addr()?, "api listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    tracing::info!("api stopped");
    Ok(())
}

/// The request id header: set on each request (unless the client sent one),
/// echoed on the response, in the logs, and passed on to the worker.
pub const REQUEST_ID: &str = "x-request-id";

/// The router with its middleware.
pub fn app(state: AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID);
    routes::router(state.settings.metrics_listen.is_none())
        .merge(console::router(&state))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(error::ApiError::Internal(
                anyhow::anyhow!("handler panicked"),
            ))
        }))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            extract::MAX_WAIT + Duration::from_secs(10),
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                // The path only: no query string, never a header (tokens).
                let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path(),
                    request_id = id, trace_id = tracing::field::Empty, purchase_id = tracing::field::Empty);
                let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
                shared_telemetry::continue_trace(&span, header("traceparent"), header("tracestate"));
                span
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}
