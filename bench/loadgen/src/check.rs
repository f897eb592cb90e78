//! Post-run invariant check through the API: unique codes, stock, exact wallets, arrival order.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tokio::task::JoinSet;

use crate::api::{Api, Purchase};
use crate::load::{buy, follow};
use crate::order::out_of_order;
use crate::stats::{Attempt, AttemptResult};
use crate::{Config, Invariants};

const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_DETAILS: usize = 10;
/// Beyond this many unknown outcomes the server is considered broken: the rest stay unresolved.
const MAX_RECONCILE: usize = 2000;

/// Every succeeded purchase with the attempt that produced it.
pub(crate) fn succeeded(attempts: &[Attempt]) -> impl Iterator<Item = (&Attempt, &Purchase)> {
    attempts.iter().filter_map(|a| match &a.result {
        AttemptResult::Terminal(p) if p.status == "succeeded" => Some((a, p)),
        _ => None,
    })
}

pub(crate) async fn check(api: &Api, cfg: &Config, attempts: &mut [Attempt]) -> Invariants {
    let mut inv = Invariants {
        checked: true,
        ..Invariants::default()
    };
    let mut details = Vec::new();
    inv.unresolved = reconcile(api, cfg, attempts, &mut details).await;
    let wins: Vec<_> = succeeded(attempts).collect();
    inv.succeeded = wins.len() as u64;

    let mut seen: HashMap<&str, uuid::Uuid> = HashMap::new();
    for (_, p) in &wins {
        for code in p.activation_codes.iter().flatten() {
            if let Some(first) = seen.insert(code, p.id) {
                inv.duplicate_codes += 1;
                details.push(format!("code {code} in purchases {first} and {}", p.id));
            }
        }
    }

    let mut units = vec![0u64; cfg.seed.cards.len()];
    for (a, p) in &wins {
        units[a.card] += u64::from(p.quantity);
    }
    for (card, sold) in cfg.seed.cards.iter().zip(&units) {
        if *sold > card.stock {
            inv.over_stock += sold - card.stock;
            details.push(format!(
                "card {}: {sold} units sold, stock {}",
                card.id, card.stock
            ));
        }
    }

    let mut order: BTreeMap<usize, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
    for a in attempts.iter() {
        let AttemptResult::Terminal(p) = &a.result else {
            continue;
        };
        let Some(seq) = p.sequence else { continue };
        let entry = order.entry(a.card).or_default();
        if p.status == "succeeded" {
            entry.0.push(seq);
        } else if p.failure_code().as_deref() == Some("ACTIVATION_CODES_NOT_AVAILABLE") {
            entry.1.push(seq);
        }
    }
    for (card, (winners, losers)) in &order {
        let seed_card = &cfg.seed.cards[*card];
        let late = out_of_order(seed_card.stock, winners, losers);
        if late > 0 {
            inv.out_of_order += late;
            details.push(format!(
                "card {}: {late} winners out of arrival order",
                seed_card.id
            ));
        }
    }

    let (mismatches, wallet_details) = wallets(api, cfg, &wins).await;
    inv.wallet_mismatches = mismatches;
    details.extend(wallet_details);
    details.truncate(MAX_DETAILS);
    inv.details = details;
    inv
}

/// Settles purchases whose outcome is unknown: follows known ids again and
/// re-sends ambiguous POSTs with their original `Idempotency-Key` (same
/// purchase if it existed). Returns how many remain unknown.
async fn reconcile(
    api: &Api,
    cfg: &Config,
    attempts: &mut [Attempt],
    details: &mut Vec<String>,
) -> u64 {
    let mut unresolved = 0;
    let mut jobs = JoinSet::new();
    let mut results = Vec::new();
    let cfg = std::sync::Arc::new(cfg.clone());
    let unknown = attempts.iter().enumerate().filter(|(_, a)| {
        // Not `purchase_id: None, ambiguous: false`: definitely not accepted (connect error, 503, 4xx).
        matches!(a.result, AttemptResult::Error { purchase_id, ambiguous, .. } if purchase_id.is_some() || ambiguous)
    });
    for (n, (i, a)) in unknown.enumerate() {
        if n >= MAX_RECONCILE {
            unresolved += 1;
            continue;
        }
        let AttemptResult::Error {
            purchase_id: id, ..
        } = a.result
        else {
            continue;
        };
        let (mut conn, cfg, a) = (api.connect(), std::sync::Arc::clone(&cfg), a.clone());
        if jobs.len() >= cfg.clients.max(1) {
            results.extend(jobs.join_next().await);
        }
        jobs.spawn(async move {
            match id {
                Some(id) => {
                    match follow(&mut conn, a.user, id, Instant::now() + RESOLVE_TIMEOUT).await {
                        Ok(p) => (i, AttemptResult::Terminal(p), None),
                        Err(last) => (
                            i,
                            AttemptResult::error(
                                format!("resolving {id}: {last}"),
                                Some(id),
                                false,
                            ),
                            None,
                        ),
                    }
                }
                None => {
                    let retry = buy(&mut conn, &cfg, Instant::now(), a.user, a.card, a.key).await;
                    (i, retry.result, retry.status)
                }
            }
        });
    }
    while let Some(joined) = jobs.join_next().await {
        results.push(joined);
    }
    for joined in results {
        let Ok((i, result, status)) = joined else {
            unresolved += 1;
            continue;
        };
        match &result {
            // The same key answered 503: the purchase was never durably accepted.
            AttemptResult::Error { .. } if status == Some(503) => {}
            AttemptResult::Error { message, .. } => {
                unresolved += 1;
                details.push(format!("unresolved purchase: {message}"));
            }
            _ => attempts[i].result = result,
        }
    }
    unresolved
}

/// Compares every seed user's balance with credit − their succeeded totals.
async fn wallets(api: &Api, cfg: &Config, wins: &[(&Attempt, &Purchase)]) -> (u64, Vec<String>) {
    let mut spent = vec![Decimal::ZERO; cfg.seed.users.len()];
    for (a, p) in wins {
        let quantity = Decimal::from(p.quantity);
        let total = p
            .total
            .or_else(|| p.unit_price.map(|u| u * quantity))
            .unwrap_or(cfg.seed.cards[a.card].price * quantity);
        spent[a.user] += total;
    }
    let mut jobs = JoinSet::new();
    let mut out = (0, Vec::new());
    for (u, user) in cfg.seed.users.iter().enumerate() {
        let (mut conn, expected, name) = (api.connect(), user.credit - spent[u], user.id.clone());
        jobs.spawn(async move { (name, expected, conn.balance(u).await) });
        if jobs.len() >= cfg.clients.max(1) {
            tally(jobs.join_next().await, &mut out);
        }
    }
    while let Some(joined) = jobs.join_next().await {
        tally(Some(joined), &mut out);
    }
    out
}

type WalletJob = (String, Decimal, anyhow::Result<Decimal>);

fn tally(joined: Option<Result<WalletJob, tokio::task::JoinError>>, out: &mut (u64, Vec<String>)) {
    let Some(joined) = joined else { return };
    let problem = match joined {
        Ok((_, expected, Ok(balance))) if balance == expected => None,
        Ok((user, expected, Ok(balance))) => Some(format!(
            "wallet {user}: balance {balance}, expected {expected}"
        )),
        Ok((user, _, Err(e))) => Some(format!("wallet {user}: {e:#}")),
        Err(e) => Some(format!("wallet task: {e}")),
    };
    if let Some(p) = problem {
        out.0 += 1;
        out.1.push(p);
    }
}
