//! Configuration: one place for every setting's environment variable,
//! default, allowed range and help.
//!
//! Each binary's settings are a `clap` parser whose arguments all read an
//! environment variable (`env = …`), so `giftcard-api --help` lists every
//! setting with its variable and default, a command-line flag can override
//! one for a quick experiment, and README.md's configuration table is
//! checked against these definitions by a test. Values are validated at
//! start; a bad one stops the process with a message that names the
//! variable and what to set. `Debug` output redacts secrets (the JWT and
//! message secrets, NATS passwords and tokens, any password in
//! `DATABASE_URL`), and `--help` never prints a secret's current value.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

/// A configuration problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// A secret string: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// A database URL whose password is redacted in `Debug`.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // postgres://user:password@host/db -> postgres://user:***@host/db
        let s = &self.0;
        match (s.find("://"), s.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let creds = &s[scheme + 3..at];
                let user = creds.split(':').next().unwrap_or("");
                write!(f, "\"{}{}:***{}\"", &s[..scheme + 3], user, &s[at..])
            }
            _ => write!(f, "{s:?}"),
        }
    }
}

// Secrets and the database URL are taken as they are and checked in
// `validated()`: clap's own errors quote the offending value, which must
// never happen to a secret.
fn database_url(s: &str) -> Result<DatabaseUrl, String> {
    Ok(DatabaseUrl::new(s))
}

fn secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s))
}

fn check_database_url(url: &DatabaseUrl) -> Result<(), ConfigError> {
    let s = url.expose();
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        return Ok(());
    }
    Err(ConfigError(
        "DATABASE_URL must start with postgres:// or postgresql://, such as \
         postgres://giftcard@127.0.0.1:5432/giftcard"
            .into(),
    ))
}

/// Checks that `secret` (named `var`) has at least 32 bytes.
fn check_secret(var: &str, secret: Option<&Secret>) -> Result<(), ConfigError> {
    match secret {
        Some(s) if s.expose().len() < 32 => Err(ConfigError(format!(
            "{var} is too short: use at least 32 bytes (`openssl rand -hex 32`)"
        ))),
        _ => Ok(()),
    }
}

/// `GIFTCARD_PARTITIONS`: default and range (services and provisioning).
const DEFAULT_PARTITIONS: u16 = 64;
fn partitions() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..=1024)
}

/// `GIFTCARD_LEASE_TTL_MS`: default and range (workers and provisioning).
const DEFAULT_LEASE_TTL_MS: &str = "6000";
fn lease_ttl() -> impl Fn(&str) -> Result<Duration, String> + Clone {
    millis(1000, 300_000)
}

/// A value parser for a count of milliseconds in `lo..=hi`, as a `Duration`.
fn millis(lo: u64, hi: u64) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |s| {
        let v: u64 = s
            .trim()
            .parse()
            .map_err(|_| format!("expected milliseconds {lo}..={hi}"))?;
        if !(lo..=hi).contains(&v) {
            return Err(format!("out of range: expected {lo}..={hi} milliseconds"));
        }
        Ok(Duration::from_millis(v))
    }
}

/// A value parser for a count of seconds in `lo..=hi`, as a `Duration`.
fn secs(lo: u64, hi: u64) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |s| {
        millis(lo * 1000, hi * 1000)(&format!("{}000", s.trim()))
            .map_err(|_| format!("expected seconds {lo}..={hi}"))
    }
}

/// A value parser for a count of `unit`s (`secs` seconds each) in
/// `lo..=hi`, as a `Duration`.
fn count_of(
    unit: &'static str,
    secs: u64,
    lo: u64,
    hi: u64,
) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    move |s| {
        let v: u64 = s
            .trim()
            .parse()
            .map_err(|_| format!("expected {unit} {lo}..={hi}"))?;
        if !(lo..=hi).contains(&v) {
            return Err(format!("out of range: expected {lo}..={hi} {unit}"));
        }
        Ok(Duration::from_secs(v * secs))
    }
}

