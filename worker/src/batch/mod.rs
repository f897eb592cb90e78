//! A batch: the messages of one partition (or, merged by the committer, of
//! several) decided and written in **one PostgreSQL transaction**:
//!
//! ```text
//! BEGIN
//!   read   (sql/read.sql)   fences, cards and wallets locked; stored purchases; available codes
//!   plan   (plan.rs)        every message decided in stream order, in memory
//!   write  (sql/write.sql)  codes claimed, wallets debited, ledger lines, purchases; row counts
//!   check  (write.rs)       every count as planned, or ROLLBACK and read again
//! COMMIT
//! ```
//!
//! Atomicity comes from PostgreSQL: a batch commits whole or not at all.
//! The partition's owner is the only writer of its cards' codes, so the
//! batch locks no codes; what other writers may touch (a wallet, a card, a
//! fence) is locked by the read, and everything else (a code withdrawn, a
//! purchase stored by another partition) shows up in the write's row
//! counts. Statements are set-based whatever the batch's size, so a batch
//! of a hundred purchases costs four round trips: `BEGIN`, the read, the
//! write, `COMMIT`.

mod fence;
mod plan;
mod read;
mod write;

pub use fence::{claim, Fence, FenceToken};
pub use plan::{plan, Code, Debit, Decision, Item, Plan, Snapshot, Stored, Verdict};
pub use read::{read, Cursors};
pub use write::write;

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use giftcard_shared::contract::{PurchaseErrorView, PurchaseView, ReplyOutcome};
use giftcard_shared::domain::{money_string, PurchaseStatus};
use giftcard_shared::entities::purchase;
use giftcard_shared::purchases::{codes_of, view_of};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, QueryFilter,
    TransactionTrait,
};
use uuid::Uuid;

use crate::error::BatchError;

/// What to answer for each item, in the batch's order.
pub type Outcomes = Vec<ReplyOutcome>;

/// One partition's batch: its fence and its messages in stream order.
pub type Group = (Fence, Vec<Item>);

/// Processes the batches of several partitions in one transaction (group
/// commit). A fenced partition's batch is left out and answered `Fenced`;
/// the others commit.
pub async fn process_group(
    db: &DatabaseConnection,
    groups: &[Group],
    cursors: &Cursors,
) -> Result<Vec<Result<Outcomes, BatchError>>, BatchError> {
    let txn = db.begin().await?;
    let fences: Vec<&Fence> = groups.iter().map(|(f, _)| f).collect();
    let all: Vec<&Item> = groups.iter().flat_map(|(_, items)| items).collect();
    let snapshot = read(&txn, &fences, &all, cursors).await?;
    let live = |f: &Fence| snapshot.live.contains(&f.partition);
    let live_fences: Vec<&Fence> = fences.iter().copied().filter(|f| live(f)).collect();
    let items: Vec<&Item> = groups
        .iter()
        .filter(|(f, _)| live(f))
        .flat_map(|(_, items)| items)
        .collect();
    let plan = plan(&items, &snapshot);
    let now = Utc::now().trunc_subsecs(6);
    let written = write(&txn, &live_fences, &items, &plan, &snapshot, now).await;
    commit(txn, written).await?;
    cursors.advance(&items, &plan, &snapshot);

    let mut outcomes = answers(db, &items, &plan, now).await?.into_iter();
    Ok(groups
        .iter()
        .map(|(f, items)| {
            if live(f) {
                Ok(outcomes.by_ref().take(items.len()).collect())
            } else {
                Err(BatchError::Fenced {
                    partition: f.partition,
                })
            }
        })
        .collect())
}

/// Commits after a successful write; rolls back after a failed one.
async fn commit(
    txn: DatabaseTransaction,
    written: Result<(), BatchError>,
) -> Result<(), BatchError> {
    match written {
        Ok(()) => Ok(txn.commit().await?),
        Err(e) => {
            // If the rollback fails, the connection is gone and PostgreSQL
            // rolls back anyway.
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

/// After commit: each message's answer. Messages answered from a purchase
/// stored by an earlier batch (rare: redeliveries) read it back.
async fn answers(
    db: &DatabaseConnection,
    items: &[&Item],
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<Outcomes, BatchError> {
    let mut views: HashMap<Uuid, PurchaseView> = plan
        .decisions
        .iter()
        .map(|d| {
            let view = decided_view(items[d.item], d, now);
            (view.id, view)
        })
        .collect();
    let earlier: Vec<Uuid> = plan
        .verdicts
        .iter()
        .filter_map(|v| match v {
            Verdict::Echo(id) if !views.contains_key(id) => Some(*id),
            _ => None,
        })
        .collect();
    if !earlier.is_empty() {
        let mut codes = codes_of(db, &earlier).await?;
        for stored in purchase::Entity::find()
            .filter(purchase::Column::Id.is_in(earlier))
            .all(db)
            .await?
        {
            let view = view_of(&stored, codes.remove(&stored.id).unwrap_or_default());
            views.insert(stored.id, view);
        }
    }
    plan.verdicts
        .iter()
        .map(|v| match v {
            Verdict::Decided(d) => Ok(completed(
                &views[&items[plan.decisions[*d].item].message.purchase_id],
            )),
            Verdict::Echo(id) => views.get(id).map(completed).ok_or_else(|| {
                // Stored when the read ran and gone now: only an operator
                // deleting rows does that. Read again.
                BatchError::Unavailable(format!("purchase {id} vanished after its batch"))
            }),
            Verdict::KeyReused => Ok(ReplyOutcome::IdempotencyKeyReused),
        })
        .collect()
}

fn completed(view: &PurchaseView) -> ReplyOutcome {
    ReplyOutcome::Completed {
        purchase: Box::new(view.clone()),
    }
}

fn decided_view(item: &Item, d: &Decision, now: DateTime<Utc>) -> PurchaseView {
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
            let mut codes: Vec<String> = d.codes.iter().map(|c| c.code.clone()).collect();
            codes.sort();
            codes
        }),
        error: d.failure.map(PurchaseErrorView::from_code),
        sequence: item.sequence,
        created_at: m.accepted_at,
        completed_at: Some(now),
    }
}
