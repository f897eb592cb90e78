//! `giftcard-worker`: loads configuration, starts telemetry, calls [`giftcard_worker::run`].

use giftcard_shared::config::WorkerSettings;
use giftcard_shared::{db, telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    telemetry::init_tracing("giftcard-worker");
    if let Err(e) = main_inner().await {
        tracing::error!(error = format!("{e:#}"), "giftcard-worker failed");
        eprintln!("giftcard-worker: {e:#}");
        std::process::exit(1);
    }
}

async fn main_inner() -> anyhow::Result<()> {
    let settings = WorkerSettings::from_env()?;
    tracing::info!(?settings, "configuration");
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} ({e}); set GIFTCARD_WORKER_LISTEN to a free address",
                settings.listen
            )
        })?;
    // Lazy: the worker starts while PostgreSQL is down and retries batches.
    let db = db::connect(&settings.common, true).await?;
    let nats = async_nats::ConnectOptions::new()
        .name("giftcard-worker")
        .connect(&settings.common.nats_url)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach NATS at {} ({e}); start it (./scripts/stack.sh) or fix NATS_URL",
                settings.common.nats_url
            )
        })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(telemetry::cancel_on_signal(shutdown.clone()));
    giftcard_worker::run(settings, listener, db, nats, shutdown).await
}