fn hours(lo: u64, hi: u64) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    count_of("hours", 3600, lo, hi)
}

fn days(lo: u64, hi: u64) -> impl Fn(&str) -> Result<Duration, String> + Clone {
    count_of("days", 24 * 3600, lo, hi)
}

/// How a process connects to NATS: servers, credentials and TLS.
#[derive(Debug, Clone, Args)]
pub struct NatsSettings {
    /// NATS server URL, or a comma-separated list of servers of one
    /// cluster; `tls://` URLs require TLS.
    #[arg(
        id = "nats_url",
        long = "nats-url",
        env = "NATS_URL",
        value_name = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
    /// User name (with NATS_PASSWORD).
    #[arg(long = "nats-user", env = "NATS_USER", value_name = "NATS_USER")]
    pub user: Option<String>,
    /// Password of NATS_USER.
    #[arg(long = "nats-password", env = "NATS_PASSWORD", value_name = "NATS_PASSWORD",
          value_parser = secret, hide_env_values = true)]
    pub password: Option<Secret>,
    /// Authentication token (instead of a user).
    #[arg(long = "nats-token", env = "NATS_TOKEN", value_name = "NATS_TOKEN",
          value_parser = secret, hide_env_values = true)]
    pub token: Option<Secret>,
    /// A `.creds` file (user JWT and nkey seed) for NATS servers in
    /// operator/JWT mode.
    #[arg(
        long = "nats-creds-file",
        env = "NATS_CREDS_FILE",
        value_name = "NATS_CREDS_FILE"
    )]
    pub creds_file: Option<PathBuf>,
    /// A file holding a user nkey seed (`SU…`) for nkey authentication.
    #[arg(
        long = "nats-nkey-seed-file",
        env = "NATS_NKEY_SEED_FILE",
        value_name = "NATS_NKEY_SEED_FILE"
    )]
    pub nkey_seed_file: Option<PathBuf>,
    /// PEM file of the CA(s) that signed the NATS servers' certificates;
    /// turns TLS on.
    #[arg(
        long = "nats-tls-ca-file",
        env = "NATS_TLS_CA_FILE",
        value_name = "NATS_TLS_CA_FILE"
    )]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (with NATS_TLS_KEY_FILE) for servers that
    /// verify clients.
    #[arg(
        long = "nats-tls-cert-file",
        env = "NATS_TLS_CERT_FILE",
        value_name = "NATS_TLS_CERT_FILE"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of NATS_TLS_CERT_FILE.
    #[arg(
        long = "nats-tls-key-file",
        env = "NATS_TLS_KEY_FILE",
        value_name = "NATS_TLS_KEY_FILE"
    )]
    pub tls_key_file: Option<PathBuf>,
}

impl NatsSettings {
    /// Plain, unauthenticated settings for `url` (tests, tools).
    pub fn plain(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            user: None,
            password: None,
            token: None,
            creds_file: None,
            nkey_seed_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }

