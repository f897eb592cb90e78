//! One batch of one partition, in one PostgreSQL transaction.
//!
//! The partition's owner is the only writer of its cards' codes, so the
//! batch needs no row locks on codes and no optimistic retries: it reads
//! each card's soonest-expiring available codes once, assigns them in
//! stream order in memory, and writes everything back with a handful of
//! set-based statements. The fencing check at the start makes a stale owner
//! (one whose lease has passed to another worker) unable to commit.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use giftcard_shared::contract::{PurchaseErrorView, PurchaseMessage, PurchaseView, ReplyOutcome};
use giftcard_shared::db::{values_clause, values_clause_at};
use giftcard_shared::domain::{money_string, FailureCode, PurchaseStatus};
use giftcard_shared::entities::purchase;
use giftcard_shared::purchases::{codes_of, view_of};
use rust_decimal::Decimal;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, FromQueryResult, QueryFilter, Statement, TransactionTrait, Value,
};
use uuid::Uuid;

/// A decoded message of the batch, with its stream position.
#[derive(Debug, Clone)]
pub struct Item {
    pub message: PurchaseMessage,
    pub sequence: u64,
    pub partition: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A newer owner holds the partition: nothing was committed.
    #[error("fenced off: partition {partition} has a newer owner")]
    Fenced { partition: u16 },
    /// Codes changed under us (an admin withdrew one mid-batch): retry.
    #[error("activation codes changed concurrently; retrying")]
    CodesChanged,
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl BatchError {
    /// Whether the database could not be reached at all (as opposed to a
    /// statement failing), so that splitting the batch would not help.
    pub fn is_connectivity(&self) -> bool {
        matches!(self, Self::Db(DbErr::Conn(_) | DbErr::ConnectionAcquire(_)))
            || matches!(self, Self::Db(e) if {
                let s = e.to_string().to_ascii_lowercase();
                ["connection", "timed out", "i/o", "communicating", "reset by peer", "broken pipe", "refused", "closed"]
                    .iter()
                    .any(|needle| s.contains(needle))
            })
    }
}

/// Who is committing: the partition and its fencing token.
#[derive(Debug, Clone)]
pub struct Fence {
    pub partition: u16,
    pub token: i64,
    pub owner: String,
}

#[derive(FromQueryResult)]
struct CardRow {
    id: Uuid,
    price: Decimal,
    active: bool,
    updated_at: DateTime<Utc>,
}

#[derive(FromQueryResult)]
struct WalletRow {
    user_id: String,
    balance: Decimal,
}

#[derive(FromQueryResult)]
struct CodeRow {
    gift_card_id: Uuid,
    id: Uuid,
    code: String,
    sort_key: String,
}

/// Where a card's last claimed code sits in "soonest-expiring first" order:
/// every available code of the card comes after it, unless codes were
/// imported since (the import bumps the card's `updated_at`).
#[derive(Debug, Clone)]
struct Cursor {
    /// `COALESCE(expires_on, 'infinity')` as PostgreSQL prints it.
    key: String,
    id: Uuid,
    card_updated_at: DateTime<Utc>,
}

/// The worker's keyset cursors, per card. A hint only: a new owner starts
/// without one and scans from the start once.
#[derive(Default)]
pub struct Cursors(std::sync::Mutex<HashMap<Uuid, Cursor>>);

/// Available codes of one card, in order, with their sort keys.
type Pool = std::collections::VecDeque<(Uuid, String, String)>;

/// A purchase decided in this batch, to be written.
struct Decided {
    item_index: usize,
    status: PurchaseStatus,
    failure: Option<FailureCode>,
    unit_price: Option<Decimal>,
    total: Option<Decimal>,
    /// Claimed codes: id, code, sort key.
    codes: Vec<(Uuid, String, String)>,
}

/// What to answer for each item, in the batch's order.
pub type Outcomes = Vec<ReplyOutcome>;

/// Processes `items` (stream order) of one partition in one transaction.
pub async fn process(
    db: &DatabaseConnection,
    fence: &Fence,
    items: &[Item],
    statement_timeout: std::time::Duration,
    cursors: &Cursors,
) -> Result<Outcomes, BatchError> {
    let groups = [(fence.clone(), items.to_vec())];
    let mut results = process_group(db, &groups, statement_timeout, cursors).await?;
    results.pop().expect("one group, one result")
}

/// Processes the batches of several partitions in one transaction (group
/// commit): one fence statement for all of them, one set of statements for
/// all their messages, one commit. A fenced partition's batch is left out
/// and answered `Fenced`; the others go on.
pub async fn process_group(
    db: &DatabaseConnection,
    groups: &[(Fence, Vec<Item>)],
    statement_timeout: std::time::Duration,
    cursors: &Cursors,
) -> Result<Vec<Result<Outcomes, BatchError>>, BatchError> {
    let txn = db.begin().await?;
    let fences: Vec<&Fence> = groups.iter().map(|(f, _)| f).collect();
    let live = check_fences(&txn, &fences, Some(statement_timeout)).await?;
    let items: Vec<Item> = groups
        .iter()
        .filter(|(f, _)| live.contains(&f.partition))
        .flat_map(|(_, items)| items.iter().cloned())
        .collect();
    let (outcomes, advanced) = decide_and_write(&txn, &items, cursors).await?;
    txn.commit().await?;
    cursors.0.lock().expect("cursors lock").extend(advanced);
    let mut outcomes = outcomes.into_iter();
    Ok(groups
        .iter()
        .map(|(f, items)| {
            if live.contains(&f.partition) {
                Ok(outcomes.by_ref().take(items.len()).collect())
            } else {
                Err(BatchError::Fenced {
                    partition: f.partition,
                })
            }
        })
        .collect())
}

/// Everything between the fence check and the commit.
/// Returns the outcomes and, to apply once committed, the cards' new cursors.
async fn decide_and_write(
    txn: &DatabaseTransaction,
    items: &[Item],
    cursors: &Cursors,
) -> Result<(Outcomes, Vec<(Uuid, Cursor)>), BatchError> {
    if items.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }

