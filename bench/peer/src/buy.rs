//! The skip-locked and advisory-lock purchase in one round trip: a
//! PL/pgSQL function, `peer_buy`, that the peer installs at start-up and
//! calls once per purchase (one READ COMMITTED transaction, no `BEGIN` or
//! `COMMIT` round trips, nothing held across the network).
//!
//! Why a function: the purchase is five statements (read the card, claim
//! the codes, debit the wallet, the ledger entry, the purchase row). Sent
//! one by one they cost eight round trips with `BEGIN`/`COMMIT`, and under
//! the advisory lock every one of them is spent holding the card's lock.
//!
//! Why a cursor (`after`): a claimed code leaves a dead entry at the front
//! of the card's available-codes index until vacuum, so a claim that scans
//! from the start of the card wades through every code sold since the last
//! vacuum (hundreds of index pages a few seconds into a hot run, see the
//! report's `EXPLAIN (ANALYZE, BUFFERS)`). The peer remembers, per card,
//! the last code it claimed and scans from there first; only when nothing
//! is left after it does the claim start again from the beginning (codes
//! released by a rolled-back purchase sit behind the cursor).
//!
//! The function runs with `plan_cache_mode = force_generic_plan`: its
//! statements are planned once per connection instead of once per call
//! (the custom plans were no better, and planning cost as much as running).

use chrono::{DateTime, Utc};
use giftcard_shared::domain::FailureCode;
use rust_decimal::Decimal;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult, RuntimeErr, Statement,
};
use uuid::Uuid;

use crate::store::{Failure, Request};

/// `peer_buy(...)`: claims `p_quantity` codes of `p_card` (the first ones
/// after the cursor that no other transaction holds, then from the start),
/// debits `p_user`, writes the ledger entry and the purchase row; returns
/// one row per claimed code. A business failure raises `P0001` with the
/// failure code as its message and the card's price as its detail (the
/// transaction, and every claim in it, is rolled back); a purchase id
/// already stored raises `23505` (unique violation).
pub const FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION peer_buy(
    p_purchase  uuid,         -- the purchase id (derived from the user and the Idempotency-Key)
    p_user      text,         -- the buyer, whose wallet pays
    p_card      uuid,         -- the gift card bought
    p_quantity  int,          -- codes to claim, 1..=10
    p_key       text,         -- the Idempotency-Key (NULL without one)
    p_hash      text,         -- hash of (card, quantity): a replay must match it
    p_sequence  bigint,       -- the peer's arrival number, stored as stream_sequence
    p_created   timestamptz,  -- when the request arrived
    p_lock_card boolean,      -- advisory-lock strategy: one purchase of the card at a time
    p_after_key timestamptz,  -- cursor: sort key of the last code this peer claimed (NULL: none)
    p_after_id  uuid)         -- cursor: that code's id
RETURNS TABLE (code text, sort_key timestamptz, code_id uuid, unit_price numeric)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_price    numeric;
    v_active   boolean;
    v_total    numeric;
    v_codes    text[] := '{}';
    v_keys     timestamptz[] := '{}';
    v_ids      uuid[] := '{}';
    v_from_key timestamptz := COALESCE(p_after_key, '-infinity');
    v_from_id  uuid := COALESCE(p_after_id, '00000000-0000-0000-0000-000000000000');
BEGIN
    SELECT g.price, g.active INTO v_price, v_active FROM gift_cards g WHERE g.id = p_card;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'GIFT_CARD_NOT_FOUND';
    ELSIF NOT v_active THEN
        RAISE EXCEPTION 'GIFT_CARD_INACTIVE' USING DETAIL = v_price;
    END IF;
    v_total := v_price * p_quantity;
    IF p_lock_card THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_card::text, 0));
    END IF;
    -- Pass 1 from the cursor, pass 2 (if still short) from the start.
    FOR pass IN 1..2 LOOP
        WITH claimed AS (
            UPDATE activation_codes a
               SET is_used = TRUE, purchase_id = p_purchase, row_version = a.row_version + 1
             WHERE a.id = ANY (ARRAY(
                   SELECT c.id FROM activation_codes c
                    WHERE c.gift_card_id = p_card AND NOT c.is_used AND c.deleted_at IS NULL
                      AND (c.expires_on IS NULL OR c.expires_on > now())
                      AND (COALESCE(c.expires_on, 'infinity'::timestamptz), c.id) > (v_from_key, v_from_id)
                    ORDER BY COALESCE(c.expires_on, 'infinity'::timestamptz), c.id
                    LIMIT p_quantity - cardinality(v_ids)
                    FOR UPDATE SKIP LOCKED))
            RETURNING a.code, COALESCE(a.expires_on, 'infinity'::timestamptz) AS k, a.id)
        SELECT v_codes || COALESCE(array_agg(claimed.code), '{}'),
               v_keys || COALESCE(array_agg(claimed.k), '{}'),
               v_ids || COALESCE(array_agg(claimed.id), '{}')
          INTO v_codes, v_keys, v_ids
          FROM claimed;
        EXIT WHEN cardinality(v_ids) = p_quantity OR v_from_key = '-infinity';
        v_from_key := '-infinity';
        v_from_id := '00000000-0000-0000-0000-000000000000';
    END LOOP;
    IF cardinality(v_ids) < p_quantity THEN
        RAISE EXCEPTION 'ACTIVATION_CODES_NOT_AVAILABLE' USING DETAIL = v_price;
    END IF;
    UPDATE wallets w SET balance = w.balance - v_total, updated_at = now()
     WHERE w.user_id = p_user AND w.balance >= v_total;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'INSUFFICIENT_FUNDS' USING DETAIL = v_price;
    END IF;
    INSERT INTO wallet_entries (id, user_id, kind, amount, purchase_id)
    VALUES (gen_random_uuid(), p_user, 'purchase', -v_total, p_purchase);
    INSERT INTO purchases (id, user_id, gift_card_id, quantity, unit_price, total, status,
                           idempotency_key, request_hash, stream_sequence, partition,
                           created_at, completed_at)
    VALUES (p_purchase, p_user, p_card, p_quantity, v_price, v_total, 'succeeded',
            p_key, p_hash, p_sequence, 0, p_created, date_trunc('microseconds', clock_timestamp()));
    RETURN QUERY SELECT u.code, u.k, u.id, v_price FROM unnest(v_codes, v_keys, v_ids) AS u(code, k, id);
