//! Load generator for the gift-card purchase HTTP contract (`docs/api.md`).
//!
//! It speaks only the public contract, so it can drive the real api (which may
//! answer `202` and is then followed by polling `GET /v1/purchases/{id}`) and
//! the synchronous "peer" servers (`201`/`409`/`404`) alike.
//!
//! Every client owns one keep-alive connection and buys as its own share of
//! the seed's users (see [`load::users_of`]), so the load generator adds no
//! wallet contention of its own.
//!
//! * [`Scenario::Hot`]: every client buys 1 unit of the seed's first card.
//! * [`Scenario::Spread`]: every request picks a uniformly random card.
//! * [`Scenario::Sellout`]: exactly `requests` purchases of the first card,
//!   shared by the clients; no warm-up, everything is measured.
//!
//! Latencies (send until terminal result, polling included) go into HDR
//! histograms; after the run the invariants (unique activation codes, stock,
//! exact wallets, arrival order) are checked through the API. The CPU time
//! of the load generator and of the processes given with `--watch`, over
//! the measured window, goes into the report too ([`cpu`]). Call [`run`]
//! in-process or use the `giftcard-loadgen` binary.

pub mod api;
mod check;
pub mod cpu;
pub mod load;
mod order;
pub mod report;
pub mod seed;
pub mod stats;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use order::out_of_order;
pub use report::{Invariants, LatencyMs, Report};
pub use seed::{Seed, SeedCard, SeedUser};

/// Which load shape to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Every client buys the first card of the seed, for `duration`.
    Hot,
    /// Every request buys a uniformly random card of the seed, for `duration`.
    Spread,
    /// Exactly `requests` purchases of the first card, then stop.
    Sellout,
}

/// Everything a run needs. Build with [`Config::new`] and adjust the fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`.
    pub api_url: String,
    /// HS256 secret used to mint user tokens.
    pub secret: String,
    pub seed: Seed,
    pub scenario: Scenario,
    /// Concurrent clients; client `i` buys as users `i`, `i + clients`, … in turn.
    pub clients: usize,
    /// Measured window (hot/spread).
    pub duration: Duration,
    /// Load before the measured window (hot/spread); purchases still count for invariants.
    pub warmup: Duration,
    /// Sellout: total purchases; `None` means 2 × the first card's stock.
    pub requests: Option<u64>,
    /// Sent as `Prefer: wait=N`.
    pub wait_secs: u64,
    /// How long a `202` is followed before it is counted as an error.
    pub follow_timeout: Duration,
    pub label: String,
    /// Run the invariant check through the API after the load.
    pub check: bool,
    /// Draw an indicatif progress bar on stderr.
    pub progress: bool,
    /// Processes whose CPU time over the measured window is reported.
    pub watch: Vec<cpu::Watch>,
}

impl Config {
    /// A config with the CLI defaults (64 clients, 20 s + 3 s warm-up, wait 30).
    pub fn new(
        api_url: impl Into<String>,
        secret: impl Into<String>,
        seed: Seed,
        scenario: Scenario,
    ) -> Self {
        Self {
            api_url: api_url.into(),
            secret: secret.into(),
            seed,
            scenario,
            clients: 64,
            duration: Duration::from_secs(20),
            warmup: Duration::from_secs(3),
            requests: None,
            wait_secs: 30,
            follow_timeout: Duration::from_secs(120),
            label: String::new(),
            check: true,
            progress: false,
            watch: Vec::new(),
        }
    }

    /// Number of purchases a sellout run sends.
    pub fn sellout_requests(&self) -> u64 {
        self.requests.unwrap_or_else(|| {
            self.seed
                .cards
                .first()
                .map_or(1, |c| c.stock.saturating_mul(2).max(1))
        })
    }
}

/// Generates the load, checks the invariants (unless disabled) and returns the report.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    anyhow::ensure!(!config.seed.cards.is_empty(), "the seed has no cards");
    anyhow::ensure!(!config.seed.users.is_empty(), "the seed has no users");
    anyhow::ensure!(config.clients > 0, "--clients must be at least 1");
    let api = api::Api::new(&config)?;
    let outcome = load::generate(&api, &config).await;
    let mut attempts = outcome.attempts;
    // Measure first: reconciliation during the check must not change the measurements.
    let measured = stats::summarize(&attempts, outcome.from, outcome.to);
    let invariants = if config.check {
        check::check(&api, &config, &mut attempts).await
    } else {
        Invariants {
            succeeded: check::succeeded(&attempts).count() as u64,
            ..Invariants::default()
        }
    };
    let window_secs = outcome.window.as_secs_f64();
    Ok(Report {
        label: config.label.clone(),
        scenario: config.scenario,
        clients: config.clients,
        window_secs,
        completed: measured.completed,
        throughput_per_sec: if window_secs > 0.0 {
            measured.completed as f64 / window_secs
        } else {
            0.0
        },
        latency_ms: measured.latency,
        statuses: measured.statuses,
        failures: measured.failures,
        followed_202: measured.followed_202,
        errors: measured.errors,
        error_samples: measured.error_samples,
        invariants,
        sent: attempts.len() as u64,
        measured: measured.measured,
        outcomes: measured.outcomes,
        cpu_seconds: outcome.cpu_seconds,
    })
}
