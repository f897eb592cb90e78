//! The optimistic strategies' SQL, statement by statement: reading the card
//! and its available codes, debiting the wallet, marking codes used, and
//! storing the purchase and its ledger entry (and every strategy's failed
//! purchase row). Statements carry codes: none of them is ever logged.

use chrono::{DateTime, SubsecRound, Utc};
use giftcard_shared::domain::{FailureCode, PurchaseStatus, Quantity};
use giftcard_shared::entities::purchase;
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, Statement, Value};
use uuid::Uuid;

/// One purchase request, as it arrived.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: Uuid,
    pub user: String,
    pub card: Uuid,
    pub quantity: Quantity,
    pub key: Option<String>,
    pub hash: String,
    /// The process-wide arrival number (stored as `stream_sequence`).
    pub sequence: u64,
    pub created_at: DateTime<Utc>,
}

impl Request {
    pub fn qty(&self) -> usize {
        usize::from(self.quantity.get())
    }

    pub fn total(&self, unit: Decimal) -> Decimal {
        unit * Decimal::from(self.quantity.get())
    }
}

/// Why a purchase failed: a business [`FailureCode`] or the peers'
/// extension `CONCURRENCY_CONFLICT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub message: &'static str,
}

impl From<FailureCode> for Failure {
    fn from(c: FailureCode) -> Self {
        Self {
            code: c.as_str(),
            message: c.message(),
        }
    }
}

/// The optimistic strategies' answer once their retries are used up.
pub const CONCURRENCY_CONFLICT: Failure = Failure {
    code: "CONCURRENCY_CONFLICT",
    message:
        "Other purchases took the selected activation codes on every attempt; retry the purchase.",
};

#[derive(Debug, FromQueryResult)]
pub struct CardRow {
    pub price: Decimal,
    pub active: bool,
}

pub async fn card<C: ConnectionTrait>(c: &C, id: Uuid) -> Result<Option<CardRow>, DbErr> {
    CardRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT price, active FROM gift_cards WHERE id = $1",
        [id.into()],
    ))
    .one(c)
    .await
}

/// An available code as read, with its row version.
#[derive(Debug, FromQueryResult)]
pub struct CodeRow {
    pub id: Uuid,
    pub code: String,
    pub row_version: i32,
}

const AVAILABLE: &str = "SELECT id, code, row_version FROM activation_codes \
    WHERE gift_card_id = $1 AND NOT is_used AND deleted_at IS NULL \
      AND (expires_on IS NULL OR expires_on > now())";

/// Up to `n` available codes of `card`: the first ones (soonest-expiring,
/// never-expiring last, then by id), or random ones. Sorted by id, so that
/// concurrent purchases lock them in one order.
///
/// Random codes are the next available ones after a random point of the id
/// (UUID v4) space, wrapping around: an index range scan, where `ORDER BY
/// random()` would sort every available code of the card on each attempt
/// (tens of milliseconds for a card of 400k codes).
pub async fn available_codes<C: ConnectionTrait>(
    c: &C,
    card: Uuid,
    n: usize,
    random: bool,
) -> Result<Vec<CodeRow>, DbErr> {
    let stmt = if random {
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "({AVAILABLE} AND id >= $3 ORDER BY id LIMIT $2) \
                 UNION ALL ({AVAILABLE} AND id < $3 ORDER BY id LIMIT $2) LIMIT $2"
            ),
            [card.into(), (n as i64).into(), Uuid::new_v4().into()],
        )
    } else {
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "{AVAILABLE} ORDER BY COALESCE(expires_on, 'infinity'::timestamptz), id LIMIT $2"
            ),
            [card.into(), (n as i64).into()],
        )
    };
    let mut rows = CodeRow::find_by_statement(stmt).all(c).await?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// Marks `codes` used by `purchase`, each guarded by the row version read:
/// `false` if any was changed meanwhile (a concurrency conflict).
pub async fn mark_used_versioned<C: ConnectionTrait>(
    c: &C,
    codes: &[CodeRow],
    purchase: Uuid,
) -> Result<bool, DbErr> {
    for code in codes {
        let n = c
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "UPDATE activation_codes SET is_used = TRUE, purchase_id = $1, row_version = row_version + 1 \
                 WHERE id = $2 AND row_version = $3 AND NOT is_used AND deleted_at IS NULL",
                [purchase.into(), code.id.into(), code.row_version.into()],
            ))
            .await?
            .rows_affected();
        if n != 1 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Debits `total` if the balance covers it: `false` if it does not (or the
/// user has no wallet).
pub async fn debit<C: ConnectionTrait>(c: &C, user: &str, total: Decimal) -> Result<bool, DbErr> {
    let n = c
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE wallets SET balance = balance - $1, updated_at = now() \
             WHERE user_id = $2 AND balance >= $1",
            [total.into(), user.into()],
        ))
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// The ledger entry of a succeeded purchase.
pub async fn insert_debit_entry<C: ConnectionTrait>(
    c: &C,
    r: &Request,
    total: Decimal,
) -> Result<(), DbErr> {
    c.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO wallet_entries (id, user_id, kind, amount, purchase_id) \
         VALUES ($1, $2, 'purchase', $3, $4) ON CONFLICT (purchase_id) DO NOTHING",
        [
            Uuid::new_v4().into(),
            r.user.clone().into(),
            (-total).into(),
            r.id.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The row of a finished purchase (succeeded when `failure` is `None`).
pub fn model(r: &Request, failure: Option<Failure>, unit: Option<Decimal>) -> purchase::Model {
    let status = match failure {
        None => PurchaseStatus::Succeeded,
        Some(_) => PurchaseStatus::Failed,
    };
    purchase::Model {
        id: r.id,
        user_id: r.user.clone(),
        gift_card_id: r.card,
        quantity: i16::from(r.quantity.get()),
        unit_price: unit,
        total: unit.map(|u| r.total(u)),
        status: status.as_str().to_owned(),
        error_code: failure.map(|f| f.code.to_owned()),
        error_message: failure.map(|f| f.message.to_owned()),
        idempotency_key: r.key.clone(),
        request_hash: r.hash.clone(),
        stream_sequence: r.sequence as i64,
        partition: 0,
        created_at: r.created_at,
        completed_at: Some(Utc::now().trunc_subsecs(6)),
    }
}

/// Inserts the purchase row: `false` if a purchase with its id already
/// exists (a concurrent request with the same Idempotency-Key won).
pub async fn insert_purchase<C: ConnectionTrait>(
    c: &C,
    m: &purchase::Model,
) -> Result<bool, DbErr> {
    let values: [Value; 15] = [
        m.id.into(),
        m.user_id.clone().into(),
        m.gift_card_id.into(),
        m.quantity.into(),
        m.unit_price.into(),
        m.total.into(),
        m.status.clone().into(),
        m.error_code.clone().into(),
        m.error_message.clone().into(),
        m.idempotency_key.clone().into(),
        m.request_hash.clone().into(),
        m.stream_sequence.into(),
        m.partition.into(),
        m.created_at.into(),
        m.completed_at.into(),
    ];
    let n = c
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO purchases (id, user_id, gift_card_id, quantity, unit_price, total, status, \
               error_code, error_message, idempotency_key, request_hash, stream_sequence, partition, \
               created_at, completed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT DO NOTHING",
            values,
        ))
        .await?
        .rows_affected();
    Ok(n == 1)
}
