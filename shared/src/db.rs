//! PostgreSQL connection set-up.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

use crate::config::CommonSettings;

/// Opens a pool. With `lazy`, no connection is made until first use, so a
/// process can start (and the api can accept purchases) while PostgreSQL is
/// down. Each connection is pinged before use, so one broken by a
/// PostgreSQL restart is replaced instead of failing a request.
pub async fn connect(settings: &CommonSettings, lazy: bool) -> Result<DatabaseConnection, DbErr> {
    open(settings, lazy, None).await
}

/// The worker's batch pool: lazy; two connections (batches are written one
/// group at a time); not pinged before each use (one round trip less per
/// batch: the worker retries what a broken connection fails); every
/// statement limited to `statement_timeout` (a hung statement fails its
/// attempt instead of holding the partition), and so is the time a batch
/// transaction may sit idle between its statements (a worker frozen in the
/// middle of a batch, by SIGSTOP or a long pause, loses its transaction and
/// its row locks instead of holding up the partition's next owner and the
/// wallets it locked); sequential scans ruled out: each statement on it
/// looks rows up by key, and a plan cached while a table was nearly empty
/// (a fresh deployment, before autovacuum's first analyze) would otherwise
/// keep scanning the whole table as it grows.
pub async fn connect_for_batches(
    settings: &CommonSettings,
    statement_timeout: Duration,
) -> Result<DatabaseConnection, DbErr> {
    open(settings, true, Some(statement_timeout)).await
}

/// The api's pool for polling purchases that a retried request waits for:
/// lazy, at most [`POLL_CONNECTIONS`] connections, apart from the main pool
/// so that many waiting retries never starve the readiness probe or reads.
pub async fn connect_for_polls(settings: &CommonSettings) -> Result<DatabaseConnection, DbErr> {
    let mut small = settings.clone();
    small.db_max_connections = settings.db_max_connections.min(POLL_CONNECTIONS);
    open(&small, true, None).await
}

/// Size of the api's polling pool ([`connect_for_polls`]).
pub const POLL_CONNECTIONS: u32 = 4;

/// A pool; `batches` (with its statement timeout) makes it the worker's
/// batch pool described at [`connect_for_batches`].
async fn open(
    settings: &CommonSettings,
    lazy: bool,
    batches: Option<Duration>,
) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(settings.database_url.expose().to_owned());
    let max = match batches {
        Some(_) => settings.db_max_connections.min(2),
        None => settings.db_max_connections,
    };
    opts.max_connections(max)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(3))
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy(lazy)
        .test_before_acquire(batches.is_none())
        // Statements can carry activation codes; never log them.
        .sqlx_logging(false);
    if let Some(t) = batches {
        let ms = t.as_millis().to_string();
        opts.map_sqlx_postgres_opts(move |o| {
            o.options([
                ("statement_timeout", ms.as_str()),
                ("idle_in_transaction_session_timeout", ms.as_str()),
                ("enable_seqscan", "off"),
            ])
        });
    }
    Database::connect(opts).await
}

/// `($1::t1,$2::t2,…),(…)`: placeholders for a multi-row `VALUES` of `rows`
/// rows, each column cast to its type (PostgreSQL cannot infer types inside
/// `FROM (VALUES …)`).
pub fn values_clause(rows: usize, casts: &[&str]) -> String {
    values_clause_at(0, rows, casts)
}

/// [`values_clause`] whose placeholders start at `$offset+1`.
pub fn values_clause_at(offset: usize, rows: usize, casts: &[&str]) -> String {
    let mut s = String::with_capacity(rows * casts.len() * 12);
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for (c, cast) in casts.iter().enumerate() {
            if c > 0 {
                s.push(',');
            }
            s.push_str(&format!("${}::{cast}", offset + r * casts.len() + c + 1));
        }
        s.push(')');
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_clause_numbers_and_casts_placeholders() {
        assert_eq!(
            super::values_clause(2, &["uuid", "text"]),
            "($1::uuid,$2::text),($3::uuid,$4::text)"
        );
    }
}
