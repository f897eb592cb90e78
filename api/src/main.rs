//! `giftcard-api`: starts telemetry and calls [`giftcard_api::run_from_env`].

#[tokio::main]
async fn main() {
    giftcard_shared::process::main("giftcard-api", giftcard_api::run_from_env()).await;
}
