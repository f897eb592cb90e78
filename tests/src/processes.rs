//! Real `giftcard-worker` processes, for tests that kill, pause, and scale
//! replicas, plus views of the partition leases they hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use giftcard_shared::contract::{partition_of_lease_key, LeaseValue, LEASES_BUCKET};

use crate::servers::{free_port, Guarded};
use crate::TestApp;

/// A real `giftcard-api` or `giftcard-worker` process under a guardian
/// (stopped with SIGINT, then SIGKILL, when dropped); its stdout and stderr
/// go to `log`.
pub struct ServiceProcess {
    pub id: String,
    /// Base URL of its HTTP listener (the api, or the worker's ops endpoints).
    pub url: String,
    pub log: std::path::PathBuf,
    binary: std::path::PathBuf,
    env: Vec<(String, String)>,
    process: Option<Guarded>,
}

/// A worker process (its ops endpoints at `ops_url`).
pub type WorkerProcess = ServiceProcess;
/// An api process (its HTTP api at `url`).
pub type ApiProcess = ServiceProcess;

fn log_path(app: &TestApp, id: &str) -> std::path::PathBuf {
    let log_dir = std::env::temp_dir().join("giftcard-test-logs");
    std::fs::create_dir_all(&log_dir).expect("log dir");
    log_dir.join(format!("{}-{id}.log", app.db_name))
}

/// `base` with `extra` set over it; an empty value in `extra` removes the
/// variable.
fn merge(base: Vec<(&str, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = base
        .into_iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    env.extend(
        extra
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

impl ServiceProcess {
    /// Starts `binary` (a `giftcard-worker` executable) against `app`'s
    /// NATS and database, with short leases for quick tests.
    pub fn spawn(binary: &Path, app: &TestApp, id: &str) -> Self {
        Self::spawn_worker(binary, app, id, &[])
    }

    /// Like [`ServiceProcess::spawn`], with extra (or overriding) environment.
    pub fn spawn_worker(binary: &Path, app: &TestApp, id: &str, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let s = app.worker_settings();
        let mut base = app.nats.env(crate::Role::Worker);
        base.extend([
            ("DATABASE_URL", app.db_url.clone()),
            ("GIFTCARD_MESSAGE_SECRET", crate::MESSAGE_SECRET.to_owned()),
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
        ]);
        let env = merge(base, extra);
        Self::start(binary, app, id, port, env)
    }

    /// Starts an api process (`binary`, a `giftcard-api` executable)
    /// against `app`'s NATS and database, with the test JWT secret.
    pub fn spawn_api(binary: &Path, app: &TestApp, id: &str, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut base = app.nats.env(crate::Role::Api);
        base.extend([
            ("DATABASE_URL", app.db_url.clone()),
            ("GIFTCARD_MESSAGE_SECRET", crate::MESSAGE_SECRET.to_owned()),
            ("GIFTCARD_PARTITIONS", app.options.partitions.to_string()),
            ("GIFTCARD_API_LISTEN", format!("127.0.0.1:{port}")),
            ("GIFTCARD_JWT_SECRET", crate::SECRET.to_owned()),
            ("GIFTCARD_DB_MAX_CONNECTIONS", "8".to_owned()),
            // Off unless a test sets it: tests drive many purchases per user.
            ("GIFTCARD_USER_RATE_LIMIT", "0".to_owned()),
            ("RUST_LOG", "info,async_nats=warn".to_owned()),
        ]);
        let env = merge(base, extra);
        Self::start(binary, app, id, port, env)
    }

    fn start(
        binary: &Path,
        app: &TestApp,
        id: &str,
        port: u16,
        env: Vec<(String, String)>,
    ) -> Self {
        let log = log_path(app, id);
        let process = Guarded::spawn_with_env(binary, &[], None, &log, &env);
        Self {
            id: id.to_owned(),
            url: format!("http://127.0.0.1:{port}"),
            log,
            binary: binary.to_path_buf(),
            env,
            process: Some(process),
        }
    }

    /// The worker's ops base URL (same as `url`).
    pub fn ops_url(&self) -> &str {
        &self.url
    }

    /// Starts the process again (after it exited or was killed) with the
    /// same configuration and port; the earlier runs' logs are kept.
    pub fn restart(&mut self) {
        assert!(!self.alive(), "{} is still running", self.id);
        self.process = None;
        let mark = format!("--- {} restarted ---\n", self.id);
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, mark.as_bytes()));
        self.process = Some(Guarded::spawn_with_env(
            &self.binary,
            &[],
            None,
            &self.log,
            &self.env,
        ));
    }

    /// Like [`ServiceProcess::restart`], with environment variables set
    /// (`Some`) or removed (`None`) first.
    pub fn restart_with(&mut self, changes: &[(&str, Option<&str>)]) {
        for (name, value) in changes {
            self.env.retain(|(k, _)| k != name);
            if let Some(v) = value {
                self.env.push(((*name).to_owned(), (*v).to_owned()));
            }
        }
        self.restart();
    }

    /// Everything the process wrote to stdout and stderr, every run.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
        self.wait_exit(within).await;
    }

    /// Waits up to `within` for the process to exit (panics otherwise).
    pub async fn wait_exit(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.alive() {
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}; log: {}",
                self.id,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.process = None;
    }

    /// The sum of a metric's samples on this process's `/metrics` (NaN if
    /// it does not answer).
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> f64 {
        self.metric_where(http, name, &[]).await
    }

    /// The sum of the samples of `name` whose labels include every
    /// `(label, value)` of `labels` (NaN if `/metrics` does not answer).
    pub async fn metric_where(
        &self,
        http: &reqwest::Client,
        name: &str,
        labels: &[(&str, &str)],
    ) -> f64 {
        let Some(text) = self.metrics_text(http).await else {
            return f64::NAN;
        };
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter(|l| wanted.iter().all(|w| l.contains(w.as_str())))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// This process's `/metrics` page (None if it does not answer).
    pub async fn metrics_text(&self, http: &reqwest::Client) -> Option<String> {
        let resp = http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .ok()?;
        resp.text().await.ok()
    }

    /// `GET /readyz`: the status code (0 if unreachable) and the body.
    pub async fn readiness(&self, http: &reqwest::Client) -> (u16, serde_json::Value) {
        match http.get(format!("{}/readyz", self.url)).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or_default())
            }
            Err(_) => (0, serde_json::Value::Null),
        }
    }

    /// Waits until `/readyz` answers `status` (and, if given, its body's
    /// `status` field is `body_status`); returns how long that took.
    pub async fn wait_readiness(
        &self,
        http: &reqwest::Client,
        status: u16,
        body_status: Option<&str>,
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let (s, body) = self.readiness(http).await;
            if s == status && body_status.is_none_or(|b| body["status"] == b) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{}: /readyz is {s} {body}, not {status} {body_status:?}, after {within:?}; log: {}",
                self.id,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_ready(&self, http: &reqwest::Client) {
        self.wait_readiness(http, 200, None, Duration::from_secs(15))
            .await;
    }
}

/// The current lease holders: partition → owner.
pub async fn lease_owners(app: &TestApp) -> BTreeMap<u16, String> {
    let client = app.nats_client().await;
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
