//! `giftcardctl`: parses the command line and runs it; see the library.

use std::process::ExitCode;

use clap::Parser;
use giftcard_ctl::Cli;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    giftcard_shared::tls::install_crypto_provider();
    let cli = Cli::parse();
    match giftcard_ctl::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.report());
            eprintln!("hint: {}", e.hint());
            ExitCode::from(e.exit_code())
        }
    }
}
