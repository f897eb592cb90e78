//! The database-locking peers the gift-card pipeline is benchmarked against.
//!
//! One small HTTP server that speaks the api's contract subset
//! (`POST /v1/purchases`, `GET /v1/purchases/{id}`, `GET /v1/wallet`,
//! `GET /v1/gift-cards/{id}`, `/healthz`, `/readyz`, `/metrics`) but does
//! each purchase synchronously in PostgreSQL, inside the request, in one
//! READ COMMITTED transaction, the way the origin documents do. The
//! [`strategies::Strategy`] chosen at start-up decides how concurrent buyers
//! of one card are kept from taking the same activation code:
//!
//! - `optimistic`: the origin's row-version check with its retry policy
//!   (3 retries, 1 s apart) on the first available codes;
//! - `optimistic-random`: the same on random available codes;
//! - `advisory-lock`: a transaction-scoped advisory lock per card;
//! - `skip-locked`: one `UPDATE … FOR UPDATE SKIP LOCKED` claim.
//!
//! Each is written as well as we know how (the benchmark report compares
//! the peer's HTTP throughput with what `pgbench` gets from the same SQL):
//! `skip-locked` and `advisory-lock` are one round trip per purchase
//! ([`buy`]); no purchase is looked up before it is attempted; connections
//! are not pinged when taken from the pool.
//!
//! Modules: [`routes`] (handlers), [`strategies`] (the purchase
//! transactions), [`buy`] (the one-round-trip purchase), [`store`] (the
//! optimistic strategies' SQL), [`auth`] (extractors), [`errors`] (the
//! contract's error body), [`metrics`] (Prometheus text).

pub mod auth;
pub mod buy;
pub mod errors;
pub mod metrics;
pub mod routes;
pub mod store;
pub mod strategies;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::strategies::Strategy;

/// Command line of `giftcard-peer`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "giftcard-peer", version, about)]
pub struct Cli {
    /// How concurrent purchases of one card are kept apart.
    #[arg(long, value_enum)]
    pub strategy: Strategy,
    /// Address to serve HTTP on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// PostgreSQL connection pool size (see the benchmark report's pool
    /// size sweep).
    #[arg(long, default_value_t = 32)]
    pub db_max_connections: u32,
    /// Optimistic strategies: retries after a conflict (the origin's policy: 3).
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Optimistic strategies: pause before each retry (the origin's policy: 1 s).
    #[arg(long, default_value_t = 1000)]
    pub retry_delay_ms: u64,
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// HS256 secret the bearer tokens are signed with (at least 32 bytes).
    #[arg(long, env = "GIFTCARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
}

/// Shared state of the handlers.
pub type AppState = Arc<Inner>;

pub struct Inner {
    pub db: DatabaseConnection,
    pub jwt_secret: String,
    pub strategy: Strategy,
    pub retries: u32,
    pub retry_delay: Duration,
    /// Process-wide arrival counter: the purchase's `sequence`.
    pub arrivals: AtomicU64,
    pub metrics: Metrics,
    /// Per card, where the next claim's scan starts.
    pub cursors: strategies::Cursors,
}

/// Connects, prepares the schema, and serves until SIGTERM or Ctrl-C.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.jwt_secret.len() < 32 {
        anyhow::bail!("GIFTCARD_JWT_SECRET is too short: use at least 32 bytes");
    }
    let mut opts = ConnectOptions::new(cli.database_url.clone());
    opts.max_connections(cli.db_max_connections.max(1))
        .min_connections(0)
        .connect_timeout(Duration::from_secs(5))
        // Requests beyond the pool queue here instead of failing.
        .acquire_timeout(Duration::from_secs(30))
        // A broken connection fails its statement, which answers 503; a
        // ping before every statement would cost a round trip each.
        .test_before_acquire(false)
        // Statements carry activation codes: never log them.
        .sqlx_logging(false);
    let db = Database::connect(opts)
        .await
        .context("connecting to PostgreSQL")?;
    // The origin's RowVersion (bench databases are throwaway).
    db.execute_unprepared(
        "ALTER TABLE activation_codes ADD COLUMN IF NOT EXISTS row_version INTEGER NOT NULL DEFAULT 0",
    )
    .await
    .context("adding activation_codes.row_version (did the migrations run?)")?;
    buy::install(&db)
        .await
        .context("installing the peer_buy function")?;

    let state: AppState = Arc::new(Inner {
        db,
        jwt_secret: cli.jwt_secret,
        strategy: cli.strategy,
        retries: cli.retries,
        retry_delay: Duration::from_millis(cli.retry_delay_ms),
        arrivals: AtomicU64::new(1),
        metrics: Metrics::default(),
        cursors: strategies::Cursors::default(),
    });
    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    tracing::info!(addr = %listener.local_addr()?, strategy = cli.strategy.name(), "peer listening");
    axum::serve(listener, routes::app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("peer stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn cli_parses_every_strategy() {
        for name in [
            "optimistic",
            "optimistic-random",
            "advisory-lock",
            "skip-locked",
        ] {
            let cli = Cli::try_parse_from([
                "giftcard-peer",
                "--strategy",
                name,
                "--listen",
                "127.0.0.1:9000",
                "--database-url",
                "postgres://x@localhost/db",
                "--jwt-secret",
                "0123456789abcdef0123456789abcdef",
            ])
            .unwrap();
            assert_eq!(cli.strategy.name(), name);
            assert_eq!(cli.db_max_connections, 32);
            assert_eq!((cli.retries, cli.retry_delay_ms), (3, 1000));
        }
        assert!(Cli::try_parse_from(["giftcard-peer", "--strategy", "pessimistic"]).is_err());
    }
}
