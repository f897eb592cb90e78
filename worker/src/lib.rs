//! The gift-card worker.
//!
//! - [`run`] verifies the topology, takes its partitions, runs one loop per
//!   owned partition plus the dead-letter indexer, and serves `/healthz`,
//!   `/readyz` and `/metrics`; tests call it with their own listener,
//!   database, NATS client and shutdown token.
//! - [`partition`]: the per-partition pull → batch → reply → ack loop.
//! - [`batch`]: a batch in one PostgreSQL transaction: read, [`batch::plan`]
//!   (the pure decision), write, fencing.
//! - [`retry`]: the failure policy (what to do after a failed attempt).
//! - [`error`]: the typed batch errors the policy decides on.
//! - [`committer`]: group commit of the ready batches of all partitions.
//! - [`dead_letters`]: dead-lettering and the dead-letter indexer.
//! - [`ownership`]: partition leases in NATS KV, rebalancing, fencing tokens.
//! - [`assignment`]: the balanced partition → worker assignment.
//! - [`ops`]: the operational HTTP endpoints.
//! - [`telemetry`]: metric names and help lines.

pub mod assignment;
pub mod batch;
pub mod committer;
pub mod dead_letters;
pub mod error;
pub mod ops;
pub mod ownership;
pub mod partition;
pub mod retry;
pub mod telemetry;

use std::sync::Arc;

use async_nats::jetstream::consumer::PullConsumer;
use giftcard_shared::config::WorkerSettings;
use giftcard_shared::topology::{self, TopologyOptions, DLQ_INDEX_CONSUMER};
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::partition::Ctx;

/// Topology options as the worker configures them.
pub fn topology_options(settings: &WorkerSettings) -> TopologyOptions {
    let mut opts = TopologyOptions::new(settings.common.partitions, 1);
    opts.ack_wait = settings.ack_wait;
    opts.max_ack_pending = settings.batch_size as i64;
    opts
}

/// What the `giftcard-worker` binary does with its settings: validates
/// them, binds, connects as the `giftcard-worker` NATS identity, and
/// [`run`]s until SIGTERM or Ctrl-C.
pub async fn run_with(settings: WorkerSettings) -> anyhow::Result<()> {
    let settings = settings.validated()?;
    tracing::info!(?settings, "configuration");
    let s = giftcard_shared::process::start(
        giftcard_shared::nats::WORKER,
        &settings.common,
        settings.listen,
        "GIFTCARD_WORKER_LISTEN",
    )
    .await?;
    run(settings, s.listener, s.db, s.nats, s.shutdown).await
}

/// Runs the worker until `shutdown` is cancelled; then each partition loop
/// finishes (or naks) its batch before this returns.
pub async fn run(
    settings: WorkerSettings,
    listener: TcpListener,
    db: DatabaseConnection,
    nats: async_nats::Client,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let _ = giftcard_shared::telemetry::metrics_handle();
    telemetry::describe();
    let js = async_nats::jetstream::new(nats.clone());
    let opts = topology_options(&settings);
    let topology = topology::open(&js, settings.common.partitions).await?;

    giftcard_shared::telemetry::spawn_nats_connected_gauge(
        nats.clone(),
        telemetry::NATS_CONNECTED,
        shutdown.clone(),
    );
    let waiting = ops::Waiting::default();
    let ops_state = ops::OpsState::new(nats.clone(), db.clone(), waiting.clone());
    let ops_addr = listener.local_addr()?;
    tracing::info!(addr = %ops_addr, "worker ops endpoints listening");
    let ops_shutdown = shutdown.clone();
    let ops_server = tokio::spawn(async move {
        axum::serve(listener, ops::router(ops_state))
            .with_graceful_shutdown(ops_shutdown.cancelled_owned())
            .await
    });

    let batch_db =
        giftcard_shared::db::connect_for_batches(&settings.common, settings.statement_timeout)
            .await?;
    let committer = committer::Committer::start(batch_db, settings.batch_size * 8);
    let ctx = Arc::new(Ctx {
        signer: giftcard_shared::signing::MessageSigner::new(&settings.keys),
        dead_lettered: Default::default(),
        settings: settings.clone(),
        committer,
        db: db.clone(),
        nats,
        js,
        waiting,
    });
    let coordination = topology::open_coordination_for(&ctx.js, settings.lease_ttl).await?;
    let coordinator = ownership::Coordinator::new(
        ctx.clone(),
        coordination,
        topology.purchases.clone(),
        ops_addr.to_string(),
        opts.clone(),
    )
    .await?;
    tracing::info!(worker = %settings.id(), partitions = settings.common.partitions, "worker started");
    let mut tasks = JoinSet::new();
    tasks.spawn({
        let stop = shutdown.clone();
        async move {
            coordinator.run(stop).await;
        }
    });

    let dlq_consumer: PullConsumer = topology
        .dlq
        .get_consumer(DLQ_INDEX_CONSUMER)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the dead-letter consumer {DLQ_INDEX_CONSUMER} is missing ({e}): run \
                 `giftcard-migrate nats` (the provisioning step) first"
            )
        })?;
    tasks.spawn({
        let (db, stop) = (db.clone(), shutdown.child_token());
        let signer = ctx.signer.clone();
        async move {
            dead_letters::run_indexer(dlq_consumer, db, signer, stop).await;
        }
    });
    tasks.spawn(dead_letters::run_backlog_gauge(
        db.clone(),
        shutdown.child_token(),
    ));

    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res {
            tracing::error!(error = %e, "a worker task failed");
        }
    }
    let _ = ops_server.await;
    tracing::info!("worker stopped");
    Ok(())
}