    /// With a user and password.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(Secret::new(password));
        self
    }

    /// The servers of [`NatsSettings::url`].
    pub fn servers(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Whether TLS is required (a `tls://` URL or a CA file).
    pub fn tls(&self) -> bool {
        self.tls_ca_file.is_some() || self.servers().iter().any(|s| s.starts_with("tls://"))
    }

    /// Checks that the credentials and TLS files form one consistent choice.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let methods = [
            (
                "NATS_USER/NATS_PASSWORD",
                self.user.is_some() || self.password.is_some(),
            ),
            ("NATS_TOKEN", self.token.is_some()),
            ("NATS_CREDS_FILE", self.creds_file.is_some()),
            ("NATS_NKEY_SEED_FILE", self.nkey_seed_file.is_some()),
        ];
        let chosen: Vec<&str> = methods.iter().filter(|m| m.1).map(|m| m.0).collect();
        if chosen.len() > 1 {
            return Err(ConfigError(format!(
                "{} are all set: choose one way to authenticate to NATS and unset the others",
                chosen.join(" and ")
            )));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(ConfigError(
                "NATS_USER and NATS_PASSWORD go together: set both, or neither".into(),
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError(
                "NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together: set both, or neither".into(),
            ));
        }
        if self.servers().is_empty() {
            return Err(ConfigError(
                "NATS_URL names no server: set it to e.g. nats://127.0.0.1:4222".into(),
            ));
        }
        for (var, file) in [
            ("NATS_CREDS_FILE", &self.creds_file),
            ("NATS_NKEY_SEED_FILE", &self.nkey_seed_file),
            ("NATS_TLS_CA_FILE", &self.tls_ca_file),
            ("NATS_TLS_CERT_FILE", &self.tls_cert_file),
            ("NATS_TLS_KEY_FILE", &self.tls_key_file),
        ] {
            if let Some(path) = file {
                if let Err(e) = std::fs::metadata(path) {
                    return Err(ConfigError(format!(
                        "{var}={} cannot be read ({e}): fix the path or unset it",
                        path.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Settings every service shares.
#[derive(Debug, Clone, Args)]
pub struct CommonSettings {
    /// PostgreSQL URL, e.g. postgres://giftcard@127.0.0.1:5432/giftcard
    /// (./scripts/stack.sh starts one for you).
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL",
          value_parser = database_url, hide_env_values = true)]
    pub database_url: DatabaseUrl,
    #[command(flatten)]
    pub nats: NatsSettings,
    /// Partitions of the purchase stream; must match the stream (a mismatch
    /// is a startup error).
    #[arg(long, env = "GIFTCARD_PARTITIONS", value_name = "GIFTCARD_PARTITIONS",
          default_value_t = DEFAULT_PARTITIONS, value_parser = partitions())]
    pub partitions: u16,
    /// PostgreSQL pool size per process.
    #[arg(long, env = "GIFTCARD_DB_MAX_CONNECTIONS", value_name = "GIFTCARD_DB_MAX_CONNECTIONS",
          default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,
}

impl CommonSettings {
    /// Checks the database URL and the NATS settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_database_url(&self.database_url)?;
        self.nats.validate()
    }
}

/// The secret purchase messages are signed with, and during a rotation the
/// one being rotated out.
#[derive(Debug, Clone, Args)]
pub struct MessageKeys {
    /// HMAC-SHA256 key that signs (api) and verifies (worker) every
    /// purchase message; at least 32 bytes, the same on every api and
    /// worker (required).
    #[arg(long, env = "GIFTCARD_MESSAGE_SECRET", value_name = "GIFTCARD_MESSAGE_SECRET",
          value_parser = secret, hide_env_values = true)]
    pub message_secret: Option<Secret>,
    /// During a rotation only: the secret being rotated out, whose
    /// signatures are still accepted (see docs/security.md).
    #[arg(long, env = "GIFTCARD_MESSAGE_PREVIOUS_SECRET",
          value_name = "GIFTCARD_MESSAGE_PREVIOUS_SECRET",
          value_parser = secret, hide_env_values = true)]
    pub message_previous_secret: Option<Secret>,
}

