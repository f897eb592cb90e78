//! Everything that can go wrong, each with a hint saying what to do next.
//!
//! No variant ever carries a token or the JWT secret.

use std::path::PathBuf;

use uuid::Uuid;

/// What a command needs from the caller's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    User,
    Admin,
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The api answered with its `{"error": {"code", "message"}}` body.
    #[error("HTTP {status} {code}: {message}{}", request_id_suffix(.request_id))]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// The api answered with something the contract does not describe.
    #[error("unexpected HTTP {status} response to {what}: {detail}{}", request_id_suffix(.request_id))]
    Unexpected {
        status: u16,
        what: String,
        detail: String,
        request_id: Option<String>,
    },
    #[error("{what} failed")]
    Transport {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("this command needs {}, and no token was given", match .0 { Need::User => "a user token", Need::Admin => "an admin token" })]
    MissingToken(Need),
    #[error("GIFTCARD_JWT_SECRET is not set, and {purpose} mints the token with it")]
    MissingSecret { purpose: &'static str },
    #[error("GIFTCARD_JWT_SECRET is shorter than 32 bytes, so it cannot be the api's secret")]
    WeakSecret,
    #[error("could not mint a token")]
    Mint(#[source] anyhow::Error),
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}; nothing was sent", .path.display())]
    InvalidCsv { path: PathBuf, message: String },
    #[error("{}", interrupted_message(*.first, *.last, *.total, *.inserted, *.duplicates, .cause))]
    ImportInterrupted {
        first: usize,
        last: usize,
        total: usize,
        inserted: u64,
        duplicates: u64,
        cause: Box<CtlError>,
    },
    /// `dlq replay-all` stopped at a dead letter it could not replay.
    #[error(
        "replay-all stopped at dead letter {id} ({position} of {total}): {}; {replayed} replayed \
         and {skipped} skipped (already resolved) before it",
        .cause.report()
    )]
    ReplayInterrupted {
        id: Uuid,
        /// 1-based position of `id` in the listed order.
        position: usize,
        total: usize,
        replayed: u64,
        skipped: u64,
        card: Option<Uuid>,
        cause: Box<CtlError>,
    },
    #[error("purchase {id} {status}: {code}: {message}")]
    PurchaseFailed {
        id: Uuid,
        status: String,
        code: String,
        message: String,
    },
    #[error("purchase {id} is still pending after polling for {secs} s")]
    StillPending { id: Uuid, secs: u64 },
    #[error("the api at {url} is not ready (HTTP {status}, status {state:?})")]
    NotReady {
        url: String,
        status: u16,
        state: String,
    },
}

fn request_id_suffix(id: &Option<String>) -> String {
    id.as_ref()
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default()
}

fn interrupted_message(
    first: usize,
    last: usize,
    total: usize,
    inserted: u64,
    duplicates: u64,
    cause: &CtlError,
) -> String {
    let sent = if first > 1 {
        format!(
            "rows 1..={} were already sent ({inserted} inserted, {duplicates} duplicates)",
            first - 1
        )
    } else {
        "no rows were imported".to_owned()
    };
    format!(
        "import stopped at the chunk of rows {first}..={last} of {total}: {}; {sent}; rows \
         {first}..={total} were not confirmed",
        cause.report()
    )
}

const MINT_USER: &str =
    "pass --as USER with GIFTCARD_JWT_SECRET set, or set GIFTCARD_TOKEN (or --token) to a user JWT";
const MINT_ADMIN: &str =
    "pass --admin with GIFTCARD_JWT_SECRET set, or set GIFTCARD_TOKEN (or --token) to an admin JWT";

