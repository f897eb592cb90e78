//! One batch of one partition (or a group of them), in two statements.
//!
//! The partition's owner is the only writer of its cards' codes, so the
//! batch needs no row locks: one statement reads everything the batch needs
//! (each card's soonest-expiring available codes, the buyers' wallets, the
//! purchases already stored), the worker assigns codes in stream order in
//! memory, and one statement writes everything back. Each statement is its
//! own implicit transaction: no `BEGIN` or `COMMIT` round trips. The write
//! is atomic and checks, in the same statement, that what the read saw
//! still holds: the partition's fence (a stale owner, one whose lease has
//! passed to another worker, cannot write), every decided code still
//! available, every debited wallet's balance unchanged. If anything moved,
//! `giftcard_batch_guard` (migration `m20261130_000004`) raises and the
//! statement leaves no trace; the batch is read and decided again.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use giftcard_shared::contract::{PurchaseErrorView, PurchaseMessage, PurchaseView, ReplyOutcome};
use giftcard_shared::domain::{money_string, FailureCode, PurchaseStatus};
use giftcard_shared::entities::purchase;
use giftcard_shared::purchases::{codes_of, view_of};
use rust_decimal::Decimal;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    Statement, Value,
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
    /// What the batch read changed before its write (a code withdrawn, a
    /// wallet credited or debited elsewhere, a deadlock with another
    /// writer): nothing was written; read again and retry.
    #[error("the batch's inputs changed concurrently; retrying")]
    Changed,
    #[error(transparent)]
    Db(DbErr),
}

