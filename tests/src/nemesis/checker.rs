//! Checks a nemesis run: the recorded history against the database, after
//! everything was healed and every purchase settled. Each violation is an
//! [`Anomaly`] naming the purchases, users, cards or codes involved, so that
//! the report can print the few operations that show it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use rust_decimal::Decimal;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement};
use serde_json::Value;
use uuid::Uuid;

use super::clients::{purchase_id, World};
use super::history::{Op, OpKind};

/// One violated promise.
#[derive(Debug, Clone)]
pub struct Anomaly {
    pub what: &'static str,
    pub detail: String,
    /// Purchase ids, users, cards, keys or codes involved: the history
    /// excerpt is the operations that mention one of them.
    pub about: Vec<String>,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.detail)
    }
}

/// A stored purchase.
#[derive(Debug, Clone)]
struct Row {
    id: Uuid,
    user: String,
    card: Uuid,
    quantity: i16,
    status: String,
    error: Option<String>,
    unit_price: Option<Decimal>,
    total: Option<Decimal>,
    sequence: i64,
    completed_at: Option<chrono::DateTime<chrono::Utc>>,
    key: Option<String>,
}

/// What the database holds at the end.
struct Db {
    purchases: HashMap<Uuid, Row>,
    /// Used codes: code text → (card, purchase, withdrawn).
    codes: HashMap<(Uuid, String), (Uuid, bool)>,
    /// Codes per purchase, sorted.
    codes_of: HashMap<Uuid, Vec<String>>,
    /// Debits per purchase: amounts.
    debits: HashMap<Uuid, Vec<Decimal>>,
    /// Credits: reference → (user, amount).
    credits: HashMap<String, (String, Decimal)>,
    balances: HashMap<String, Decimal>,
    dead_letters: Vec<String>,
}

async fn rows(db: &DatabaseConnection, sql: &str) -> Vec<QueryResult> {
    db.query_all_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("checker query failed: {e}\n{sql}"))
}

fn get<T: sea_orm::TryGetable>(r: &QueryResult, col: &str) -> T {
    r.try_get("", col)
        .unwrap_or_else(|e| panic!("checker column {col}: {e:?}"))
}

fn dec(s: Option<String>) -> Option<Decimal> {
    s.and_then(|s| s.parse().ok())
}

async fn load(db: &DatabaseConnection) -> Db {
    let mut out = Db {
        purchases: HashMap::new(),
        codes: HashMap::new(),
        codes_of: HashMap::new(),
        debits: HashMap::new(),
        credits: HashMap::new(),
        balances: HashMap::new(),
        dead_letters: Vec::new(),
    };
    for r in rows(
        db,
        "SELECT id, user_id, gift_card_id, quantity, status, error_code, unit_price::text AS unit_price, \
           total::text AS total, stream_sequence, completed_at, idempotency_key FROM purchases",
    )
    .await
    {
        let row = Row {
            id: get(&r, "id"),
            user: get(&r, "user_id"),
            card: get(&r, "gift_card_id"),
            quantity: get(&r, "quantity"),
            status: get(&r, "status"),
            error: get(&r, "error_code"),
            unit_price: dec(get(&r, "unit_price")),
            total: dec(get(&r, "total")),
            sequence: get(&r, "stream_sequence"),
            completed_at: get(&r, "completed_at"),
            key: get(&r, "idempotency_key"),
        };
        out.purchases.insert(row.id, row);
    }
    for r in rows(
        db,
        "SELECT gift_card_id, code, purchase_id, deleted_at IS NOT NULL AS withdrawn \
         FROM activation_codes WHERE is_used ORDER BY code",
    )
    .await
    {
        let (card, code, purchase): (Uuid, String, Uuid) = (
            get(&r, "gift_card_id"),
            get(&r, "code"),
            get(&r, "purchase_id"),
        );
        out.codes_of.entry(purchase).or_default().push(code.clone());
        out.codes
            .insert((card, code), (purchase, get(&r, "withdrawn")));
    }
    for r in rows(
        db,
        "SELECT user_id, kind, amount::text AS amount, reference, purchase_id FROM wallet_entries",
    )
    .await
    {
        let amount = dec(Some(get(&r, "amount"))).unwrap_or_default();
        let kind: String = get(&r, "kind");
        if kind == "credit" {
            let reference: String = get(&r, "reference");
            out.credits.insert(reference, (get(&r, "user_id"), amount));
        } else {
            let purchase: Uuid = get(&r, "purchase_id");
            out.debits.entry(purchase).or_default().push(amount);
        }
    }
    for r in rows(db, "SELECT user_id, balance::text AS balance FROM wallets").await {
        out.balances.insert(
            get(&r, "user_id"),
            dec(Some(get(&r, "balance"))).unwrap_or_default(),
        );
    }
    for r in rows(
        db,
        "SELECT reason || ' (purchase ' || COALESCE(purchase_id::text, '?') || ')' AS d FROM dead_letters",
    )
    .await
    {
        out.dead_letters.push(get(&r, "d"));
    }
    out
}

