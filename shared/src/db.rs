//! PostgreSQL connection set-up.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

use crate::config::CommonSettings;

/// Opens a pool. With `lazy`, no connection is made until first use, so a
/// process can start (and the api can accept purchases) while PostgreSQL is
/// down.
pub async fn connect(settings: &CommonSettings, lazy: bool) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(settings.database_url.expose().to_owned());
    opts.max_connections(settings.db_max_connections)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(3))
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy(lazy)
        // Statements can carry activation codes; never log them.
        .sqlx_logging(false);
    Database::connect(opts).await
}
