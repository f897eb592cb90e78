//! The worker's batch errors, typed by what the worker must do about them
//! (see [`crate::retry`]), not by where they came from.
//!
//! A PostgreSQL error is sorted by its SQLSTATE class ([`BatchError::from_db`]):
//! what says the database or the connection is unwell is
//! [`BatchError::Unavailable`] (wait for it, never the message's fault);
//! what says another writer got there first is [`BatchError::Conflict`]
//! (read again); what says the batch's own data broke a rule is
//! [`BatchError::Statement`] (find the message and, if it alone fails,
//! dead-letter it).

use sea_orm::{sqlx, DbErr, RuntimeErr};

/// Why a batch's transaction did not commit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// A newer owner holds the partition: nothing was committed for it.
    #[error("fenced off: partition {partition} has a newer owner")]
    Fenced { partition: u16 },
    /// Another writer changed what the batch read (a code withdrawn, a
    /// purchase stored by another partition) or the two deadlocked: the
    /// transaction was rolled back; read again.
    #[error("the batch's inputs changed concurrently ({0}); reading again")]
    Conflict(Conflict),
    /// PostgreSQL could not be used at all (unreachable, pool timeout,
    /// connection reset, shutting down, out of resources, statement timeout)
    /// or the worker's committer is gone: nothing is wrong with the
    /// messages. The partition holds its batch and waits.
    #[error("PostgreSQL unavailable: {0}")]
    Unavailable(String),
    /// A statement failed because of the data it was given (a data
    /// exception or a broken constraint): one of the batch's messages may
    /// be the cause.
    #[error("a batch statement failed: {0}")]
    Statement(String),
}

/// What changed under a batch between its read and its write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// SQLSTATE 40001 or 40P01 (serialization failure, deadlock).
    #[error("serialization failure or deadlock")]
    Serialization,
    /// SQLSTATE 23505: another transaction stored a row the batch inserts
    /// (the same purchase from another partition).
    #[error("a row the batch inserts was stored concurrently")]
    Duplicate,
    /// The write touched another number of rows than the plan expects.
    #[error("{what}: {touched} rows written, {expected} expected")]
    RowCount {
        what: &'static str,
        expected: i64,
        touched: i64,
    },
}

impl BatchError {
    /// Sorts a database error into what the worker does about it.
    pub fn from_db(e: DbErr) -> Self {
        match &e {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => Self::Unavailable(e.to_string()),
            DbErr::Exec(RuntimeErr::SqlxError(s)) | DbErr::Query(RuntimeErr::SqlxError(s)) => {
                match s.as_ref() {
                    sqlx::Error::Database(d) => classify_sqlstate(d.code().as_deref(), &e),
                    // Everything else sqlx reports (I/O, TLS, protocol, pool,
                    // worker crash) is about the connection, not the data.
                    _ => Self::Unavailable(e.to_string()),
                }
            }
            _ => Self::Unavailable(e.to_string()),
        }
    }
}

/// The SQLSTATE classes (first two characters) that say nothing about the
/// batch's data: connection (08), resources (53), operator intervention
/// including statement timeouts and shutdowns (57), system (58), internal
/// (XX), read-only after a failover (25), object in use or lock not
/// available (55), configuration and schema (3D database, 3F schema, 42
/// undefined table or column: a deployment problem), authorization (28).
const UNAVAILABLE_CLASSES: [&str; 11] = [
    "08", "53", "57", "58", "XX", "25", "55", "3D", "3F", "42", "28",
];

fn classify_sqlstate(code: Option<&str>, e: &DbErr) -> BatchError {
    match code {
        Some("40001" | "40P01") => BatchError::Conflict(Conflict::Serialization),
        Some("23505") => BatchError::Conflict(Conflict::Duplicate),
        Some(c) if c.starts_with("42") || c.starts_with("3F") => BatchError::Unavailable(format!(
            "{e} (the database schema is not this release's: run `giftcard-migrate up`)"
        )),
        Some(c) if UNAVAILABLE_CLASSES.iter().any(|class| c.starts_with(class)) => {
            BatchError::Unavailable(e.to_string())
        }
        _ => BatchError::Statement(e.to_string()),
    }
}

impl From<DbErr> for BatchError {
    fn from(e: DbErr) -> Self {
        Self::from_db(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(code: &str) -> BatchError {
        classify_sqlstate(Some(code), &DbErr::Custom(code.into()))
    }

    #[test]
    fn sqlstates_sort_into_conflicts_outages_and_statement_failures() {
        assert!(matches!(
            db("40001"),
            BatchError::Conflict(Conflict::Serialization)
        ));
        assert!(matches!(
            db("40P01"),
            BatchError::Conflict(Conflict::Serialization)
        ));
        assert!(matches!(
            db("23505"),
            BatchError::Conflict(Conflict::Duplicate)
        ));
        for outage in [
            "08006", "57014", "57P01", "53300", "25006", "42P01", "XX000",
        ] {
            assert!(matches!(db(outage), BatchError::Unavailable(_)), "{outage}");
        }
        for data in ["22003", "23514", "23502", "P0001"] {
            assert!(matches!(db(data), BatchError::Statement(_)), "{data}");
        }
    }

    #[test]
    fn connection_errors_are_outages() {
        let pool = DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout);
        assert!(matches!(
            BatchError::from_db(pool),
            BatchError::Unavailable(_)
        ));
        let io = DbErr::Exec(RuntimeErr::SqlxError(std::sync::Arc::new(sqlx::Error::Io(
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        ))));
        assert!(matches!(
            BatchError::from_db(io),
            BatchError::Unavailable(_)
        ));
    }
}
