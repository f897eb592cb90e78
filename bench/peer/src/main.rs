//! `giftcard-peer --strategy <optimistic|optimistic-random|advisory-lock|skip-locked>
//! --listen 127.0.0.1:PORT`: see the library crate.

use std::process::ExitCode;

use clap::Parser;

/// One runtime thread: the peer's own work is a fraction of a core, and
/// one thread has no work stealing or cross-thread wake-ups (the
/// scheduler's context switches were a fifth of its CPU on two threads).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = giftcard_peer::Cli::parse();
    giftcard_shared::telemetry::init_tracing("giftcard-peer");
    match giftcard_peer::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "giftcard-peer failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