impl MessageKeys {
    /// The two secrets, with the current one required.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_secret("GIFTCARD_MESSAGE_SECRET", self.message_secret.as_ref())?;
        check_secret(
            "GIFTCARD_MESSAGE_PREVIOUS_SECRET",
            self.message_previous_secret.as_ref(),
        )?;
        let Some(current) = &self.message_secret else {
            return Err(ConfigError(
                "GIFTCARD_MESSAGE_SECRET is not set: set it to the same random string of at \
                 least 32 bytes on every api and worker (`openssl rand -hex 32`)"
                    .into(),
            ));
        };
        if self.message_previous_secret.as_ref() == Some(current) {
            return Err(ConfigError(
                "GIFTCARD_MESSAGE_PREVIOUS_SECRET equals GIFTCARD_MESSAGE_SECRET: set it to \
                 the secret being rotated out, or unset it"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Keys from plain strings (tests, tools).
    pub fn new(current: &str, previous: Option<&str>) -> Self {
        Self {
            message_secret: Some(Secret::new(current)),
            message_previous_secret: previous.map(Secret::new),
        }
    }
}

/// Settings of `giftcard-api`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "giftcard-api",
    version,
    about = "The gift-card HTTP api: accepts purchases, publishes them to NATS JetStream, waits for the worker's reply.",
    long_about = None,
    after_help = "Every setting is read from the environment variable shown; a flag overrides it."
)]
pub struct ApiSettings {
    #[command(flatten)]
    pub common: CommonSettings,
    #[command(flatten)]
    pub keys: MessageKeys,
    /// HS256 secret of the bearer tokens, at least 32 bytes (required).
    #[arg(long, env = "GIFTCARD_JWT_SECRET", value_name = "GIFTCARD_JWT_SECRET",
          value_parser = secret, hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// During a rotation only: the JWT secret being rotated out, whose
    /// tokens are still accepted (docs/operations.md, section 4).
    #[arg(long, env = "GIFTCARD_JWT_PREVIOUS_SECRET", value_name = "GIFTCARD_JWT_PREVIOUS_SECRET",
          value_parser = secret, hide_env_values = true)]
    pub jwt_previous_secret: Option<Secret>,
    /// Listen address of the HTTP api.
    #[arg(
        long,
        env = "GIFTCARD_API_LISTEN",
        value_name = "GIFTCARD_API_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Listen address of `/metrics` alone; unset, `/metrics` is served on
    /// GIFTCARD_API_LISTEN. Set it where an Ingress publishes the api.
    #[arg(
        long,
        env = "GIFTCARD_API_METRICS_LISTEN",
        value_name = "GIFTCARD_API_METRICS_LISTEN"
    )]
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds a purchase waits for its outcome without `Prefer`.
    #[arg(long = "default-wait-secs", env = "GIFTCARD_DEFAULT_WAIT_SECS",
          value_name = "GIFTCARD_DEFAULT_WAIT_SECS", default_value = "5", value_parser = secs(0, 30))]
    pub default_wait: Duration,
    /// Milliseconds to wait for JetStream's PubAck before answering 503.
    #[arg(long = "publish-timeout-ms", env = "GIFTCARD_PUBLISH_TIMEOUT_MS",
          value_name = "GIFTCARD_PUBLISH_TIMEOUT_MS", default_value = "5000",
          value_parser = millis(100, 60_000))]
    pub publish_timeout: Duration,
    /// Purchases per second one user may send to this api replica
    /// (sustained; bursts of twice that); more are answered 429 with
    /// Retry-After. 0 turns the limit off.
    #[arg(long, env = "GIFTCARD_USER_RATE_LIMIT", value_name = "GIFTCARD_USER_RATE_LIMIT",
          default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub user_rate_limit: u32,
    /// Requests under /v1 this replica works on at once; more are answered
    /// 503 with Retry-After at once (load shedding).
    #[arg(long, env = "GIFTCARD_MAX_IN_FLIGHT", value_name = "GIFTCARD_MAX_IN_FLIGHT",
          default_value_t = 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_in_flight: usize,
    /// Purchase requests this replica holds open waiting for their outcome;
    /// beyond it a purchase is answered 202 as soon as it is queued.
    #[arg(long, env = "GIFTCARD_MAX_WAITING_PURCHASES", value_name = "GIFTCARD_MAX_WAITING_PURCHASES",
          default_value_t = 768,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=1_000_000))]
    pub max_waiting_purchases: usize,
    /// Seconds a client has to send a request's headers; an idle
    /// keep-alive connection is closed after as long.
    #[arg(long = "http-header-timeout-secs", env = "GIFTCARD_HTTP_HEADER_TIMEOUT_SECS",
          value_name = "GIFTCARD_HTTP_HEADER_TIMEOUT_SECS", default_value = "30",
          value_parser = secs(1, 3600))]
    pub http_header_timeout: Duration,
}

