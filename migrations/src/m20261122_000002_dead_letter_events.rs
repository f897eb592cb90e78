//! Dead-letter history: what operators did (and when), and which dead
//! letter a replayed message came from.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000002_dead_letter_events"
    }
}

const UP: &str = r#"
ALTER TABLE dead_letters ADD COLUMN replayed_from UUID REFERENCES dead_letters(id);
CREATE INDEX dead_letters_purchase_idx ON dead_letters (purchase_id, dead_lettered_at);

CREATE TABLE dead_letter_events (
    id              BIGSERIAL PRIMARY KEY,
    dead_letter_id  UUID NOT NULL REFERENCES dead_letters(id),
    action          TEXT NOT NULL CHECK (action IN ('dead_lettered', 'replayed', 'discarded')),
    actor           TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    at              TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX dead_letter_events_dl_idx ON dead_letter_events (dead_letter_id, at);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS dead_letter_events;
DROP INDEX IF EXISTS dead_letters_purchase_idx;
ALTER TABLE dead_letters DROP COLUMN IF EXISTS replayed_from;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
