//! Configuration from environment variables, validated at start.
//!
//! Every variable is documented in the README. `Debug` output redacts
//! secrets (the JWT secret and any password in `DATABASE_URL`), so a
//! settings struct can be logged at start-up.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// A configuration problem, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

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

/// Settings every process shares.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    /// `DATABASE_URL` (required).
    pub database_url: DatabaseUrl,
    /// `NATS_URL`, default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// `GIFTCARD_PARTITIONS`, default 64, 1..=1024. Must match the stream.
    pub partitions: u16,
    /// `GIFTCARD_STREAM_REPLICAS`, default 1 (3 in production clusters).
    pub stream_replicas: usize,
    /// `GIFTCARD_DB_MAX_CONNECTIONS`, default 16.
    pub db_max_connections: u32,
}

/// Settings of `giftcard-api`.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub common: CommonSettings,
    /// `GIFTCARD_JWT_SECRET` (required, at least 32 bytes).
    pub jwt_secret: Secret,
    /// `GIFTCARD_JWT_PREVIOUS_SECRET` (optional, at least 32 bytes): during
    /// a rotation, tokens signed with it are still accepted.
    pub jwt_previous_secret: Option<Secret>,
    /// `GIFTCARD_API_LISTEN`, default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `GIFTCARD_DEFAULT_WAIT_SECS`, default 5: wait used without `Prefer`.
    pub default_wait: Duration,
    /// `GIFTCARD_PUBLISH_TIMEOUT_MS`, default 5000: how long to wait for the
    /// JetStream PubAck before answering 503.
    pub publish_timeout: Duration,
}

/// Settings of `giftcard-worker`.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub common: CommonSettings,
    /// `GIFTCARD_WORKER_LISTEN`, default `127.0.0.1:9090` (`/healthz`,
    /// `/readyz`, `/metrics`).
    pub listen: SocketAddr,
    /// `GIFTCARD_BATCH_SIZE`, default 128: most messages in one transaction.
    pub batch_size: usize,
    /// `GIFTCARD_MAX_ATTEMPTS`, default 8: attempts of a batch failing for a
    /// technical reason before its messages are dead-lettered.
    pub max_attempts: u32,
    /// `GIFTCARD_RETRY_BASE_MS`, default 200: first retry delay (doubles).
    pub retry_base: Duration,
    /// `GIFTCARD_RETRY_MAX_MS`, default 10000: retry delay cap.
    pub retry_max: Duration,
    /// `GIFTCARD_ACK_WAIT_SECS`, default 15: redelivery of a silent
    /// worker's unacknowledged messages.
    pub ack_wait: Duration,
    /// `GIFTCARD_LEASE_TTL_MS`, default 6000: a partition lease (and a
    /// worker's registration) expires this long after its last renewal, so a
    /// killed worker's partitions are re-owned within about this time.
    pub lease_ttl: Duration,
    /// `GIFTCARD_LEASE_RENEW_MS`, default 1000: how often leases are renewed
    /// and the assignment recomputed (at most a third of the TTL).
    pub lease_renew: Duration,
    /// `GIFTCARD_STATEMENT_TIMEOUT_MS`, default 5000: a batch statement
    /// running longer fails the attempt (retried, then dead-lettered).
    pub statement_timeout: Duration,
    /// `GIFTCARD_WORKER_ID`, default `<hostname>-<random>`: this replica's
    /// name in leases, fences and `giftcardctl status`.
    pub worker_id: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_var<T: FromStr>(name: &str, default: T, rule: &str) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| {
            ConfigError(format!(
                "{name}={v:?} is not valid: expected {rule}; fix or unset it"
            ))
        }),
    }
}

fn in_range<T: PartialOrd + fmt::Display + Copy>(
    name: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError(format!(
            "{name}={v} is out of range: expected {lo}..={hi}"
        )));
    }
    Ok(v)
}

impl CommonSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = var("DATABASE_URL").ok_or_else(|| {
            ConfigError(
                "DATABASE_URL is not set: set it to a PostgreSQL URL such as \
                 postgres://giftcard@127.0.0.1:5432/giftcard (./scripts/stack starts one for you)"
                    .into(),
            )
        })?;
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            return Err(ConfigError(
                "DATABASE_URL must start with postgres:// or postgresql://".into(),
            ));
        }
        let nats_url = var("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into());
        let partitions = parse_var("GIFTCARD_PARTITIONS", 64u16, "an integer 1..=1024")?;
        let stream_replicas = parse_var("GIFTCARD_STREAM_REPLICAS", 1usize, "1, 3 or 5")?;
        let db_max_connections =
            parse_var("GIFTCARD_DB_MAX_CONNECTIONS", 16u32, "an integer 1..=1000")?;
        Ok(Self {
            database_url: DatabaseUrl::new(database_url),
            nats_url,
            partitions: in_range("GIFTCARD_PARTITIONS", partitions, 1, 1024)?,
            stream_replicas: in_range("GIFTCARD_STREAM_REPLICAS", stream_replicas, 1, 5)?,
            db_max_connections: in_range(
                "GIFTCARD_DB_MAX_CONNECTIONS",
                db_max_connections,
                1,
                1000,
            )?,
        })
    }
}