impl From<DbErr> for BatchError {
    fn from(e: DbErr) -> Self {
        use sea_orm::{sqlx, RuntimeErr};
        let sqlstate = match &e {
            DbErr::Exec(RuntimeErr::SqlxError(s)) | DbErr::Query(RuntimeErr::SqlxError(s)) => {
                match s.as_ref() {
                    sqlx::Error::Database(d) => d.code(),
                    _ => None,
                }
            }
            _ => None,
        };
        // 40001 from the write's guard, 40P01 from a deadlock.
        match sqlstate.as_deref() {
            Some("40001" | "40P01") => Self::Changed,
            _ => Self::Db(e),
        }
    }
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

/// A card as the batch sees it.
struct CardRow {
    price: Decimal,
    active: bool,
    /// `updated_at` as PostgreSQL prints it: a cursor is valid only while
    /// it is unchanged.
    updated_at: String,
}

/// A purchase already stored under one of the batch's ids.
struct StoredRow {
    status: String,
    request_hash: String,
}

/// Where a card's last claimed code sits in "soonest-expiring first" order:
/// every available code of the card comes after it, unless codes were
/// imported since (the import bumps the card's `updated_at`).
#[derive(Debug, Clone)]
struct Cursor {
    /// `COALESCE(expires_on, 'infinity')` as PostgreSQL prints it.
    key: String,
    id: Uuid,
    card_updated_at: String,
}

/// The worker's keyset cursors, per card. A hint only: a new owner starts
/// without one and scans from the start once.
#[derive(Default)]
pub struct Cursors(std::sync::Mutex<HashMap<Uuid, Cursor>>);

/// Everything a batch reads, in one statement.
struct Snapshot {
    /// Partitions whose fence holds.
    live: HashSet<u16>,
    stored: HashMap<Uuid, StoredRow>,
    cards: HashMap<Uuid, CardRow>,
    balances: HashMap<String, Decimal>,
    stock: HashMap<Uuid, Pool>,
}

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

/// Processes `items` (stream order) of one partition; its writes commit
/// atomically, in one statement.
pub async fn process(
    db: &DatabaseConnection,
    fence: &Fence,
    items: &[Item],
    cursors: &Cursors,
) -> Result<Outcomes, BatchError> {
    let groups = [(fence.clone(), items.to_vec())];
    let mut results = process_group(db, &groups, cursors).await?;
    results.pop().expect("one group, one result")
}

/// Processes the batches of several partitions together (group commit):
/// one statement checks every fence and reads what all their messages
/// need, one writes every result. A fenced partition's batch is left out
/// and answered `Fenced`; the others go on.
pub async fn process_group(
    db: &DatabaseConnection,
    groups: &[(Fence, Vec<Item>)],
    cursors: &Cursors,
) -> Result<Vec<Result<Outcomes, BatchError>>, BatchError> {
    let fences: Vec<&Fence> = groups.iter().map(|(f, _)| f).collect();
    let all: Vec<&Item> = groups.iter().flat_map(|(_, items)| items).collect();
    let snapshot = read(db, &fences, &all, cursors).await?;
    let live = snapshot.live.clone();
    let live_fences: Vec<&Fence> = fences
        .into_iter()
        .filter(|f| live.contains(&f.partition))
        .collect();
    let items: Vec<&Item> = groups
        .iter()
        .filter(|(f, _)| live.contains(&f.partition))
        .flat_map(|(_, items)| items)
        .collect();
    let (outcomes, advanced) = decide_and_write(db, &live_fences, &items, snapshot).await?;
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

/// Everything after the read. Returns the outcomes and, to apply once
/// written, the cards' new cursors.
async fn decide_and_write(
    db: &DatabaseConnection,
    fences: &[&Fence],
    items: &[&Item],
    snapshot: Snapshot,
) -> Result<(Outcomes, Vec<(Uuid, Cursor)>), BatchError> {
    if items.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let Snapshot {
        stored,
        cards,
        balances: read_balances,
        mut stock,
        ..
    } = snapshot;
    let mut balances = read_balances.clone();

    // Decide in stream order.
    let mut outcomes: Vec<Option<ReplyOutcome>> = vec![None; items.len()];
    let mut echo: Vec<(usize, Uuid)> = Vec::new();
    let mut decided: Vec<Decided> = Vec::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    for (idx, item) in items.iter().enumerate() {
        let m = &item.message;
        if let Some(prior) = stored
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
    write(db, fences, items, &decided, &read_balances, now).await?;

    let mut views: HashMap<Uuid, PurchaseView> = HashMap::new();
    for d in &decided {
        let item = items[d.item_index];
        let view = decided_view(item, d, now);
        views.insert(item.message.purchase_id, view.clone());
        outcomes[d.item_index] = Some(ReplyOutcome::Completed {
            purchase: Box::new(view),
        });
    }
    // Redeliveries of purchases committed earlier (rare): answered with the
    // stored rows.
    let earlier: Vec<Uuid> = echo
        .iter()
        .map(|(_, id)| *id)
        .filter(|id| !views.contains_key(id))
        .collect();
    if !earlier.is_empty() {
        let mut codes = codes_of(db, &earlier).await?;
        for prior in purchase::Entity::find()
            .filter(purchase::Column::Id.is_in(earlier))
            .all(db)
            .await?
        {
            let view = view_of(&prior, codes.remove(&prior.id).unwrap_or_default());
            views.insert(prior.id, view);
        }
    }
    for (idx, id) in echo {
        let view = views
            .get(&id)
            .cloned()
            .ok_or_else(|| DbErr::Custom(format!("purchase {id} vanished mid-batch")))?;
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
                    card_updated_at: row.updated_at.clone(),
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
    let sql = format!("WITH {FENCE} SELECT partition FROM fence");
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            fence_values(&[fence]),
        ))
        .await?;
    if rows.is_empty() {
        Err(BatchError::Fenced {
            partition: fence.partition,
        })
    } else {
        Ok(())
    }
}

/// Records each fence's token (`$1` partitions, `$2` tokens, `$3` owners)
/// as its partition's owner unless a newer token is there; `fence` names
/// the partitions whose fence holds. The row lock it takes makes a newer
/// owner's claim wait for this statement, and this statement see the
/// newer token if that claim came first.
const FENCE: &str = "fence AS ( \
       INSERT INTO partition_fences (partition, token, owner, updated_at) \
       SELECT v.p, v.t, v.o, now() FROM unnest($1::int4[], $2::int8[], $3::text[]) AS v(p, t, o) ORDER BY v.p \
       ON CONFLICT (partition) DO UPDATE SET token = EXCLUDED.token, owner = EXCLUDED.owner, updated_at = now() \
       WHERE partition_fences.token <= EXCLUDED.token RETURNING partition)";

fn fence_values(fences: &[&Fence]) -> Vec<Value> {
    let partitions: Vec<i32> = fences.iter().map(|f| i32::from(f.partition)).collect();
    let tokens: Vec<i64> = fences.iter().map(|f| f.token).collect();
    let owners: Vec<String> = fences.iter().map(|f| f.owner.clone()).collect();
    vec![partitions.into(), tokens.into(), owners.into()]
}

/// The batch's one read: the partitions whose fence still holds (`$1`
/// partitions, `$2` tokens; read only, the write checks it again),
/// purchases already stored under its ids (`$3`), its cards (`$4`), its
/// buyers' wallets (`$5`), and each card's soonest-expiring available
/// codes, as many as the batch could need, starting after the card's cursor
/// while the card is unchanged since (`$6`–`$10`). One row of JSON arrays.
const READ: &str = "SELECT \
         (SELECT json_agg(f.partition)::text FROM partition_fences f \
            JOIN unnest($1::int4[], $2::int8[]) AS v(p, t) ON f.partition = v.p AND f.token = v.t) AS live, \
         (SELECT json_agg(json_build_array(p.id, p.status, p.request_hash))::text \
            FROM purchases p WHERE p.id = ANY($3::uuid[])) AS stored, \
         (SELECT json_agg(json_build_array(g.id, g.price::text, g.active, g.updated_at::text))::text \
            FROM gift_cards g WHERE g.id = ANY($4::uuid[])) AS cards, \
         (SELECT json_agg(json_build_array(w.user_id, w.balance::text))::text FROM ( \
            SELECT user_id, balance FROM wallets WHERE user_id = ANY($5::text[])) w) AS wallets, \
         (SELECT json_agg(json_build_array(n.card, c.id, c.code, c.sort_key::text) ORDER BY n.card, c.sort_key, c.id)::text \
            FROM ( \
              SELECT n.card, n.want, \
                CASE WHEN g.updated_at = NULLIF(n.seen_at, '')::timestamptz \
                  THEN n.after_key::timestamptz ELSE '-infinity'::timestamptz END AS after_key, \
                CASE WHEN g.updated_at = NULLIF(n.seen_at, '')::timestamptz \
                  THEN n.after_id ELSE '00000000-0000-0000-0000-000000000000'::uuid END AS after_id \
              FROM unnest($6::uuid[], $7::int8[], $8::text[], $9::uuid[], $10::text[]) \
                AS n(card, want, after_key, after_id, seen_at) \
              JOIN gift_cards g ON g.id = n.card AND g.active) n \
            CROSS JOIN LATERAL ( \
              SELECT a.id, a.code, COALESCE(a.expires_on, 'infinity'::timestamptz) AS sort_key \
              FROM activation_codes a \
              WHERE a.gift_card_id = n.card AND NOT a.is_used AND a.deleted_at IS NULL \
                AND (COALESCE(a.expires_on, 'infinity'::timestamptz), a.id) > (n.after_key, n.after_id) \
                AND (a.expires_on IS NULL OR a.expires_on > now()) \
              ORDER BY COALESCE(a.expires_on, 'infinity'::timestamptz), a.id \
              LIMIT n.want) c) AS codes";

/// Checks the fences and reads everything the batch needs in one round trip.
async fn read(
    db: &DatabaseConnection,
    fences: &[&Fence],
    items: &[&Item],
    cursors: &Cursors,
) -> Result<Snapshot, BatchError> {
    let mut values = fence_values(fences);
    values.pop(); // the owners: the read only checks tokens
    let ids: Vec<Uuid> = items.iter().map(|i| i.message.purchase_id).collect();
    let card_ids: Vec<Uuid> = unique(items.iter().map(|i| i.message.gift_card_id));
    let users: Vec<String> = unique(items.iter().map(|i| i.message.user_id.clone()));
    // Enough codes for every message; a redelivery of a stored purchase
    // over-asks a little, which costs nothing.
    let mut need: HashMap<Uuid, i64> = HashMap::new();
    for i in items {
        *need.entry(i.message.gift_card_id).or_default() += i64::from(i.message.quantity);
    }
    let (mut wanted, mut limits, mut keys, mut after, mut seen_at) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    {
        let known = cursors.0.lock().expect("cursors lock");
        for (card, want) in need {
            let cursor = known.get(&card);
            wanted.push(card);
            limits.push(want);
            keys.push(cursor.map_or_else(|| "-infinity".to_owned(), |c| c.key.clone()));
            after.push(cursor.map_or(Uuid::nil(), |c| c.id));
            seen_at.push(cursor.map_or_else(String::new, |c| c.card_updated_at.clone()));
        }
    }
    values.extend([
        ids.into(),
        card_ids.into(),
        users.into(),
        wanted.into(),
        limits.into(),
        keys.into(),
        after.into(),
        seen_at.into(),
    ]);
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            READ,
            values,
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("the batch read returned no row".into()))?;
    fn column<T: serde::de::DeserializeOwned>(
        row: &sea_orm::QueryResult,
        name: &str,
    ) -> Result<Vec<T>, DbErr> {
        match row.try_get::<Option<String>>("", name)? {
            None => Ok(Vec::new()),
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| DbErr::Custom(format!("the batch read's {name} column: {e}"))),
        }
    }
    fn decimal(s: &str) -> Result<Decimal, DbErr> {
        s.parse()
            .map_err(|e| DbErr::Custom(format!("numeric {s:?} from PostgreSQL: {e}")))
    }
    let live = column::<i32>(&row, "live")?
        .into_iter()
        .map(|p| p as u16)
        .collect();
    let stored = column::<(Uuid, String, String)>(&row, "stored")?
        .into_iter()
        .map(|(id, status, request_hash)| {
            (
                id,
                StoredRow {
                    status,
                    request_hash,
                },
            )
        })
        .collect();
    let mut cards = HashMap::new();
    for (id, price, active, updated_at) in column::<(Uuid, String, bool, String)>(&row, "cards")? {
        let price = decimal(&price)?;
        cards.insert(
            id,
            CardRow {
                price,
                active,
                updated_at,
            },
        );
    }
    let mut balances = HashMap::new();
    for (user, balance) in column::<(String, String)>(&row, "wallets")? {
        balances.insert(user, decimal(&balance)?);
    }
    let mut stock: HashMap<Uuid, Pool> = HashMap::new();
    for (card, id, code, key) in column::<(Uuid, Uuid, String, String)>(&row, "codes")? {
        stock.entry(card).or_default().push_back((id, code, key));
    }
    Ok(Snapshot {
        live,
        stored,
        cards,
        balances,
        stock,
    })
}