    let ids: Vec<Uuid> = items.iter().map(|i| i.message.purchase_id).collect();
    let existing: HashMap<Uuid, purchase::Model> = purchase::Entity::find()
        .filter(purchase::Column::Id.is_in(ids.clone()))
        .all(txn)
        .await?
        .into_iter()
        .map(|m| (m.id, m))
        .collect();

    let card_ids: Vec<Uuid> = unique(items.iter().map(|i| i.message.gift_card_id));
    let cards: HashMap<Uuid, CardRow> = CardRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT id, price, active, updated_at FROM gift_cards WHERE id = ANY($1)",
        [card_ids.clone().into()],
    ))
    .all(txn)
    .await?
    .into_iter()
    .map(|c| (c.id, c))
    .collect();

    let users: Vec<String> = unique(items.iter().map(|i| i.message.user_id.clone()));
    // Locked in a fixed order: a user buying in two partitions at once
    // waits here briefly instead of overdrawing (no deadlock possible).
    let mut balances: HashMap<String, Decimal> = WalletRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT user_id, balance FROM wallets WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE",
        [users.into()],
    ))
    .all(txn)
    .await?
    .into_iter()
    .map(|w| (w.user_id, w.balance))
    .collect();

    let mut stock = available_codes(txn, items, &existing, &cards, cursors).await?;

    // Decide in stream order.
    let mut outcomes: Vec<Option<ReplyOutcome>> = vec![None; items.len()];
    let mut echo: Vec<(usize, Uuid)> = Vec::new();
    let mut decided: Vec<Decided> = Vec::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    for (idx, item) in items.iter().enumerate() {
        let m = &item.message;
        if let Some(prior) = existing
            .get(&m.purchase_id)
            .filter(|p| p.status != PurchaseStatus::DeadLettered.as_str())
        {
            outcomes[idx] = if prior.request_hash != m.request_hash {
                Some(ReplyOutcome::IdempotencyKeyReused)
            } else {
                echo.push((idx, m.purchase_id));
                None
            };
            continue;
        }
        if !seen.insert(m.purchase_id) {
            // Same purchase twice in one batch (a replay racing its original).
            let first = items
                .iter()
                .position(|i| i.message.purchase_id == m.purchase_id)
                .unwrap_or(idx);
            if items[first].message.request_hash != m.request_hash {
                outcomes[idx] = Some(ReplyOutcome::IdempotencyKeyReused);
            } else {
                echo.push((idx, m.purchase_id));
            }
            continue;
        }
        decided.push(decide(idx, m, &cards, &mut balances, &mut stock));
    }

    let now = Utc::now().trunc_subsecs(6);
    write(txn, items, &decided, now).await?;
    let echo_ids: Vec<Uuid> = echo.iter().map(|(_, id)| *id).collect();
    let mut echo_codes = codes_of(txn, &echo_ids).await?;

    let mut views: HashMap<Uuid, PurchaseView> = HashMap::new();
    for d in &decided {
        let item = &items[d.item_index];
        let view = decided_view(item, d, now);
        views.insert(item.message.purchase_id, view.clone());
        outcomes[d.item_index] = Some(ReplyOutcome::Completed {
            purchase: Box::new(view),
        });
    }
    for (idx, id) in echo {
        let view = match (views.get(&id), existing.get(&id)) {
            (Some(v), _) => v.clone(),
            (None, Some(prior)) => view_of(prior, echo_codes.remove(&id).unwrap_or_default()),
            (None, None) => unreachable!("echoed purchases are stored or decided"),
        };
        outcomes[idx] = Some(ReplyOutcome::Completed {
            purchase: Box::new(view),
        });
    }
    // Codes are claimed in order, so the last one claimed per card is where
    // its next scan starts.
    let mut advanced: HashMap<Uuid, Cursor> = HashMap::new();
    for d in &decided {
        let card = items[d.item_index].message.gift_card_id;
        if let (Some((id, _, key)), Some(row)) = (d.codes.last(), cards.get(&card)) {
            advanced.insert(
                card,
                Cursor {
                    key: key.clone(),
                    id: *id,
                    card_updated_at: row.updated_at,
                },
            );
        }
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.expect("every item has an outcome"))
        .collect();
    Ok((outcomes, advanced.into_iter().collect()))
}

