//! `giftcard_batch_guard(ok)`: lets a worker's batch write, one statement
//! without an explicit transaction, undo itself when what it read has
//! changed since (a code claimed, a wallet credited, the partition fenced
//! off). The statement's last step calls it with "every row matched"; a
//! false raises `serialization_failure` (SQLSTATE 40001), which rolls the
//! whole statement back, and the worker reads again and retries.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261130_000004_batch_guard"
    }
}

const UP: &str = r#"
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

const DOWN: &str = "DROP FUNCTION giftcard_batch_guard(boolean);";

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
