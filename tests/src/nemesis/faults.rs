//! The nemesis proper: seeded random faults on the deployment's processes,
//! each healed after a random while, every one recorded in the
//! [`History`]: SIGKILL of workers and apis, SIGSTOP of workers past their
//! lease, PostgreSQL stopped (or crashed) for more than a minute, NATS
//! nodes killed, the purchases stream's leader first.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::history::{FaultKind, History};
use crate::cluster::NatsCluster;
use crate::processes::ServiceProcess;
use crate::servers::{PgCluster, Role};

/// Everything the nemesis can hurt.
pub struct Deployment {
    pub pg: PgCluster,
    pub cluster: NatsCluster,
    pub apis: Vec<ServiceProcess>,
    pub workers: Vec<ServiceProcess>,
    /// Targets currently killed or frozen (by name).
    pub faulted: HashSet<String>,
}

pub type Shared = Arc<Mutex<Deployment>>;

/// The fault schedule's knobs.
pub struct Plan {
    pub seed: u64,
    /// No new fault after this (time since the start of the run).
    pub until: Duration,
    /// When PostgreSQL goes down, and for how long.
    pub postgres_outages: Vec<(Duration, Duration)>,
    /// The workers' lease TTL (a freeze outlasts it).
    pub lease_ttl: Duration,
}

impl Plan {
    /// A seeded schedule for a run of `duration`: a PostgreSQL outage of
    /// 61-70 s early in every run long enough to hold one, and another
    /// every 5 to 8 minutes after it.
    pub fn new(seed: u64, duration: Duration, lease_ttl: Duration) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x7067_6f75_7461_6765);
        let mut outages = Vec::new();
        let mut at = duration.mul_f64(rng.random_range(0.08..0.2));
        loop {
            let length = Duration::from_secs(rng.random_range(61..71));
            if at + length + Duration::from_secs(5) > duration {
                break;
            }
            outages.push((at, length));
            at += length + Duration::from_secs(rng.random_range(300..480));
        }
        Self {
            seed,
            until: duration.saturating_sub(Duration::from_secs(5)),
            postgres_outages: outages,
            lease_ttl,
        }
    }
}

/// Runs the faults of `plan`; returns once every fault is healed.
pub async fn run(dep: Shared, history: History, plan: Plan) {
    let mut rng = StdRng::seed_from_u64(plan.seed ^ 0x6e65_6d65_7369_7321);
    let mut heals = JoinSet::new();
    for &(at, length) in &plan.postgres_outages {
        let crash = rng.random_range(0..2) == 0;
        heals.spawn(postgres_outage(
            dep.clone(),
            history.clone(),
            at,
            length,
            crash,
        ));
    }
    let js = async_nats::jetstream::new(dep.lock().await.cluster.connect(Role::Test).await);
    while history.now() < plan.until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..6000))).await;
        let roll = rng.random_range(0..100u32);
        let mut d = dep.lock().await;
        match roll {
            0..25 => {
                if let Some(i) = pick_up(&mut rng, &d.workers, &d.faulted, 1) {
                    let down = Duration::from_millis(rng.random_range(1000..8000));
                    let fault = kill(&mut d, &history, FaultKind::KillWorker, Target::Worker(i));
                    heals.spawn(heal_later(
                        dep.clone(),
                        history.clone(),
                        fault,
                        Target::Worker(i),
                        down,
                    ));
                }
            }
            25..50 => {
                if let Some(i) = pick_up(&mut rng, &d.workers, &d.faulted, 1) {
                    let name = d.workers[i].id.clone();
                    d.workers[i].signal("STOP");
                    d.faulted.insert(name.clone());
                    let fault = history.fault(FaultKind::FreezeWorker, &name);
                    let frozen =
                        plan.lease_ttl + Duration::from_millis(rng.random_range(1000..5000));
                    let (dep, history) = (dep.clone(), history.clone());
                    heals.spawn(async move {
                        tokio::time::sleep(frozen).await;
                        let mut d = dep.lock().await;
                        d.workers[i].signal("CONT");
                        d.faulted.remove(&name);
                        history.healed(fault);
                    });
                }
            }
            50..70 => {
                if let Some(i) = pick_up(&mut rng, &d.apis, &d.faulted, 1) {
                    let down = Duration::from_millis(rng.random_range(1000..5000));
                    let fault = kill(&mut d, &history, FaultKind::KillApi, Target::Api(i));
                    heals.spawn(heal_later(
                        dep.clone(),
                        history.clone(),
                        fault,
                        Target::Api(i),
                        down,
                    ));
                }
            }
            _ => {
                let all_up = (0..NatsCluster::SIZE).all(|n| d.cluster.is_up(n));
                if !all_up {
                    continue;
                }
                let leader = match roll % 2 {
                    0 => {
                        d.cluster
                            .stream_leader(&js, giftcard_shared::contract::PURCHASES_STREAM)
                            .await
                    }
                    _ => None,
                };
                let (node, kind) = match leader {
                    Some(l) => (l, FaultKind::KillNatsStreamLeader),
                    None => (
                        rng.random_range(0..NatsCluster::SIZE),
                        FaultKind::KillNatsNode,
                    ),
                };
                let down = Duration::from_millis(rng.random_range(3000..12000));
                let fault = kill(&mut d, &history, kind, Target::Nats(node));
                heals.spawn(heal_later(
                    dep.clone(),
                    history.clone(),
                    fault,
                    Target::Nats(node),
                    down,
                ));
            }
        }
    }
    while heals.join_next().await.is_some() {}
}

