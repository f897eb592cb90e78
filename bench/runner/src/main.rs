//! `giftcard-bench`: the whole benchmark on one machine, one PostgreSQL,
//! one run, in suites:
//!
//! - `compare`: every strategy (the pipeline and the database-locking
//!   peers) through every scenario, with each process's CPU time per
//!   purchase;
//! - `sql`: what the peers' SQL does without HTTP (`pgbench`, `EXPLAIN`);
//! - `profile`: flame graphs of the api and the worker under the hot load;
//! - `soak`: probe, fill a card of 400k codes, probe again;
//! - `cluster`: the hot scenario on a 3-node NATS cluster, streams R3,
//!   `sync_interval: always`;
//! - `scale`: the spread scenario with 1, 2, 4, 8 workers, each held to a
//!   fixed CPU share by a cgroup.
//!
//! It writes `report.md`, `results.json` and `chart.svg` under
//! `bench/results/<timestamp>/` (and `bench/results/latest.*`).
//!
//! Modules: [`runs`] (one measured run), [`targets`] (starting the system
//! under test, memory), [`seed`] (fresh data per run), [`sqlcheck`],
//! [`profile`], [`soak`], [`cluster`], [`scale`], [`report`].

mod cluster;
mod profile;
mod report;
mod runs;
mod scale;
mod seed;
mod soak;
mod sqlcheck;
mod targets;

use std::path::PathBuf;

use clap::Parser;
use serde_json::{json, Value};

use crate::runs::{Bench, Spec};
use crate::targets::{Nats, PipelineShape};

/// In the order they run: `sql` first, so that the peers' pool size is
/// the best of its sweep.
const SUITES: &str = "sql,compare,profile,soak,cluster,scale";

/// Benchmark the pipeline against the database-locking approaches.
#[derive(Parser, Debug, Clone)]
pub struct Args {
    /// Suites to run, comma separated: sql, compare, profile, soak, cluster, scale.
    #[arg(long, default_value = SUITES, value_delimiter = ',')]
    pub suites: Vec<String>,
    /// Strategies, comma separated.
    #[arg(
        long,
        default_value = "pipeline,skip-locked,advisory-lock,optimistic,optimistic-random",
        value_delimiter = ','
    )]
    pub strategies: Vec<String>,
    /// Scenarios, comma separated.
    #[arg(long, default_value = "hot,spread,sellout", value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Times every compare run is repeated (A B A B): the report shows the mean.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Buyers (funded wallets); each client buys as its own share of them.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Measured seconds per run (hot and spread).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Cards in the spread scenario.
    #[arg(long, default_value_t = 1000)]
    pub spread_cards: usize,
    /// Codes of the sellout card (requests sent: 4x).
    #[arg(long, default_value_t = 500)]
    pub sellout_stock: usize,
    /// Soak: purchases of each probe.
    #[arg(long, default_value_t = 50_000)]
    pub soak_probe: usize,
    /// Soak: codes of the card the fill sells out (and purchases sent).
    #[arg(long, default_value_t = 400_000)]
    pub soak_fill: usize,
    /// Scale: worker counts, comma separated.
    #[arg(long, default_value = "1,2,4,8", value_delimiter = ',')]
    pub scale_workers: Vec<usize>,
    /// Scale: each worker's CPU share (cores).
    #[arg(long, default_value_t = 0.125)]
    pub worker_cpu: f64,
    /// Scale: concurrent clients (enough that the closed loop is not the bound).
    #[arg(long, default_value_t = 256)]
    pub scale_clients: usize,
    /// Where results go.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Directory holding the release binaries (default: next to this one).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Marks the report provisional (measured on a busy machine), with this reason.
    #[arg(long)]
    pub provisional: Option<String>,
}

impl Args {
    fn suite(&self, name: &str) -> bool {
        self.suites.iter().any(|s| s == name)
    }
}