impl ApiSettings {
    /// Reads the settings from the command line and the environment;
    /// `--help` and `--version` print and exit here. Call it before any
    /// thread starts: it unsets the settings' variables that are set but
    /// empty (see [`unset_empty_variables`]).
    pub fn from_command_line() -> Self {
        unset_empty_variables(&<Self as clap::CommandFactory>::command());
        <Self as Parser>::parse()
    }

    /// Reads the settings from the environment only (no command line).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::try_parse_from(["giftcard-api"])
            .map_err(|e| ConfigError(e.to_string()))?
            .validated()
    }

    /// Cross-setting checks clap cannot express.
    pub fn validated(self) -> Result<Self, ConfigError> {
        self.common.validate()?;
        self.keys.validate()?;
        check_secret("GIFTCARD_JWT_SECRET", self.jwt_secret.as_ref())?;
        check_secret(
            "GIFTCARD_JWT_PREVIOUS_SECRET",
            self.jwt_previous_secret.as_ref(),
        )?;
        let Some(current) = &self.jwt_secret else {
            return Err(ConfigError(
                "GIFTCARD_JWT_SECRET is not set: set it to a random string of at least 32 \
                 bytes, e.g. `openssl rand -hex 32`"
                    .into(),
            ));
        };
        if self.jwt_previous_secret.as_ref() == Some(current) {
            return Err(ConfigError(
                "GIFTCARD_JWT_PREVIOUS_SECRET equals GIFTCARD_JWT_SECRET: set it to the \
                 secret being rotated out, or unset it"
                    .into(),
            ));
        }
        Ok(self)
    }

    /// The JWT secret (present once [`ApiSettings::validated`]).
    pub fn jwt_secret(&self) -> &Secret {
        self.jwt_secret
            .as_ref()
            .expect("validated settings have a JWT secret")
    }
}