/// Records `fence` as the partition's owner before its first batch, so a
/// stale owner cannot commit anything once the new owner starts.
pub async fn claim(db: &DatabaseConnection, fence: &Fence) -> Result<(), BatchError> {
    let txn = db.begin().await?;
    let live = check_fences(&txn, &[fence], None).await?;
    txn.commit().await?;
    if live.contains(&fence.partition) {
        Ok(())
    } else {
        Err(BatchError::Fenced {
            partition: fence.partition,
        })
    }
}

fn unique<T: std::hash::Hash + Eq + Clone>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    it.filter(|x| seen.insert(x.clone())).collect()
}

/// Records each fence's token as its partition's owner unless a newer
/// token is there; returns the partitions whose fence holds. With
/// `statement_timeout`, the rest of the transaction gets that timeout (a
/// hung statement fails the attempt instead of holding the partition),
/// set in the same round trip.
async fn check_fences(
    txn: &DatabaseTransaction,
    fences: &[&Fence],
    statement_timeout: Option<std::time::Duration>,
) -> Result<HashSet<u16>, BatchError> {
    let mut values: Vec<Value> = Vec::with_capacity(fences.len() * 3 + 1);
    for f in fences {
        values.extend([
            i32::from(f.partition).into(),
            f.token.into(),
            f.owner.clone().into(),
        ]);
    }
    let timeout = statement_timeout.map_or_else(|| "0".to_owned(), |t| t.as_millis().to_string());
    values.push(timeout.into());
    let sql = format!(
        "WITH cfg AS (SELECT set_config('statement_timeout', ${}::text, true) AS ms) \
         INSERT INTO partition_fences (partition, token, owner, updated_at) \
         SELECT v.p, v.t, v.o, now() FROM (VALUES {}) AS v(p, t, o), cfg ORDER BY v.p \
         ON CONFLICT (partition) DO UPDATE SET token = EXCLUDED.token, owner = EXCLUDED.owner, updated_at = now() \
         WHERE partition_fences.token <= EXCLUDED.token RETURNING partition",
        fences.len() * 3 + 1,
        values_clause(fences.len(), &["int4", "int8", "text"])
    );
    let rows = txn
        .query_all(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<i32>("", "partition").ok())
        .map(|p| p as u16)
        .collect())
}

