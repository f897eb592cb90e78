//! `giftcard-api`: loads configuration, starts telemetry, calls [`giftcard_api::run`].

use giftcard_shared::config::ApiSettings;
use giftcard_shared::{db, telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() {
    telemetry::init_tracing("giftcard-api");
    if let Err(e) = main_inner().await {
        tracing::error!(error = format!("{e:#}"), "giftcard-api failed");
        eprintln!("giftcard-api: {e:#}");
        std::process::exit(1);
    }
}

async fn main_inner() -> anyhow::Result<()> {
    let settings = ApiSettings::from_env()?;
    tracing::info!(?settings, "configuration");
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} ({e}); set GIFTCARD_API_LISTEN to a free address",
                settings.listen
            )
        })?;
    // Lazy: the api accepts purchases while PostgreSQL is down.
    let db = db::connect(&settings.common, true).await?;
    let nats = async_nats::ConnectOptions::new()
        .name("giftcard-api")
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
    giftcard_api::run(settings, listener, db, nats, shutdown).await
}
