//! The command line: global options and one subcommand tree per area.

use std::path::PathBuf;

use clap::{value_parser, Args, Parser, Subcommand, ValueEnum};
use giftcard_shared::domain::Money;
use reqwest::Url;
use uuid::Uuid;

/// Command line of `giftcardctl`. Not `Debug`: it may hold a token.
#[derive(Parser)]
#[command(
    name = "giftcardctl",
    version,
    about = "Operate and use the gift-card purchase service over its HTTP API",
    after_help = "Authentication: --token/GIFTCARD_TOKEN passes a JWT as is; --as USER and \
                  --admin mint a short-lived token from GIFTCARD_JWT_SECRET.\n\n\
                  Exit codes: 0 success; 1 unexpected; 2 usage (bad arguments, an invalid file, \
                  a request the api rejects as invalid); 3 authentication or permission; \
                  4 not found; 5 conflict or business failure (sold out, insufficient funds, \
                  inactive card, key reused, already resolved, not authentic); 6 unavailable \
                  (503, rate limited, still pending: retry later); 7 network (the api cannot be \
                  reached)."
)]
pub struct Cli {
    /// Base URL of the api.
    #[arg(
        long,
        global = true,
        env = "GIFTCARD_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub api_url: Url,

    /// Bearer token (JWT) to send.
    #[arg(long, global = true, env = "GIFTCARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Mint a user token for USER from GIFTCARD_JWT_SECRET.
    #[arg(
        long = "as",
        global = true,
        value_name = "USER",
        conflicts_with = "admin"
    )]
    pub as_user: Option<String>,

    /// Mint an admin token (subject "admin") from GIFTCARD_JWT_SECRET; with
    /// `token`, mint an admin token for --sub.
    #[arg(long, global = true)]
    pub admin: bool,

    /// Print the api's raw JSON responses instead of human output.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mint a JWT (needs GIFTCARD_JWT_SECRET) and print it on stdout.
    Token(TokenArgs),
    /// Gift cards: the catalog (admin for create/update).
    #[command(subcommand, visible_alias = "card")]
    Cards(CardsCmd),
    /// Activation codes of a gift card (admin).
    #[command(subcommand, visible_alias = "code")]
    Codes(CodesCmd),
    /// Wallets: show your balance, credit a user's wallet (admin).
    #[command(subcommand)]
    Wallet(WalletCmd),
    /// Buy a gift card and wait for the outcome.
    Buy(BuyArgs),
    /// Purchases of the caller.
    #[command(subcommand, visible_alias = "purchases")]
    Purchase(PurchaseCmd),
    /// Dead-lettered purchases (admin).
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// Readiness of the api; with an admin token (--admin or GIFTCARD_TOKEN)
    /// also the workers, partition owners and backlogs.
    Status,
    /// Print a shell completion script, e.g.
    /// `giftcardctl completions bash > /etc/bash_completion.d/giftcardctl`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Subject (user id) of the token; defaults to "admin" with --admin.
    #[arg(long)]
    pub sub: Option<String>,
    /// Lifetime of the token in hours.
    #[arg(long, default_value_t = 24, value_parser = value_parser!(u32).range(1..=8760))]
    pub ttl_hours: u32,
}