/// Each card's soonest-expiring available codes, as many as the batch could
/// need, in one statement; each card's scan starts after its cursor.
async fn available_codes(
    txn: &DatabaseTransaction,
    items: &[Item],
    existing: &HashMap<Uuid, purchase::Model>,
    cards: &HashMap<Uuid, CardRow>,
    cursors: &Cursors,
) -> Result<HashMap<Uuid, Pool>, DbErr> {
    let mut need: HashMap<Uuid, i64> = HashMap::new();
    for i in items {
        let m = &i.message;
        let stored = existing
            .get(&m.purchase_id)
            .is_some_and(|p| p.status != PurchaseStatus::DeadLettered.as_str());
        if !stored && cards.get(&m.gift_card_id).is_some_and(|c| c.active) {
            *need.entry(m.gift_card_id).or_default() += i64::from(m.quantity);
        }
    }
    let mut out: HashMap<Uuid, Pool> = HashMap::new();
    if need.is_empty() {
        return Ok(out);
    }
    let (mut card_ids, mut limits, mut keys, mut after) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    {
        let known = cursors.0.lock().expect("cursors lock");
        for (card, want) in need {
            let cursor = known.get(&card).filter(|c| {
                cards
                    .get(&card)
                    .is_some_and(|row| row.updated_at == c.card_updated_at)
            });
            card_ids.push(card);
            limits.push(want);
            keys.push(cursor.map_or_else(|| "-infinity".to_owned(), |c| c.key.clone()));
            after.push(cursor.map_or(Uuid::nil(), |c| c.id));
        }
    }
    let rows = CodeRow::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT n.card AS gift_card_id, c.id, c.code, c.sort_key::text AS sort_key \
         FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::uuid[]) AS n(card, want, after_key, after_id) \
         CROSS JOIN LATERAL ( \
             SELECT a.id, a.code, COALESCE(a.expires_on, 'infinity'::timestamptz) AS sort_key \
             FROM activation_codes a \
             WHERE a.gift_card_id = n.card AND NOT a.is_used AND a.deleted_at IS NULL \
               AND (COALESCE(a.expires_on, 'infinity'::timestamptz), a.id) > (n.after_key::timestamptz, n.after_id) \
               AND (a.expires_on IS NULL OR a.expires_on > now()) \
             ORDER BY COALESCE(a.expires_on, 'infinity'::timestamptz), a.id \
             LIMIT n.want) c \
         ORDER BY n.card, c.sort_key, c.id",
        [card_ids.into(), limits.into(), keys.into(), after.into()],
    ))
    .all(txn)
    .await?;
    for r in rows {
        out.entry(r.gift_card_id)
            .or_default()
            .push_back((r.id, r.code, r.sort_key));
    }
    Ok(out)
}

fn decide(
    idx: usize,
    m: &PurchaseMessage,
    cards: &HashMap<Uuid, CardRow>,
    balances: &mut HashMap<String, Decimal>,
    stock: &mut HashMap<Uuid, Pool>,
) -> Decided {
    let fail = |failure, unit: Option<Decimal>| Decided {
        item_index: idx,
        status: PurchaseStatus::Failed,
        failure: Some(failure),
        unit_price: unit,
        total: unit.map(|u| u * Decimal::from(m.quantity)),
        codes: Vec::new(),
    };
    let Some(card) = cards.get(&m.gift_card_id) else {
        return fail(FailureCode::GiftCardNotFound, None);
    };
    if !card.active {
        return fail(FailureCode::GiftCardInactive, Some(card.price));
    }
    let qty = usize::from(m.quantity);
    let total = card.price * Decimal::from(m.quantity);
    let available = stock.get(&m.gift_card_id).map_or(0, |s| s.len());
    if available < qty {
        return fail(FailureCode::ActivationCodesNotAvailable, Some(card.price));
    }
    let balance = balances.entry(m.user_id.clone()).or_insert(Decimal::ZERO);
    if *balance < total {
        return fail(FailureCode::InsufficientFunds, Some(card.price));
    }
    *balance -= total;
    let pool = stock.get_mut(&m.gift_card_id).expect("checked above");
    Decided {
        item_index: idx,
        status: PurchaseStatus::Succeeded,
        failure: None,
        unit_price: Some(card.price),
        total: Some(total),
        codes: pool.drain(..qty).collect(),
    }
}