/// Runs every check; `finals` are the purchases' views read after the run.
pub async fn check(
    db: &DatabaseConnection,
    world: &World,
    ops: &[Op],
    finals: &HashMap<Uuid, Value>,
) -> Vec<Anomaly> {
    let db = load(db).await;
    let mut found = Vec::new();
    acknowledged_purchases_are_terminal(&db, ops, finals, &mut found);
    answers_tell_the_stored_story(&db, ops, &mut found);
    codes_are_sold_once_and_match(&db, ops, &mut found);
    purchases_agree_with_ledger_and_codes(&db, &mut found);
    balances_are_credits_minus_charges(&db, ops, &mut found);
    per_card_order_holds(&db, world, &mut found);
    prices_were_set(&db, world, ops, &mut found);
    every_purchase_was_requested(&db, ops, &mut found);
    for d in &db.dead_letters {
        found.push(Anomaly {
            what: "dead letter",
            detail: format!("nothing the nemesis sends is bad, yet: {d}"),
            about: Vec::new(),
        });
    }
    found
}

fn anomaly(found: &mut Vec<Anomaly>, what: &'static str, detail: String, about: Vec<String>) {
    found.push(Anomaly {
        what,
        detail,
        about,
    });
}

/// Every 201/202/404/409 ends terminal, and exists.
fn acknowledged_purchases_are_terminal(
    db: &Db,
    ops: &[Op],
    finals: &HashMap<Uuid, Value>,
    found: &mut Vec<Anomaly>,
) {
    let acknowledged: HashSet<Uuid> = ops
        .iter()
        .filter(|o| o.kind.is_purchase() && matches!(o.status, 201 | 202 | 404 | 409))
        .filter_map(|o| o.purchase)
        .collect();
    for id in acknowledged {
        match db.purchases.get(&id) {
            Some(r) if r.status == "succeeded" || r.status == "failed" => {}
            Some(r) => anomaly(
                found,
                "not terminal",
                format!("acknowledged purchase {id} is {}", r.status),
                vec![id.to_string()],
            ),
            None => anomaly(
                found,
                "lost",
                format!(
                    "acknowledged purchase {id} is not stored (last read: {})",
                    finals
                        .get(&id)
                        .map_or("none".into(), |v| v["status"].to_string())
                ),
                vec![id.to_string()],
            ),
        }
    }
}

/// The bodies sent with each (user, key).
fn bodies(ops: &[Op]) -> HashMap<(String, String), HashSet<(Uuid, u8)>> {
    let mut out: HashMap<(String, String), HashSet<(Uuid, u8)>> = HashMap::new();
    for o in ops.iter().filter(|o| o.kind.is_purchase()) {
        if let (Some(key), Some(card)) = (&o.key, o.card) {
            out.entry((o.user.clone(), key.clone()))
                .or_default()
                .insert((card, o.quantity));
        }
    }
    out
}

