//! `giftcard-api`: starts telemetry and calls [`giftcard_api::run_with`].

#[tokio::main]
async fn main() {
    // `--help` and `--version` print and exit before anything starts.
    let settings = giftcard_shared::config::ApiSettings::from_command_line();
    giftcard_shared::process::main("giftcard-api", giftcard_api::run_with(settings)).await;
}
