//! `giftcard-worker`: starts telemetry and calls [`giftcard_worker::run_from_env`].

#[tokio::main]
async fn main() {
    giftcard_shared::process::main("giftcard-worker", giftcard_worker::run_from_env()).await;
}
