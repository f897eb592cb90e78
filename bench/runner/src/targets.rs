//! The system under test: the pipeline (NATS + api + worker processes) or a
//! peer server, started fresh for each run; its processes (for CPU and
//! memory accounting) and its resident memory over time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use giftcard_shared::topology::{self, TopologyOptions};
use giftcard_tests::servers::{free_port, Guarded, NatsUsers};
use giftcard_tests::{NatsServer, Role, MESSAGE_SECRET};
use serde::Serialize;

use crate::cluster::NatsCluster;
use crate::scale::CpuQuota;

/// The JWT secret of every server the benchmark starts.
pub const SECRET: &str = "bench-secret-bench-secret-bench-secret-01";

/// The pipeline's partitions (the default).
const PARTITIONS: u16 = 64;

pub struct Binaries {
    pub api: PathBuf,
    pub worker: PathBuf,
    pub peer: PathBuf,
    pub loadgen: PathBuf,
}

impl Binaries {
    pub fn locate(dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let dir = match dir {
            Some(d) => d,
            None => std::env::current_exe()?
                .parent()
                .map(Path::to_path_buf)
                .ok_or_else(|| anyhow::anyhow!("no executable directory"))?,
        };
        let find = |name: &str| {
            let p = dir.join(name);
            if p.exists() {
                Ok(p)
            } else {
                Err(anyhow::anyhow!(
                    "{} is missing: build everything first with `cargo build --release --bins` (./bench/run.sh does)",
                    p.display()
                ))
            }
        };
        Ok(Self {
            api: find("giftcard-api")?,
            worker: find("giftcard-worker")?,
            peer: find("giftcard-peer")?,
            loadgen: find("giftcard-loadgen")?,
        })
    }
}

/// Where the pipeline's NATS comes from.
pub enum Nats {
    /// One fresh JetStream server, default settings (streams R1).
    Single,
    /// A fresh 3-node cluster, streams R3, `sync_interval: always`.
    Cluster,
}

/// How to start the pipeline.
pub struct PipelineShape {
    pub nats: Nats,
    pub workers: usize,
    /// Each worker's CPU share, if limited.
    pub worker_quota: Option<f64>,
}

impl Default for PipelineShape {
    fn default() -> Self {
        Self {
            nats: Nats::Single,
            workers: 1,
            worker_quota: None,
        }
    }
}

