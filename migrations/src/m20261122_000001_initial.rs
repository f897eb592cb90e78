//! The initial schema. Plain SQL: the partial index, check constraints and
//! unique keys are the point of it, and read best as SQL.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261122_000001_initial"
    }
}

const UP: &str = r#"
CREATE TABLE gift_cards (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    price       NUMERIC(14,2) NOT NULL CHECK (price > 0),
    value       NUMERIC(14,2) NOT NULL CHECK (value > 0),
    active      BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE activation_codes (
    id            UUID PRIMARY KEY,
    gift_card_id  UUID NOT NULL REFERENCES gift_cards(id),
    code          TEXT NOT NULL CHECK (char_length(code) BETWEEN 1 AND 64),
    is_used       BOOLEAN NOT NULL DEFAULT FALSE,
    purchase_id   UUID,
    expires_on    TIMESTAMPTZ,
    deleted_at    TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT activation_codes_card_code_key UNIQUE (gift_card_id, code),
    CONSTRAINT activation_codes_used_has_purchase CHECK (is_used = (purchase_id IS NOT NULL))
);
-- "Available codes of card X, soonest-expiring first" (never-expiring last).
CREATE INDEX activation_codes_available_idx
    ON activation_codes (gift_card_id, expires_on ASC NULLS LAST, id)
    WHERE NOT is_used AND deleted_at IS NULL;
CREATE INDEX activation_codes_purchase_idx
    ON activation_codes (purchase_id) WHERE purchase_id IS NOT NULL;

CREATE TABLE wallets (
    user_id     TEXT PRIMARY KEY CHECK (char_length(user_id) BETWEEN 1 AND 128),
    balance     NUMERIC(14,2) NOT NULL DEFAULT 0 CHECK (balance >= 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE wallet_entries (
    id           UUID PRIMARY KEY,
    user_id      TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('credit', 'purchase')),
    amount       NUMERIC(14,2) NOT NULL,
    reference    TEXT,
    purchase_id  UUID,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT wallet_entries_reference_key UNIQUE (reference),
    CONSTRAINT wallet_entries_purchase_key UNIQUE (purchase_id),
    CONSTRAINT wallet_entries_shape CHECK (
        (kind = 'credit' AND amount > 0 AND reference IS NOT NULL AND purchase_id IS NULL) OR
        (kind = 'purchase' AND amount < 0 AND purchase_id IS NOT NULL))
);
CREATE INDEX wallet_entries_user_idx ON wallet_entries (user_id, created_at);

CREATE TABLE purchases (
    id               UUID PRIMARY KEY,
    user_id          TEXT NOT NULL,
    gift_card_id     UUID NOT NULL,
    quantity         SMALLINT NOT NULL CHECK (quantity BETWEEN 1 AND 10),
    unit_price       NUMERIC(14,2),
    total            NUMERIC(14,2),
    status           TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'dead_lettered')),
    error_code       TEXT,
    error_message    TEXT,
    idempotency_key  TEXT,
    request_hash     TEXT NOT NULL,
    stream_sequence  BIGINT NOT NULL,
    partition        INTEGER NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    completed_at     TIMESTAMPTZ,
    CONSTRAINT purchases_user_idempotency_key UNIQUE (user_id, idempotency_key),
    CONSTRAINT purchases_error_shape CHECK ((status = 'succeeded') = (error_code IS NULL))
);
CREATE INDEX purchases_user_created_idx ON purchases (user_id, created_at DESC, id DESC);
CREATE INDEX purchases_card_sequence_idx ON purchases (gift_card_id, stream_sequence);

CREATE TABLE partition_fences (
    partition   INTEGER PRIMARY KEY,
    token       BIGINT NOT NULL,
    owner       TEXT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE dead_letters (
    id                 UUID PRIMARY KEY,
    purchase_id        UUID,
    gift_card_id       UUID,
    user_id            TEXT,
    reason             TEXT NOT NULL,
    attempts           INTEGER NOT NULL,
    original_subject   TEXT NOT NULL,
    original_sequence  BIGINT NOT NULL,
    dlq_sequence       BIGINT NOT NULL,
    state              TEXT NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'replayed', 'discarded')),
    dead_lettered_at   TIMESTAMPTZ NOT NULL,
    resolved_at        TIMESTAMPTZ,
    resolved_by        TEXT
);
CREATE INDEX dead_letters_pending_idx ON dead_letters (dead_lettered_at, id) WHERE state = 'pending';
CREATE INDEX dead_letters_card_idx ON dead_letters (gift_card_id, dead_lettered_at);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS dead_letters;
DROP TABLE IF EXISTS partition_fences;
DROP TABLE IF EXISTS purchases;
DROP TABLE IF EXISTS wallet_entries;
DROP TABLE IF EXISTS wallets;
DROP TABLE IF EXISTS activation_codes;
DROP TABLE IF EXISTS gift_cards;
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
