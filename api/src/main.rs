//! `giftcard-api`: loads configuration, starts telemetry, calls [`giftcard_api::run`].

use giftcard_shared::config::ApiSettings;
use giftcard_shared::process;

#[tokio::main]
async fn main() {
    process::main("giftcard-api", async {
        let settings = ApiSettings::from_env()?;
        tracing::info!(?settings, "configuration");
        let s = process::start(
            "giftcard-api",
            &settings.common,
            settings.listen,
            "GIFTCARD_API_LISTEN",
            false,
        )
        .await?;
        giftcard_api::run(settings, s.listener, s.db, s.nats, s.shutdown).await
    })
    .await;
}