#[derive(Debug, Subcommand)]
pub enum CardsCmd {
    /// Create a gift card (admin).
    Create {
        #[arg(long)]
        name: String,
        /// Price charged, e.g. 10.00.
        #[arg(long, value_parser = parse_money)]
        price: Money,
        /// Face value, e.g. 10.00.
        #[arg(long, value_parser = parse_money)]
        value: Money,
    },
    /// List gift cards with their available codes.
    List,
    /// Show one gift card.
    Show { id: Uuid },
    /// Change a gift card's name, price or active flag (admin).
    Update {
        id: Uuid,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_parser = parse_money)]
        price: Option<Money>,
        /// true or false.
        #[arg(long)]
        active: Option<bool>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CodesCmd {
    /// Import activation codes from a CSV file with header `code,expires_on`.
    Import {
        #[arg(long)]
        card: Uuid,
        file: PathBuf,
        /// Rows per request.
        #[arg(long, default_value_t = 1000, value_parser = value_parser!(u32).range(1..=100_000))]
        chunk_size: u32,
    },
    /// Soft-delete an unused activation code.
    Delete {
        #[arg(long)]
        card: Uuid,
        code: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WalletCmd {
    /// Credit a user's wallet (admin); the same reference applies once only.
    Credit {
        #[arg(long)]
        user: String,
        #[arg(long, value_parser = parse_money)]
        amount: Money,
        /// Unique reference of this credit, e.g. a payment id.
        #[arg(long)]
        reference: String,
    },
    /// Show the caller's wallet.
    Show,
}

#[derive(Debug, Args)]
pub struct BuyArgs {
    #[arg(long)]
    pub card: Uuid,
    #[arg(long, default_value_t = 1, value_parser = value_parser!(u8).range(1..=10))]
    pub quantity: u8,
    /// Seconds the api may hold the request for the outcome (Prefer: wait).
    #[arg(long, default_value_t = 5, value_parser = value_parser!(u8).range(0..=30))]
    pub wait: u8,
    /// Idempotency key; a random UUID is generated (and printed) if omitted.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Seconds to poll a purchase that is still pending; 0 disables polling.
    #[arg(long, default_value_t = 30)]
    pub poll_timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum PurchaseCmd {
    /// Show one purchase.
    Show { id: Uuid },
    /// List the caller's purchases, newest first.
    List {
        /// Page size.
        #[arg(long, default_value_t = 20, value_parser = value_parser!(u8).range(1..=100))]
        limit: u8,
        /// Follow next_cursor through every page.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// List dead letters, oldest first (by default those still pending).
    List {
        /// Only the dead letters of this gift card.
        #[arg(long)]
        card: Option<Uuid>,
        /// Which dead letters to list [default: pending].
        #[arg(long, value_enum)]
        state: Option<DlqState>,
        /// Page size (the api's default is 100; 500 with --all).
        #[arg(long, value_parser = value_parser!(u16).range(1..=500))]
        limit: Option<u16>,
        /// Follow next_cursor through every page.
        #[arg(long)]
        all: bool,
    },
    /// Show one dead letter: its fields, message, headers, history and events.
    Inspect { id: Uuid },
    /// Replay one dead letter.
    Replay { id: Uuid },
    /// Replay every pending dead letter (or those of one card), oldest
    /// first, one at a time with progress; re-running it is safe.
    ReplayAll {
        #[arg(long)]
        card: Option<Uuid>,
        /// Let the api replay them all in one request (no progress, no
        /// skip count).
        #[arg(long)]
        server_side: bool,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Discard a dead letter: its purchase fails with DISCARDED.
    Discard {
        id: Uuid,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// How a destructive command is confirmed. Without either flag it asks on
/// a terminal and refuses elsewhere (a script must say `--yes`).
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct Confirm {
    /// Do it without asking.
    #[arg(long, short = 'y', conflicts_with = "dry_run")]
    pub yes: bool,
    /// Show what would be done, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The `state` filter of `dlq list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DlqState {
    /// Waiting for an operator.
    Pending,
    Replayed,
    Discarded,
    All,
}

impl DlqState {
    /// The value of the api's `state` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Replayed => "replayed",
            Self::Discarded => "discarded",
            Self::All => "all",
        }
    }
}

fn parse_money(s: &str) -> Result<Money, String> {
    Money::parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["giftcardctl", "token", "--sub", "alice", "--admin"]).unwrap();
        assert!(cli.admin);
        let cli = Cli::try_parse_from(["giftcardctl", "cards", "list", "--json"]).unwrap();
        assert!(cli.json);
        assert!(Cli::try_parse_from(["giftcardctl", "--as", "a", "--admin", "status"]).is_err());
    }

    #[test]
    fn money_arguments_are_parsed_as_strings_with_two_places() {
        let cli = Cli::try_parse_from([
            "giftcardctl",
            "cards",
            "create",
            "--name",
            "N",
            "--price",
            "10",
            "--value",
            "12.5",
        ])
        .unwrap();
        let Command::Cards(CardsCmd::Create { price, value, .. }) = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(price.to_string(), "10.00");
        assert_eq!(value.to_string(), "12.50");
        assert!(Cli::try_parse_from([
            "giftcardctl",
            "cards",
            "create",
            "--name",
            "N",
            "--price",
            "1.001",
            "--value",
            "1",
        ])
        .is_err());
    }

    fn dlq(args: &[&str]) -> Result<DlqCmd, clap::Error> {
        let argv = ["giftcardctl", "dlq"].iter().chain(args).copied();
        match Cli::try_parse_from(argv)?.command {
            Command::Dlq(cmd) => Ok(cmd),
            other => panic!("wrong command {other:?}"),
        }
    }

    #[test]
    fn dlq_list_takes_a_state_a_limit_up_to_500_and_all() {
        let DlqCmd::List {
            card,
            state,
            limit,
            all,
        } = dlq(&["list", "--state", "all", "--limit", "500", "--all"]).unwrap()
        else {
            panic!("wrong command");
        };
        assert_eq!(
            (card, state, limit, all),
            (None, Some(DlqState::All), Some(500), true)
        );
        let DlqCmd::List {
            state, limit, all, ..
        } = dlq(&["list"]).unwrap()
        else {
            panic!("wrong command");
        };
        assert_eq!((state, limit, all), (None, None, false));
        assert!(dlq(&["list", "--limit", "501"]).is_err());
        assert!(dlq(&["list", "--limit", "0"]).is_err());
        assert!(dlq(&["list", "--state", "resolved"]).is_err());
    }

    #[test]
    fn dlq_replay_all_is_client_side_unless_asked() {
        let card = "7f1a2b3c-0000-4000-8000-000000000001";
        let DlqCmd::ReplayAll {
            card: c,
            server_side,
            confirm,
        } = dlq(&["replay-all", "--card", card]).unwrap()
        else {
            panic!("wrong command");
        };
        assert_eq!(c, Some(card.parse().unwrap()));
        assert!(!server_side);
        assert!(!confirm.yes && !confirm.dry_run, "asks unless told");
        let DlqCmd::ReplayAll { server_side, .. } = dlq(&["replay-all", "--server-side"]).unwrap()
        else {
            panic!("wrong command");
        };
        assert!(server_side);
        let DlqCmd::Discard { confirm, .. } = dlq(&["discard", card, "--yes"]).unwrap() else {
            panic!("wrong command");
        };
        assert!(confirm.yes);
        let DlqCmd::ReplayAll { confirm, .. } = dlq(&["replay-all", "--dry-run"]).unwrap() else {
            panic!("wrong command");
        };
        assert!(confirm.dry_run);
        assert!(dlq(&["discard", card, "--yes", "--dry-run"]).is_err());
        assert!(matches!(
            dlq(&["inspect", card]).unwrap(),
            DlqCmd::Inspect { .. }
        ));
    }
}
