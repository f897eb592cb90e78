//! `giftcardctl`, the command line for the gift-card purchase API.
//!
//! [`cli`] defines the arguments (global options can also come from the
//! environment); [`run`] resolves the token a command needs ([`auth`]) and
//! hands a [`commands::Ctx`] to the command's module under [`commands`].
//! [`client`] wraps reqwest (base URL, bearer token, request ids, the api's
//! error body), [`model`] holds the resources as read back, [`csv_import`]
//! validates and chunks activation-code files, [`output`] prints tables and
//! `key: value` lines, and [`error`] gives every failure a hint. Tokens and
//! the JWT secret never appear in messages.

pub mod auth;
pub mod cli;
pub mod client;
pub mod commands;
pub mod csv_import;
pub mod error;
pub mod model;
pub mod output;

pub use cli::Cli;
pub use error::CtlError;

use auth::{secret_from_env, Credentials};
use cli::{CardsCmd, Command, WalletCmd};
use client::Client;
use commands::Ctx;
use error::Need;

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    let Cli {
        api_url,
        token,
        as_user,
        admin,
        json,
        command,
    } = cli;
    if let Command::Token(args) = &command {
        let sub = args.sub.as_deref().or(as_user.as_deref());
        return auth::token_command(sub, admin, args.ttl_hours, json);
    }
    if let Command::Completions { shell } = command {
        use clap::CommandFactory;
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "giftcardctl",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let creds = Credentials {
        token,
        as_user,
        admin,
    };
    let token = match needs(&command) {
        Some(need) => Some(creds.resolve(need, secret_from_env().as_deref())?),
        // `status` shows partitions when an admin token is at hand, and
        // only readiness (with a hint) when none was asked for.
        None if matches!(command, Command::Status) => {
            match creds.resolve(Need::Admin, secret_from_env().as_deref()) {
                Ok(t) => Some(t),
                Err(CtlError::MissingToken(_)) => None,
                Err(e) => return Err(e),
            }
        }
        None => None,
    };
    let has_token = token.is_some();
    let ctx = Ctx {
        client: Client::new(api_url, token)?,
        json,
    };
    match command {
        Command::Token(_) | Command::Completions { .. } => unreachable!("handled above"),
        Command::Cards(cmd) => commands::cards::run(&ctx, cmd).await,
        Command::Codes(cmd) => commands::codes::run(&ctx, cmd).await,
        Command::Wallet(cmd) => commands::wallet::run(&ctx, cmd).await,
        Command::Buy(args) => commands::buy::run(&ctx, args).await,
        Command::Purchase(cmd) => commands::purchases::run(&ctx, cmd).await,
        Command::Dlq(cmd) => commands::dlq::run(&ctx, cmd).await,
        Command::Status => commands::status::run(&ctx, has_token).await,
    }
}

/// Which token a command needs, if any.
fn needs(command: &Command) -> Option<Need> {
    match command {
        Command::Token(_) | Command::Status | Command::Completions { .. } => None,
        Command::Cards(CardsCmd::Create { .. } | CardsCmd::Update { .. })
        | Command::Codes(_)
        | Command::Wallet(WalletCmd::Credit { .. })
        | Command::Dlq(_) => Some(Need::Admin),
        Command::Cards(_) | Command::Wallet(_) | Command::Buy(_) | Command::Purchase(_) => {
            Some(Need::User)
        }
    }
}
