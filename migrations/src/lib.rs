//! SeaORM migrations. A shipped migration is never edited: add a new one.
//!
//! `giftcard-migrate up` (the binary in `main.rs`) applies them, reading
//! `DATABASE_URL`.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_initial;
mod m20261122_000002_dead_letter_events;
mod m20261122_000003_available_codes_keyset;
mod m20261130_000004_batch_guard;
mod m20261201_000005_fence_epoch;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_initial::Migration),
            Box::new(m20261122_000002_dead_letter_events::Migration),
            Box::new(m20261122_000003_available_codes_keyset::Migration),
            Box::new(m20261130_000004_batch_guard::Migration),
            Box::new(m20261201_000005_fence_epoch::Migration),
        ]
    }
}
