//! The JetStream topology: [`provision`] creates or updates it (the
//! `giftcard-migrate nats` step, run as the `giftcard-provisioner` NATS
//! identity, the only one allowed to create streams and buckets); [`open`]
//! and [`open_coordination`] verify it at start-up of every api and worker,
//! which refuse to start when it is missing or differs from their settings.
//! Workers create only their own per-lease consumers
//! ([`take_over_partition`]).
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
    #[error(
        "{what} does not exist (or this identity may not read it): run `giftcard-migrate nats` \
         (the provisioning step, as giftcard-provisioner) against this NATS first"
    )]
    Missing { what: String },
    #[error(
        "bucket {bucket} expires entries after {existing_ms} ms but GIFTCARD_LEASE_TTL_MS={configured_ms}: \
         run `giftcard-migrate nats` with GIFTCARD_LEASE_TTL_MS={configured_ms}, or set the workers' \
         GIFTCARD_LEASE_TTL_MS={existing_ms}"
    )]
    LeaseTtlMismatch {
        bucket: String,
        existing_ms: u128,
        configured_ms: u128,
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
    /// Replicas of every stream and bucket (provisioning); consumers
    /// inherit their stream's.
    pub replicas: usize,
    /// How long the purchases stream keeps messages (audit and replay).
    pub max_age: Duration,
    /// Window in which the stream drops a second message with the same
    /// `Nats-Msg-Id` (a retried purchase).
    pub duplicate_window: Duration,
    /// Max age of the lease and worker buckets: the workers' lease TTL.
    pub lease_ttl: Duration,
    /// Provisioning only: record a new partition count on an existing
    /// purchases stream (docs/operations.md, "Changing the partition
    /// count": only once every purchase is processed and every service is
    /// stopped) and delete the consumers of partitions that no longer exist.
    pub change_partitions: bool,
    /// Most bytes the purchases stream holds. When it is full JetStream
    /// refuses new messages (discard policy `new`: the api answers 503) and
    /// never drops a stored one.
    pub max_bytes: i64,
    /// How long the dead-letter stream keeps a message.
    pub dlq_max_age: Duration,
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
            duplicate_window: Duration::from_secs(300),
            lease_ttl: Duration::from_secs(6),
            change_partitions: false,
            // 1 GiB: JetStream reserves it on the store at creation.
            // Deployments size it with GIFTCARD_PURCHASES_MAX_MIB.
            max_bytes: 1024 * 1024 * 1024,
            dlq_max_age: Duration::from_secs(30 * 24 * 3600),
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

fn purchases_config(opts: &TopologyOptions) -> stream::Config {
    let mut metadata = HashMap::new();
    metadata.insert(META_PARTITIONS.to_owned(), opts.partitions.to_string());
    metadata.insert(META_LAYOUT.to_owned(), LAYOUT.to_owned());
    stream::Config {
        name: PURCHASES_STREAM.to_owned(),
        subjects: vec![format!("{SUBJECT_PREFIX}.*.*")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: opts.duplicate_window,
        max_age: opts.max_age,
        max_bytes: opts.max_bytes,
        discard: stream::DiscardPolicy::New,
        num_replicas: opts.replicas,
        allow_direct: true,
        metadata,
        ..Default::default()
    }
}

fn dlq_config(opts: &TopologyOptions) -> stream::Config {
    stream::Config {
        name: DLQ_STREAM.to_owned(),
        subjects: vec![format!("{DLQ_SUBJECT_PREFIX}.>")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(300),
        max_age: opts.dlq_max_age,
        num_replicas: opts.replicas,
        allow_direct: true,
        ..Default::default()
    }
}

fn bucket_config(name: &str, description: &str, max_age: Duration, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: name.to_owned(),
        description: description.to_owned(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Creates the streams, buckets and the dead-letter indexer's consumer, or
/// brings existing ones to `opts` (ages, replicas). Idempotent. Refuses to
/// change the partition count of an existing purchases stream. Returns one
/// line per object for the operator.
pub async fn provision(
    js: &jetstream::Context,
    opts: &TopologyOptions,
) -> Result<Vec<String>, TopologyError> {
    let mut done = Vec::new();
    let checked = (!opts.change_partitions).then_some(opts.partitions);
    put_stream(js, purchases_config(opts), checked, &mut done).await?;
    if opts.change_partitions {
        drop_consumers_of_removed_partitions(js, opts.partitions, &mut done).await?;
    }
    put_stream(js, dlq_config(opts), None, &mut done).await?;
    for (name, description, age) in [
        (
            ACCEPTED_BUCKET,
            "purchase id -> what the api accepted (pending reads)",
            opts.max_age,
        ),
        (
            LEASES_BUCKET,
            "partition -> owning worker (fencing token)",
            opts.lease_ttl,
        ),
        (
            WORKERS_BUCKET,
            "live workers (refreshed every renew period)",
            opts.lease_ttl,
        ),
    ] {
        js.create_or_update_key_value(bucket_config(name, description, age, opts.replicas))
            .await
            .map_err(nats_err)?;
        done.push(format!(
            "bucket {name}: max age {age:?}, {} replica(s)",
            opts.replicas
        ));
    }
    let dlq = js.get_stream(DLQ_STREAM).await.map_err(nats_err)?;
    put_consumer(&dlq, dlq_index_config()).await?;
    done.push(format!("consumer {DLQ_STREAM}/{DLQ_INDEX_CONSUMER}"));
    Ok(done)
}

/// Deletes the per-lease consumers of partitions at or above `partitions`
/// (left behind when the partition count shrinks).
async fn drop_consumers_of_removed_partitions(
    js: &jetstream::Context,
    partitions: u16,
    done: &mut Vec<String>,
) -> Result<(), TopologyError> {
    let stream = js.get_stream(PURCHASES_STREAM).await.map_err(nats_err)?;
    let names: Vec<String> = stream
        .consumer_names()
        .try_collect()
        .await
        .map_err(nats_err)?;
    for name in names {
        let removed = name
            .strip_prefix('p')
            .and_then(|n| n.split('-').next())
            .and_then(|n| n.parse::<u16>().ok())
            .is_some_and(|p| p >= partitions);
        if removed {
            stream.delete_consumer(&name).await.map_err(nats_err)?;
            done.push(format!(
                "consumer {PURCHASES_STREAM}/{name}: deleted (partition removed)"
            ));
        }
    }
    Ok(())
}

/// Creates `cfg`'s stream or updates it in place, after checking that an
/// existing one is ours (same subjects) and, for the purchases stream, has
/// `partitions`.
async fn put_stream(
    js: &jetstream::Context,
    cfg: stream::Config,
    partitions: Option<u16>,
    done: &mut Vec<String>,
) -> Result<(), TopologyError> {
    let name = cfg.name.clone();
    let existed = match js.get_stream(&name).await {
        Ok(mut s) => {
            check_stream(&mut s, &cfg.subjects, partitions).await?;
            true
        }
        Err(_) => false,
    };
    let info = js.create_or_update_stream(cfg).await.map_err(nats_err)?;
    let max_bytes = match info.config.max_bytes {
        b if b > 0 => format!("{} MiB, then new messages are refused", b / (1024 * 1024)),
        _ => "no size limit".to_owned(),
    };
    done.push(format!(
        "stream {name}: {} (max age {:?}, {max_bytes}, {} replica(s))",
        if existed { "updated" } else { "created" },
        info.config.max_age,
        info.config.num_replicas
    ));
    Ok(())
}

/// Opens the streams and the accepted-purchases bucket, verifying that they
/// were provisioned for `partitions`.
pub async fn open(js: &jetstream::Context, partitions: u16) -> Result<Topology, TopologyError> {
    let missing = |what: &str| TopologyError::Missing {
        what: what.to_owned(),
    };
    let mut purchases = js
        .get_stream(PURCHASES_STREAM)
        .await
        .map_err(|_| missing(&format!("stream {PURCHASES_STREAM}")))?;
    check_stream(
        &mut purchases,
        &[format!("{SUBJECT_PREFIX}.*.*")],
        Some(partitions),
    )
    .await?;
    let dlq = js
        .get_stream(DLQ_STREAM)
        .await
        .map_err(|_| missing(&format!("stream {DLQ_STREAM}")))?;
    let accepted = js
        .get_key_value(ACCEPTED_BUCKET)
        .await
        .map_err(|_| missing(&format!("bucket {ACCEPTED_BUCKET}")))?;
    Ok(Topology {
        js: js.clone(),
        purchases,
        dlq,
        accepted,
    })
}

async fn check_stream(
    s: &mut stream::Stream,
    subjects: &[String],
    partitions: Option<u16>,
) -> Result<(), TopologyError> {
    let info = s.info().await.map_err(nats_err)?;
    if info.config.subjects != subjects {
        return Err(TopologyError::ForeignStream {
            name: info.config.name.clone(),
            subjects: info.config.subjects.clone(),
        });
    }
    let Some(partitions) = partitions else {
        return Ok(());
    };
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
        // 0: as many replicas as the stream.
        num_replicas: 0,
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

/// The dead-letter indexer's consumer (see the worker's `dead_letters`).
fn dlq_index_config() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(DLQ_INDEX_CONSUMER.to_owned()),
        description: Some("indexes dead letters into PostgreSQL".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: -1,
        ..Default::default()
    }
}

/// Creates `cfg`'s durable consumer, or updates its tunables.
async fn put_consumer(
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
            if info.config.ack_wait != cfg.ack_wait
                || info.config.max_ack_pending != cfg.max_ack_pending
            {
                stream.update_consumer(cfg).await.map_err(nats_err)?;
            }
            Ok(())
        }
        Err(_) => stream
            .create_consumer(cfg)
            .await
            .map(|_| ())
            .map_err(nats_err),
    }
}

/// The buckets workers coordinate through.
#[derive(Clone)]
pub struct Coordination {
    pub leases: kv::Store,
    pub workers: kv::Store,
}

/// Opens the lease and worker buckets for a worker whose lease TTL is
/// `ttl`: they must exist and expire entries after exactly `ttl`.
pub async fn open_coordination_for(
    js: &jetstream::Context,
    ttl: Duration,
) -> Result<Coordination, TopologyError> {
    let mut stores = Vec::new();
    for bucket in [LEASES_BUCKET, WORKERS_BUCKET] {
        let store = js
            .get_key_value(bucket)
            .await
            .map_err(|_| TopologyError::Missing {
                what: format!("bucket {bucket}"),
            })?;
        let age = store.status().await.map_err(nats_err)?.max_age();
        if age != ttl {
            return Err(TopologyError::LeaseTtlMismatch {
                bucket: bucket.to_owned(),
                existing_ms: age.as_millis(),
                configured_ms: ttl.as_millis(),
            });
        }
        stores.push(store);
    }
    let workers = stores.pop().expect("two buckets");
    let leases = stores.pop().expect("two buckets");
    Ok(Coordination { leases, workers })
}

/// Opens the coordination buckets if workers created them (api, CLI).
pub async fn open_coordination(js: &jetstream::Context) -> Option<Coordination> {
    Some(Coordination {
        leases: js.get_key_value(LEASES_BUCKET).await.ok()?,
        workers: js.get_key_value(WORKERS_BUCKET).await.ok()?,
    })
}
