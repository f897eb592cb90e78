//! Fencing tokens become the pair (epoch, token): the lease bucket's
//! creation time in microseconds and the lease's full revision. The old
//! single token packed the low 32 bits of the revision under an epoch that
//! wrapped in 2038, so a later owner could compare lower. Rows written by
//! the old format keep epoch 0, below every new token.
//!
//! `giftcard_batch_guard` goes: it undid the old two-statement batch's
//! write; a batch is one transaction now, rolled back by the worker.
//!
//! Upgrade note: workers of the old and the new format compare tokens
//! differently, so stop every worker of the previous release before
//! starting workers of this one (docs/operations.md, "Upgrading").

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000005_fence_epoch"
    }
}

const UP: &str = r#"
ALTER TABLE partition_fences ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
COMMENT ON COLUMN partition_fences.epoch IS
    'fencing epoch: the lease bucket''s creation time (microseconds since 1970); tokens compare as (epoch, token)';
COMMENT ON COLUMN partition_fences.token IS
    'fencing token: the lease''s revision in its bucket';
DROP FUNCTION giftcard_batch_guard(boolean);
"#;

const DOWN: &str = r#"
ALTER TABLE partition_fences DROP COLUMN epoch;
CREATE FUNCTION giftcard_batch_guard(ok boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'giftcard: the batch''s inputs changed before its write; read again and retry'
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN true;
END
$$;
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