#[tokio::main]
async fn main() {
    giftcard_shared::tls::install_crypto_provider();
    let args = Args::parse();
    if let Some(bad) = args
        .suites
        .iter()
        .find(|s| !SUITES.split(',').any(|k| k == *s))
    {
        eprintln!("giftcard-bench: unknown suite {bad:?}: use some of {SUITES}");
        std::process::exit(2);
    }
    if let Err(e) = run(args).await {
        eprintln!("giftcard-bench: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bins = targets::Binaries::locate(args.bin_dir.clone())?;
    let started = chrono::Utc::now();
    let dir = args.out.join(started.format("%Y%m%dT%H%M%SZ").to_string());
    std::fs::create_dir_all(&dir)?;
    eprintln!("[bench] results in {}", dir.display());
    let pg = giftcard_tests::PgCluster::start_durable();
    let bench = Bench {
        args: &args,
        bins: &bins,
        pg: &pg,
        dir: &dir,
        pools: Default::default(),
    };
    let mut doc = json!({});
    // A failed suite is reported, and the others still run.
    let mut errors = serde_json::Map::new();
    for suite in SUITES.split(',').filter(|s| args.suite(s)) {
        match run_suite(&bench, suite).await {
            Ok(v) => doc[suite] = v,
            Err(e) => {
                eprintln!("[bench] suite {suite} FAILED: {e:#}");
                errors.insert(suite.to_owned(), format!("{e:#}").into());
            }
        }
    }
    doc["errors"] = errors.into();
    let machine = report::machine().await;
    doc["machine"] = machine.clone();
    doc["args"] = format!("{args:?}").into();
    doc["started"] = json!(started);
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(&doc)?)?;
    let md = report::markdown(&doc, &args);
    std::fs::write(dir.join("report.md"), &md)?;
    let compared = doc["compare"].as_array().cloned().unwrap_or_default();
    report::chart(&report::means(&compared), &dir.join("chart.svg"))?;
    for (from, to) in [("chart.svg", "latest.svg"), ("results.json", "latest.json")] {
        std::fs::copy(dir.join(from), args.out.join(to))?;
    }
    // latest.md sits one directory up: its links point into this run's.
    let run_dir = dir
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let latest = md
        .replace("](chart.svg)", "](latest.svg)")
        .replace("](flame-", &format!("]({run_dir}/flame-"));
    std::fs::write(args.out.join("latest.md"), latest)?;
    println!("{md}");
    eprintln!("[bench] report: {}", args.out.join("latest.md").display());
    Ok(())
}

/// Runs one suite and returns its results.
async fn run_suite(bench: &Bench<'_>, suite: &str) -> anyhow::Result<Value> {
    let args = bench.args;
    Ok(match suite {
        "compare" => compare(bench).await?.into(),
        "sql" => {
            let mut limits = Vec::new();
            for strategy in ["skip-locked", "advisory-lock"] {
                if args.strategies.iter().any(|s| s == strategy) {
                    eprintln!("[bench] sql: {strategy}");
                    let limit = sqlcheck::measure(args, bench.pg, strategy, bench.dir).await?;
                    if let Ok(mut pools) = bench.pools.lock() {
                        pools.insert(strategy.to_owned(), limit.best_connections());
                    }
                    limits.push(limit);
                }
            }
            serde_json::to_value(limits)?
        }
        "profile" => {
            eprintln!("[bench] profile: pipeline / hot (perf, inferno)");
            let shape = PipelineShape::default();
            bench
                .fresh(spec("profile-pipeline-hot", "pipeline", "hot", shape, true))
                .await?
        }
        "soak" => {
            eprintln!("[bench] soak: pipeline");
            soak::run(bench, "pipeline").await?
        }
        "cluster" => {
            eprintln!("[bench] cluster: pipeline / hot on 3 NATS nodes, R3, sync_interval always");
            let shape = PipelineShape {
                nats: Nats::Cluster,
                ..PipelineShape::default()
            };
            bench
                .fresh(spec(
                    "cluster-pipeline-hot",
                    "pipeline",
                    "hot",
                    shape,
                    false,
                ))
                .await?
        }
        "scale" => scale(bench).await?.into(),
        other => anyhow::bail!("unknown suite {other:?}"),
    })
}

fn spec<'a>(
    label: &str,
    strategy: &'a str,
    scenario: &'a str,
    shape: PipelineShape,
    profile: bool,
) -> Spec<'a> {
    Spec {
        label: label.to_owned(),
        strategy,
        scenario,
        shape,
        requests: None,
        profile,
        clients: None,
    }
}

/// Every strategy through every scenario, `rounds` times, alternating.
async fn compare(bench: &Bench<'_>) -> anyhow::Result<Vec<Value>> {
    let args = bench.args;
    let total = args.rounds * args.scenarios.len() * args.strategies.len();
    let mut results = Vec::new();
    for round in 1..=args.rounds {
        for scenario in &args.scenarios {
            for strategy in &args.strategies {
                eprintln!(
                    "[bench] ({}/{total}) {strategy} / {scenario}, round {round}",
                    results.len() + 1
                );
                let label = format!("{strategy}-{scenario}-r{round}");
                let mut r = bench
                    .fresh(spec(
                        &label,
                        strategy,
                        scenario,
                        PipelineShape::default(),
                        false,
                    ))
                    .await?;
                r["round"] = round.into();
                results.push(r);
            }
        }
    }
    Ok(results)
}

/// The spread scenario with more and more CPU-limited workers.
async fn scale(bench: &Bench<'_>) -> anyhow::Result<Vec<Value>> {
    let args = bench.args;
    let mut results = Vec::new();
    for &workers in &args.scale_workers {
        eprintln!(
            "[bench] scale: {workers} worker(s), {} core each, spread",
            args.worker_cpu
        );
        let shape = PipelineShape {
            nats: Nats::Single,
            workers,
            worker_quota: Some(args.worker_cpu),
        };
        let mut run = spec(
            &format!("scale-{workers}"),
            "pipeline",
            "spread",
            shape,
            false,
        );
        run.clients = Some(args.scale_clients);
        let mut r = bench.fresh(run).await?;
        r["workers"] = workers.into();
        results.push(r);
    }
    Ok(results)
}