impl CtlError {
    /// The message followed by its causes, `: `-separated.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = cause.source();
        }
        out
    }

    /// The process exit code of this failure's class (documented in
    /// `giftcardctl --help` and the README), so scripts can tell "sold out"
    /// from "network down".
    pub fn exit_code(&self) -> u8 {
        self.class() as u8
    }

    /// The class of this failure.
    pub fn class(&self) -> ExitClass {
        match self {
            Self::Api { status, code, .. } => api_class(*status, code),
            Self::PurchaseFailed { code, .. } => api_class(409, code),
            Self::Unexpected { .. } => ExitClass::Other,
            Self::Transport { .. } => ExitClass::Network,
            Self::MissingToken(_)
            | Self::MissingSecret { .. }
            | Self::WeakSecret
            | Self::Mint(_) => ExitClass::Auth,
            Self::Usage(_) | Self::Read { .. } | Self::InvalidCsv { .. } => ExitClass::Usage,
            Self::ImportInterrupted { cause, .. } | Self::ReplayInterrupted { cause, .. } => {
                cause.class()
            }
            Self::StillPending { .. } | Self::NotReady { .. } => ExitClass::Unavailable,
        }
    }

    /// One line telling the user what to try next.
    pub fn hint(&self) -> String {
        match self {
            Self::Api { code, .. } => api_hint(code).to_owned(),
            Self::PurchaseFailed { code, .. } => api_hint(code).to_owned(),
            Self::Unexpected { .. } => {
                "the api's answer does not match the v1 contract; check --api-url and the api's logs"
                    .to_owned()
            }
            Self::Transport { .. } => {
                "check that the api is running and that --api-url / GIFTCARD_API_URL points at it"
                    .to_owned()
            }
            Self::MissingToken(Need::User) => MINT_USER.to_owned(),
            Self::MissingToken(Need::Admin) => MINT_ADMIN.to_owned(),
            Self::MissingSecret { purpose: "the token command" } => {
                "export GIFTCARD_JWT_SECRET with the api's secret (at least 32 bytes)".to_owned()
            }
            Self::MissingSecret { .. } | Self::WeakSecret => {
                "export GIFTCARD_JWT_SECRET with the api's secret (at least 32 bytes), or pass a JWT \
                 with --token / GIFTCARD_TOKEN"
                    .to_owned()
            }
            Self::Mint(_) => "check GIFTCARD_JWT_SECRET and the subject".to_owned(),
            Self::Usage(_) => "run with --help for usage".to_owned(),
            Self::Read { .. } => "check the path and its permissions".to_owned(),
            Self::InvalidCsv { .. } => {
                "fix the row and run again; the file needs the header `code,expires_on`, codes of \
                 1 to 64 visible ASCII characters, and expires_on empty, RFC 3339 or YYYY-MM-DD"
                    .to_owned()
            }
            Self::ImportInterrupted { cause, .. } => format!(
                "re-running the same import is safe: codes already imported are skipped as duplicates ({})",
                cause.hint()
            ),
            Self::ReplayInterrupted { card, cause, .. } => format!(
                "re-running `giftcardctl --admin dlq replay-all{}` is safe: it lists again and \
                 replays only the dead letters still pending ({})",
                card.map(|c| format!(" --card {c}")).unwrap_or_default(),
                cause.hint()
            ),
            Self::StillPending { id, .. } => format!(
                "the purchase is queued and will finish; check it later with `giftcardctl purchase show {id}`"
            ),
            Self::NotReady { .. } => {
                "the api cannot reach NATS; check the api's logs and its NATS connection".to_owned()
            }
        }
    }
}

/// What kind of failure ended a command: its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitClass {
    /// Anything the classes below do not cover (an answer outside the contract).
    Other = 1,
    /// Bad arguments, an unreadable or invalid file, a request the api
    /// rejects as invalid (400, 413, 422).
    Usage = 2,
    /// No usable token or secret, or the api refused it (401, 403).
    Auth = 3,
    /// 404: no such card, purchase or dead letter.
    NotFound = 4,
    /// A conflict or business failure (409, an idempotency key reused).
    Conflict = 5,
    /// Try again later: 503, 429, a purchase still pending.
    Unavailable = 6,
    /// The api could not be reached at all.
    Network = 7,
}

fn api_class(status: u16, code: &str) -> ExitClass {
    match (status, code) {
        (_, "IDEMPOTENCY_KEY_REUSED") => ExitClass::Conflict,
        (401 | 403, _) => ExitClass::Auth,
        (404, _) => ExitClass::NotFound,
        (409, _) => ExitClass::Conflict,
        (429 | 502 | 503 | 504, _) => ExitClass::Unavailable,
        (400..=499, _) => ExitClass::Usage,
        _ => ExitClass::Other,
    }
}

fn api_hint(code: &str) -> &'static str {
    match code {
        "UNAUTHENTICATED" => {
            "the token was rejected: mint a fresh one with --as/--admin (GIFTCARD_JWT_SECRET must be \
             the api's), or check GIFTCARD_TOKEN / --token"
        }
        "FORBIDDEN" => MINT_ADMIN,
        "NOT_FOUND" => "check the id (purchases of other users read as not found)",
        "GIFT_CARD_NOT_FOUND" => "check the card id; `giftcardctl cards list` lists the cards",
        "VALIDATION_FAILED" => "fix the request as the message says",
        "PAYLOAD_TOO_LARGE" => "send less at once, e.g. a smaller --chunk-size",
        "IDEMPOTENCY_KEY_REUSED" => {
            "that key belongs to a purchase with another card or quantity; use a new \
             --idempotency-key, or omit it to get a fresh one"
        }
        "ACTIVATION_CODES_NOT_AVAILABLE" => {
            "import codes with `giftcardctl --admin codes import --card ID FILE.csv`"
        }
        "INSUFFICIENT_FUNDS" => {
            "credit the wallet with `giftcardctl --admin wallet credit --user USER --amount AMOUNT --reference REF`"
        }
        "GIFT_CARD_INACTIVE" => {
            "activate the card with `giftcardctl --admin cards update ID --active true`"
        }
        "DISCARDED" => "an operator discarded it after it was dead-lettered; buy again with a new key",
        "DEAD_LETTER_RESOLVED" => {
            "it was already replayed or discarded; `giftcardctl --admin dlq inspect ID` shows its events"
        }
        "DEAD_LETTERED" => "an operator can replay it with `giftcardctl --admin dlq replay`",
        "DEAD_LETTER_NOT_AUTHENTIC" => {
            "no api signed this message (a forgery, or a retired GIFTCARD_MESSAGE_SECRET): \
             discard it with `giftcardctl --admin dlq discard ID`"
        }
        "RATE_LIMITED" => "too many requests for this user; wait as long as Retry-After says",
        "SERVICE_UNAVAILABLE" => {
            "the api could not durably accept the request; retry shortly (`giftcardctl status` shows readiness)"
        }
        _ => "the request id identifies this request in the api's logs",
    }
}
