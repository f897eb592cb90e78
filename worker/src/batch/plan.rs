//! The batch's decision, pure: given the messages in stream order and what
//! the read saw, decide every purchase. No I/O, so every rule is unit
//! tested here.
//!
//! Per message, in order:
//! 1. A purchase already stored under its id (and not dead-lettered) is
//!    answered from the stored row if the message is the same request (same
//!    user, same request hash), and `IDEMPOTENCY_KEY_REUSED` otherwise.
//! 2. The same id earlier in this batch (a replay racing its original, or
//!    one key used on two cards after the duplicate window): the same
//!    request is answered like the first, another is a reused key.
//! 3. A dead-lettered purchase under its id is decided afresh only if the
//!    message is the same request (a replay); another request under that id
//!    is a reused key and leaves the dead letter alone.
//! 4. Otherwise the purchase is decided: unknown card, inactive card, not
//!    enough codes, not enough money, or success with the card's
//!    soonest-expiring codes and a debit of the buyer's wallet.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use giftcard_shared::contract::PurchaseMessage;
use giftcard_shared::domain::{FailureCode, PurchaseStatus};
use rust_decimal::Decimal;
use uuid::Uuid;

/// A decoded message of the batch, with its stream position.
#[derive(Debug, Clone)]
pub struct Item {
    pub message: PurchaseMessage,
    pub sequence: u64,
    pub partition: u16,
}

/// Everything the batch's read returned.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Partitions whose fence holds this worker's token (locked until commit).
    pub live: HashSet<u16>,
    /// Purchases already stored under the batch's ids.
    pub stored: HashMap<Uuid, Stored>,
    /// The batch's cards (locked until commit).
    pub cards: HashMap<Uuid, Card>,
    /// The cards' `updated_at` as PostgreSQL prints it, as of the snapshot
    /// the codes were read in (a keyset cursor is valid while unchanged).
    pub versions: HashMap<Uuid, String>,
    /// The buyers' balances (locked until commit); a buyer without a
    /// wallet is absent.
    pub balances: HashMap<String, Decimal>,
    /// Each card's available codes, soonest-expiring first.
    pub stock: HashMap<Uuid, VecDeque<Code>>,
}

/// A purchase row already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: String,
    pub user_id: String,
    pub request_hash: String,
}

/// A card as the batch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub price: Decimal,
    pub active: bool,
}

/// An available activation code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub id: Uuid,
    pub code: String,
    /// `COALESCE(expires_on, 'infinity')` as PostgreSQL prints it.
    pub sort_key: String,
}

/// What each message of the batch gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Decided in this batch: `plan.decisions[i]`.
    Decided(usize),
    /// The same request as a purchase stored earlier or decided earlier in
    /// this batch: answer with that purchase.
    Echo(Uuid),
    /// The purchase id (idempotency key) belongs to another request.
    KeyReused,
}

/// A purchase decided in this batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index of its message in the batch.
    pub item: usize,
    pub status: PurchaseStatus,
    pub failure: Option<FailureCode>,
    pub unit_price: Option<Decimal>,
    pub total: Option<Decimal>,
    /// The claimed codes, in claim order.
    pub codes: Vec<Code>,
}

/// One wallet's debit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debit {
    pub amount: Decimal,
    /// The balance the read saw; the write checks it is unchanged.
    pub expected: Decimal,
}

/// The whole decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// One per message, in the batch's order.
    pub verdicts: Vec<Verdict>,
    pub decisions: Vec<Decision>,
    /// Per buyer (sorted, the order in which every batch locks wallets).
    pub debits: BTreeMap<String, Debit>,
}

impl Plan {
    /// Codes claimed by the plan.
    pub fn claims(&self) -> usize {
        self.decisions.iter().map(|d| d.codes.len()).sum()
    }

    /// Succeeded purchases (one ledger line each).
    pub fn successes(&self) -> usize {
        self.decisions
            .iter()
            .filter(|d| d.status == PurchaseStatus::Succeeded)
            .count()
    }
}

/// Decides `items` (stream order) against `snapshot`.
pub fn plan(items: &[&Item], snapshot: &Snapshot) -> Plan {
    let mut stock = snapshot.stock.clone();
    let mut balances = snapshot.balances.clone();
    let mut plan = Plan::default();
    // The first message of each purchase id decided in this batch.
    let mut first: HashMap<Uuid, usize> = HashMap::new();
    for (idx, item) in items.iter().enumerate() {
        let m = &item.message;
        let same_request = |user: &str, hash: &str| m.user_id == user && m.request_hash == hash;
        let stored = snapshot.stored.get(&m.purchase_id);
        let verdict = match (stored, first.get(&m.purchase_id)) {
            (Some(s), _) if s.status != PurchaseStatus::DeadLettered.as_str() => {
                if same_request(&s.user_id, &s.request_hash) {
                    Verdict::Echo(m.purchase_id)
                } else {
                    Verdict::KeyReused
                }
            }
            (_, Some(&earlier)) => {
                let e = &items[earlier].message;
                if same_request(&e.user_id, &e.request_hash) {
                    Verdict::Echo(m.purchase_id)
                } else {
                    Verdict::KeyReused
                }
            }
            (Some(dead), None) if !same_request(&dead.user_id, &dead.request_hash) => {
                Verdict::KeyReused
            }
            _ => {
                first.insert(m.purchase_id, idx);
                let d = decide(idx, m, snapshot, &mut balances, &mut stock);
                if let Some(total) = d.total.filter(|_| d.status == PurchaseStatus::Succeeded) {
                    let debit = plan.debits.entry(m.user_id.clone()).or_insert(Debit {
                        amount: Decimal::ZERO,
                        expected: snapshot
                            .balances
                            .get(&m.user_id)
                            .copied()
                            .unwrap_or_default(),
                    });
                    debit.amount += total;
                }
                plan.decisions.push(d);
                Verdict::Decided(plan.decisions.len() - 1)
            }
        };
        plan.verdicts.push(verdict);
    }
    plan
}

