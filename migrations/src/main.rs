//! `giftcard-migrate up|down|status|fresh…`: applies the schema to `DATABASE_URL`.

use sea_orm_migration::prelude::*;

#[tokio::main]
async fn main() {
    if std::env::var("DATABASE_URL").map_or(true, |v| v.is_empty()) {
        eprintln!(
            "giftcard-migrate: DATABASE_URL is not set; set it to a PostgreSQL URL such as \
             postgres://giftcard@127.0.0.1:5432/giftcard"
        );
        std::process::exit(2);
    }
    cli::run_cli(migration::Migrator).await;
}
