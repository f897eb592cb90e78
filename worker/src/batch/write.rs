//! The batch's write ([`WRITE`], `sql/write.sql`): the plan as arrays, one
//! statement, and the check that it touched exactly the rows the plan
//! expects.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use giftcard_shared::domain::PurchaseStatus;
use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Value};
use uuid::Uuid;

use super::fence::Fence;
use super::plan::{Item, Plan, Snapshot};
use crate::error::{BatchError, Conflict};

const WRITE: &str = include_str!("sql/write.sql");

/// Parameters of `write.sql`, in `$n` order.
#[derive(Default)]
struct WriteParams {
    /// `$1`: codes to claim.
    code_ids: Vec<Uuid>,
    /// `$2`: the purchase claiming each.
    claimants: Vec<Uuid>,
    /// `$3`: wallets to debit, in user order.
    debit_users: Vec<String>,
    /// `$4`: amount to debit from each.
    debit_amounts: Vec<Decimal>,
    /// `$5`: each one's balance as the read saw it.
    debit_expected: Vec<Decimal>,
    /// `$6`: ledger lines: ids.
    entry_ids: Vec<Uuid>,
    /// `$7`: ledger lines: users.
    entry_users: Vec<String>,
    /// `$8`: ledger lines: amounts (negative).
    entry_amounts: Vec<Decimal>,
    /// `$9`: ledger lines: purchases.
    entry_purchases: Vec<Uuid>,
    /// `$10`: purchases: ids.
    ids: Vec<Uuid>,
    /// `$11`: purchases: users.
    users: Vec<String>,
    /// `$12`: purchases: cards.
    cards: Vec<Uuid>,
    /// `$13`: purchases: quantities.
    quantities: Vec<i16>,
    /// `$14`: purchases: unit prices ("" for NULL).
    unit_prices: Vec<String>,
    /// `$15`: purchases: totals ("" for NULL).
    totals: Vec<String>,
    /// `$16`: purchases: statuses.
    statuses: Vec<String>,
    /// `$17`: purchases: error codes ("" for NULL).
    error_codes: Vec<String>,
    /// `$18`: purchases: error messages ("" for NULL).
    error_messages: Vec<String>,
    /// `$19`: purchases: idempotency keys ("" for NULL).
    idempotency_keys: Vec<String>,
    /// `$20`: purchases: request hashes.
    request_hashes: Vec<String>,
    /// `$21`: purchases: stream sequences.
    sequences: Vec<i64>,
    /// `$22`: purchases: partitions.
    partitions: Vec<i32>,
    /// `$23`: purchases: accepted at.
    accepted_at: Vec<DateTime<Utc>>,
    /// `$24`: completed at.
    completed_at: DateTime<Utc>,
    /// `$25`: partitions of the batch.
    fence_partitions: Vec<i32>,
    /// `$26`: their fencing epochs.
    fence_epochs: Vec<i64>,
    /// `$27`: their fencing tokens.
    fence_tokens: Vec<i64>,
    /// `$28`: cards the decision used.
    read_cards: Vec<Uuid>,
    /// `$29`: their prices as read.
    read_prices: Vec<Decimal>,
    /// `$30`: their active flags as read.
    read_active: Vec<bool>,
}

/// How many rows each part of the write must touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    fences: i64,
    cards: i64,
    claimed: i64,
    debited: i64,
    ledger: i64,
    recorded: i64,
}