fn unique<T: std::hash::Hash + Eq + Clone>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    it.filter(|x| seen.insert(x.clone())).collect()
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

/// The batch's one write: renews the fences (`$24`–`$26`), claims the
/// decided codes (`$1`–`$2`), debits the wallets whose balance is still
/// what the read saw (`$3`, `$4`, `$27`, in user order so that two writers
/// lock them alike), records the ledger lines (`$5`–`$8`) and the purchases
/// (`$9`–`$23`; empty strings stand for NULL, as arrays cannot carry it
/// here), each a data-modifying CTE over arrays so that the text never
/// changes and PostgreSQL plans it once per connection. A dead-lettered row
/// being replayed is overwritten. The guard undoes the whole statement
/// unless every fence held, all `$28` codes were claimed and every wallet
/// debited.
static WRITE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH {} , claimed AS ( \
       UPDATE activation_codes a SET is_used = TRUE, purchase_id = v.pid \
       FROM unnest($1::uuid[], $2::uuid[]) AS v(id, pid) \
       WHERE a.id = v.id AND NOT a.is_used AND a.deleted_at IS NULL \
         AND (a.expires_on IS NULL OR a.expires_on > now()) RETURNING 1), \
     debited AS ( \
       UPDATE wallets w SET balance = w.balance - v.amount, updated_at = now() \
       FROM unnest($3::text[], $4::numeric[], $27::numeric[]) AS v(user_id, amount, expected) \
       WHERE w.user_id = v.user_id AND w.balance = v.expected RETURNING 1), \
     ledger AS ( \
       INSERT INTO wallet_entries (id, user_id, kind, amount, purchase_id) \
       SELECT v.id, v.user_id, 'purchase', v.amount, v.purchase_id \
       FROM unnest($5::uuid[], $6::text[], $7::numeric[], $8::uuid[]) AS v(id, user_id, amount, purchase_id) \
       ON CONFLICT (purchase_id) DO NOTHING RETURNING 1), \
     recorded AS ( \
       INSERT INTO purchases (id, user_id, gift_card_id, quantity, unit_price, total, status, error_code, \
         error_message, idempotency_key, request_hash, stream_sequence, partition, created_at, completed_at) \
       SELECT v.id, v.user_id, v.card, v.quantity, NULLIF(v.unit_price, '')::numeric, NULLIF(v.total, '')::numeric, \
         v.status, NULLIF(v.error_code, ''), NULLIF(v.error_message, ''), NULLIF(v.idempotency_key, ''), \
         v.request_hash, v.sequence, v.partition, v.created_at, $23::timestamptz \
       FROM unnest($9::uuid[], $10::text[], $11::uuid[], $12::int2[], $13::text[], $14::text[], $15::text[], \
         $16::text[], $17::text[], $18::text[], $19::text[], $20::int8[], $21::int4[], $22::timestamptz[]) \
         AS v(id, user_id, card, quantity, unit_price, total, status, error_code, error_message, \
              idempotency_key, request_hash, sequence, partition, created_at) \
       ON CONFLICT (id) DO UPDATE SET unit_price = EXCLUDED.unit_price, total = EXCLUDED.total, \
         status = EXCLUDED.status, error_code = EXCLUDED.error_code, error_message = EXCLUDED.error_message, \
         stream_sequence = EXCLUDED.stream_sequence, partition = EXCLUDED.partition, \
         completed_at = EXCLUDED.completed_at \
       WHERE purchases.status = 'dead_lettered' RETURNING 1) \
     SELECT giftcard_batch_guard( \
       (SELECT count(*) FROM fence) = cardinality($24::int4[]) \
       AND (SELECT count(*) FROM claimed) = $28::int8 \
       AND (SELECT count(*) FROM debited) = cardinality($3::text[])) AS ok",
        FENCE.replace("$1::", "$24::").replace("$2::", "$25::").replace("$3::", "$26::")
    )
});

