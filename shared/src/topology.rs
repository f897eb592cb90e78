//! Creates or verifies the JetStream topology, idempotently, at start-up of
//! every api and worker process.
//!
//! The partition count is recorded in the purchases stream's metadata; a
//! process configured with another count refuses to start, because cards
//! would map to other partitions and per-card order would break.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};

use futures::TryStreamExt;

use crate::contract::{
    owner_consumer_name, partition_consumer_prefix, partition_filter, ACCEPTED_BUCKET, DLQ_STREAM,
    DLQ_SUBJECT_PREFIX, LEASES_BUCKET, PURCHASES_STREAM, SUBJECT_PREFIX, WORKERS_BUCKET,
};

/// Metadata key holding the partition count of the purchases stream.
pub const META_PARTITIONS: &str = "giftcard.partitions";
/// Metadata key holding the topology layout version.
pub const META_LAYOUT: &str = "giftcard.layout";
const LAYOUT: &str = "1";

/// Name of the DLQ-indexing consumer (see the worker's `dead_letters`).
pub const DLQ_INDEX_CONSUMER: &str = "dlq-index";

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(
        "stream {PURCHASES_STREAM} was created with {existing} partitions but this process is \
         configured with GIFTCARD_PARTITIONS={configured}; set GIFTCARD_PARTITIONS={existing}, \
         or follow docs/operations.md (\"Changing the partition count\") to migrate"
    )]
    PartitionMismatch { existing: String, configured: u16 },
    #[error(
        "stream {name} exists but was not created by this service (subjects {subjects:?}); \
         remove it or point NATS_URL at another server"
    )]
    ForeignStream { name: String, subjects: Vec<String> },
    #[error(
        "consumer {name} exists with filter {existing:?}, expected {expected:?}; delete it \
         (`nats consumer rm {PURCHASES_STREAM} {name}`) and restart"
    )]
    ConsumerMismatch {
        name: String,
        existing: String,
        expected: String,
    },
    #[error("JetStream request failed: {0}; is NATS_URL pointing at a JetStream-enabled server?")]
    Nats(String),
}

fn nats_err(e: impl std::fmt::Display) -> TopologyError {
    TopologyError::Nats(e.to_string())
}

/// Topology knobs; defaults fit a single local server.
#[derive(Debug, Clone)]
pub struct TopologyOptions {
    pub partitions: u16,
    pub replicas: usize,
    /// How long the purchases stream keeps messages (audit and replay).
    pub max_age: Duration,
    /// Redelivery delay of an unacknowledged message.
    pub ack_wait: Duration,
    /// Most unacknowledged messages per partition: one batch, so that a
    /// redelivery is never overtaken by a later message of the same card.
    pub max_ack_pending: i64,
}

impl TopologyOptions {
    pub fn new(partitions: u16, replicas: usize) -> Self {
        Self {
            partitions,
            replicas,
            max_age: Duration::from_secs(7 * 24 * 3600),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 128,
        }
    }
}

/// Handles to the topology once it exists.
#[derive(Clone)]
pub struct Topology {
    pub js: jetstream::Context,
    pub purchases: stream::Stream,
    pub dlq: stream::Stream,
    pub accepted: kv::Store,
}