/// What a kill hits.
#[derive(Debug, Clone, Copy)]
enum Target {
    Worker(usize),
    Api(usize),
    Nats(usize),
}

impl Target {
    fn name(self, d: &Deployment) -> String {
        match self {
            Self::Worker(i) => d.workers[i].id.clone(),
            Self::Api(i) => d.apis[i].id.clone(),
            Self::Nats(i) => format!("nats-{}", d.cluster.name(i)),
        }
    }
}

/// A random process of `of` that is not faulted, if at least `keep` others
/// would stay up.
fn pick_up(
    rng: &mut StdRng,
    of: &[ServiceProcess],
    faulted: &HashSet<String>,
    keep: usize,
) -> Option<usize> {
    let up: Vec<usize> = (0..of.len())
        .filter(|i| !faulted.contains(&of[*i].id))
        .collect();
    (up.len() > keep).then(|| up[rng.random_range(0..up.len())])
}

fn kill(d: &mut Deployment, history: &History, kind: FaultKind, target: Target) -> usize {
    let name = target.name(d);
    match target {
        Target::Worker(i) => d.workers[i].signal("KILL"),
        Target::Api(i) => d.apis[i].signal("KILL"),
        Target::Nats(i) => d.cluster.kill(i),
    }
    d.faulted.insert(name.clone());
    history.fault(kind, name)
}

async fn heal_later(dep: Shared, history: History, fault: usize, target: Target, after: Duration) {
    tokio::time::sleep(after).await;
    let mut d = dep.lock().await;
    restart(&mut d, target).await;
    let name = target.name(&d);
    d.faulted.remove(&name);
    history.healed(fault);
}

async fn restart(d: &mut Deployment, target: Target) {
    match target {
        Target::Worker(i) => restart_process(&mut d.workers[i]).await,
        Target::Api(i) => restart_process(&mut d.apis[i]).await,
        Target::Nats(i) => d.cluster.restart(i),
    }
}

async fn restart_process(p: &mut ServiceProcess) {
    for _ in 0..100 {
        if !p.alive() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.restart();
}

async fn postgres_outage(
    dep: Shared,
    history: History,
    at: Duration,
    length: Duration,
    crash: bool,
) {
    tokio::time::sleep(at.saturating_sub(history.now())).await;
    let fault = {
        let mut d = dep.lock().await;
        if crash {
            // Immediate shutdown: no checkpoint, recovery at the next start.
            if let Some(p) = &d.pg.process {
                p.signal("QUIT");
            }
        }
        d.pg.stop();
        let kind = if crash {
            FaultKind::KillPostgres
        } else {
            FaultKind::StopPostgres
        };
        history.fault(kind, format!("postgres for {length:?}"))
    };
    tokio::time::sleep(length).await;
    dep.lock().await.pg.restart();
    history.healed(fault);
}

/// Makes sure everything runs again (after the schedule healed what it
/// broke, this only resumes what a failed heal left behind).
pub async fn heal_all(dep: &Shared) {
    let mut d = dep.lock().await;
    if d.pg.process.is_none() {
        d.pg.restart();
    }
    for n in 0..NatsCluster::SIZE {
        if !d.cluster.is_up(n) {
            d.cluster.restart(n);
        }
    }
    let d = &mut *d;
    for p in d.workers.iter_mut().chain(d.apis.iter_mut()) {
        p.signal("CONT");
        if !p.alive() {
            p.restart();
        }
    }
    d.faulted.clear();
}
