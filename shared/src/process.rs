//! What every binary does around its `run(...)`: bind the listener, connect
//! to PostgreSQL and NATS with errors that say what to do, wire the
//! shutdown signal, and report a failure on stderr with exit code 1.

use std::future::Future;
use std::net::SocketAddr;

use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::CommonSettings;
use crate::nats::Identity;
use crate::{db, telemetry};

/// The connections and listener a service's `run` takes.
pub struct Started {
    pub listener: TcpListener,
    pub db: DatabaseConnection,
    pub nats: async_nats::Client,
    /// Cancelled on SIGTERM or Ctrl-C.
    pub shutdown: CancellationToken,
}

/// Binds `addr` (named by `listen_var` in errors), connects lazily to
/// PostgreSQL (a service starts while it is down) and to NATS as `identity`.
pub async fn start(
    identity: Identity,
    common: &CommonSettings,
    addr: SocketAddr,
    listen_var: &str,
) -> anyhow::Result<Started> {
    let listener = bind(addr, listen_var).await?;
    let db = db::connect(common, true).await?;
    let nats = crate::nats::connect(&common.nats, identity).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(telemetry::cancel_on_signal(shutdown.clone()));
    Ok(Started {
        listener,
        db,
        nats,
        shutdown,
    })
}

/// Binds `addr`; the error names `listen_var`.
pub async fn bind(addr: SocketAddr, listen_var: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} ({e}); set {listen_var} to a free address")
    })
}

/// Runs `future` to completion on a multi-threaded Tokio runtime (what
/// `#[tokio::main]` does, after the settings were read).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
        .block_on(future)
}

/// Runs a binary's body after starting tracing; on error logs it, prints it
/// on stderr and exits with code 1.
pub async fn main<F: Future<Output = anyhow::Result<()>>>(service: &str, body: F) {
    crate::tls::install_crypto_provider();
    telemetry::init_tracing(service);
    let result = body.await;
    telemetry::shutdown_tracing();
    if let Err(e) = result {
        tracing::error!(error = format!("{e:#}"), "{service} failed");
        eprintln!("{service}: {e:#}");
        std::process::exit(1);
    }
}