fn decide(
    idx: usize,
    m: &PurchaseMessage,
    snapshot: &Snapshot,
    balances: &mut HashMap<String, Decimal>,
    stock: &mut HashMap<Uuid, VecDeque<Code>>,
) -> Decision {
    let fail = |failure, unit: Option<Decimal>| Decision {
        item: idx,
        status: PurchaseStatus::Failed,
        failure: Some(failure),
        unit_price: unit,
        total: unit.map(|u| u * Decimal::from(m.quantity)),
        codes: Vec::new(),
    };
    let Some(card) = snapshot.cards.get(&m.gift_card_id) else {
        return fail(FailureCode::GiftCardNotFound, None);
    };
    if !card.active {
        return fail(FailureCode::GiftCardInactive, Some(card.price));
    }
    let qty = usize::from(m.quantity);
    let total = card.price * Decimal::from(m.quantity);
    let pool = stock.entry(m.gift_card_id).or_default();
    if pool.len() < qty {
        return fail(FailureCode::ActivationCodesNotAvailable, Some(card.price));
    }
    let balance = balances.get(&m.user_id).copied().unwrap_or_default();
    if balance < total {
        return fail(FailureCode::InsufficientFunds, Some(card.price));
    }
    balances.insert(m.user_id.clone(), balance - total);
    Decision {
        item: idx,
        status: PurchaseStatus::Succeeded,
        failure: None,
        unit_price: Some(card.price),
        total: Some(total),
        codes: pool.drain(..qty).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn card_id(n: u8) -> Uuid {
        Uuid::from_u128(0xc000 + u128::from(n))
    }

    fn item(id: u128, user: &str, card: u8, quantity: u8, seq: u64) -> Item {
        Item {
            message: PurchaseMessage {
                v: 1,
                purchase_id: Uuid::from_u128(id),
                user_id: user.into(),
                gift_card_id: card_id(card),
                quantity,
                request_hash: format!("{}:{quantity}", card_id(card)),
                idempotency_key: Some(format!("k{id}")),
                accepted_at: Utc::now(),
            },
            sequence: seq,
            partition: 0,
        }
    }

    fn snapshot(codes: &[(u8, usize)], balances: &[(&str, i64)]) -> Snapshot {
        let mut s = Snapshot::default();
        for &(card, n) in codes {
            s.cards.insert(
                card_id(card),
                Card {
                    price: Decimal::from(10),
                    active: true,
                },
            );
            s.stock.insert(
                card_id(card),
                (0..n)
                    .map(|i| Code {
                        id: Uuid::from_u128(u128::from(card) << 64 | i as u128),
                        code: format!("C{card}-{i}"),
                        sort_key: "infinity".into(),
                    })
                    .collect(),
            );
        }
        for &(user, b) in balances {
            s.balances.insert(user.into(), Decimal::from(b));
        }
        s
    }

    fn run(items: &[Item], s: &Snapshot) -> Plan {
        let refs: Vec<&Item> = items.iter().collect();
        plan(&refs, s)
    }

    fn failure(p: &Plan, i: usize) -> Option<FailureCode> {
        match p.verdicts[i] {
            Verdict::Decided(d) => p.decisions[d].failure,
            _ => panic!("message {i} was not decided: {:?}", p.verdicts[i]),
        }
    }

    #[test]
    fn stock_goes_to_the_earliest_messages_that_can_pay() {
        let s = snapshot(&[(1, 3)], &[("ann", 100), ("bob", 5), ("cat", 100)]);
        let items = [
            item(1, "ann", 1, 2, 10),
            item(2, "bob", 1, 1, 11),
            item(3, "cat", 1, 1, 12),
            item(4, "ann", 1, 1, 13),
        ];
        let p = run(&items, &s);
        assert_eq!(failure(&p, 0), None);
        assert_eq!(failure(&p, 1), Some(FailureCode::InsufficientFunds));
        assert_eq!(failure(&p, 2), None);
        assert_eq!(
            failure(&p, 3),
            Some(FailureCode::ActivationCodesNotAvailable)
        );
        assert_eq!(p.claims(), 3);
        assert_eq!(p.successes(), 2);
        assert_eq!(
            p.debits["ann"],
            Debit {
                amount: Decimal::from(20),
                expected: Decimal::from(100)
            }
        );
        assert_eq!(p.debits.len(), 2, "bob pays nothing: {:?}", p.debits);
    }

    #[test]
    fn one_buyer_spends_her_balance_in_order() {
        let s = snapshot(&[(1, 5)], &[("ann", 25)]);
        let items = [
            item(1, "ann", 1, 1, 1),
            item(2, "ann", 1, 1, 2),
            item(3, "ann", 1, 1, 3),
        ];
        let p = run(&items, &s);
        assert_eq!(failure(&p, 0), None);
        assert_eq!(failure(&p, 1), None);
        assert_eq!(failure(&p, 2), Some(FailureCode::InsufficientFunds));
        assert_eq!(p.debits["ann"].amount, Decimal::from(20));
    }

    #[test]
    fn unknown_and_inactive_cards_fail_without_touching_anything() {
        let mut s = snapshot(&[(1, 5)], &[("ann", 100)]);
        s.cards.get_mut(&card_id(1)).unwrap().active = false;
        let p = run(&[item(1, "ann", 1, 1, 1), item(2, "ann", 2, 1, 2)], &s);
        assert_eq!(failure(&p, 0), Some(FailureCode::GiftCardInactive));
        assert_eq!(failure(&p, 1), Some(FailureCode::GiftCardNotFound));
        assert_eq!(p.decisions[1].unit_price, None);
        assert_eq!((p.claims(), p.debits.len()), (0, 0));
    }

    #[test]
    fn a_stored_purchase_is_echoed_only_to_the_same_request() {
        let mut s = snapshot(&[(1, 5), (2, 5)], &[("ann", 100), ("eve", 100)]);
        let original = item(1, "ann", 1, 1, 1);
        s.stored.insert(
            original.message.purchase_id,
            Stored {
                status: "succeeded".into(),
                user_id: "ann".into(),
                request_hash: original.message.request_hash.clone(),
            },
        );
        let mut other_body = item(1, "ann", 2, 2, 5);
        other_body.message.purchase_id = original.message.purchase_id;
        let mut other_user = original.clone();
        other_user.message.user_id = "eve".into();
        let p = run(&[original.clone(), other_body, other_user], &s);
        assert_eq!(
            p.verdicts,
            vec![
                Verdict::Echo(original.message.purchase_id),
                Verdict::KeyReused,
                Verdict::KeyReused
            ]
        );
        assert!(p.decisions.is_empty());
    }

    /// Issue 13, 1a: a dead-lettered purchase's key reused with another
    /// body must not turn the dead letter into a success with the other
    /// card's codes.
    #[test]
    fn a_dead_lettered_purchase_is_decided_again_only_for_the_same_request() {
        let mut s = snapshot(&[(1, 5), (2, 5)], &[("ann", 100)]);
        let dead = item(7, "ann", 1, 1, 1);
        s.stored.insert(
            dead.message.purchase_id,
            Stored {
                status: "dead_lettered".into(),
                user_id: "ann".into(),
                request_hash: dead.message.request_hash.clone(),
            },
        );
        let mut reuse = item(7, "ann", 2, 2, 9);
        reuse.message.purchase_id = dead.message.purchase_id;
        let p = run(std::slice::from_ref(&reuse), &s);
        assert_eq!(p.verdicts, vec![Verdict::KeyReused]);
        assert_eq!((p.claims(), p.debits.len()), (0, 0));

        let p = run(&[dead], &s);
        assert_eq!(p.verdicts, vec![Verdict::Decided(0)]);
        assert_eq!(p.claims(), 1);
    }

    /// Issue 13, 1b within one batch: one key on two cards.
    #[test]
    fn one_key_on_two_cards_in_one_batch_decides_the_first_only() {
        let s = snapshot(&[(1, 5), (2, 5)], &[("ann", 100)]);
        let first = item(9, "ann", 1, 1, 1);
        let mut second = item(9, "ann", 2, 1, 2);
        second.message.purchase_id = first.message.purchase_id;
        let again = first.clone();
        let p = run(&[first.clone(), second, again], &s);
        assert_eq!(
            p.verdicts,
            vec![
                Verdict::Decided(0),
                Verdict::KeyReused,
                Verdict::Echo(first.message.purchase_id)
            ]
        );
        assert_eq!(p.claims(), 1);
        assert_eq!(p.debits["ann"].amount, Decimal::from(10));
    }

    #[test]
    fn codes_are_claimed_in_the_order_the_read_returned_them() {
        let s = snapshot(&[(1, 4)], &[("ann", 100)]);
        let p = run(&[item(1, "ann", 1, 3, 1), item(2, "ann", 1, 1, 2)], &s);
        let codes: Vec<&str> = p
            .decisions
            .iter()
            .flat_map(|d| d.codes.iter().map(|c| c.code.as_str()))
            .collect();
        assert_eq!(codes, ["C1-0", "C1-1", "C1-2", "C1-3"]);
    }
}