/// Creates the streams and the accepted-purchases bucket, or verifies them.
/// Consumers are the worker's business: see [`ensure_consumers`].
pub async fn ensure(
    js: &jetstream::Context,
    opts: &TopologyOptions,
) -> Result<Topology, TopologyError> {
    let mut metadata = HashMap::new();
    metadata.insert(META_PARTITIONS.to_owned(), opts.partitions.to_string());
    metadata.insert(META_LAYOUT.to_owned(), LAYOUT.to_owned());
    let purchases_cfg = stream::Config {
        name: PURCHASES_STREAM.to_owned(),
        subjects: vec![format!("{SUBJECT_PREFIX}.*.*")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(300),
        max_age: opts.max_age,
        num_replicas: opts.replicas,
        allow_direct: true,
        metadata,
        ..Default::default()
    };
    let mut purchases = get_or_create_stream(js, purchases_cfg).await?;
    verify_partitions(&mut purchases, opts.partitions).await?;

    let dlq_cfg = stream::Config {
        name: DLQ_STREAM.to_owned(),
        subjects: vec![format!("{DLQ_SUBJECT_PREFIX}.>")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(300),
        num_replicas: opts.replicas,
        allow_direct: true,
        ..Default::default()
    };
    let dlq = get_or_create_stream(js, dlq_cfg).await?;

    let accepted = match js.get_key_value(ACCEPTED_BUCKET).await {
        Ok(kv) => kv,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: ACCEPTED_BUCKET.to_owned(),
                description: "purchase id -> what the api accepted (pending reads)".into(),
                history: 1,
                max_age: opts.max_age,
                storage: stream::StorageType::File,
                num_replicas: opts.replicas,
                ..Default::default()
            })
            .await
            .map_err(nats_err)?,
    };
    Ok(Topology {
        js: js.clone(),
        purchases,
        dlq,
        accepted,
    })
}

async fn get_or_create_stream(
    js: &jetstream::Context,
    cfg: stream::Config,
) -> Result<stream::Stream, TopologyError> {
    let name = cfg.name.clone();
    let expected_subjects = cfg.subjects.clone();
    let mut s = match js.get_stream(&name).await {
        Ok(s) => s,
        Err(_) => match js.create_stream(cfg).await {
            Ok(s) => s,
            // Another process created it between our get and create.
            Err(_) => js.get_stream(&name).await.map_err(nats_err)?,
        },
    };
    let info = s.info().await.map_err(nats_err)?;
    if info.config.subjects != expected_subjects {
        return Err(TopologyError::ForeignStream {
            name,
            subjects: info.config.subjects.clone(),
        });
    }
    Ok(s)
}

async fn verify_partitions(s: &mut stream::Stream, partitions: u16) -> Result<(), TopologyError> {
    let info = s.info().await.map_err(nats_err)?;
    let existing = info
        .config
        .metadata
        .get(META_PARTITIONS)
        .cloned()
        .unwrap_or_default();
    if existing != partitions.to_string() {
        return Err(TopologyError::PartitionMismatch {
            existing,
            configured: partitions,
        });
    }
    Ok(())
}

/// The pull-consumer configuration of one partition under one lease.
pub fn partition_consumer_config(
    partition: u16,
    token: i64,
    opts: &TopologyOptions,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(owner_consumer_name(partition, token)),
        description: Some(format!(
            "purchases of partition {partition}, lease token {token}"
        )),
        filter_subject: partition_filter(partition),
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ack_wait: opts.ack_wait,
        // Unbounded at the server: the worker itself dead-letters a message
        // after GIFTCARD_MAX_ATTEMPTS, so nothing is dropped silently.
        max_deliver: -1,
        max_ack_pending: opts.max_ack_pending,
        num_replicas: opts.replicas,
        ..Default::default()
    }
}

