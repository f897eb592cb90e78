//! Real `giftcard-worker` processes, for tests that kill, pause, and scale
//! replicas, plus views of the partition leases they hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use giftcard_shared::contract::{partition_of_lease_key, LeaseValue, LEASES_BUCKET};

use crate::servers::{free_port, Guarded};
use crate::TestApp;

/// One worker process under a guardian (stopped with SIGINT, then SIGKILL,
/// when dropped).
pub struct WorkerProcess {
    pub id: String,
    pub ops_url: String,
    pub log: std::path::PathBuf,
    process: Option<Guarded>,
}

impl WorkerProcess {
    /// Starts `binary` (the `giftcard-worker` executable) against `app`'s
    /// NATS and database, with short leases for quick tests.
    pub fn spawn(binary: &Path, app: &TestApp, id: &str) -> Self {
        let port = free_port();
        let log_dir = std::env::temp_dir().join("giftcard-test-logs");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let log = log_dir.join(format!("{}-{id}.log", app.db_name));
        let s = app.worker_settings();
        let env: Vec<(String, String)> = [
            ("DATABASE_URL", app.db_url.clone()),
            ("NATS_URL", app.nats.url()),
            ("GIFTCARD_PARTITIONS", app.options.partitions.to_string()),
            ("GIFTCARD_WORKER_LISTEN", format!("127.0.0.1:{port}")),
            ("GIFTCARD_WORKER_ID", id.to_owned()),
            ("GIFTCARD_LEASE_TTL_MS", s.lease_ttl.as_millis().to_string()),
            (
                "GIFTCARD_LEASE_RENEW_MS",
                s.lease_renew.as_millis().to_string(),
            ),
            ("GIFTCARD_ACK_WAIT_SECS", s.ack_wait.as_secs().to_string()),
            ("GIFTCARD_BATCH_SIZE", s.batch_size.to_string()),
            ("GIFTCARD_MAX_ATTEMPTS", s.max_attempts.to_string()),
            (
                "GIFTCARD_RETRY_BASE_MS",
                s.retry_base.as_millis().to_string(),
            ),
            ("GIFTCARD_RETRY_MAX_MS", s.retry_max.as_millis().to_string()),
            ("GIFTCARD_DB_MAX_CONNECTIONS", "8".to_owned()),
            ("RUST_LOG", "info,async_nats=warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let process = Guarded::spawn_with_env(binary, &[], None, &log, &env);
        Self {
            id: id.to_owned(),
            ops_url: format!("http://127.0.0.1:{port}"),
            log,
            process: Some(process),
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, |p| p.pid)
    }

    /// Sends a signal: "KILL", "STOP", "CONT", "TERM".
    pub fn signal(&self, signal: &str) {
        if let Some(p) = &self.process {
            p.signal(signal);
        }
    }

    /// Whether the process still runs.
    pub fn alive(&self) -> bool {
        // An exited child stays a zombie until its guardian reaps it.
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) {
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
            Err(_) => false,
        }
    }

    /// SIGTERM, then waits up to `within` for a clean exit.
    pub async fn terminate(&mut self, within: Duration) {
        self.signal("TERM");
        let deadline = Instant::now() + within;
        while self.alive() {
            assert!(
                Instant::now() < deadline,
                "worker {} did not exit within {within:?} of SIGTERM; log: {}",
                self.id,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.process = None;
    }

    /// The sum of a metric's samples on this worker's `/metrics`.
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> f64 {
        let Ok(resp) = http.get(format!("{}/metrics", self.ops_url)).send().await else {
            return f64::NAN;
        };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn wait_ready(&self, http: &reqwest::Client) {
        for _ in 0..300 {
            if let Ok(r) = http.get(format!("{}/readyz", self.ops_url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "worker {} not ready within 15 s; log: {}",
            self.id,
            self.log.display()
        );
    }
}

/// The current lease holders: partition → owner.
pub async fn lease_owners(app: &TestApp) -> BTreeMap<u16, String> {
    let client = async_nats::connect(app.nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let Ok(kv) = js.get_key_value(LEASES_BUCKET).await else {
        return BTreeMap::new();
    };
    let keys: Vec<String> = match kv.keys().await {
        Ok(k) => k.try_collect().await.unwrap_or_default(),
        Err(_) => return BTreeMap::new(),
    };
    let mut out = BTreeMap::new();
    for key in keys {
        if let (Some(p), Ok(Some(v))) = (partition_of_lease_key(&key), kv.get(&key).await) {
            if let Ok(lease) = serde_json::from_slice::<LeaseValue>(&v) {
                out.insert(p, lease.owner);
            }
        }
    }
    out
}

/// Waits until every partition is leased by one of `owners` and nobody holds
/// more than ⌈P/N⌉ + 1; returns how long that took.
pub async fn wait_balanced(app: &TestApp, owners: &[&str], within: Duration) -> Duration {
    let started = Instant::now();
    let p = usize::from(app.options.partitions);
    let cap = p.div_ceil(owners.len()) + 1;
    loop {
        let leases = lease_owners(app).await;
        let all_owned = leases.len() == p && leases.values().all(|o| owners.contains(&o.as_str()));
        let balanced = owners
            .iter()
            .all(|w| leases.values().filter(|o| o == w).count() <= cap);
        if all_owned && balanced {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "partitions not balanced over {owners:?} within {within:?}: {leases:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
