//! Partition ownership through leases in a NATS KV bucket.
//!
//! Every renew period the coordinator refreshes this worker's registration,
//! reads the live workers, computes the balanced assignment
//! ([`crate::assignment`]), releases partitions it should no longer own
//! (after their current batch) and tries to acquire the ones it should.
//! Acquiring is a KV `create` (fails if held); renewing is an `update` on
//! the last revision (fails if someone else took over); an unrenewed lease
//! expires with the bucket's max age. The fencing token is the pair (bucket
//! creation time, acquisition revision); revisions grow with every write to
//! the bucket, so a later owner always has a higher token than any earlier
//! one ([`crate::batch::FenceToken`]); every batch transaction checks it in
//! PostgreSQL. Each lease reads through a durable
//! consumer of its own, started where the previous one was fully
//! acknowledged, so a frozen former owner cannot take messages away from
//! the current one and the partition is served strictly in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::TryStreamExt;
use giftcard_shared::contract::{lease_key, LeaseValue, WorkerInfo};
use giftcard_shared::topology::{self, Coordination, TopologyOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::assignment;
use crate::batch::{Fence, FenceToken};
use crate::partition::{self, Ctx, Exit};

/// A partition this worker holds (or is releasing).
struct Held {
    release: CancellationToken,
    handle: JoinHandle<()>,
}

pub struct Coordinator {
    ctx: Arc<Ctx>,
    coordination: Coordination,
    purchases: async_nats::jetstream::stream::Stream,
    ops_addr: String,
    topology: TopologyOptions,
    started_at: chrono::DateTime<chrono::Utc>,
    /// The lease bucket's creation time (ns since 1970): the first half of
    /// every fencing token, so that a recreated bucket (whose revisions
    /// start again) still fences upwards.
    bucket_created: i128,
    held: HashMap<u16, Held>,
}

impl Coordinator {
    pub async fn new(
        ctx: Arc<Ctx>,
        coordination: Coordination,
        purchases: async_nats::jetstream::stream::Stream,
        ops_addr: String,
        topology: TopologyOptions,
    ) -> anyhow::Result<Self> {
        let status = coordination.leases.status().await?;
        let created = status.info.created.unix_timestamp_nanos();
        Ok(Self {
            ctx,
            coordination,
            purchases,
            ops_addr,
            topology,
            started_at: chrono::Utc::now(),
            bucket_created: created,
            held: HashMap::new(),
        })
    }

    fn me(&self) -> &str {
        self.ctx.settings.id()
    }

    /// Runs until `shutdown`, then releases everything gracefully.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let renew = self.ctx.settings.lease_renew;
        tracing::info!(worker = self.me(), ttl = ?self.ctx.settings.lease_ttl, ?renew, "coordinating partitions");
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "coordination round failed; retrying");
            }
            metrics::gauge!(crate::telemetry::PARTITIONS_OWNED).set(self.held.len() as f64);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(renew) => {}
            }
        }
        tracing::info!(partitions = self.held.len(), "releasing partitions");
        for h in self.held.values() {
            h.release.cancel();
        }
        for (_, h) in self.held.drain() {
            let _ = h.handle.await;
        }
        let _ = self.coordination.workers.delete(self.me()).await;
        metrics::gauge!(crate::telemetry::PARTITIONS_OWNED).set(0.0);
    }

    async fn tick(&mut self) -> anyhow::Result<()> {
        // Partitions whose holder ended (lost, fenced or released) are free.
        self.held.retain(|_, h| !h.handle.is_finished());
        let info = WorkerInfo {
            id: self.me().to_owned(),
            started_at: self.started_at,
            ops_addr: self.ops_addr.clone(),
            partitions_owned: self.held.len(),
        };
        self.coordination
            .workers
            .put(self.me(), serde_json::to_vec(&info)?.into())
            .await?;
        let mut live: Vec<String> = self
            .coordination
            .workers
            .keys()
            .await?
            .try_collect()
            .await?;
        if !live.iter().any(|w| w == self.me()) {
            live.push(self.me().to_owned());
        }
        metrics::gauge!(crate::telemetry::LIVE_WORKERS).set(live.len() as f64);
        let want = assignment::desired(self.ctx.settings.common.partitions, &live, self.me());

        for (p, h) in &self.held {
            if !want.contains(p) && !h.release.is_cancelled() {
                tracing::info!(partition = p, "handing partition over");
                h.release.cancel();
            }
        }
        for p in want {
            if self.held.contains_key(&p) {
                continue;
            }
            self.try_acquire(p).await;
        }
        Ok(())
    }

    async fn try_acquire(&mut self, p: u16) {
        let key = lease_key(p);
        let leases = &self.coordination.leases;
        // The token is only known after the write; write a placeholder,
        // then record the token with the first renewal.
        let placeholder = LeaseValue {
            owner: self.me().to_owned(),
            token: 0,
            consumer: String::new(),
            acquired_at: chrono::Utc::now(),
        };
        let Ok(body) = serde_json::to_vec(&placeholder) else {
            return;
        };
        let revision = match leases.create(&key, body.into()).await {
            Ok(r) => r,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return,
            Err(e) => {
                tracing::debug!(partition = p, error = %e, "lease create failed");
                return;
            }
        };
        let token = FenceToken::of_lease(self.bucket_created, revision);
        // The consumer is named after the lease's revision (unique in the
        // bucket); the lease value shows the same number.
        let (consumer_name, consumer) = match topology::take_over_partition(
            &self.purchases,
            p,
            token.revision,
            &self.topology,
        )
        .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cannot set up the partition's consumer; giving the lease back");
                let _ = leases.delete_expect_revision(&key, Some(revision)).await;
                return;
            }
        };
        tracing::info!(partition = p, %token, consumer = %consumer_name, "partition acquired");
        metrics::counter!(crate::telemetry::PARTITIONS_ACQUIRED).increment(1);
        let value = LeaseValue {
            token: token.revision,
            consumer: consumer_name,
            ..placeholder
        };
        let release = CancellationToken::new();
        let handle = tokio::spawn(hold(
            self.ctx.clone(),
            leases.clone(),
            consumer,
            Fence {
                partition: p,
                token,
                owner: self.me().to_owned(),
            },
            revision,
            serde_json::to_vec(&value).unwrap_or_default().into(),
            release.clone(),
        ));
        self.held.insert(p, Held { release, handle });
    }
}

