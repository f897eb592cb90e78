//! The closed-loop clients: each sends one purchase, follows it to a terminal state, repeats.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{rngs::StdRng, RngExt};
use uuid::Uuid;

use crate::api::{Api, Conn, Purchase, Reply};
use crate::cpu;
use crate::stats::{Attempt, AttemptResult};
use crate::{Config, Scenario};

const POLL_EVERY: Duration = Duration::from_millis(20);
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// All attempts of a run, the measured window (offsets from the start),
/// and the CPU seconds each watched process used inside it.
pub(crate) struct LoadOutcome {
    pub attempts: Vec<Attempt>,
    pub from: Duration,
    pub to: Duration,
    pub window: Duration,
    pub cpu_seconds: std::collections::BTreeMap<String, f64>,
}

/// The seed users client `client` buys as, in turn: its own share of them
/// (users `client`, `client + clients`, …), so that no two clients ever
/// debit one wallet at the same time while every user buys. With fewer
/// users than clients, clients share users.
pub fn users_of(client: usize, clients: usize, users: usize) -> Vec<usize> {
    if users <= clients {
        return vec![client % users];
    }
    (client..users).step_by(clients).collect()
}

pub(crate) async fn generate(api: &Api, config: &Config) -> LoadOutcome {
    let sellout = config.scenario == Scenario::Sellout;
    let t0 = Instant::now();
    let (from, to) = if sellout {
        (Duration::ZERO, Duration::MAX)
    } else {
        (config.warmup, config.warmup + config.duration)
    };
    let remaining = Arc::new(AtomicU64::new(config.sellout_requests()));
    let done = Arc::new(AtomicU64::new(0));
    let bar = config
        .progress
        .then(|| progress_bar(config, t0, Arc::clone(&done)));
    let shared = Arc::new(config.clone());
    let (finished, on_finish) = tokio::sync::oneshot::channel();
    let cpu_window = tokio::spawn(sample_window(
        config.watch.clone(),
        t0,
        (from, to),
        on_finish,
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..config.clients {
        let (api, remaining, done) = (api.clone(), Arc::clone(&remaining), Arc::clone(&done));
        let cfg = Arc::clone(&shared);
        let users = users_of(i, config.clients, config.seed.users.len());
        tasks.spawn(async move {
            let mut rng = rand::make_rng::<StdRng>();
            let mut conn = api.connect();
            let mut out = Vec::new();
            for n in 0.. {
                let more = if sellout {
                    remaining
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                        .is_ok()
                } else {
                    t0.elapsed() < to
                };
                if !more {
                    break;
                }
                let card = match cfg.scenario {
                    Scenario::Spread => rng.random_range(0..cfg.seed.cards.len()),
                    Scenario::Hot | Scenario::Sellout => 0,
                };
                let user = users[n % users.len()];
                let attempt = buy(&mut conn, &cfg, t0, user, card, Uuid::new_v4()).await;
                let failed = matches!(attempt.result, AttemptResult::Error { .. });
                out.push(attempt);
                done.fetch_add(1, Ordering::Relaxed);
                if failed {
                    tokio::time::sleep(ERROR_BACKOFF).await; // do not spin on a dead server
                }
            }
            out
        });
    }
    let mut attempts = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        attempts.extend(joined.unwrap_or_default());
    }
    let _ = finished.send(());
    let cpu_seconds = cpu_window.await.unwrap_or_default();
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    let window = if sellout {
        attempts
            .iter()
            .map(|a| a.finished)
            .max()
            .unwrap_or_default()
    } else {
        config.duration
    };
    LoadOutcome {
        attempts,
        from,
        to,
        window,
        cpu_seconds,
    }
}

/// CPU seconds each watched process (and the load generator) used between
/// `from` and `to` (offsets from `t0`), or, when `to` is unbounded (a
/// sellout), until `finished` fires.
async fn sample_window(
    watch: Vec<cpu::Watch>,
    t0: Instant,
    (from, to): (Duration, Duration),
    finished: tokio::sync::oneshot::Receiver<()>,
) -> std::collections::BTreeMap<String, f64> {
    tokio::time::sleep_until((t0 + from).into()).await;
    let before = cpu::sample(&watch);
    match t0.checked_add(to) {
        Some(end) => tokio::time::sleep_until(end.into()).await,
        None => {
            let _ = finished.await;
        }
    }
    cpu::delta(&before, &cpu::sample(&watch))
}

/// Sends one purchase (fresh or retried with the same key) and follows a `202`.
pub(crate) async fn buy(
    conn: &mut Conn,
    cfg: &Config,
    t0: Instant,
    user: usize,
    card: usize,
    key: Uuid,
) -> Attempt {
    let started = t0.elapsed();
    let (status, followed, result) = match conn.post_purchase(user, card, key).await {
        // A connect error never reached the server; anything later may have been accepted.
        Err(e) => (
            None,
            false,
            AttemptResult::error(format!("POST transport: {e}"), None, !e.connect),
        ),
        Ok(reply) => {
            let followed = matches!(reply, Reply::Purchase(202, ref p) if p.is_pending());
            (
                Some(reply.status()),
                followed,
                settle(conn, cfg, user, reply).await,
            )
        }
    };
    Attempt {
        user,
        card,
        key,
        started,
        finished: t0.elapsed(),
        status,
        followed,
        result,
    }
}

async fn settle(conn: &mut Conn, cfg: &Config, user: usize, reply: Reply) -> AttemptResult {
    match reply {
        Reply::Purchase(201 | 404 | 409, p) if !p.is_pending() => AttemptResult::Terminal(p),
        Reply::Purchase(202, p) if p.is_pending() => {
            match follow(conn, user, p.id, Instant::now() + cfg.follow_timeout).await {
                Ok(p) => AttemptResult::Terminal(p),
                Err(last) => {
                    AttemptResult::error(format!("following {}: {last}", p.id), Some(p.id), false)
                }
            }
        }
        Reply::Error(404 | 409, e) => AttemptResult::Rejected { code: e.code },
        other => {
            let s = other.status();
            // The purchase may exist: an unexplained 5xx or an unreadable acceptance.
            let ambiguous = (s >= 500 && s != 503) || matches!(s, 201 | 202);
            let id = match &other {
                Reply::Purchase(_, p) => Some(p.id),
                _ => None,
            };
            AttemptResult::error(other.describe("POST"), id, ambiguous)
        }
    }
}

/// Polls `GET /v1/purchases/{id}` every 20 ms until it is no longer pending.
pub(crate) async fn follow(
    conn: &mut Conn,
    user: usize,
    id: Uuid,
    deadline: Instant,
) -> Result<Purchase, String> {
    let mut last: String;
    loop {
        match conn.get_purchase(user, id).await {
            Ok(Reply::Purchase(200, p)) if !p.is_pending() => return Ok(p),
            Ok(Reply::Purchase(200, _)) => last = String::from("still pending"),
            Ok(other) => last = other.describe("GET"),
            Err(e) => last = format!("GET transport: {e}"),
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn progress_bar(
    config: &Config,
    t0: Instant,
    done: Arc<AtomicU64>,
) -> (ProgressBar, tokio::task::JoinHandle<()>) {
    let sellout = config.scenario == Scenario::Sellout;
    let len = if sellout {
        config.sellout_requests()
    } else {
        (config.warmup + config.duration).as_secs().max(1)
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = if sellout {
        "{bar:40} {pos}/{len} purchases {msg}"
    } else {
        "{bar:40} {pos}/{len} s {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    let b = bar.clone();
    let ticker = tokio::spawn(async move {
        loop {
            let n = done.load(Ordering::Relaxed);
            b.set_position(if sellout {
                n
            } else {
                t0.elapsed().as_secs().min(len)
            });
            b.set_message(format!("{n} done"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (bar, ticker)
}

#[cfg(test)]
mod tests {
    use super::users_of;

    #[test]
    fn clients_own_disjoint_shares_of_the_users() {
        let shares: Vec<Vec<usize>> = (0..64).map(|c| users_of(c, 64, 1000)).collect();
        let mut all: Vec<usize> = shares.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>(), "every user once");
        assert_eq!(shares[0][..3], [0, 64, 128]);
        // Fewer users than clients: shared, round robin.
        assert_eq!(users_of(5, 8, 4), vec![1]);
    }
}
