//! `giftcard-worker`: starts telemetry and calls [`giftcard_worker::run_with`].

#[tokio::main]
async fn main() {
    // `--help` and `--version` print and exit before anything starts.
    let settings = giftcard_shared::config::WorkerSettings::from_command_line();
    giftcard_shared::process::main("giftcard-worker", giftcard_worker::run_with(settings)).await;
}
