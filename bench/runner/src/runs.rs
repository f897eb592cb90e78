//! One measured run: a fresh database (or a given one), the system under
//! test started fresh, the load generator against it (with every process's
//! CPU time over the measured window), and the result as JSON.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::profile;
use crate::seed;
use crate::targets::{Binaries, PipelineShape, Target};
use crate::Args;

/// What to run.
pub struct Spec<'a> {
    /// Names the run's files (`<label>.json`, `logs-<label>/`).
    pub label: String,
    pub strategy: &'a str,
    /// Load generator scenario: hot, spread or sellout.
    pub scenario: &'a str,
    /// The pipeline's shape (ignored for peers).
    pub shape: PipelineShape,
    /// Sellout: purchases to send.
    pub requests: Option<usize>,
    /// Profile the api and the worker during the run.
    pub profile: bool,
    /// Clients, if not `--clients`.
    pub clients: Option<usize>,
}

/// Everything shared by the runs of one benchmark.
pub struct Bench<'a> {
    pub args: &'a Args,
    pub bins: &'a Binaries,
    pub pg: &'a giftcard_tests::PgCluster,
    pub dir: &'a Path,
    /// Per peer strategy, its pool size: the best connection count of the
    /// `sql` suite's sweep (which runs first), else the peer's default.
    pub pools: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Bench<'_> {
    fn pool(&self, strategy: &str) -> Option<usize> {
        self.pools.lock().ok()?.get(strategy).copied()
    }

    /// Seeds a fresh database for `spec.scenario` and runs `spec` on it.
    pub async fn fresh(&self, spec: Spec<'_>) -> anyhow::Result<serde_json::Value> {
        let db_name = format!("bench_{}", spec.label.replace(['-', '/'], "_"));
        let seeded = seed::prepare(self.pg, &db_name, spec.scenario, self.args).await?;
        let mut spec = spec;
        if spec.scenario == "sellout" && spec.requests.is_none() {
            spec.requests = Some(seeded.sellout_requests);
        }
        let target = self.start(&spec, &db_name).await?;
        let result = self.drive(&spec, &target, &seeded.json).await;
        target.stop().await;
        result
    }

    /// Starts the system under test on database `db_name`.
    pub async fn start(&self, spec: &Spec<'_>, db_name: &str) -> anyhow::Result<Target> {
        let logs = self.logs(&spec.label)?;
        let url = self.pg.url(db_name);
        if spec.strategy == "pipeline" {
            Target::pipeline(self.bins, &spec.shape, &url, &logs).await
        } else {
            Target::peer(
                self.bins,
                spec.strategy,
                self.pool(spec.strategy),
                &url,
                &logs,
            )
            .await
        }
    }

    fn logs(&self, label: &str) -> anyhow::Result<PathBuf> {
        let logs = self.dir.join(format!("logs-{label}"));
        std::fs::create_dir_all(&logs)?;
        Ok(logs)
    }

    /// Runs the load generator against a started target with `seed`.
    pub async fn drive(
        &self,
        spec: &Spec<'_>,
        target: &Target,
        seed: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let seed_file = self.dir.join(format!("seed-{}.json", spec.label));
        std::fs::write(&seed_file, serde_json::to_vec(seed)?)?;
        let out = self.dir.join(format!("{}.json", spec.label));
        let rss = target.sample_rss();
        let pg_pid = self.pg.process.as_ref().map_or(0, |p| p.pid);
        let mut loadgen = std::process::Command::new(&self.bins.loadgen)
            .args(self.loadgen_args(spec, &target.url, &seed_file, &out))
            .args(target.watch_args(pg_pid))
            .env("GIFTCARD_JWT_SECRET", crate::targets::SECRET)
            .spawn()?;
        let profiles = if spec.profile {
            self.profile(target).await?
        } else {
            Vec::new()
        };
        let status = tokio::task::spawn_blocking(move || loadgen.wait()).await??;
        let memory = rss.stop();
        let conflicts = target.peer_conflicts().await;
        let breakdown = target.pipeline_breakdown(&self.logs(&spec.label)?).await;
        anyhow::ensure!(
            status.success(),
            "giftcard-loadgen failed for {}; see the output above",
            spec.label
        );
        let mut report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
        report["strategy"] = spec.strategy.into();
        report["scenario"] = spec.scenario.into();
        report["label"] = spec.label.clone().into();
        report["memory_mib"] = serde_json::to_value(&memory)?;
        report["peer_conflicts"] = conflicts.into();
        report["cpu_us_per_purchase"] = cpu_per_purchase(&report);
        if let Some(b) = &breakdown {
            report["pipeline_breakdown"] = b.clone();
        }
        if !profiles.is_empty() {
            report["profiles"] = serde_json::to_value(&profiles)?;
        }
        eprintln!(
            "[bench]   {:.0}/s, p99 {:.1} ms, CPU µs/purchase {}",
            report["throughput_per_sec"].as_f64().unwrap_or(0.0),
            report["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
            report["cpu_us_per_purchase"]
        );
        Ok(report)
    }

    /// Profiles the api, the worker and PostgreSQL's backends a second
    /// into the measured window.
    async fn profile(&self, target: &Target) -> anyhow::Result<Vec<profile::Profile>> {
        tokio::time::sleep(Duration::from_secs(self.args.warmup + 1)).await;
        let mut recordings = Vec::new();
        let mut groups: Vec<(String, Vec<u32>)> = target
            .pids_of(&["api", "worker"])
            .into_iter()
            .map(|(name, pid)| (name, vec![pid]))
            .collect();
        if let Some(pg) = &self.pg.process {
            groups.push(("postgres".into(), profile::children_of(pg.pid)));
        }
        for (name, pids) in groups {
            let (child, data) = profile::start(&name, &pids, self.dir)?;
            recordings.push((name, child, data));
        }
        let dir = self.dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            recordings
                .into_iter()
                .map(|(name, child, data)| profile::finish(&name, child, &data, &dir))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await?
    }

    fn loadgen_args(&self, spec: &Spec<'_>, url: &str, seed: &Path, out: &Path) -> Vec<String> {
        let args = self.args;
        let sellout = spec.scenario == "sellout";
        let mut v = vec![
            "--api-url".into(),
            url.into(),
            "--seed".into(),
            seed.display().to_string(),
            "--scenario".into(),
            spec.scenario.into(),
            "--clients".into(),
            spec.clients.unwrap_or(args.clients).to_string(),
            "--duration".into(),
            args.duration.to_string(),
            // A sellout's stock must go to measured requests only.
            "--warmup".into(),
            if sellout {
                "0".into()
            } else {
                args.warmup.to_string()
            },
            "--wait".into(),
            "30".into(),
            "--label".into(),
            spec.label.clone(),
            "--out".into(),
            out.display().to_string(),
        ];
        if let Some(n) = spec.requests {
            v.extend(["--requests".into(), n.to_string(), "--progress".into()]);
        }
        v
    }
}

/// CPU µs per completed purchase, by process, from the load generator's
/// `cpu_seconds` and `completed`.
pub fn cpu_per_purchase(report: &serde_json::Value) -> serde_json::Value {
    let completed = report["completed"].as_f64().unwrap_or(0.0).max(1.0);
    let mut out = serde_json::Map::new();
    let mut total = 0.0;
    if let Some(m) = report["cpu_seconds"].as_object() {
        for (name, secs) in m {
            let us = secs.as_f64().unwrap_or(0.0) * 1e6 / completed;
            total += us;
            out.insert(name.clone(), ((us * 10.0).round() / 10.0).into());
        }
    }
    out.insert("total".into(), ((total * 10.0).round() / 10.0).into());
    out.into()
}
