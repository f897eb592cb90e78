//! The four ways the peer keeps concurrent buyers of one card from taking
//! the same activation code, each purchase one READ COMMITTED transaction
//! (default durability) that reads the card, takes the codes, debits the
//! wallet and stores the ledger entry and the purchase row: in one round
//! trip for `skip-locked` and `advisory-lock` ([`crate::buy`]), statement
//! by statement for the optimistic ones (their row-version check and retry
//! policy are the point of them).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use giftcard_shared::contract::PurchaseView;
use giftcard_shared::domain::FailureCode;
use giftcard_shared::purchases::{load, view_of};
use rust_decimal::Decimal;
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};

use crate::buy::{self, Bought, Cursor};
use crate::errors::{is_concurrency_abort, PeerError};
use crate::metrics::{Metrics, Outcome};
use crate::store::{self, Failure, Request, CONCURRENCY_CONFLICT};

/// How concurrent purchases of one card are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// The origin: first available code(s), row-version guarded update,
    /// whole purchase retried on a conflict (3 retries, 1 s apart).
    Optimistic,
    /// As `optimistic`, on random available code(s).
    OptimisticRandom,
    /// A transaction-scoped advisory lock per card, then the first
    /// available code(s); no retries. One round trip.
    AdvisoryLock,
    /// One `UPDATE … WHERE id = ANY (ARRAY(SELECT … FOR UPDATE SKIP
    /// LOCKED))` claims the first code(s) no other transaction holds; no
    /// retries. One round trip.
    SkipLocked,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Optimistic => "optimistic",
            Self::OptimisticRandom => "optimistic-random",
            Self::AdvisoryLock => "advisory-lock",
            Self::SkipLocked => "skip-locked",
        }
    }

    fn retries_conflicts(self) -> bool {
        matches!(self, Self::Optimistic | Self::OptimisticRandom)
    }
}

/// Per card, the last code this peer claimed (see [`crate::buy`]): a hint
/// where the next claim's scan starts.
#[derive(Debug, Default)]
pub struct Cursors(Mutex<HashMap<uuid::Uuid, Cursor>>);

impl Cursors {
    fn get(&self, card: uuid::Uuid) -> Option<Cursor> {
        self.0.lock().ok()?.get(&card).copied()
    }

    fn advance(&self, card: uuid::Uuid, to: Cursor) {
        if let Ok(mut m) = self.0.lock() {
            let c = m.entry(card).or_insert(to);
            *c = (*c).max(to);
        }
    }
}

/// Knobs of [`purchase`].
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub strategy: Strategy,
    pub retries: u32,
    pub retry_delay: Duration,
}

/// What the transaction body decided; the caller commits only `Claimed`.
enum Step {
    Claimed { unit: Decimal, codes: Vec<String> },
    Fail(Failure, Option<Decimal>),
    Conflict(Option<Decimal>),
}

/// What one attempt ended with.
enum Attempt {
    /// Committed: the purchase succeeded.
    Done(PurchaseView),
    /// Rolled back for a business reason.
    Failed(Failure, Option<Decimal>),
    /// Rolled back: the codes read were taken concurrently.
    Conflict(Option<Decimal>),
    /// Rolled back: a purchase with this id was stored concurrently.
    Duplicate,
}

/// Runs one purchase to its terminal state: `(view, outcome)`, or
/// `IdempotencyKeyReused` if a request stored another body under the same
/// key. A key already stored is answered as stored.
pub async fn purchase(
    db: &DatabaseConnection,
    policy: Policy,
    metrics: &Metrics,
    cursors: &Cursors,
    req: &Request,
) -> Result<(PurchaseView, Outcome), PeerError> {
    let (failure, unit) = match policy.strategy {
        Strategy::SkipLocked | Strategy::AdvisoryLock => {
            let lock_card = policy.strategy == Strategy::AdvisoryLock;
            match buy::buy(db, req, lock_card, cursors.get(req.card)).await? {
                Bought::Done { codes, unit, last } => {
                    if let Some(last) = last {
                        cursors.advance(req.card, last);
                    }
                    let model = store::model(req, None, Some(unit));
                    return Ok((view_of(&model, codes), Outcome::Succeeded));
                }
                Bought::Duplicate => return stored(db, req).await,
                Bought::Failed(f, unit) => (f, unit),
            }
        }
        Strategy::Optimistic | Strategy::OptimisticRandom => {
            match versioned_with_retries(db, policy, metrics, req).await? {
                Ok(done) => return Ok(done),
                Err(failed) => failed,
            }
        }
    };
    // Business failures are stored too (like the pipeline), after the
    // rollback, in a statement of their own.
    let model = store::model(req, Some(failure), unit);
    if !store::insert_purchase(db, &model).await? {
        return stored(db, req).await;
    }
    Ok((
        view_of(&model, Vec::new()),
        Outcome::of_error_code(Some(failure.code)),
    ))
}