impl WriteParams {
    fn new(
        fences: &[&Fence],
        items: &[&Item],
        plan: &Plan,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
    ) -> Self {
        let text = |s: Option<String>| s.unwrap_or_default();
        let mut p = Self {
            completed_at: now,
            ..Self::default()
        };
        let mut used_cards = HashSet::new();
        for d in &plan.decisions {
            let item = items[d.item];
            let m = &item.message;
            for code in &d.codes {
                p.code_ids.push(code.id);
                p.claimants.push(m.purchase_id);
            }
            if d.status == PurchaseStatus::Succeeded {
                p.entry_ids.push(Uuid::new_v4());
                p.entry_users.push(m.user_id.clone());
                p.entry_amounts.push(-d.total.unwrap_or_default());
                p.entry_purchases.push(m.purchase_id);
            }
            if let Some(card) = snapshot.cards.get(&m.gift_card_id) {
                if used_cards.insert(m.gift_card_id) {
                    p.read_cards.push(m.gift_card_id);
                    p.read_prices.push(card.price);
                    p.read_active.push(card.active);
                }
            }
            p.ids.push(m.purchase_id);
            p.users.push(m.user_id.clone());
            p.cards.push(m.gift_card_id);
            p.quantities.push(i16::from(m.quantity));
            p.unit_prices
                .push(text(d.unit_price.map(|v| v.to_string())));
            p.totals.push(text(d.total.map(|v| v.to_string())));
            p.statuses.push(d.status.as_str().to_owned());
            p.error_codes
                .push(text(d.failure.map(|f| f.as_str().to_owned())));
            p.error_messages
                .push(text(d.failure.map(|f| f.message().to_owned())));
            p.idempotency_keys.push(text(m.idempotency_key.clone()));
            p.request_hashes.push(m.request_hash.clone());
            p.sequences.push(item.sequence as i64);
            p.partitions.push(i32::from(item.partition));
            p.accepted_at.push(m.accepted_at);
        }
        for (user, debit) in &plan.debits {
            p.debit_users.push(user.clone());
            p.debit_amounts.push(debit.amount);
            p.debit_expected.push(debit.expected);
        }
        for f in fences {
            p.fence_partitions.push(i32::from(f.partition));
            p.fence_epochs.push(f.token.epoch);
            p.fence_tokens.push(f.token.revision);
        }
        p
    }

    fn expected(&self) -> Expected {
        let n = |v: usize| v as i64;
        Expected {
            fences: n(self.fence_partitions.len()),
            cards: n(self.read_cards.len()),
            claimed: n(self.code_ids.len()),
            debited: n(self.debit_users.len()),
            ledger: n(self.entry_ids.len()),
            recorded: n(self.ids.len()),
        }
    }

    fn values(self) -> Vec<Value> {
        vec![
            self.code_ids.into(),
            self.claimants.into(),
            self.debit_users.into(),
            self.debit_amounts.into(),
            self.debit_expected.into(),
            self.entry_ids.into(),
            self.entry_users.into(),
            self.entry_amounts.into(),
            self.entry_purchases.into(),
            self.ids.into(),
            self.users.into(),
            self.cards.into(),
            self.quantities.into(),
            self.unit_prices.into(),
            self.totals.into(),
            self.statuses.into(),
            self.error_codes.into(),
            self.error_messages.into(),
            self.idempotency_keys.into(),
            self.request_hashes.into(),
            self.sequences.into(),
            self.partitions.into(),
            self.accepted_at.into(),
            self.completed_at.into(),
            self.fence_partitions.into(),
            self.fence_epochs.into(),
            self.fence_tokens.into(),
            self.read_cards.into(),
            self.read_prices.into(),
            self.read_active.into(),
        ]
    }
}

/// Writes `plan` on `txn` (the batch's transaction, after its read);
/// `Conflict::RowCount` if any part touched another number of rows than
/// the plan expects, in which case the caller must roll back.
pub async fn write(
    txn: &impl ConnectionTrait,
    fences: &[&Fence],
    items: &[&Item],
    plan: &Plan,
    snapshot: &Snapshot,
    now: DateTime<Utc>,
) -> Result<(), BatchError> {
    if plan.decisions.is_empty() {
        return Ok(());
    }
    let params = WriteParams::new(fences, items, plan, snapshot, now);
    let expected = params.expected();
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            WRITE,
            params.values(),
        ))
        .await?
        .ok_or_else(|| BatchError::Unavailable("the batch write returned no row".into()))?;
    check(&row, expected)
}

/// Compares the write's row counts with `expected`.
fn check(row: &QueryResult, expected: Expected) -> Result<(), BatchError> {
    let parts = [
        ("fences still held", "fences", expected.fences),
        ("cards unchanged", "cards", expected.cards),
        ("codes claimed", "claimed", expected.claimed),
        ("wallets debited", "debited", expected.debited),
        ("ledger lines", "ledger", expected.ledger),
        ("purchases recorded", "recorded", expected.recorded),
    ];
    for (what, column, expected) in parts {
        let touched: i64 = row.try_get("", column)?;
        if touched != expected {
            return Err(BatchError::Conflict(Conflict::RowCount {
                what,
                expected,
                touched,
            }));
        }
    }
    Ok(())
}