impl ApiSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let common = CommonSettings::from_env()?;
        let jwt_secret = var("GIFTCARD_JWT_SECRET").ok_or_else(|| {
            ConfigError(
                "GIFTCARD_JWT_SECRET is not set: set it to a random string of at least 32 \
                 bytes, e.g. `openssl rand -hex 32`"
                    .into(),
            )
        })?;
        if jwt_secret.len() < 32 {
            return Err(ConfigError(
                "GIFTCARD_JWT_SECRET is too short: use at least 32 bytes (`openssl rand -hex 32`)"
                    .into(),
            ));
        }
        let jwt_previous_secret = match var("GIFTCARD_JWT_PREVIOUS_SECRET") {
            None => None,
            Some(s) if s.len() < 32 => {
                return Err(ConfigError(
                    "GIFTCARD_JWT_PREVIOUS_SECRET is too short: it must be the previous \
                     GIFTCARD_JWT_SECRET (at least 32 bytes); unset it when no rotation is under way"
                        .into(),
                ))
            }
            Some(s) if s == jwt_secret => {
                return Err(ConfigError(
                    "GIFTCARD_JWT_PREVIOUS_SECRET equals GIFTCARD_JWT_SECRET: set it to the \
                     secret being rotated out, or unset it"
                        .into(),
                ))
            }
            Some(s) => Some(Secret::new(s)),
        };
        let listen = parse_var(
            "GIFTCARD_API_LISTEN",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            "host:port such as 127.0.0.1:8080",
        )?;
        let wait = parse_var("GIFTCARD_DEFAULT_WAIT_SECS", 5u64, "seconds 0..=30")?;
        let publish = parse_var("GIFTCARD_PUBLISH_TIMEOUT_MS", 5000u64, "milliseconds")?;
        Ok(Self {
            common,
            jwt_secret: Secret::new(jwt_secret),
            jwt_previous_secret,
            listen,
            default_wait: Duration::from_secs(in_range("GIFTCARD_DEFAULT_WAIT_SECS", wait, 0, 30)?),
            publish_timeout: Duration::from_millis(in_range(
                "GIFTCARD_PUBLISH_TIMEOUT_MS",
                publish,
                100,
                60_000,
            )?),
        })
    }
}

impl WorkerSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let common = CommonSettings::from_env()?;
        let listen = parse_var(
            "GIFTCARD_WORKER_LISTEN",
            SocketAddr::from(([127, 0, 0, 1], 9090)),
            "host:port such as 127.0.0.1:9090",
        )?;
        let batch_size = parse_var("GIFTCARD_BATCH_SIZE", 128usize, "an integer 1..=1000")?;
        let max_attempts = parse_var("GIFTCARD_MAX_ATTEMPTS", 8u32, "an integer 1..=100")?;
        let retry_base = parse_var("GIFTCARD_RETRY_BASE_MS", 200u64, "milliseconds")?;
        let retry_max = parse_var("GIFTCARD_RETRY_MAX_MS", 10_000u64, "milliseconds")?;
        let ack_wait = parse_var("GIFTCARD_ACK_WAIT_SECS", 15u64, "seconds 5..=600")?;
        let lease_ttl = parse_var(
            "GIFTCARD_LEASE_TTL_MS",
            6000u64,
            "milliseconds 1000..=300000",
        )?;
        let lease_renew = parse_var("GIFTCARD_LEASE_RENEW_MS", 1000u64, "milliseconds")?;
        let lease_ttl = in_range("GIFTCARD_LEASE_TTL_MS", lease_ttl, 1000, 300_000)?;
        let lease_renew = in_range("GIFTCARD_LEASE_RENEW_MS", lease_renew, 100, lease_ttl / 3)?;
        let statement_timeout = parse_var(
            "GIFTCARD_STATEMENT_TIMEOUT_MS",
            5000u64,
            "milliseconds 100..=600000",
        )?;
        let statement_timeout = in_range(
            "GIFTCARD_STATEMENT_TIMEOUT_MS",
            statement_timeout,
            100,
            600_000,
        )?;
        let worker_id = match var("GIFTCARD_WORKER_ID") {
            Some(id) => id,
            None => default_worker_id(),
        };
        if worker_id.is_empty()
            || worker_id.len() > 64
            || !worker_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError(format!(
                "GIFTCARD_WORKER_ID={worker_id:?} is not valid: use 1 to 64 letters, digits, '-' or '_'"
            )));
        }
        Ok(Self {
            common,
            listen,
            batch_size: in_range("GIFTCARD_BATCH_SIZE", batch_size, 1, 1000)?,
            max_attempts: in_range("GIFTCARD_MAX_ATTEMPTS", max_attempts, 1, 100)?,
            retry_base: Duration::from_millis(in_range(
                "GIFTCARD_RETRY_BASE_MS",
                retry_base,
                1,
                60_000,
            )?),
            retry_max: Duration::from_millis(in_range(
                "GIFTCARD_RETRY_MAX_MS",
                retry_max,
                1,
                600_000,
            )?),
            ack_wait: Duration::from_secs(in_range("GIFTCARD_ACK_WAIT_SECS", ack_wait, 5, 600)?),
            lease_ttl: Duration::from_millis(lease_ttl),
            lease_renew: Duration::from_millis(lease_renew),
            statement_timeout: Duration::from_millis(statement_timeout),
            worker_id,
        })
    }
}

impl WorkerSettings {
    /// Defaults for everything but the URLs (tests and embedding).
    pub fn with_defaults(common: CommonSettings) -> Self {
        Self {
            common,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            batch_size: 128,
            max_attempts: 8,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            ack_wait: Duration::from_secs(15),
            lease_ttl: Duration::from_secs(6),
            lease_renew: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(5),
            worker_id: default_worker_id(),
        }
    }
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
}
