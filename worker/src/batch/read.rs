//! The batch's read ([`READ`], `sql/read.sql`) and the keyset cursors that
//! let it resume each card's scan of available codes where the last batch
//! stopped.

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Value};
use uuid::Uuid;

use super::fence::Fence;
use super::plan::{Card, Code, Item, Plan, Snapshot, Stored};
use crate::error::BatchError;

const READ: &str = include_str!("sql/read.sql");

/// Where a card's last claimed code sits in "soonest-expiring first" order:
/// every available code of the card comes after it, unless codes were
/// imported since (an import bumps the card's `updated_at`).
#[derive(Debug, Clone)]
struct Cursor {
    /// `COALESCE(expires_on, 'infinity')` as PostgreSQL prints it.
    key: String,
    id: Uuid,
    /// The card's `updated_at` when the cursor was set.
    card_updated_at: String,
}

/// The worker's keyset cursors, per card. A hint only: a new owner starts
/// without one and scans the card from the start once.
#[derive(Default)]
pub struct Cursors(std::sync::Mutex<HashMap<Uuid, Cursor>>);

impl Cursors {
    /// After commit: each card's last claimed code is where its next scan
    /// starts (codes are claimed in order).
    pub fn advance(&self, items: &[&Item], plan: &Plan, snapshot: &Snapshot) {
        let mut known = self.0.lock().expect("cursors lock");
        for d in &plan.decisions {
            let card = items[d.item].message.gift_card_id;
            if let (Some(last), Some(version)) = (d.codes.last(), snapshot.versions.get(&card)) {
                known.insert(
                    card,
                    Cursor {
                        key: last.sort_key.clone(),
                        id: last.id,
                        card_updated_at: version.clone(),
                    },
                );
            }
        }
    }
}

/// Parameters of `read.sql`, in `$n` order.
#[derive(Default)]
struct ReadParams {
    /// `$1`: partitions of the batch.
    partitions: Vec<i32>,
    /// `$2`: their fencing epochs.
    epochs: Vec<i64>,
    /// `$3`: their fencing tokens.
    tokens: Vec<i64>,
    /// `$4`: purchase ids of the messages.
    purchase_ids: Vec<Uuid>,
    /// `$5`: gift cards the messages name.
    cards: Vec<Uuid>,
    /// `$6`: the buyers.
    users: Vec<String>,
    /// `$7`: cards whose codes to read.
    code_cards: Vec<Uuid>,
    /// `$8`: how many codes each may need.
    wants: Vec<i64>,
    /// `$9`: each card's cursor sort key (`-infinity`: none).
    after_keys: Vec<String>,
    /// `$10`: each card's cursor code id (nil: none).
    after_ids: Vec<Uuid>,
    /// `$11`: the card's `updated_at` when its cursor was set (empty: none).
    seen_at: Vec<String>,
}

impl ReadParams {
    fn new(fences: &[&Fence], items: &[&Item], cursors: &Cursors) -> Self {
        let mut p = Self::default();
        for f in fences {
            p.partitions.push(i32::from(f.partition));
            p.epochs.push(f.token.epoch);
            p.tokens.push(f.token.revision);
        }
        let (mut cards, mut users) = (HashSet::new(), HashSet::new());
        // Enough codes for every message; a redelivery of a stored purchase
        // over-asks a little, which costs nothing.
        let mut need: HashMap<Uuid, i64> = HashMap::new();
        for i in items {
            let m = &i.message;
            p.purchase_ids.push(m.purchase_id);
            if cards.insert(m.gift_card_id) {
                p.cards.push(m.gift_card_id);
            }
            if users.insert(m.user_id.as_str()) {
                p.users.push(m.user_id.clone());
            }
            *need.entry(m.gift_card_id).or_default() += i64::from(m.quantity);
        }
        let known = cursors.0.lock().expect("cursors lock");
        for (card, want) in need {
            let cursor = known.get(&card);
            p.code_cards.push(card);
            p.wants.push(want);
            p.after_keys
                .push(cursor.map_or_else(|| "-infinity".to_owned(), |c| c.key.clone()));
            p.after_ids.push(cursor.map_or(Uuid::nil(), |c| c.id));
            p.seen_at
                .push(cursor.map_or_else(String::new, |c| c.card_updated_at.clone()));
        }
        p
    }

    fn values(self) -> Vec<Value> {
        vec![
            self.partitions.into(),
            self.epochs.into(),
            self.tokens.into(),
            self.purchase_ids.into(),
            self.cards.into(),
            self.users.into(),
            self.code_cards.into(),
            self.wants.into(),
            self.after_keys.into(),
            self.after_ids.into(),
            self.seen_at.into(),
        ]
    }
}

/// Runs the read on `txn` (the batch's transaction): the fences of
/// `fences`, and everything `items` need.
pub async fn read(
    txn: &impl ConnectionTrait,
    fences: &[&Fence],
    items: &[&Item],
    cursors: &Cursors,
) -> Result<Snapshot, BatchError> {
    let values = ReadParams::new(fences, items, cursors).values();
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            READ,
            values,
        ))
        .await?
        .ok_or_else(|| malformed("the read returned no row"))?;
    decode(&row)
}

fn malformed(what: impl std::fmt::Display) -> BatchError {
    // The schema and the code disagree: a deployment problem, not the
    // messages' (the batch waits for a fix instead of dead-lettering).
    BatchError::Unavailable(format!("unexpected batch read result: {what}"))
}

fn column<T: serde::de::DeserializeOwned>(
    row: &QueryResult,
    name: &str,
) -> Result<Vec<T>, BatchError> {
    match row.try_get::<Option<String>>("", name)? {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(&json).map_err(|e| malformed(format!("{name}: {e}"))),
    }
}

fn decimal(s: &str) -> Result<Decimal, BatchError> {
    s.parse()
        .map_err(|e| malformed(format!("numeric {s:?}: {e}")))
}

fn decode(row: &QueryResult) -> Result<Snapshot, BatchError> {
    let mut s = Snapshot {
        live: column::<u16>(row, "live")?.into_iter().collect(),
        versions: column::<(Uuid, String)>(row, "versions")?
            .into_iter()
            .collect(),
        ..Snapshot::default()
    };
    for (id, status, user_id, request_hash) in
        column::<(Uuid, String, String, String)>(row, "stored")?
    {
        s.stored.insert(
            id,
            Stored {
                status,
                user_id,
                request_hash,
            },
        );
    }
    for (id, price, active) in column::<(Uuid, String, bool)>(row, "cards")? {
        let price = decimal(&price)?;
        s.cards.insert(id, Card { price, active });
    }
    for (user, balance) in column::<(String, String)>(row, "wallets")? {
        s.balances.insert(user, decimal(&balance)?);
    }
    for (card, id, code, sort_key) in column::<(Uuid, Uuid, String, String)>(row, "codes")? {
        s.stock
            .entry(card)
            .or_default()
            .push_back(Code { id, code, sort_key });
    }
    Ok(s)
}