END
$$
"#;

/// The call, with the function's parameters in order (`$1` = `p_purchase` …).
pub const CALL: &str = "SELECT code, sort_key, code_id, unit_price \
    FROM peer_buy($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// Installs (or replaces) `peer_buy`.
pub async fn install(db: &DatabaseConnection) -> Result<(), DbErr> {
    db.execute_unprepared(FUNCTION).await.map(|_| ())
}

/// Where a card's last claimed code sits in "soonest-expiring first" order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub key: DateTime<Utc>,
    pub id: Uuid,
}

/// What one call ended with.
pub enum Bought {
    /// Committed; the codes (sorted) and the card's price, and the new cursor.
    Done {
        codes: Vec<String>,
        unit: Decimal,
        last: Option<Cursor>,
    },
    /// Rolled back for a business reason (with the card's price, if known).
    Failed(Failure, Option<Decimal>),
    /// Rolled back: a purchase with this id is already stored.
    Duplicate,
}

#[derive(FromQueryResult)]
struct Row {
    code: String,
    sort_key: DateTime<Utc>,
    code_id: Uuid,
    unit_price: Decimal,
}

/// Runs one purchase in one round trip.
pub async fn buy(
    db: &DatabaseConnection,
    req: &Request,
    lock_card: bool,
    after: Option<Cursor>,
) -> Result<Bought, DbErr> {
    let stmt = Statement::from_sql_and_values(
        DbBackend::Postgres,
        CALL,
        [
            req.id.into(),
            req.user.clone().into(),
            req.card.into(),
            i32::from(req.quantity.get()).into(),
            req.key.clone().into(),
            req.hash.clone().into(),
            (req.sequence as i64).into(),
            req.created_at.into(),
            lock_card.into(),
            after.map(|c| c.key).into(),
            after.map(|c| c.id).into(),
        ],
    );
    match Row::find_by_statement(stmt).all(db).await {
        Ok(rows) => {
            let unit = rows.first().map_or(Decimal::ZERO, |r| r.unit_price);
            let last = rows
                .iter()
                .map(|r| Cursor {
                    key: r.sort_key,
                    id: r.code_id,
                })
                .max();
            let mut codes: Vec<String> = rows.into_iter().map(|r| r.code).collect();
            codes.sort();
            Ok(Bought::Done { codes, unit, last })
        }
        Err(e) => match raised(&e) {
            Some(Raised::Failure(code, price)) => Ok(Bought::Failed(code.into(), price)),
            Some(Raised::Duplicate) => Ok(Bought::Duplicate),
            None => Err(e),
        },
    }
}

enum Raised {
    Failure(FailureCode, Option<Decimal>),
    Duplicate,
}

/// A business failure or duplicate the function raised, if `e` is one.
fn raised(e: &DbErr) -> Option<Raised> {
    let (DbErr::Query(RuntimeErr::SqlxError(s)) | DbErr::Exec(RuntimeErr::SqlxError(s))) = e else {
        return None;
    };
    let db = s.as_database_error()?;
    match db.code().as_deref() {
        Some("23505") => Some(Raised::Duplicate),
        Some("P0001") => {
            let code = FailureCode::parse(db.message())?;
            let pg = db.try_downcast_ref::<sea_orm::sqlx::postgres::PgDatabaseError>();
            let price = pg
                .and_then(|p| p.detail())
                .and_then(|d| d.parse::<Decimal>().ok());
            Some(Raised::Failure(code, price))
        }
        _ => None,
    }
}