/// The optimistic strategies: attempts until one commits, fails for a
/// business reason, or runs out of retries after conflicts.
async fn versioned_with_retries(
    db: &DatabaseConnection,
    policy: Policy,
    metrics: &Metrics,
    req: &Request,
) -> Result<Result<(PurchaseView, Outcome), (Failure, Option<Decimal>)>, PeerError> {
    let mut retried = 0;
    loop {
        match attempt(db, policy.strategy, req).await? {
            Attempt::Done(view) => return Ok(Ok((view, Outcome::Succeeded))),
            Attempt::Duplicate => return stored(db, req).await.map(Ok),
            Attempt::Failed(f, unit) => return Ok(Err((f, unit))),
            Attempt::Conflict(unit) => {
                Metrics::inc(&metrics.conflicts);
                if policy.strategy.retries_conflicts() && retried < policy.retries {
                    retried += 1;
                    Metrics::inc(&metrics.retries);
                    tokio::time::sleep(policy.retry_delay).await;
                    continue;
                }
                Metrics::inc(&metrics.conflict_failures);
                return Ok(Err((CONCURRENCY_CONFLICT, unit)));
            }
        }
    }
}

/// The purchase a concurrent request with the same key stored.
async fn stored(
    db: &DatabaseConnection,
    req: &Request,
) -> Result<(PurchaseView, Outcome), PeerError> {
    match load(db, req.id).await? {
        Some((_, model)) if model.request_hash != req.hash => Err(PeerError::IdempotencyKeyReused),
        Some((view, _)) => Ok((view, Outcome::Replayed)),
        None => Err(PeerError::Internal(anyhow::anyhow!(
            "purchase {} conflicted on insert but is not stored",
            req.id
        ))),
    }
}

/// One transaction; deadlock and serialization aborts count as conflicts.
async fn attempt(db: &DatabaseConnection, s: Strategy, req: &Request) -> Result<Attempt, DbErr> {
    let txn = db.begin().await?;
    match run(&txn, s, req).await {
        Ok(Attempt::Done(view)) => {
            txn.commit().await?;
            Ok(Attempt::Done(view))
        }
        Ok(other) => {
            txn.rollback().await?;
            Ok(other)
        }
        Err(e) => {
            let _ = txn.rollback().await;
            if is_concurrency_abort(&e) {
                Ok(Attempt::Conflict(None))
            } else {
                Err(e)
            }
        }
    }
}

/// The transaction's statements; `Done` is to be committed, the rest
/// rolled back.
async fn run(txn: &DatabaseTransaction, s: Strategy, req: &Request) -> Result<Attempt, DbErr> {
    let step = versioned(txn, req, s == Strategy::OptimisticRandom).await?;
    let (unit, mut codes) = match step {
        Step::Claimed { unit, codes } => (unit, codes),
        Step::Fail(f, unit) => return Ok(Attempt::Failed(f, unit)),
        Step::Conflict(unit) => return Ok(Attempt::Conflict(unit)),
    };
    store::insert_debit_entry(txn, req, req.total(unit)).await?;
    let model = store::model(req, None, Some(unit));
    if !store::insert_purchase(txn, &model).await? {
        return Ok(Attempt::Duplicate);
    }
    // Sorted, as reads from PostgreSQL return them.
    codes.sort();
    Ok(Attempt::Done(view_of(&model, codes)))
}

/// Reads the card, or the failure to answer.
async fn sellable(
    txn: &DatabaseTransaction,
    req: &Request,
) -> Result<Result<Decimal, Step>, DbErr> {
    Ok(match store::card(txn, req.card).await? {
        None => Err(Step::Fail(FailureCode::GiftCardNotFound.into(), None)),
        Some(c) if !c.active => Err(Step::Fail(
            FailureCode::GiftCardInactive.into(),
            Some(c.price),
        )),
        Some(c) => Ok(c.price),
    })
}

/// The origin's steps: read codes with their row version, debit, then mark
/// the codes used only if their version is unchanged.
async fn versioned(txn: &DatabaseTransaction, req: &Request, random: bool) -> Result<Step, DbErr> {
    let unit = match sellable(txn, req).await? {
        Ok(price) => price,
        Err(step) => return Ok(step),
    };
    let codes = store::available_codes(txn, req.card, req.qty(), random).await?;
    if codes.len() < req.qty() {
        return Ok(Step::Fail(
            FailureCode::ActivationCodesNotAvailable.into(),
            Some(unit),
        ));
    }
    if !store::debit(txn, &req.user, req.total(unit)).await? {
        return Ok(Step::Fail(
            FailureCode::InsufficientFunds.into(),
            Some(unit),
        ));
    }
    if !store::mark_used_versioned(txn, &codes, req.id).await? {
        return Ok(Step::Conflict(Some(unit)));
    }
    Ok(Step::Claimed {
        unit,
        codes: codes.into_iter().map(|c| c.code).collect(),
    })
}