/// Holds one partition: runs its loop, renews its lease, and gives it back
/// when released, lost or fenced.
async fn hold(
    ctx: Arc<Ctx>,
    leases: kv::Store,
    consumer: PullConsumer,
    fence: Fence,
    mut revision: u64,
    value: Bytes,
    release: CancellationToken,
) {
    let p = fence.partition;
    let key = lease_key(p);
    let backlog =
        metrics::gauge!(crate::telemetry::PARTITION_BACKLOG, "partition" => p.to_string());
    let stop = CancellationToken::new();
    let mut task = tokio::spawn(partition::run(
        ctx.clone(),
        consumer.clone(),
        fence,
        stop.clone(),
    ));
    let mut renew = tokio::time::interval(ctx.settings.lease_renew);
    let mut observe = tokio::time::interval(Duration::from_secs(5));
    let mut last_renewed = Instant::now();
    let mut consumer = consumer;
    let release_lease = |revision| {
        let leases = leases.clone();
        let key = key.clone();
        async move {
            if let Err(e) = leases.delete_expect_revision(&key, Some(revision)).await {
                tracing::debug!(partition = p, error = %e, "lease not released (it expires by itself)");
            }
        }
    };
    loop {
        tokio::select! {
            _ = release.cancelled() => {
                stop.cancel();
                let _ = (&mut task).await;
                release_lease(revision).await;
                tracing::info!(partition = p, "partition released");
                break;
            }
            exit = &mut task => {
                match exit {
                    Ok(Exit::Fenced) => tracing::warn!(partition = p, "fenced off; giving the partition up"),
                    Ok(Exit::Restart) => tracing::warn!(partition = p, "giving the partition up to restart its consumer"),
                    _ => {}
                }
                release_lease(revision).await;
                break;
            }
            _ = renew.tick() => {
                match leases.update(&key, value.clone(), revision).await {
                    Ok(r) => {
                        revision = r;
                        last_renewed = Instant::now();
                    }
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        tracing::warn!(partition = p, "lease lost to another worker; stopping");
                        metrics::counter!(crate::telemetry::LEASES_LOST).increment(1);
                        stop.cancel();
                        let _ = (&mut task).await;
                        break;
                    }
                    Err(e) if last_renewed.elapsed() >= ctx.settings.lease_ttl => {
                        tracing::warn!(partition = p, error = %e, "lease expired unrenewed; stopping");
                        metrics::counter!(crate::telemetry::LEASES_LOST).increment(1);
                        stop.cancel();
                        let _ = (&mut task).await;
                        break;
                    }
                    Err(e) => tracing::warn!(partition = p, error = %e, "lease renewal failed; retrying"),
                }
            }
            _ = observe.tick() => {
                if let Ok(info) = consumer.info().await {
                    backlog.set((info.num_pending + info.num_ack_pending as u64) as f64);
                }
            }
        }
    }
    backlog.set(0.0);
}