/// Writes the batch in one statement ([`WRITE`]): everything, or nothing
/// and `Changed` if what the read saw no longer holds.
async fn write(
    db: &DatabaseConnection,
    fences: &[&Fence],
    items: &[&Item],
    decided: &[Decided],
    read_balances: &HashMap<String, Decimal>,
    now: DateTime<Utc>,
) -> Result<(), BatchError> {
    if decided.is_empty() {
        return Ok(());
    }
    let (mut code_ids, mut claimants) = (Vec::new(), Vec::new());
    // Sorted: concurrent writers lock wallets in the same order.
    let mut debits: std::collections::BTreeMap<&str, Decimal> = Default::default();
    let (mut entry_ids, mut entry_users, mut entry_amounts, mut entry_purchases) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let n = decided.len();
    let mut p = PurchaseColumns::with_capacity(n);
    let text = |s: Option<String>| s.unwrap_or_default();
    for d in decided {
        let item = items[d.item_index];
        let m = &item.message;
        for (code_id, _, _) in &d.codes {
            code_ids.push(*code_id);
            claimants.push(m.purchase_id);
        }
        if d.status == PurchaseStatus::Succeeded {
            let total = d.total.expect("succeeded has a total");
            if total > Decimal::ZERO {
                *debits.entry(m.user_id.as_str()).or_default() += total;
            }
            entry_ids.push(Uuid::new_v4());
            entry_users.push(m.user_id.clone());
            entry_amounts.push(-total);
            entry_purchases.push(m.purchase_id);
        }
        p.id.push(m.purchase_id);
        p.user_id.push(m.user_id.clone());
        p.card.push(m.gift_card_id);
        p.quantity.push(i16::from(m.quantity));
        p.unit_price.push(text(d.unit_price.map(|v| v.to_string())));
        p.total.push(text(d.total.map(|v| v.to_string())));
        p.status.push(d.status.as_str().to_owned());
        p.error_code
            .push(text(d.failure.map(|f| f.as_str().to_owned())));
        p.error_message
            .push(text(d.failure.map(|f| f.message().to_owned())));
        p.idempotency_key.push(text(m.idempotency_key.clone()));
        p.request_hash.push(m.request_hash.clone());
        p.sequence.push(item.sequence as i64);
        p.partition.push(i32::from(item.partition));
        p.created_at.push(m.accepted_at);
    }
    let claims = code_ids.len() as i64;
    let (mut debit_users, mut debit_amounts, mut expected) = (Vec::new(), Vec::new(), Vec::new());
    for (user, amount) in debits {
        // A debit implies the read found the wallet (balance >= total > 0).
        let balance = read_balances.get(user).copied().unwrap_or(Decimal::ZERO);
        debit_users.push(user.to_owned());
        debit_amounts.push(amount);
        expected.push(balance);
    }
    let mut values: Vec<Value> = vec![
        code_ids.into(),
        claimants.into(),
        debit_users.into(),
        debit_amounts.into(),
        entry_ids.into(),
        entry_users.into(),
        entry_amounts.into(),
        entry_purchases.into(),
        p.id.into(),
        p.user_id.into(),
        p.card.into(),
        p.quantity.into(),
        p.unit_price.into(),
        p.total.into(),
        p.status.into(),
        p.error_code.into(),
        p.error_message.into(),
        p.idempotency_key.into(),
        p.request_hash.into(),
        p.sequence.into(),
        p.partition.into(),
        p.created_at.into(),
        now.into(),
    ];
    values.extend(fence_values(fences));
    values.extend([expected.into(), claims.into()]);
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        WRITE.as_str(),
        values,
    ))
    .await?;
    Ok(())
}

/// The purchases of a batch, column by column, for [`WRITE`].
#[derive(Default)]
struct PurchaseColumns {
    id: Vec<Uuid>,
    user_id: Vec<String>,
    card: Vec<Uuid>,
    quantity: Vec<i16>,
    unit_price: Vec<String>,
    total: Vec<String>,
    status: Vec<String>,
    error_code: Vec<String>,
    error_message: Vec<String>,
    idempotency_key: Vec<String>,
    request_hash: Vec<String>,
    sequence: Vec<i64>,
    partition: Vec<i32>,
    created_at: Vec<DateTime<Utc>>,
}

impl PurchaseColumns {
    fn with_capacity(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            user_id: Vec::with_capacity(n),
            card: Vec::with_capacity(n),
            quantity: Vec::with_capacity(n),
            unit_price: Vec::with_capacity(n),
            total: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            error_code: Vec::with_capacity(n),
            error_message: Vec::with_capacity(n),
            idempotency_key: Vec::with_capacity(n),
            request_hash: Vec::with_capacity(n),
            sequence: Vec::with_capacity(n),
            partition: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
        }
    }
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
