//! The system under test: the pipeline (NATS + api + worker processes) or a
//! peer server, started fresh for each run; and its resident memory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use giftcard_tests::servers::{free_port, Guarded};
use giftcard_tests::{NatsServer, Role};
use serde::Serialize;

/// The JWT secret of every server the benchmark starts.
pub const SECRET: &str = "bench-secret-bench-secret-bench-secret-01";

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
            // Checked when a peer strategy starts.
            peer: dir.join("giftcard-peer"),
            loadgen: find("giftcard-loadgen")?,
        })
    }
}

/// A running system under test.
pub struct Target {
    pub url: String,
    processes: Vec<(String, Guarded)>,
    _nats: Option<NatsServer>,
    peer: bool,
    /// The pipeline worker's ops endpoint (`/metrics`).
    worker_ops: Option<String>,
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

impl Target {
    pub async fn start(
        bins: &Binaries,
        strategy: &str,
        database_url: &str,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let common = [
            ("DATABASE_URL", database_url.to_owned()),
            ("GIFTCARD_JWT_SECRET", SECRET.to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        let mut target = if strategy == "pipeline" {
            let nats = NatsServer::start();
            nats.provision(&giftcard_shared::topology::TopologyOptions::new(64, 1))
                .await;
            let mut e = env(&common);
            e.push(("NATS_URL".into(), nats.url()));
            e.push((
                "GIFTCARD_MESSAGE_SECRET".into(),
                giftcard_tests::MESSAGE_SECRET.into(),
            ));
            let mut api_env = e.clone();
            api_env.extend(
                nats.users
                    .env(Role::Api)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v)),
            );
            api_env.push(("GIFTCARD_API_LISTEN".into(), format!("127.0.0.1:{port}")));
            let mut worker_env = e;
            worker_env.extend(
                nats.users
                    .env(Role::Worker)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v)),
            );
            let worker_ops = format!("127.0.0.1:{}", free_port());
            worker_env.push(("GIFTCARD_WORKER_LISTEN".into(), worker_ops.clone()));
            let worker = Guarded::spawn_with_env(
                &bins.worker,
                &[],
                None,
                &logs.join("worker.log"),
                &worker_env,
            );
            let api =
                Guarded::spawn_with_env(&bins.api, &[], None, &logs.join("api.log"), &api_env);
            Self {
                url,
                processes: vec![("api".into(), api), ("worker".into(), worker)],
                _nats: Some(nats),
                peer: false,
                worker_ops: Some(format!("http://{worker_ops}")),
            }
        } else {
            anyhow::ensure!(
                bins.peer.exists(),
                "{} is missing: build it with `cargo build --release -p giftcard-peer`",
                bins.peer.display()
            );
            let args = vec![
                "--strategy".to_owned(),
                strategy.to_owned(),
                "--listen".to_owned(),
                format!("127.0.0.1:{port}"),
            ];
            let log = logs.join(format!("peer-{strategy}.log"));
            let peer = Guarded::spawn_with_env(&bins.peer, &args, None, &log, &env(&common));
            Self {
                url,
                processes: vec![(strategy.to_owned(), peer)],
                _nats: None,
                peer: true,
                worker_ops: None,
            }
        };
        target.wait_ready().await?;
        Ok(target)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let probe = if self.peer { "healthz" } else { "readyz" };
        for _ in 0..600 {
            if let Ok(r) = reqwest::get(format!("{}/{probe}", self.url)).await {
                if r.status().is_success() {
                    // The pipeline's worker takes its partitions just after.
                    tokio::time::sleep(Duration::from_secs(if self.peer { 0 } else { 3 })).await;
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

    /// Samples the resident memory of each process until stopped.
    pub fn sample_rss(&self) -> RssSampler {
        let pids: Vec<(String, u32)> = self
            .processes
            .iter()
            .map(|(n, p)| (n.clone(), p.pid))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak: Vec<(String, f64)> = pids.iter().map(|(n, _)| (n.clone(), 0.0)).collect();
            while !flag.load(Ordering::Relaxed) {
                for (i, (_, pid)) in pids.iter().enumerate() {
                    peak[i].1 = peak[i].1.max(rss_mib(*pid));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            peak
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

    /// Saves the pipeline's `/metrics` (api and worker) into `dir`, and
    /// returns where its time went: means of the worker's batch size,
    /// transaction and batch times, and of the api's publish time.
    pub async fn pipeline_breakdown(&self, dir: &Path) -> Option<serde_json::Value> {
        let worker = self.worker_ops.as_ref()?;
        let mut text = String::new();
        for (name, url) in [("api", &self.url), ("worker", worker)] {
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

pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(String, f64)>>,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    /// Peak resident memory per process, MiB.
    pub peak_rss_mib: std::collections::BTreeMap<String, f64>,
}

impl RssSampler {
    pub fn stop(self) -> Memory {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.handle.join().unwrap_or_default();
        Memory {
            peak_rss_mib: peak.into_iter().collect(),
        }
    }
}
