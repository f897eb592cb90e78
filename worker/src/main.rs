//! `giftcard-worker`: loads configuration, starts telemetry, calls [`giftcard_worker::run`].

use giftcard_shared::config::WorkerSettings;
use giftcard_shared::process;

#[tokio::main]
async fn main() {
    process::main("giftcard-worker", async {
        let settings = WorkerSettings::from_env()?;
        tracing::info!(?settings, "configuration");
        let s = process::start(
            "giftcard-worker",
            &settings.common,
            settings.listen,
            "GIFTCARD_WORKER_LISTEN",
            true,
        )
        .await?;
        giftcard_worker::run(settings, s.listener, s.db, s.nats, s.shutdown).await
    })
    .await;
}
