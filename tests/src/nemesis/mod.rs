//! The nemesis: a whole-history test in the spirit of Jepsen and Elle.
//!
//! A deployment of two apis and three workers (real processes), a 3-node
//! JetStream cluster with R3 streams and a PostgreSQL of its own; seeded
//! random clients ([`clients`]) use it while seeded faults ([`faults`])
//! kill, freeze and stop its parts. Everything is recorded ([`history`]).
//! Then everything is healed, every purchase is waited for, and the
//! [`checker`] compares the history with the database. [`run`] returns a
//! [`Report`]; a failing one shows the seed and, per anomaly, the
//! operations and faults that show it.

pub mod checker;
pub mod clients;
pub mod faults;
pub mod history;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::cluster::NatsCluster;
use crate::processes::ServiceProcess;
use crate::{Options, Role, TestApp};
use checker::Anomaly;
use clients::World;
use faults::{Deployment, Plan};
use history::{tally, History};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// How long clients and faults run (then: heal, settle, check).
    pub duration: Duration,
    pub clients: usize,
    pub api_binary: PathBuf,
    pub worker_binary: PathBuf,
}

/// The outcome of a run.
pub struct Report {
    pub seed: u64,
    pub duration: Duration,
    pub faults: String,
    pub operations: String,
    /// Answers by HTTP status (0: none).
    pub answers: String,
    pub purchases: usize,
    pub anomalies: Vec<Anomaly>,
    /// Per anomaly, the history excerpt that shows it.
    pub excerpts: Vec<Vec<String>>,
    pub settled_in: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "nemesis seed {} ran {:?}", self.seed, self.duration)?;
        writeln!(f, "  faults injected: {}", self.faults)?;
        writeln!(f, "  operations: {}", self.operations)?;
        writeln!(f, "  answers by status: {}", self.answers)?;
        writeln!(
            f,
            "  purchases stored: {}; all settled {:?} after the run",
            self.purchases, self.settled_in
        )?;
        writeln!(f, "  anomalies found: {}", self.anomalies.len())?;
        for (a, lines) in self.anomalies.iter().zip(&self.excerpts).take(20) {
            writeln!(f, "\n  ANOMALY {a}")?;
            for l in lines {
                writeln!(f, "    {l}")?;
            }
        }
        if !self.anomalies.is_empty() {
            writeln!(
                f,
                "\n  re-run this seed: GIFTCARD_NEMESIS_SEED={} GIFTCARD_NEMESIS_SECONDS={} \
                 ./scripts/test.sh -- nemesis --nocapture",
                self.seed,
                self.duration.as_secs()
            )?;
        }
        Ok(())
    }
}

const PARTITIONS: u16 = 8;
const USERS: usize = 6;

/// Runs one seeded history and checks it.
pub async fn run(cfg: Config) -> Report {
    let mut app = TestApp::spawn_with(Options {
        partitions: PARTITIONS,
        batch_size: 32,
        start_worker: false,
        own_postgres: true,
        ..Options::default()
    })
    .await;
    let pg = app.pg.take().expect("own PostgreSQL");
    let cluster = NatsCluster::start(app.nats.users.clone()).await;
    let mut topology = app.topology_options();
    topology.replicas = 3;
    // Short, so that keys are reused after it within the run.
    topology.duplicate_window = Duration::from_secs(2);
    let js = async_nats::jetstream::new(cluster.connect(Role::Provisioner).await);
    giftcard_shared::topology::provision(&js, &topology)
        .await
        .expect("provision the cluster");
    let urls = cluster.urls();
    let env = [("NATS_URL", urls.as_str())];
    let apis: Vec<ServiceProcess> = (0..2)
        .map(|i| ServiceProcess::spawn_api(&cfg.api_binary, &app, &format!("napi{i}"), &env))
        .collect();
    let workers: Vec<ServiceProcess> = (0..3)
        .map(|i| ServiceProcess::spawn_worker(&cfg.worker_binary, &app, &format!("nw{i}"), &env))
        .collect();
    for p in apis.iter().chain(&workers) {
        p.wait_readiness(&app.http, 200, None, Duration::from_secs(60))
            .await;
    }
    wait_owned(&app.http, &workers).await;

    let world = Arc::new(seed_world(&app, &apis, cfg.seed).await);
    let history = History::new();
    let lease_ttl = app.worker_settings().lease_ttl;
    let dep = Arc::new(tokio::sync::Mutex::new(Deployment {
        pg,
        cluster,
        apis,
        workers,
        faulted: Default::default(),
    }));
    eprintln!(
        "nemesis seed {}: {} clients for {:?}",
        cfg.seed, cfg.clients, cfg.duration
    );
    let plan = Plan::new(cfg.seed, cfg.duration, lease_ttl);
    let nemesis = tokio::spawn(faults::run(dep.clone(), history.clone(), plan));
    let progress = tokio::spawn(progress(history.clone(), cfg.duration));
    let clients: Vec<_> = (0..cfg.clients)
        .map(|c| {
            tokio::spawn(clients::run(
                c,
                world.clone(),
                history.clone(),
                cfg.duration,
            ))
        })
        .collect();
    for c in clients {
        c.await.expect("client task");
    }
    nemesis.await.expect("nemesis task");
    progress.abort();
    eprintln!("nemesis: healing everything, then waiting for every purchase to settle");
    faults::heal_all(&dep).await;
    {
        let d = dep.lock().await;
        for p in d.apis.iter().chain(&d.workers) {
            p.wait_readiness(&app.http, 200, None, Duration::from_secs(120))
                .await;
        }
    }

    let ops = history.ops();
    let settle = Instant::now();
    let finals = settle_all(&world, &ops).await;
    let settled_in = settle.elapsed();
    let anomalies = checker::check(&app.db, &world, &ops, &finals).await;
    let faults = history.faults();
    let excerpts = anomalies
        .iter()
        .map(|a| checker::excerpt(a, &ops, &faults, 30))
        .collect();
    let purchases = app.purchase_count().await as usize;
    let report = Report {
        seed: cfg.seed,
        duration: cfg.duration,
        faults: tally(faults.iter().map(|f| f.kind)),
        operations: tally(ops.iter().map(|o| o.kind)),
        answers: tally(ops.iter().map(|o| o.status)),
        purchases,
        anomalies,
        excerpts,
        settled_in,
    };
    drop(dep);
    app.stop().await;
    report
}

