//! `giftcard-migrate`: sets up what the services need before they start.
//!
//! - `giftcard-migrate up|down|status|fresh…` applies the PostgreSQL
//!   schema to `DATABASE_URL` (SeaORM's migration CLI).
//! - `giftcard-migrate nats` creates or updates the NATS JetStream topology
//!   (streams, buckets, the dead-letter indexer's consumer) as the
//!   `giftcard-provisioner` identity; `giftcard-migrate nats --help` lists
//!   its settings.

use sea_orm_migration::prelude::*;

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("nats") {
        args.next();
        // Read before any thread starts (it may unset empty variables).
        let settings = giftcard_shared::config::ProvisionSettings::from_args(args);
        if let Err(e) = giftcard_shared::process::block_on(provision_nats(settings)) {
            eprintln!("giftcard-migrate nats: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    giftcard_shared::process::block_on(migrate());
}

async fn migrate() {
    if std::env::var("DATABASE_URL").map_or(true, |v| v.is_empty()) {
        eprintln!(
            "giftcard-migrate: DATABASE_URL is not set; set it to a PostgreSQL URL such as \
             postgres://giftcard@127.0.0.1:5432/giftcard"
        );
        std::process::exit(2);
    }
    cli::run_cli(migration::Migrator).await;
}

async fn provision_nats(
    settings: giftcard_shared::config::ProvisionSettings,
) -> anyhow::Result<()> {
    settings.nats.validate()?;
    let client =
        giftcard_shared::nats::connect(&settings.nats, giftcard_shared::nats::PROVISIONER).await?;
    let js = async_nats::jetstream::new(client);
    for line in giftcard_shared::topology::provision(&js, &settings.topology()).await? {
        println!("{line}");
    }
    Ok(())
}
