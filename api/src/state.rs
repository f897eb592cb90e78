//! The state every handler shares.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use giftcard_shared::config::ApiSettings;
use giftcard_shared::signing::MessageSigner;
use giftcard_shared::topology::Topology;
use metrics_exporter_prometheus::PrometheusHandle;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio_util::sync::CancellationToken;

use crate::limits::Limits;
use crate::middleware::HttpMetrics;
use crate::replies::Replies;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: ApiSettings,
    pub db: DatabaseConnection,
    /// A small pool of its own for polling purchases retried requests wait
    /// for (apart from `db`, which the readiness probe and reads use).
    pub poll_db: DatabaseConnection,
    /// Rate, in-flight and waiting limits.
    pub limits: Limits,
    /// Per-route request metrics.
    pub http_metrics: HttpMetrics,
    pub nats: async_nats::Client,
    pub topology: Topology,
    pub replies: Arc<Replies>,
    /// Signs purchase messages (and verifies dead letters before a replay).
    pub signer: MessageSigner,
    pub metrics: PrometheusHandle,
    /// Last known PostgreSQL reachability (probed in the background), so
    /// the purchase path never waits on a database that is down.
    pub db_up: AtomicBool,
    /// Cancelled on SIGTERM: waiting purchase requests answer 202 at once.
    pub shutdown: CancellationToken,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// The secrets a token may be signed with: the current one, then the
    /// one being rotated out (if any).
    pub fn jwt_secrets(&self) -> Vec<&str> {
        std::iter::once(self.settings.jwt_secret())
            .chain(&self.settings.jwt_previous_secret)
            .map(|s| s.expose())
            .collect()
    }

    pub fn db_up(&self) -> bool {
        self.db_up.load(Ordering::Relaxed)
    }

    pub fn nats_up(&self) -> bool {
        self.nats.connection_state() == async_nats::connection::State::Connected
    }

    /// Probes PostgreSQL every second until shutdown.
    pub fn spawn_db_probe(&self, shutdown: CancellationToken) {
        let state = self.clone();
        tokio::spawn(async move {
            loop {
                let ok = tokio::time::timeout(
                    Duration::from_secs(2),
                    state.db.execute_unprepared("SELECT 1"),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                if state.db_up.swap(ok, Ordering::Relaxed) != ok {
                    if ok {
                        tracing::info!("PostgreSQL is reachable");
                    } else {
                        tracing::warn!("PostgreSQL is unreachable; purchases are still accepted");
                    }
                }
                metrics::gauge!(crate::telemetry::DATABASE_UP).set(if ok { 1.0 } else { 0.0 });
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }
}