/// What each answer said agrees with what is stored.
fn answers_tell_the_stored_story(db: &Db, ops: &[Op], found: &mut Vec<Anomaly>) {
    let sent_bodies = bodies(ops);
    for o in ops
        .iter()
        .filter(|o| o.kind.is_purchase() || o.kind == OpKind::Poll)
    {
        let Some(id) = o.purchase else { continue };
        let about = vec![id.to_string()];
        let row = db.purchases.get(&id);
        let contested = o
            .key
            .as_ref()
            .and_then(|k| sent_bodies.get(&(o.user.clone(), k.clone())))
            .is_some_and(|b| b.len() > 1);
        let body = &o.body;
        let said = body["status"].as_str().unwrap_or("");
        let mismatch = |what: String| Anomaly {
            what: "wrong story",
            detail: format!(
                "{:?} answered {} for purchase {id}: {what}",
                o.kind, o.status
            ),
            about: about.clone(),
        };
        if o.kind.is_purchase()
            && o.status == 422
            && body["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
        {
            if let Some(r) = row {
                let same = o.card == Some(r.card) && i16::from(o.quantity) == r.quantity;
                if same && !contested {
                    found.push(mismatch(
                        "refused as a reused key, yet stored with this very body".into(),
                    ));
                }
            }
            continue;
        }
        if !matches!(o.status, 200..=202 | 404 | 409) || !body.is_object() || said.is_empty() {
            continue;
        }
        if o.kind.is_purchase() && o.status != 202 {
            // A terminal answer is for this request's own body.
            let answered_card = body["gift_card_id"]
                .as_str()
                .and_then(|s| s.parse::<Uuid>().ok());
            if answered_card != o.card || body["quantity"].as_u64() != Some(u64::from(o.quantity)) {
                found.push(mismatch("the answer describes another request".into()));
            }
        }
        let Some(r) = row else { continue };
        if said == "pending" {
            if o.kind.is_purchase() && !contested {
                let same = o.card == Some(r.card) && i16::from(o.quantity) == r.quantity;
                if !same {
                    found.push(mismatch(format!(
                        "accepted for card {:?} ×{}, stored for card {} ×{}",
                        o.card, o.quantity, r.card, r.quantity
                    )));
                }
            }
            continue;
        }
        if said != r.status {
            found.push(mismatch(format!("said {said}, stored {}", r.status)));
            continue;
        }
        let error = body["error"]["code"].as_str().map(str::to_owned);
        if error != r.error {
            found.push(mismatch(format!(
                "said error {error:?}, stored {:?}",
                r.error
            )));
        }
        let total = dec(body["total"].as_str().map(str::to_owned));
        if total != r.total {
            found.push(mismatch(format!(
                "said total {total:?}, stored {:?}",
                r.total
            )));
        }
        if said == "succeeded" {
            let mut codes: Vec<String> = body["activation_codes"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            codes.sort();
            let stored = db.codes_of.get(&id).cloned().unwrap_or_default();
            if codes != stored {
                found.push(mismatch(format!("said codes {codes:?}, stored {stored:?}")));
            }
        }
    }
}

/// No code went to two purchases, in any answer or in the database.
fn codes_are_sold_once_and_match(db: &Db, ops: &[Op], found: &mut Vec<Anomaly>) {
    let mut owner: HashMap<(Uuid, String), Uuid> = HashMap::new();
    for o in ops {
        let (Some(id), Some(codes)) = (o.purchase, o.body["activation_codes"].as_array()) else {
            continue;
        };
        let Some(card) = o.body["gift_card_id"]
            .as_str()
            .and_then(|s| s.parse::<Uuid>().ok())
        else {
            continue;
        };
        for code in codes.iter().filter_map(Value::as_str) {
            let key = (card, code.to_owned());
            match owner.get(&key) {
                Some(other) if *other != id => anomaly(
                    found,
                    "code sold twice",
                    format!("code {code} of card {card} answered to purchases {other} and {id}"),
                    vec![other.to_string(), id.to_string(), code.to_owned()],
                ),
                _ => {
                    owner.insert(key.clone(), id);
                }
            }
            match db.codes.get(&key) {
                Some((stored, _)) if *stored == id => {}
                other => anomaly(
                    found,
                    "code sold twice",
                    format!(
                        "code {code} answered to purchase {id}, stored for {:?}",
                        other.map(|(p, _)| p)
                    ),
                    vec![id.to_string(), code.to_owned()],
                ),
            }
        }
    }
    for ((card, code), (purchase, withdrawn)) in &db.codes {
        if *withdrawn {
            anomaly(
                found,
                "withdrawn code sold",
                format!("code {code} of card {card} is withdrawn and sold to {purchase}"),
                vec![purchase.to_string(), code.clone()],
            );
        }
    }
}

/// Each purchase row agrees with its codes, its ledger line and its debit.
fn purchases_agree_with_ledger_and_codes(db: &Db, found: &mut Vec<Anomaly>) {
    for r in db.purchases.values() {
        let codes = db.codes_of.get(&r.id).map_or(0, Vec::len);
        let debits = db.debits.get(&r.id).cloned().unwrap_or_default();
        let about = vec![r.id.to_string()];
        let succeeded = r.status == "succeeded";
        let wrong = if succeeded {
            let total = r.total.unwrap_or_default();
            let priced = r.unit_price.map(|u| u * Decimal::from(r.quantity)) == r.total;
            (codes != r.quantity as usize || debits != vec![-total] || !priced).then(|| {
                format!(
                    "succeeded ×{} for {:?} (unit {:?}) holds {codes} codes and debits {debits:?}",
                    r.quantity, r.total, r.unit_price
                )
            })
        } else {
            (codes != 0 || !debits.is_empty())
                .then(|| format!("{} holds {codes} codes and debits {debits:?}", r.status))
        };
        if let Some(detail) = wrong {
            anomaly(
                found,
                "purchase disagrees with its codes or ledger",
                format!("{}: {detail}", r.id),
                about,
            );
        }
        for (code, (card, _)) in db
            .codes
            .iter()
            .filter(|(_, (p, _))| *p == r.id)
            .map(|(k, v)| (&k.1, (&k.0, v)))
        {
            if *card != r.card {
                anomaly(
                    found,
                    "purchase disagrees with its codes or ledger",
                    format!(
                        "{} of card {} holds code {code} of card {card}",
                        r.id, r.card
                    ),
                    vec![r.id.to_string(), code.clone()],
                );
            }
        }
    }
}

/// Balances equal credits minus charges; acknowledged credits are booked
/// once; nothing is booked that was not sent.
fn balances_are_credits_minus_charges(db: &Db, ops: &[Op], found: &mut Vec<Anomaly>) {
    let mut expected: HashMap<String, Decimal> = HashMap::new();
    for (user, amount) in db.credits.values() {
        *expected.entry(user.clone()).or_default() += *amount;
    }
    for r in db.purchases.values().filter(|r| r.status == "succeeded") {
        *expected.entry(r.user.clone()).or_default() -= r.total.unwrap_or_default();
    }
    for (user, balance) in &db.balances {
        let want = expected.get(user).copied().unwrap_or_default();
        if *balance != want || *balance < Decimal::ZERO {
            anomaly(
                found,
                "balance",
                format!("{user} holds {balance}, credits minus charges are {want}"),
                vec![user.clone()],
            );
        }
    }
    let sent: HashSet<&str> = ops
        .iter()
        .filter(|o| o.kind == OpKind::Credit)
        .filter_map(|o| o.key.as_deref())
        .collect();
    for o in ops
        .iter()
        .filter(|o| o.kind == OpKind::Credit && o.status == 200)
    {
        let reference = o.key.clone().unwrap_or_default();
        let booked = db.credits.get(&reference);
        let amount = dec(o.amount.clone()).unwrap_or_default();
        if booked != Some(&(o.user.clone(), amount)) {
            anomaly(
                found,
                "credit",
                format!(
                    "credit {reference} of {amount} to {} acknowledged, booked {booked:?}",
                    o.user
                ),
                vec![reference.clone(), o.user.clone()],
            );
        }
    }
    for reference in db.credits.keys() {
        if reference.starts_with("cr") && !sent.contains(reference.as_str()) {
            anomaly(
                found,
                "credit",
                format!("credit {reference} booked, never sent"),
                vec![reference.clone()],
            );
        }
    }
}

/// Per card, purchases completed in sequence order; on cards whose stock
/// only shrinks, no out-of-stock failure precedes a success that needed
/// as many codes.
fn per_card_order_holds(db: &Db, world: &World, found: &mut Vec<Anomaly>) {
    let mut by_card: BTreeMap<Uuid, Vec<&Row>> = BTreeMap::new();
    for r in db
        .purchases
        .values()
        .filter(|r| r.status != "dead_lettered")
    {
        by_card.entry(r.card).or_default().push(r);
    }
    for (card, mut rows) in by_card {
        rows.sort_by_key(|r| r.sequence);
        for pair in rows.windows(2) {
            if let (Some(a), Some(b)) = (pair[0].completed_at, pair[1].completed_at) {
                if b < a {
                    anomaly(
                        found,
                        "per-card order",
                        format!(
                            "card {card}: sequence {} completed at {a}, before it sequence {} at {b}",
                            pair[0].sequence, pair[1].sequence
                        ),
                        vec![pair[0].id.to_string(), pair[1].id.to_string()],
                    );
                }
            }
        }
        if !world.stable.contains(&card) {
            continue;
        }
        let mut smallest_out: Option<&Row> = None;
        for r in &rows {
            if let Some(f) =
                smallest_out.filter(|f| r.status == "succeeded" && r.quantity >= f.quantity)
            {
                anomaly(
                    found,
                    "per-card winners",
                    format!(
                        "card {card}: sequence {} failed out of stock for {}, later sequence {} got {}",
                        f.sequence, f.quantity, r.sequence, r.quantity
                    ),
                    vec![f.id.to_string(), r.id.to_string()],
                );
            }
            if r.error.as_deref() == Some("ACTIVATION_CODES_NOT_AVAILABLE")
                && smallest_out.is_none_or(|f| r.quantity < f.quantity)
            {
                smallest_out = Some(r);
            }
        }
    }
}

/// Every purchase was charged a price its card had.
fn prices_were_set(db: &Db, world: &World, ops: &[Op], found: &mut Vec<Anomaly>) {
    let mut prices: HashMap<Uuid, HashSet<Decimal>> = HashMap::new();
    for (card, p) in &world.initial_prices {
        prices
            .entry(*card)
            .or_default()
            .extend(p.parse::<Decimal>().ok());
    }
    for o in ops.iter().filter(|o| o.kind == OpKind::Reprice) {
        if let (Some(card), Some(p)) = (o.card, dec(o.amount.clone())) {
            prices.entry(card).or_default().insert(p);
        }
    }
    for r in db.purchases.values() {
        if let Some(u) = r.unit_price {
            if !prices.get(&r.card).is_some_and(|s| s.contains(&u)) {
                anomaly(
                    found,
                    "price",
                    format!(
                        "{} charged {u} a unit, a price card {} never had",
                        r.id, r.card
                    ),
                    vec![r.id.to_string()],
                );
            }
        }
    }
}

/// Every stored purchase comes from a request of the history, and one
/// (user, key) is one purchase.
fn every_purchase_was_requested(db: &Db, ops: &[Op], found: &mut Vec<Anomaly>) {
    let requested: HashSet<Uuid> = ops
        .iter()
        .filter(|o| o.kind.is_purchase())
        .filter_map(|o| Some(purchase_id(&o.user, o.key.as_deref()?)))
        .collect();
    for r in db.purchases.values() {
        if !requested.contains(&r.id) {
            anomaly(
                found,
                "phantom purchase",
                format!("{} ({} key {:?}) was never requested", r.id, r.user, r.key),
                vec![r.id.to_string()],
            );
        }
        let key_id = r.key.as_deref().map(|k| purchase_id(&r.user, k));
        if key_id != Some(r.id) {
            anomaly(
                found,
                "one purchase per key",
                format!(
                    "{} stored under key {:?} of {}, which names {key_id:?}",
                    r.id, r.key, r.user
                ),
                vec![r.id.to_string()],
            );
        }
    }
}

/// The operations and faults that show `a`: those mentioning what it is
/// about, and the faults around them.
pub fn excerpt(
    a: &Anomaly,
    ops: &[Op],
    faults: &[super::history::Fault],
    max: usize,
) -> Vec<String> {
    let mentions = |o: &Op| {
        a.about.iter().any(|k| {
            o.purchase.is_some_and(|p| p.to_string() == *k)
                || o.key.as_deref() == Some(k.as_str())
                || o.user == *k
                || o.body.to_string().contains(k.as_str())
        })
    };
    let shown: Vec<&Op> = ops.iter().filter(|o| mentions(o)).collect();
    let (from, to) = match (shown.first(), shown.last()) {
        (Some(f), Some(l)) => (
            f.invoked.saturating_sub(std::time::Duration::from_secs(5)),
            l.completed + std::time::Duration::from_secs(5),
        ),
        _ => return Vec::new(),
    };
    let mut lines: Vec<(std::time::Duration, String)> = shown
        .iter()
        .rev()
        .take(max)
        .map(|o| (o.invoked, o.to_string()))
        .collect();
    for f in faults {
        let until = f.healed.unwrap_or(std::time::Duration::MAX);
        if f.started <= to && until >= from {
            lines.push((f.started, f.to_string()));
        }
    }
    lines.sort_by_key(|(t, _)| *t);
    lines.into_iter().map(|(_, l)| l).collect()
}

#[cfg(test)]
mod tests {
    //! The checker must see what it looks for: each check against a small
    //! history and database with exactly that fault.

    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn card(n: u128) -> Uuid {
        Uuid::from_u128(0xca_0000 + n)
    }

    fn world() -> World {
        giftcard_shared::tls::install_crypto_provider();
        World::new(
            vec!["http://api".into()],
            reqwest::Client::new(),
            vec!["ann".into()],
            HashMap::from([("ann".to_owned(), "token".to_owned())]),
            "admin".into(),
            vec![card(1)],
            vec![card(2)],
            HashMap::from([(card(1), "1.00".to_owned()), (card(2), "1.00".to_owned())]),
            HashMap::new(),
            7,
        )
    }

    /// `ann` bought `quantity` of card 1 with key `key`, answered `status`.
    fn buy(key: &str, quantity: u8, status: u16, body: Value) -> Op {
        Op {
            client: 0,
            kind: OpKind::BuySync,
            invoked: Duration::from_secs(1),
            completed: Duration::from_secs(2),
            user: "ann".into(),
            card: Some(card(1)),
            key: Some(key.into()),
            quantity,
            purchase: Some(purchase_id("ann", key)),
            amount: None,
            api: 0,
            status,
            body,
        }
    }

    fn succeeded(key: &str, sequence: i64, codes: &[&str]) -> (Row, Value) {
        let id = purchase_id("ann", key);
        let row = Row {
            id,
            user: "ann".into(),
            card: card(1),
            quantity: codes.len() as i16,
            status: "succeeded".into(),
            error: None,
            unit_price: Some(Decimal::ONE),
            total: Some(Decimal::from(codes.len())),
            sequence,
            completed_at: Some(chrono::Utc::now()),
            key: Some(key.into()),
        };
        let body = json!({
            "id": id, "gift_card_id": card(1), "quantity": codes.len(), "status": "succeeded",
            "total": format!("{}.00", codes.len()), "activation_codes": codes, "error": null,
        });
        (row, body)
    }

    /// A database holding `rows`, their codes and debits, and credits of 10.
    fn db(rows: &[(Row, Vec<&str>)]) -> Db {
        let mut db = Db {
            purchases: HashMap::new(),
            codes: HashMap::new(),
            codes_of: HashMap::new(),
            debits: HashMap::new(),
            credits: HashMap::from([("seed".to_owned(), ("ann".to_owned(), Decimal::TEN))]),
            balances: HashMap::new(),
            dead_letters: Vec::new(),
        };
        let mut balance = Decimal::TEN;
        for (row, codes) in rows {
            for c in codes {
                db.codes
                    .insert((row.card, (*c).to_owned()), (row.id, false));
                db.codes_of.entry(row.id).or_default().push((*c).to_owned());
            }
            if row.status == "succeeded" {
                let total = row.total.unwrap_or_default();
                db.debits.insert(row.id, vec![-total]);
                balance -= total;
            }
            db.purchases.insert(row.id, row.clone());
        }
        db.balances.insert("ann".into(), balance);
        db
    }

    fn run_all(db: &Db, ops: &[Op]) -> Vec<&'static str> {
        let mut found = Vec::new();
        acknowledged_purchases_are_terminal(db, ops, &HashMap::new(), &mut found);
        answers_tell_the_stored_story(db, ops, &mut found);
        codes_are_sold_once_and_match(db, ops, &mut found);
        purchases_agree_with_ledger_and_codes(db, &mut found);
        balances_are_credits_minus_charges(db, ops, &mut found);
        per_card_order_holds(db, &world(), &mut found);
        prices_were_set(db, &world(), ops, &mut found);
        every_purchase_was_requested(db, ops, &mut found);
        found.iter().map(|a| a.what).collect()
    }

    #[test]
    fn a_consistent_history_has_no_anomaly() {
        let (a, body_a) = succeeded("k1", 1, &["A1"]);
        let (b, body_b) = succeeded("k2", 2, &["A2", "A3"]);
        let db = db(&[(a, vec!["A1"]), (b, vec!["A2", "A3"])]);
        let ops = [buy("k1", 1, 201, body_a), buy("k2", 2, 201, body_b)];
        assert_eq!(run_all(&db, &ops), Vec::<&str>::new());
    }

    #[test]
    fn an_acknowledged_purchase_missing_from_the_database_is_lost() {
        let db = db(&[]);
        let ops = [buy("k1", 1, 202, json!({"status": "pending"}))];
        assert_eq!(run_all(&db, &ops), vec!["lost"]);
    }

    #[test]
    fn a_code_answered_to_two_purchases_is_sold_twice() {
        let (a, body_a) = succeeded("k1", 1, &["A1"]);
        let (b, mut body_b) = succeeded("k2", 2, &["A2"]);
        body_b["activation_codes"] = json!(["A1"]);
        let db = db(&[(a, vec!["A1"]), (b, vec!["A2"])]);
        let found = run_all(&db, &[buy("k1", 1, 201, body_a), buy("k2", 1, 201, body_b)]);
        assert!(found.contains(&"code sold twice"), "{found:?}");
        assert!(found.contains(&"wrong story"), "{found:?}");
    }

    #[test]
    fn a_charge_missing_from_the_balance_is_an_anomaly() {
        let (a, body) = succeeded("k1", 1, &["A1"]);
        let mut db = db(&[(a, vec!["A1"])]);
        db.balances.insert("ann".into(), Decimal::TEN);
        assert_eq!(run_all(&db, &[buy("k1", 1, 201, body)]), vec!["balance"]);
    }

    #[test]
    fn a_winner_after_an_out_of_stock_failure_on_a_stable_card_is_an_anomaly() {
        let (mut lost, _) = succeeded("k1", 1, &[]);
        lost.status = "failed".into();
        lost.error = Some("ACTIVATION_CODES_NOT_AVAILABLE".into());
        lost.quantity = 1;
        lost.total = Some(Decimal::ONE);
        let (won, body) = succeeded("k2", 2, &["A9"]);
        let db = db(&[(lost, vec![]), (won, vec!["A9"])]);
        let ops = [
            buy("k1", 1, 409, json!({"status": "failed"})),
            buy("k2", 1, 201, body),
        ];
        assert!(run_all(&db, &ops).contains(&"per-card winners"));
    }

    #[test]
    fn a_purchase_nobody_asked_for_is_a_phantom() {
        let (a, _) = succeeded("never-sent", 1, &["A1"]);
        let db = db(&[(a, vec!["A1"])]);
        assert_eq!(run_all(&db, &[]), vec!["phantom purchase"]);
    }
}