/// Prints what happened so far every 30 s.
async fn progress(history: History, duration: Duration) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let (ops, faults) = (history.ops(), history.faults());
        let active: Vec<String> = faults
            .iter()
            .filter(|f| f.healed.is_none())
            .map(|f| format!("{:?} {}", f.kind, f.target))
            .collect();
        eprintln!(
            "nemesis: {:.0}s of {:?}: {} operations, {} faults (active: {})",
            history.now().as_secs_f64(),
            duration,
            ops.len(),
            faults.len(),
            if active.is_empty() {
                "none".into()
            } else {
                active.join(", ")
            }
        );
    }
}

/// Waits until the workers together own every partition.
async fn wait_owned(http: &reqwest::Client, workers: &[ServiceProcess]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut owned = 0.0;
        for w in workers {
            owned += w.metric(http, "giftcard_worker_partitions_owned").await;
        }
        if owned >= f64::from(PARTITIONS) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "partitions still unowned ({owned})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Cards, codes and wallets, through the first api.
async fn seed_world(app: &TestApp, apis: &[ServiceProcess], seed: u64) -> World {
    let admin = app.admin_token();
    let api = &apis[0].url;
    let call = |method: reqwest::Method, path: String, body: Value| {
        let (http, admin) = (app.http.clone(), admin.clone());
        let url = format!("{api}{path}");
        async move {
            let r = http
                .request(method, url)
                .bearer_auth(admin)
                .json(&body)
                .send()
                .await
                .expect("seed request");
            let status = r.status();
            let body: Value = r.json().await.unwrap_or_default();
            assert!(status.is_success(), "seeding failed: {status} {body}");
            body
        }
    };
    let mut prices = HashMap::new();
    let mut codes = HashMap::new();
    let (mut stable, mut churn) = (Vec::new(), Vec::new());
    for (i, stock) in [150usize, 150, 40, 40, 40].into_iter().enumerate() {
        let price = clients::PRICES[i % clients::PRICES.len()];
        let card = call(
            reqwest::Method::POST,
            "/v1/admin/gift-cards".into(),
            json!({"name": format!("nemesis {i}"), "price": price, "value": price}),
        )
        .await;
        let id: Uuid = card["id"].as_str().expect("id").parse().expect("uuid");
        let list: Vec<String> = (0..stock).map(|n| format!("S{seed}-{i}-{n}")).collect();
        let rows: Vec<Value> = list
            .iter()
            .map(|c| json!({"code": c, "expires_on": null}))
            .collect();
        call(
            reqwest::Method::POST,
            format!("/v1/admin/gift-cards/{id}/codes"),
            json!({ "codes": rows }),
        )
        .await;
        prices.insert(id, price.to_owned());
        if i < 2 {
            stable.push(id);
        } else {
            churn.push(id);
            codes.insert(id, list);
        }
    }
    let users: Vec<String> = (0..USERS).map(|i| format!("n{seed}u{i}")).collect();
    let mut tokens = HashMap::new();
    for u in &users {
        call(
            reqwest::Method::POST,
            format!("/v1/admin/wallets/{u}/credits"),
            json!({"amount": "150.00", "reference": format!("seed-{u}")}),
        )
        .await;
        tokens.insert(u.clone(), app.token(u));
    }
    World::new(
        apis.iter().map(|a| a.url.clone()).collect(),
        reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("http client"),
        users,
        tokens,
        admin,
        stable,
        churn,
        prices,
        codes,
        seed,
    )
}

/// Reads every purchase the history knows of until it is terminal (or the
/// patience runs out): their final views.
async fn settle_all(world: &World, ops: &[history::Op]) -> HashMap<Uuid, Value> {
    let mut wanted: HashMap<Uuid, String> = HashMap::new();
    for o in ops.iter().filter(|o| o.kind.is_purchase()) {
        if let Some(id) = o.purchase {
            wanted.insert(id, o.user.clone());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    futures::stream::iter(wanted)
        .map(|(id, user)| async move {
            let token = &world.tokens[&user];
            let mut api = 0;
            loop {
                let r = world
                    .http
                    .get(format!("{}/v1/purchases/{id}", world.apis[api]))
                    .bearer_auth(token)
                    .send()
                    .await;
                let mut last = Value::Null;
                if let Ok(r) = r {
                    let status = r.status().as_u16();
                    last = r.json().await.unwrap_or_default();
                    // 404: never accepted (an unanswered request); final.
                    if status == 404 || (status == 200 && last["status"] != "pending") {
                        return (id, last);
                    }
                }
                if Instant::now() > deadline {
                    return (id, last);
                }
                api = (api + 1) % world.apis.len();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}