/// Settings of `giftcard-worker`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "giftcard-worker",
    version,
    about = "The gift-card worker: owns partitions of the purchase stream, decides each card's purchases in order, one PostgreSQL transaction per batch.",
    long_about = None,
    after_help = "Every setting is read from the environment variable shown; a flag overrides it."
)]
pub struct WorkerSettings {
    #[command(flatten)]
    pub common: CommonSettings,
    #[command(flatten)]
    pub keys: MessageKeys,
    /// Listen address of the worker's `/healthz`, `/readyz` and `/metrics`.
    #[arg(
        long,
        env = "GIFTCARD_WORKER_LISTEN",
        value_name = "GIFTCARD_WORKER_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    pub listen: SocketAddr,
    /// Most messages in one transaction.
    #[arg(long, env = "GIFTCARD_BATCH_SIZE", value_name = "GIFTCARD_BATCH_SIZE",
          default_value_t = 128,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub batch_size: usize,
    /// Attempts of a message whose statement keeps failing while the rest of
    /// its batch succeeds, before it is dead-lettered.
    #[arg(long, env = "GIFTCARD_MAX_ATTEMPTS", value_name = "GIFTCARD_MAX_ATTEMPTS",
          default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// First retry delay in milliseconds (doubles each attempt, with jitter).
    #[arg(long = "retry-base-ms", env = "GIFTCARD_RETRY_BASE_MS",
          value_name = "GIFTCARD_RETRY_BASE_MS", default_value = "200", value_parser = millis(1, 60_000))]
    pub retry_base: Duration,
    /// Retry delay cap in milliseconds.
    #[arg(long = "retry-max-ms", env = "GIFTCARD_RETRY_MAX_MS",
          value_name = "GIFTCARD_RETRY_MAX_MS", default_value = "10000", value_parser = millis(1, 600_000))]
    pub retry_max: Duration,
    /// Seconds after which a silent worker's unacknowledged messages are
    /// redelivered.
    #[arg(long = "ack-wait-secs", env = "GIFTCARD_ACK_WAIT_SECS",
          value_name = "GIFTCARD_ACK_WAIT_SECS", default_value = "15", value_parser = secs(5, 600))]
    pub ack_wait: Duration,
    /// Milliseconds after its last renewal that a partition lease (and a
    /// worker's registration) expires; must equal the lease bucket's age set
    /// by `giftcard-migrate nats`.
    #[arg(long = "lease-ttl-ms", env = "GIFTCARD_LEASE_TTL_MS",
          value_name = "GIFTCARD_LEASE_TTL_MS", default_value = DEFAULT_LEASE_TTL_MS,
          value_parser = lease_ttl())]
    pub lease_ttl: Duration,
    /// Lease renewal and rebalancing period in milliseconds (at most a third
    /// of the TTL).
    #[arg(long = "lease-renew-ms", env = "GIFTCARD_LEASE_RENEW_MS",
          value_name = "GIFTCARD_LEASE_RENEW_MS", default_value = "1000", value_parser = millis(100, 100_000))]
    pub lease_renew: Duration,
    /// A batch statement running longer (milliseconds) fails its attempt.
    #[arg(long = "statement-timeout-ms", env = "GIFTCARD_STATEMENT_TIMEOUT_MS",
          value_name = "GIFTCARD_STATEMENT_TIMEOUT_MS", default_value = "5000",
          value_parser = millis(100, 600_000))]
    pub statement_timeout: Duration,
    /// This replica's name in leases, fences and `giftcardctl status`
    /// (1 to 64 letters, digits, '-' or '_'); default `<hostname>-<random>`.
    #[arg(long, env = "GIFTCARD_WORKER_ID", value_name = "GIFTCARD_WORKER_ID",
          value_parser = worker_id)]
    pub worker_id: Option<String>,
}

fn worker_id(s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("use 1 to 64 letters, digits, '-' or '_'".into());
    }
    Ok(s.to_owned())
}

impl WorkerSettings {
    /// Reads the settings from the command line and the environment;
    /// `--help` and `--version` print and exit here. Call it before any
    /// thread starts: it unsets the settings' variables that are set but
    /// empty (see [`unset_empty_variables`]).
    pub fn from_command_line() -> Self {
        unset_empty_variables(&<Self as clap::CommandFactory>::command());
        <Self as Parser>::parse()
    }

    /// Reads the settings from the environment only (no command line).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::try_parse_from(["giftcard-worker"])
            .map_err(|e| ConfigError(e.to_string()))?
            .validated()
    }

    /// Cross-setting checks clap cannot express; fills in the worker id.
    pub fn validated(mut self) -> Result<Self, ConfigError> {
        self.common.validate()?;
        self.keys.validate()?;
        if self.lease_renew > self.lease_ttl / 3 {
            return Err(ConfigError(format!(
                "GIFTCARD_LEASE_RENEW_MS={} is more than a third of GIFTCARD_LEASE_TTL_MS={}: \
                 lower it to at most {}",
                self.lease_renew.as_millis(),
                self.lease_ttl.as_millis(),
                self.lease_ttl.as_millis() / 3
            )));
        }
        self.worker_id.get_or_insert_with(default_worker_id);
        Ok(self)
    }

    /// Defaults for everything but the connections and the message keys
    /// (tests and embedding).
    pub fn with_defaults(common: CommonSettings, keys: MessageKeys) -> Self {
        let mut s: Self = defaults("giftcard-worker");
        s.common = common;
        s.keys = keys;
        s.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        s.worker_id = Some(default_worker_id());
        s
    }

    /// This replica's id (present once [`WorkerSettings::validated`]).
    pub fn id(&self) -> &str {
        self.worker_id.as_deref().unwrap_or("worker")
    }
}

