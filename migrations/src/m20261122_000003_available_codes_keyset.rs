//! The "available codes of a card, soonest-expiring first" index keyed by a
//! plain sortable expression, so that a worker can resume a card's scan
//! after the last code it claimed (a keyset cursor) instead of wading
//! through the dead entries that just-used codes leave until vacuum.
//! `COALESCE(expires_on, 'infinity')` orders exactly like
//! `expires_on ASC NULLS LAST`.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000003_available_codes_keyset"
    }
}

const UP: &str = r#"
CREATE INDEX activation_codes_available_key_idx
    ON activation_codes (gift_card_id, (COALESCE(expires_on, 'infinity'::timestamptz)), id)
    WHERE NOT is_used AND deleted_at IS NULL;
DROP INDEX activation_codes_available_idx;
"#;

const DOWN: &str = r#"
CREATE INDEX activation_codes_available_idx
    ON activation_codes (gift_card_id, expires_on ASC NULLS LAST, id)
    WHERE NOT is_used AND deleted_at IS NULL;
DROP INDEX activation_codes_available_key_idx;
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
