//! `giftcard-bench`: runs every strategy (the pipeline and the
//! database-locking peers) through every scenario on one PostgreSQL, one
//! machine, one run, and writes `report.md`, `results.json` and
//! `chart.svg` under `bench/results/<timestamp>/` (and `bench/results/latest.*`).
//!
//! - [`targets`]: starting the system under test (pipeline or peer) and
//!   sampling its memory.
//! - [`seed`]: fresh database, migrations and data per run.
//! - [`report`]: the markdown table and the chart.

mod report;
mod seed;
mod targets;

use std::path::PathBuf;

use clap::Parser;

/// Benchmark the pipeline against the database-locking approaches.
#[derive(Parser, Debug, Clone)]
pub struct Args {
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
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
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
    /// Where results go.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Directory holding the release binaries (default: next to this one).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    giftcard_shared::tls::install_crypto_provider();
    let args = Args::parse();
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
    let mut results = Vec::new();
    let total = args.scenarios.len() * args.strategies.len();
    let mut n = 0;
    for scenario in &args.scenarios {
        for strategy in &args.strategies {
            n += 1;
            eprintln!("[bench] ({n}/{total}) {strategy} / {scenario}");
            let db_name = format!("bench_{}_{}", strategy.replace('-', "_"), scenario);
            let seed = seed::prepare(&pg, &db_name, scenario, &args).await?;
            let seed_file = dir.join(format!("seed-{db_name}.json"));
            std::fs::write(&seed_file, serde_json::to_vec_pretty(&seed.json)?)?;
            let logs = dir.join(format!("logs-{strategy}-{scenario}"));
            std::fs::create_dir_all(&logs)?;
            let target = targets::Target::start(&bins, strategy, &pg.url(&db_name), &logs).await?;
            let out = dir.join(format!("{strategy}-{scenario}.json"));
            let rss = target.sample_rss();
            let status = std::process::Command::new(&bins.loadgen)
                .args(loadgen_args(
                    &args,
                    &target.url,
                    scenario,
                    strategy,
                    &seed_file,
                    &out,
                    seed.sellout_requests,
                ))
                .env("GIFTCARD_JWT_SECRET", targets::SECRET)
                .status()?;
            let memory = rss.stop();
            let conflicts = target.peer_conflicts().await;
            let breakdown = target.pipeline_breakdown(&logs).await;
            target.stop().await;
            anyhow::ensure!(
                status.success(),
                "giftcard-loadgen failed for {strategy}/{scenario}"
            );
            let mut report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
            report["strategy"] = strategy.clone().into();
            report["scenario"] = scenario.clone().into();
            report["memory_mib"] = serde_json::to_value(&memory)?;
            report["peer_conflicts"] = conflicts.into();
            if let Some(b) = &breakdown {
                report["pipeline_breakdown"] = b.clone();
                eprintln!("[bench]   pipeline means: {b}");
            }
            eprintln!(
                "[bench]   {:.0}/s, p99 {:.1} ms",
                report["throughput_per_sec"].as_f64().unwrap_or(0.0),
                report["latency_ms"]["p99"].as_f64().unwrap_or(0.0)
            );
            results.push(report);
        }
    }
    let machine = report::machine(&pg).await;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "machine": machine, "args": format!("{args:?}"), "started": started, "results": results,
        }))?,
    )?;
    let md = report::markdown(&results, &machine, &args);
    std::fs::write(dir.join("report.md"), &md)?;
    report::chart(&results, &dir.join("chart.svg"))?;
    std::fs::copy(dir.join("report.md"), args.out.join("latest.md"))?;
    std::fs::copy(dir.join("chart.svg"), args.out.join("latest.svg"))?;
    std::fs::copy(dir.join("results.json"), args.out.join("latest.json"))?;
    println!("{md}");
    eprintln!("[bench] report: {}", args.out.join("latest.md").display());
    Ok(())
}

fn loadgen_args(
    args: &Args,
    url: &str,
    scenario: &str,
    strategy: &str,
    seed: &std::path::Path,
    out: &std::path::Path,
    sellout_requests: usize,
) -> Vec<String> {
    let mut v = vec![
        "--api-url".into(),
        url.into(),
        "--seed".into(),
        seed.display().to_string(),
        "--scenario".into(),
        scenario.into(),
        "--clients".into(),
        args.clients.to_string(),
        "--duration".into(),
        args.duration.to_string(),
        // A sellout's stock must go to measured requests only.
        "--warmup".into(),
        if scenario == "sellout" {
            "0".into()
        } else {
            args.warmup.to_string()
        },
        "--wait".into(),
        "30".into(),
        "--label".into(),
        format!("{strategy}/{scenario}"),
        "--out".into(),
        out.display().to_string(),
    ];
    if scenario == "sellout" {
        v.extend(["--requests".into(), sellout_requests.to_string()]);
    }
    v
}