/// Settings of `giftcard-migrate nats`, the provisioning step that creates
/// (or updates) the JetStream streams, buckets and the dead-letter
/// indexer's consumer, as the `giftcard-provisioner` NATS identity.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "giftcard-migrate nats",
    version,
    about = "Creates or updates the NATS JetStream topology (streams, buckets, the dead-letter consumer). Idempotent; run before the first start and after changing a setting below.",
    long_about = None,
    after_help = "Every setting is read from the environment variable shown; a flag overrides it."
)]
pub struct ProvisionSettings {
    #[command(flatten)]
    pub nats: NatsSettings,
    /// Partitions of the purchase stream (fixed once created: see
    /// docs/operations.md, "Changing the partition count").
    #[arg(long, env = "GIFTCARD_PARTITIONS", value_name = "GIFTCARD_PARTITIONS",
          default_value_t = DEFAULT_PARTITIONS, value_parser = partitions())]
    pub partitions: u16,
    /// JetStream replicas of every stream and bucket (3 on a production
    /// cluster).
    #[arg(long, env = "GIFTCARD_STREAM_REPLICAS", value_name = "GIFTCARD_STREAM_REPLICAS",
          default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=5))]
    pub stream_replicas: usize,
    /// The workers' lease TTL in milliseconds: the age of the lease and
    /// worker buckets.
    #[arg(long = "lease-ttl-ms", env = "GIFTCARD_LEASE_TTL_MS",
          value_name = "GIFTCARD_LEASE_TTL_MS", default_value = DEFAULT_LEASE_TTL_MS,
          value_parser = lease_ttl())]
    pub lease_ttl: Duration,
    /// Record GIFTCARD_PARTITIONS on an existing purchases stream whose
    /// count differs, and delete the consumers of removed partitions. Only
    /// as step 5 of docs/operations.md, "Changing the partition count"
    /// (everything processed, every service stopped).
    #[arg(long)]
    pub change_partitions: bool,
    /// Most MiB the PURCHASES stream may hold; when full, new purchases are
    /// refused (503) and nothing stored is dropped (docs/operations.md,
    /// "Stream limits").
    #[arg(long, env = "GIFTCARD_PURCHASES_MAX_MIB", value_name = "GIFTCARD_PURCHASES_MAX_MIB",
          default_value_t = 8192, value_parser = clap::value_parser!(u64).range(16..=16_777_216))]
    pub purchases_max_mib: u64,
    /// Hours the PURCHASES stream (and the pending-purchases bucket) keeps a
    /// message; older ones are deleted even if unprocessed, so keep it far
    /// above the longest backlog or outage to survive.
    #[arg(long = "purchases-max-age-hours", env = "GIFTCARD_PURCHASES_MAX_AGE_HOURS",
          value_name = "GIFTCARD_PURCHASES_MAX_AGE_HOURS", default_value = "168",
          value_parser = hours(1, 8760))]
    pub purchases_max_age: Duration,
    /// Days PURCHASES_DLQ keeps a dead letter's message (replay it or
    /// discard it before then).
    #[arg(long = "dlq-max-age-days", env = "GIFTCARD_DLQ_MAX_AGE_DAYS",
          value_name = "GIFTCARD_DLQ_MAX_AGE_DAYS", default_value = "30",
          value_parser = days(1, 3650))]
    pub dlq_max_age: Duration,
}

impl ProvisionSettings {
    /// Reads the settings from `args` (after `nats`) and the environment.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Self {
        <Self as Parser>::parse_from(
            std::iter::once("giftcard-migrate nats".to_owned()).chain(args),
        )
    }

    /// The topology these settings describe.
    pub fn topology(&self) -> crate::topology::TopologyOptions {
        let mut t = crate::topology::TopologyOptions::new(self.partitions, self.stream_replicas);
        t.lease_ttl = self.lease_ttl;
        t.change_partitions = self.change_partitions;
        t.max_bytes = mib_to_bytes(self.purchases_max_mib);
        t.max_age = self.purchases_max_age;
        t.dlq_max_age = self.dlq_max_age;
        t
    }
}