/// One data-modifying statement of a batch: `sql(offset)` renders it with
/// placeholders starting at `$offset+1`.
struct Piece {
    sql: Box<dyn Fn(usize) -> String + Send>,
    values: Vec<Value>,
}

/// PostgreSQL's limit on the parameters of one statement, with room to spare.
const MAX_PARAMS: usize = 60_000;

/// Writes the batch: claims the decided codes (all of them, or fails with
/// `CodesChanged`), debits wallets, records ledger lines and purchases. The
/// four statements go to PostgreSQL as one (data-modifying CTEs: one round
/// trip) unless that would exceed the parameter limit.
async fn write(
    txn: &DatabaseTransaction,
    items: &[Item],
    decided: &[Decided],
    now: DateTime<Utc>,
) -> Result<(), BatchError> {
    let claims: Vec<(Uuid, Uuid)> = decided
        .iter()
        .flat_map(|d| {
            let pid = items[d.item_index].message.purchase_id;
            d.codes.iter().map(move |(code_id, _, _)| (*code_id, pid))
        })
        .collect();
    let mut pieces: Vec<Piece> = Vec::new();
    if !claims.is_empty() {
        let n = claims.len();
        pieces.push(Piece {
            sql: Box::new(move |o| {
                format!(
                    "UPDATE activation_codes a SET is_used = TRUE, purchase_id = v.pid FROM (VALUES {}) AS v(id, pid) \
                     WHERE a.id = v.id AND NOT a.is_used AND a.deleted_at IS NULL \
                       AND (a.expires_on IS NULL OR a.expires_on > now()) RETURNING 1",
                    values_clause_at(o, n, &["uuid", "uuid"])
                )
            }),
            values: claims.iter().flat_map(|(c, p)| [Value::from(*c), Value::from(*p)]).collect(),
        });
    }
    let mut debits: HashMap<&str, Decimal> = HashMap::new();
    let mut ledger: Vec<Value> = Vec::new();
    for d in decided
        .iter()
        .filter(|d| d.status == PurchaseStatus::Succeeded)
    {
        let m = &items[d.item_index].message;
        let total = d.total.expect("succeeded has a total");
        *debits.entry(m.user_id.as_str()).or_default() += total;
        ledger.extend([
            Uuid::new_v4().into(),
            m.user_id.clone().into(),
            (-total).into(),
            m.purchase_id.into(),
        ]);
    }
    if !debits.is_empty() {
        let (users, ledger_rows) = (debits.len(), ledger.len() / 4);
        pieces.push(Piece {
            sql: Box::new(move |o| {
                format!(
                    "UPDATE wallets w SET balance = w.balance - v.amt, updated_at = now() \
                     FROM (VALUES {}) AS v(u, amt) WHERE w.user_id = v.u RETURNING 1",
                    values_clause_at(o, users, &["text", "numeric"])
                )
            }),
            values: debits
                .iter()
                .flat_map(|(u, a)| [Value::from(*u), Value::from(*a)])
                .collect(),
        });
        pieces.push(Piece {
            sql: Box::new(move |o| {
                format!(
                    "INSERT INTO wallet_entries (id, user_id, kind, amount, purchase_id) \
                     SELECT v.id, v.u, 'purchase', v.amt, v.pid FROM (VALUES {}) AS v(id, u, amt, pid) \
                     ON CONFLICT (purchase_id) DO NOTHING RETURNING 1",
                    values_clause_at(o, ledger_rows, &["uuid", "text", "numeric", "uuid"])
                )
            }),
            values: ledger,
        });
    }
    if !decided.is_empty() {
        const CASTS: [&str; 15] = [
            "uuid",
            "text",
            "uuid",
            "int2",
            "numeric",
            "numeric",
            "text",
            "text",
            "text",
            "text",
            "text",
            "int8",
            "int4",
            "timestamptz",
            "timestamptz",
        ];
        let mut values: Vec<Value> = Vec::with_capacity(decided.len() * CASTS.len());
        for d in decided {
            let item = &items[d.item_index];
            let m = &item.message;
            values.extend([
                m.purchase_id.into(),
                m.user_id.clone().into(),
                m.gift_card_id.into(),
                i16::from(m.quantity).into(),
                d.unit_price.into(),
                d.total.into(),
                d.status.as_str().into(),
                d.failure.map(|f| f.as_str().to_owned()).into(),
                d.failure.map(|f| f.message().to_owned()).into(),
                m.idempotency_key.clone().into(),
                m.request_hash.clone().into(),
                (item.sequence as i64).into(),
                i32::from(item.partition).into(),
                m.accepted_at.into(),
                now.into(),
            ]);
        }
        let rows = decided.len();
        // A dead-lettered row being replayed is overwritten.
        pieces.push(Piece {
            sql: Box::new(move |o| {
                format!(
                    "INSERT INTO purchases (id, user_id, gift_card_id, quantity, unit_price, total, status, error_code, \
                       error_message, idempotency_key, request_hash, stream_sequence, partition, created_at, completed_at) \
                     SELECT v.* FROM (VALUES {}) AS v \
                     ON CONFLICT (id) DO UPDATE SET unit_price = EXCLUDED.unit_price, total = EXCLUDED.total, \
                       status = EXCLUDED.status, error_code = EXCLUDED.error_code, error_message = EXCLUDED.error_message, \
                       stream_sequence = EXCLUDED.stream_sequence, partition = EXCLUDED.partition, \
                       completed_at = EXCLUDED.completed_at \
                     WHERE purchases.status = 'dead_lettered' RETURNING 1",
                    values_clause_at(o, rows, &CASTS)
                )
            }),
            values,
        });
    }
    if pieces.is_empty() {
        return Ok(());
    }
    let claimed = if pieces.iter().map(|p| p.values.len()).sum::<usize>() <= MAX_PARAMS {
        // One round trip: every piece a CTE; the first counts the claims.
        let mut sql = String::from("WITH ");
        let mut values = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("w{i} AS ({})", (p.sql)(values.len())));
            values.extend(p.values.iter().cloned());
        }
        sql.push_str(" SELECT (SELECT count(*) FROM w0) AS n");
        let row = txn
            .query_one(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                values,
            ))
            .await?
            .ok_or_else(|| {
                BatchError::Db(DbErr::Custom("the batch write returned no row".into()))
            })?;
        row.try_get::<i64>("", "n")? as u64
    } else {
        let mut first = 0;
        for (i, p) in pieces.into_iter().enumerate() {
            let n = txn
                .execute(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    (p.sql)(0),
                    p.values,
                ))
                .await?
                .rows_affected();
            if i == 0 {
                first = n;
            }
        }
        first
    };
    if !claims.is_empty() && claimed != claims.len() as u64 {
        return Err(BatchError::CodesChanged);
    }
    Ok(())
}

fn decided_view(item: &Item, d: &Decided, now: DateTime<Utc>) -> PurchaseView {
    let m = &item.message;
    PurchaseView {
        id: m.purchase_id,
        user_id: m.user_id.clone(),
        gift_card_id: m.gift_card_id,
        quantity: m.quantity,
        status: d.status,
        unit_price: d.unit_price.map(money_string),
        total: d.total.map(money_string),
        // Sorted, as reads from PostgreSQL return them.
        activation_codes: (d.status == PurchaseStatus::Succeeded).then(|| {
            let mut codes: Vec<String> = d.codes.iter().map(|(_, c, _)| c.clone()).collect();
            codes.sort();
            codes
        }),
        error: d.failure.map(PurchaseErrorView::from_code),
        sequence: item.sequence,
        created_at: m.accepted_at,
        completed_at: Some(now),
    }
}
