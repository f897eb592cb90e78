//! `giftcard-loadgen`: benchmark a server speaking the gift-card HTTP contract.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use giftcard_loadgen::cpu::Watch;
use giftcard_loadgen::{run, Config, Scenario, Seed};

/// Drives POST /v1/purchases, follows 202s, reports latency/throughput and checks invariants.
#[derive(Debug, Parser)]
#[command(name = "giftcard-loadgen", version)]
struct Args {
    /// Base URL of the server under test.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api_url: String,
    /// HS256 secret for minting user tokens.
    #[arg(long, env = "GIFTCARD_JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// Seed JSON written by the runner: {"cards":[{id,price,stock}],"users":[{id,credit}]}.
    #[arg(long)]
    seed: PathBuf,
    #[arg(long, value_enum, default_value = "hot")]
    scenario: Scenario,
    /// Concurrent clients (client i uses users[i % users.len()]).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Measured seconds (hot/spread).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of load before measuring (hot/spread).
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Sellout: total purchases (default 2 × the first card's stock).
    #[arg(long)]
    requests: Option<u64>,
    /// Sent as `Prefer: wait=N` (0..=30).
    #[arg(long, default_value_t = 30)]
    wait: u64,
    /// Seconds to follow a 202 before counting it as an error.
    #[arg(long, default_value_t = 120)]
    follow_timeout: u64,
    /// Name of the server/configuration in the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Also write the (pretty) JSON report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the post-run invariant check.
    #[arg(long)]
    no_check: bool,
    /// Show a progress bar on stderr.
    #[arg(long)]
    progress: bool,
    /// Report this process's CPU time over the measured window: NAME=PID,
    /// or NAME=tree:PID for a process with its descendants (PostgreSQL).
    /// Repeatable.
    #[arg(long)]
    watch: Vec<Watch>,
    /// Runtime threads. One thread is the cheapest: no work stealing, no
    /// cross-thread wake-ups.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> ExitCode {
    giftcard_shared::tls::install_crypto_provider();
    let args = Args::parse();
    let runtime = match args.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let result = runtime
        .context("starting the tokio runtime")
        .and_then(|rt| rt.block_on(main_inner(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("giftcard-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn main_inner(args: Args) -> anyhow::Result<()> {
    let seed = Seed::load(&args.seed)?;
    let mut config = Config::new(args.api_url, args.secret, seed, args.scenario);
    config.clients = args.clients;
    config.duration = Duration::from_secs(args.duration);
    config.warmup = Duration::from_secs(args.warmup);
    config.requests = args.requests;
    config.wait_secs = args.wait;
    config.follow_timeout = Duration::from_secs(args.follow_timeout);
    config.label = args.label;
    config.check = !args.no_check;
    config.progress = args.progress;
    config.watch = args.watch;

    let report = run(config).await?;
    if let Some(path) = &args.out {
        let pretty = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, pretty + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("{}", report.invariants.verdict());
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&report)?)
        .context("writing the summary to stdout")?;
    Ok(())
}
