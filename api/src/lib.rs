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
//! - [`limits`]: per-user purchase rate, requests in flight, waiting
//!   purchases; [`middleware`]: request ids, per-route metrics, the
//!   request timeout; [`server`]: the HTTP/1.1 loop with its header
//!   timeout.
//! - [`openapi`]: what every operation can answer, added to the document.
//! - [`telemetry`]: metric names and help lines.

pub mod console;
pub mod cursor;
pub mod error;
pub mod extract;
pub mod limits;
pub mod middleware;
pub mod openapi;
pub mod replies;
pub mod routes;
pub mod server;
pub mod state;
pub mod telemetry;

use std::sync::atomic::AtomicBool;

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
use tower_http::request_id::PropagateRequestIdLayer;
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
    let poll_db = giftcard_shared::db::connect_for_polls(&settings.common).await?;
    let state = AppState::new(Inner {
        signer,
        limits: limits::Limits::new(&settings),
        http_metrics: Default::default(),
        settings,
        db,
        poll_db,
        nats,
        topology,
        replies,
        metrics: shared_telemetry::metrics_handle(),
        db_up: AtomicBool::new(true),
        shutdown: shutdown.clone(),
    });
    state.spawn_db_probe(shutdown.clone());
    limits::Limits::spawn_housekeeping(state.clone(), shutdown.clone());
    shared_telemetry::spawn_nats_connected_gauge(
        state.nats.clone(),
        telemetry::NATS_CONNECTED,
        shutdown.clone(),
    );
    let header_timeout = state.settings.http_header_timeout;
    let metrics_server = match state.settings.metrics_listen {
        Some(addr) => {
            let metrics =
                giftcard_shared::process::bind(addr, "GIFTCARD_API_METRICS_LISTEN").await?;
            tracing::info!(addr = %metrics.local_addr()?, "api metrics listening");
            let router = routes::ops::metrics_router().with_state(state.clone());
            Some(tokio::spawn(server::serve(
                metrics,
                router,
                header_timeout,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    tracing::info!(addr = %listener.local_addr()?, "api listening");
    server::serve(listener, app(state), header_timeout, shutdown).await;
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    tracing::info!("api stopped");
    Ok(())
}

/// The request id header: set on each request (unless the client sent one),
/// echoed on the response, in the logs, and passed on to the worker.
pub const REQUEST_ID: &str = "x-request-id";

/// The router with its middleware (the last layer added runs first).
pub fn app(state: AppState) -> Router {
    use axum::middleware::{from_fn, from_fn_with_state};
    routes::router(state.settings.metrics_listen.is_none())
        .merge(console::router(&state))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(error::ApiError::Internal(anyhow::anyhow!(
                "handler panicked"
            )))
        }))
        .layer(from_fn_with_state(state.clone(), middleware::deadline))
        .layer(from_fn_with_state(state.clone(), limits::shed))
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .layer(PropagateRequestIdLayer::new(HeaderName::from_static(
            REQUEST_ID,
        )))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(from_fn(middleware::request_id))
        .with_state(state)
}

/// The span of one request: method, route template (never the raw path,
/// which can hold an activation code), request id, and the trace it
/// continues.
fn request_span(req: &Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!("http", method = %req.method(), route = middleware::route_of(req),
        request_id = id, trace_id = tracing::field::Empty, purchase_id = tracing::field::Empty);
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    shared_telemetry::continue_trace(&span, header("traceparent"), header("tracestate"));
    span
}