/// Unsets every variable of `command` that is set to the empty string, so
/// that it means "unset" (compose and Kubernetes pass `${X:-}` as an empty
/// value) instead of an invalid value. Environment changes are safe only
/// while the process has one thread: call it first thing in `main`.
pub fn unset_empty_variables(command: &clap::Command) {
    for arg in command.get_arguments() {
        if let Some(var) = arg.get_env() {
            if std::env::var_os(var).is_some_and(|v| v.is_empty()) {
                std::env::remove_var(var);
            }
        }
    }
}

/// `mib` MiB in bytes, as JetStream counts them.
fn mib_to_bytes(mib: u64) -> i64 {
    i64::try_from(mib.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)
}

/// The settings `T` with every default, ignoring the environment (the one
/// required value, `DATABASE_URL`, gets a placeholder to be replaced).
fn defaults<T: Parser>(name: &str) -> T {
    let command = T::command().mut_args(|a| a.env(clap::builder::Resettable::Reset));
    let matches = command
        .try_get_matches_from([name, "--database-url", "postgres://placeholder"])
        .expect("the defaults parse");
    T::from_arg_matches(&matches).expect("the defaults parse")
}

/// `<hostname>-<8 random hex>`, unique per process start.
pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_password_is_redacted() {
        let u = DatabaseUrl::new("postgres://app:hunter2@db:5432/x");
        let shown = format!("{u:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("app:***@db"), "{shown}");
        assert_eq!(format!("{:?}", Secret::new("s3cret")), "\"<redacted>\"");
    }

    #[test]
    fn nats_credentials_are_one_consistent_choice() {
        let base = NatsSettings::plain("nats://127.0.0.1:4222");
        assert!(base.validate().is_ok());
        assert!(base.clone().with_user("u", "p").validate().is_ok());
        let mut both = base.clone().with_user("u", "p");
        both.token = Some(Secret::new("t"));
        let e = both.validate().unwrap_err().to_string();
        assert!(e.contains("NATS_TOKEN") && e.contains("NATS_USER"), "{e}");
        let mut half = base.clone();
        half.user = Some("u".into());
        assert!(half
            .validate()
            .unwrap_err()
            .to_string()
            .contains("NATS_PASSWORD"));
        let mut missing = base;
        missing.tls_ca_file = Some("/nonexistent/ca.pem".into());
        let e = missing.validate().unwrap_err().to_string();
        assert!(e.contains("NATS_TLS_CA_FILE=/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let mut nats = NatsSettings::plain("nats://x:4222").with_user("api", "hunter2-password");
        nats.token = Some(Secret::new("tok-en-value"));
        let keys = MessageKeys::new("m".repeat(40).as_str(), Some("p".repeat(40).as_str()));
        let shown = format!("{nats:?} {keys:?}");
        for s in ["hunter2-password", "tok-en-value", "mmmmmmmm", "pppppppp"] {
            assert!(!shown.contains(s), "{s} shown in {shown}");
        }
    }

    #[test]
    fn durations_are_parsed_in_their_unit_and_range() {
        assert_eq!(millis(1, 10)("7"), Ok(Duration::from_millis(7)));
        assert!(millis(1, 10)("11").is_err());
        assert_eq!(secs(0, 30)("30"), Ok(Duration::from_secs(30)));
        assert!(secs(0, 30)("31").is_err());
        assert!(secs(0, 30)("x").is_err());
        assert_eq!(days(1, 10)("2"), Ok(Duration::from_secs(2 * 86_400)));
        assert!(days(1, 10)("0").is_err());
        assert_eq!(hours(1, 10)("3"), Ok(Duration::from_secs(3 * 3600)));
        assert_eq!(mib_to_bytes(16), 16 * 1024 * 1024);
    }
}