/// A running system under test.
pub struct Target {
    pub url: String,
    /// Named processes: `api`, `worker` (`worker-<i>` with several), `nats`
    /// (`nats-<i>` in a cluster), or the peer's strategy name.
    processes: Vec<(String, Guarded)>,
    _nats: Option<NatsServer>,
    cluster: Option<NatsCluster>,
    _quotas: Vec<CpuQuota>,
    peer: bool,
    /// The pipeline workers' ops endpoints (`/metrics`).
    worker_ops: Vec<String>,
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

impl Target {
    pub async fn peer(
        bins: &Binaries,
        strategy: &str,
        pool: Option<usize>,
        database_url: &str,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let mut args = vec![
            "--strategy".to_owned(),
            strategy.to_owned(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
        ];
        if let Some(n) = pool {
            args.extend(["--db-max-connections".to_owned(), n.to_string()]);
        }
        let log = logs.join(format!("peer-{strategy}.log"));
        let common = [
            ("DATABASE_URL", database_url.to_owned()),
            ("GIFTCARD_JWT_SECRET", SECRET.to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        let peer = Guarded::spawn_with_env(&bins.peer, &args, None, &log, &env(&common));
        let mut target = Self {
            url: format!("http://127.0.0.1:{port}"),
            processes: vec![(strategy.to_owned(), peer)],
            _nats: None,
            cluster: None,
            _quotas: Vec::new(),
            peer: true,
            worker_ops: Vec::new(),
        };
        target.wait_ready().await?;
        Ok(target)
    }

    pub async fn pipeline(
        bins: &Binaries,
        shape: &PipelineShape,
        database_url: &str,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let users = NatsUsers::default();
        let (nats, cluster, nats_url, replicas) = match shape.nats {
            Nats::Single => {
                let n = NatsServer::start();
                let url = n.url();
                let users = n.users.clone();
                (Some((n, users)), None, url, 1)
            }
            Nats::Cluster => {
                let c = NatsCluster::start(logs, &users).await?;
                let url = c.urls();
                (None, Some(c), url, 3)
            }
        };
        let users = nats.as_ref().map_or(users, |(_, u)| u.clone());
        // What `giftcard-migrate nats` does at deploy time.
        let provisioner = users.connect(&nats_url, Role::Provisioner).await;
        topology::provision(
            &async_nats::jetstream::new(provisioner),
            &TopologyOptions::new(PARTITIONS, replicas),
        )
        .await
        .context("provisioning the NATS topology")?;
        let nats = nats.map(|(n, _)| n);
        let common = env(&[
            ("DATABASE_URL", database_url.to_owned()),
            ("GIFTCARD_JWT_SECRET", SECRET.to_owned()),
            ("GIFTCARD_MESSAGE_SECRET", MESSAGE_SECRET.to_owned()),
            ("GIFTCARD_PARTITIONS", PARTITIONS.to_string()),
            ("RUST_LOG", "warn".to_owned()),
            ("NATS_URL", nats_url),
        ]);
        let as_role = |role: Role| -> Vec<(String, String)> {
            let mut e = common.clone();
            e.extend(users.env(role).into_iter().map(|(k, v)| (k.to_owned(), v)));
            e
        };
        let mut processes = Vec::new();
        let mut quotas = Vec::new();
        let mut worker_ops = Vec::new();
        for i in 0..shape.workers {
            let ops = format!("127.0.0.1:{}", free_port());
            let mut e = as_role(Role::Worker);
            e.push(("GIFTCARD_WORKER_LISTEN".into(), ops.clone()));
            e.push(("GIFTCARD_WORKER_ID".into(), format!("bench-worker-{i}")));
            let name = if shape.workers == 1 {
                "worker".to_owned()
            } else {
                format!("worker-{i}")
            };
            let log = logs.join(format!("{name}.log"));
            let w = Guarded::spawn_with_env(&bins.worker, &[], None, &log, &e);
            if let Some(share) = shape.worker_quota {
                quotas.push(CpuQuota::apply(&name, w.pid, share)?);
            }
            processes.push((name, w));
            worker_ops.push(format!("http://{ops}"));
        }
        let mut api_env = as_role(Role::Api);
        api_env.push(("GIFTCARD_API_LISTEN".into(), format!("127.0.0.1:{port}")));
        // The load generator buys as fast as it can for its users; the
        // peers have no per-user limit either.
        api_env.push(("GIFTCARD_USER_RATE_LIMIT".into(), "0".into()));
        let api = Guarded::spawn_with_env(&bins.api, &[], None, &logs.join("api.log"), &api_env);
        processes.insert(0, ("api".into(), api));
        let mut target = Self {
            url: format!("http://127.0.0.1:{port}"),
            processes,
            _nats: nats,
            cluster,
            _quotas: quotas,
            peer: false,
            worker_ops,
        };
        target.wait_ready().await?;
        Ok(target)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let probe = if self.peer { "healthz" } else { "readyz" };
        for _ in 0..600 {
            if let Ok(r) = reqwest::get(format!("{}/{probe}", self.url)).await {
                if r.status().is_success() {
                    if !self.peer {
                        self.wait_workers_ready().await;
                    }
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!(
            "{} did not become ready within 30 s; see the logs next to the results",
            self.url
        )
    }

    /// Waits until every worker's `/readyz` answers 200, then a little
    /// more: the partitions are taken (and balanced) just after.
    async fn wait_workers_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for ops in &self.worker_ops {
            while Instant::now() < deadline {
                let ok = reqwest::get(format!("{ops}/readyz"))
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Leases settle over one renewal round or two (1 s apart).
        let settle = if self.worker_ops.len() > 1 { 8 } else { 3 };
        tokio::time::sleep(Duration::from_secs(settle)).await;
    }

    /// `--watch` arguments for the load generator: every process of the
    /// target, and PostgreSQL's whole process tree.
    pub fn watch_args(&self, postgres_pid: u32) -> Vec<String> {
        let mut out = Vec::new();
        for (name, p) in &self.processes {
            out.extend(["--watch".to_owned(), format!("{name}={}", p.pid)]);
        }
        if let Some(n) = &self._nats {
            if let Some(p) = &n.process {
                out.extend(["--watch".to_owned(), format!("nats={}", p.pid)]);
            }
        }
        if let Some(c) = &self.cluster {
            for (i, pid) in c.pids().into_iter().enumerate() {
                out.extend(["--watch".to_owned(), format!("nats-{i}={pid}")]);
            }
        }
        out.extend([
            "--watch".to_owned(),
            format!("postgres=tree:{postgres_pid}"),
        ]);
        out
    }

    /// The pids of the processes named `names` (for the profiler).
    pub fn pids_of(&self, names: &[&str]) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .filter(|(n, _)| names.contains(&n.as_str()))
            .map(|(n, p)| (n.clone(), p.pid))
            .collect()
    }

    /// Samples the resident memory of each process every 200 ms until stopped.
    pub fn sample_rss(&self) -> RssSampler {
        let pids: Vec<(String, u32)> = self
            .processes
            .iter()
            .map(|(n, p)| (n.clone(), p.pid))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let started = Instant::now();
        let handle = std::thread::spawn(move || {
            let mut peak: Vec<(String, f64)> = pids.iter().map(|(n, _)| (n.clone(), 0.0)).collect();
            let mut series = Vec::new();
            let mut last_series = Instant::now() - Duration::from_secs(10);
            while !flag.load(Ordering::Relaxed) {
                let now: Vec<f64> = pids.iter().map(|(_, pid)| rss_mib(*pid)).collect();
                for (i, v) in now.iter().enumerate() {
                    peak[i].1 = peak[i].1.max(*v);
                }
                if last_series.elapsed() >= Duration::from_secs(5) {
                    last_series = Instant::now();
                    series.push(RssPoint {
                        secs: started.elapsed().as_secs_f64().round(),
                        mib: pids
                            .iter()
                            .zip(&now)
                            .map(|((n, _), v)| (n.clone(), (v * 10.0).round() / 10.0))
                            .collect(),
                    });
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (peak, series)
        });
        RssSampler { stop, handle }
    }

    /// The peer's optimistic-concurrency conflicts (0 for the pipeline).
    pub async fn peer_conflicts(&self) -> f64 {
        if !self.peer {
            return 0.0;
        }
        let Ok(r) = reqwest::get(format!("{}/metrics", self.url)).await else {
            return f64::NAN;
        };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("peer_conflicts_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Saves the pipeline's `/metrics` (api and workers) into `dir`, and
    /// returns where its time went: means of the worker's batch size,
    /// transaction and batch times, and of the api's publish time.
    pub async fn pipeline_breakdown(&self, dir: &Path) -> Option<serde_json::Value> {
        if self.peer {
            return None;
        }
        let mut text = String::new();
        let sources = std::iter::once(("api".to_owned(), self.url.clone())).chain(
            self.worker_ops
                .iter()
                .enumerate()
                .map(|(i, u)| (format!("worker-{i}"), u.clone())),
        );
        for (name, url) in sources {
            let body = reqwest::get(format!("{url}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let _ = std::fs::write(dir.join(format!("metrics-{name}.txt")), &body);
            text.push_str(&body);
        }
        let mean = |name: &str| {
            let total = |suffix: &str| {
                text.lines()
                    .filter(|l| l.starts_with(&format!("{name}_{suffix}")))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>()
            };
            let count = total("count");
            (count > 0.0).then(|| total("sum") / count)
        };
        let ms = |v: Option<f64>| v.map(|s| (s * 1e4).round() / 10.0);
        Some(serde_json::json!({
            "batch_size": mean("giftcard_worker_batch_size").map(|v| (v * 10.0).round() / 10.0),
            "group_partitions": mean("giftcard_worker_group_partitions").map(|v| (v * 10.0).round() / 10.0),
            "transaction_ms": ms(mean("giftcard_worker_transaction_seconds")),
            "batch_ms": ms(mean("giftcard_worker_batch_seconds")),
            "publish_ms": ms(mean("giftcard_api_publish_seconds")),
        }))
    }

    pub async fn stop(self) {
        drop(self.processes);
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Peak per process, and the series.
type Sampled = (Vec<(String, f64)>, Vec<RssPoint>);

pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Sampled>,
}

/// Resident memory of each process at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct RssPoint {
    /// Seconds since sampling started.
    pub secs: f64,
    pub mib: std::collections::BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    /// Peak resident memory per process, MiB.
    pub peak_rss_mib: std::collections::BTreeMap<String, f64>,
    /// Every 5 s.
    pub series: Vec<RssPoint>,
}

impl RssSampler {
    pub fn stop(self) -> Memory {
        self.stop.store(true, Ordering::Relaxed);
        let (peak, series) = self.handle.join().unwrap_or_default();
        Memory {
            peak_rss_mib: peak.into_iter().collect(),
            series,
        }
    }
}