/// Starts reading partition `partition` under lease `token`: creates the
/// lease's own durable consumer at the point where the previous owners'
/// consumers are fully acknowledged (their ack floor), then deletes those.
/// Messages above the floor that a previous owner did process are answered
/// from the stored result, so nothing is skipped and nothing is applied
/// twice, and the new owner serves the partition strictly in stream order.
pub async fn take_over_partition(
    stream: &stream::Stream,
    partition: u16,
    token: i64,
    opts: &TopologyOptions,
) -> Result<(String, consumer::PullConsumer), TopologyError> {
    let prefix = partition_consumer_prefix(partition);
    let name = owner_consumer_name(partition, token);
    let previous: Vec<String> = stream
        .consumer_names()
        .try_filter(|n| futures::future::ready(n.starts_with(&prefix) && *n != name))
        .try_collect()
        .await
        .map_err(nats_err)?;
    let mut floor: Option<u64> = None;
    for n in &previous {
        let info = stream.consumer_info(n).await.map_err(nats_err)?;
        floor = floor.max(Some(info.ack_floor.stream_sequence));
    }
    let mut cfg = partition_consumer_config(partition, token, opts);
    if let Some(f) = floor {
        cfg.deliver_policy = consumer::DeliverPolicy::ByStartSequence {
            start_sequence: f + 1,
        };
    }
    let consumer = match stream.get_consumer::<consumer::pull::Config>(&name).await {
        Ok(c) => c,
        Err(_) => stream.create_consumer(cfg).await.map_err(nats_err)?,
    };
    for n in previous {
        if let Err(e) = stream.delete_consumer(&n).await {
            tracing::warn!(consumer = %n, error = %e, "could not delete a previous owner's consumer");
        }
    }
    Ok((name, consumer))
}

/// Creates (or verifies) the worker-side consumers (the dead-letter indexer's).
pub async fn ensure_consumers(
    topology: &Topology,
    opts: &TopologyOptions,
) -> Result<(), TopologyError> {
    ensure_consumer(
        &topology.dlq,
        consumer::pull::Config {
            durable_name: Some(DLQ_INDEX_CONSUMER.to_owned()),
            description: Some("indexes dead letters into PostgreSQL".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            num_replicas: opts.replicas,
            ..Default::default()
        },
    )
    .await
}

async fn ensure_consumer(
    stream: &stream::Stream,
    cfg: consumer::pull::Config,
) -> Result<(), TopologyError> {
    let name = cfg.durable_name.clone().unwrap_or_default();
    match stream.get_consumer::<consumer::pull::Config>(&name).await {
        Ok(mut c) => {
            let info = c.info().await.map_err(nats_err)?;
            if info.config.filter_subject != cfg.filter_subject {
                return Err(TopologyError::ConsumerMismatch {
                    name,
                    existing: info.config.filter_subject.clone(),
                    expected: cfg.filter_subject,
                });
            }
            // Tunables (batch size, ack wait) may change between releases.
            if info.config.ack_wait != cfg.ack_wait
                || info.config.max_ack_pending != cfg.max_ack_pending
            {
                stream.update_consumer(cfg).await.map_err(nats_err)?;
            }
            Ok(())
        }
        Err(_) => match stream.create_consumer(cfg).await {
            Ok(_) => Ok(()),
            Err(e) => stream
                .get_consumer::<consumer::pull::Config>(&name)
                .await
                .map(|_| ())
                .map_err(|_| nats_err(e)),
        },
    }
}

/// The buckets workers coordinate through.
#[derive(Clone)]
pub struct Coordination {
    pub leases: kv::Store,
    pub workers: kv::Store,
}

/// Creates the lease and worker buckets with `ttl` as their max age, or
/// updates the age of existing ones (workers only: they own the TTL).
pub async fn ensure_coordination(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> Result<Coordination, TopologyError> {
    let bucket = |name: &str, description: &str| kv::Config {
        bucket: name.to_owned(),
        description: description.to_owned(),
        history: 1,
        max_age: ttl,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    let leases = js
        .create_or_update_key_value(bucket(
            LEASES_BUCKET,
            "partition -> owning worker (fencing token)",
        ))
        .await
        .map_err(nats_err)?;
    let workers = js
        .create_or_update_key_value(bucket(
            WORKERS_BUCKET,
            "live workers (refreshed every renew period)",
        ))
        .await
        .map_err(nats_err)?;
    Ok(Coordination { leases, workers })
}

/// Opens the coordination buckets if workers created them (api, CLI).
pub async fn open_coordination(js: &jetstream::Context) -> Option<Coordination> {
    Some(Coordination {
        leases: js.get_key_value(LEASES_BUCKET).await.ok()?,
        workers: js.get_key_value(WORKERS_BUCKET).await.ok()?,
    })
}
