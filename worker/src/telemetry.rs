//! The worker's metrics: names, help lines and zero series, so that every
//! metric is on `/metrics` (with its `# HELP`) from the first scrape.
//! README.md's metrics table documents each one; a test keeps them equal.
//! (`giftcard_worker_group_partitions` is recorded by the committer.)

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const PARTITIONS_OWNED: &str = "giftcard_worker_partitions_owned";
pub const PARTITIONS_WAITING: &str = "giftcard_worker_partitions_waiting";
pub const LIVE_WORKERS: &str = "giftcard_worker_live_workers";
pub const PARTITION_BACKLOG: &str = "giftcard_worker_partition_backlog";
pub const PARTITIONS_ACQUIRED: &str = "giftcard_worker_partitions_acquired_total";
pub const LEASES_LOST: &str = "giftcard_worker_leases_lost_total";
pub const PURCHASES: &str = "giftcard_worker_purchases_total";
pub const PURCHASE_LATENCY: &str = "giftcard_worker_purchase_latency_seconds";
pub const BATCH_SIZE: &str = "giftcard_worker_batch_size";
pub const GROUP_PARTITIONS: &str = "giftcard_worker_group_partitions";
pub const BATCH_SECONDS: &str = "giftcard_worker_batch_seconds";
pub const TRANSACTION_SECONDS: &str = "giftcard_worker_transaction_seconds";
pub const BATCH_FAILURES: &str = "giftcard_worker_batch_failures_total";
pub const FENCED_BATCHES: &str = "giftcard_worker_fenced_batches_total";
pub const BATCH_CONFLICTS: &str = "giftcard_worker_batch_conflicts_total";
pub const DEAD_LETTERED: &str = "giftcard_worker_dead_lettered_total";
pub const DEAD_LETTERS_PENDING: &str = "giftcard_worker_dead_letters_pending";
pub const NATS_CONNECTED: &str = "giftcard_worker_nats_connected";
pub const MESSAGES_VERIFIED: &str = "giftcard_worker_messages_verified_total";
pub const UNAUTHENTICATED: &str = "giftcard_worker_unauthenticated_total";

/// Describes every metric and creates its series at zero.
pub fn describe() {
    describe_gauge!(PARTITIONS_OWNED, "Partitions this worker holds a lease on");
    describe_gauge!(LIVE_WORKERS, "Workers this one sees registered");
    describe_gauge!(
        PARTITIONS_WAITING,
        "Partitions holding a batch until PostgreSQL is usable again (its purchases are delayed, not failed)"
    );
    describe_gauge!(
        PARTITION_BACKLOG,
        "Unacknowledged messages (pending and in flight) of an owned partition, refreshed every 5 s"
    );
    describe_counter!(PARTITIONS_ACQUIRED, "Partition leases acquired");
    describe_counter!(
        LEASES_LOST,
        "Partition leases lost to another worker or to expiry"
    );
    describe_counter!(
        PURCHASES,
        "Purchases decided, by outcome (succeeded, failed)"
    );
    describe_histogram!(
        PURCHASE_LATENCY,
        Unit::Seconds,
        "End to end: from the api's acceptance of a purchase to the worker's reply after commit"
    );
    describe_histogram!(BATCH_SIZE, "Messages per partition batch");
    describe_histogram!(
        GROUP_PARTITIONS,
        "Partition batches merged into one transaction (group commit)"
    );
    describe_histogram!(
        BATCH_SECONDS,
        Unit::Seconds,
        "Batch handling, from pull to ack"
    );
    describe_histogram!(
        TRANSACTION_SECONDS,
        Unit::Seconds,
        "One attempt at a batch's transaction, including the wait for the worker's committer"
    );
    describe_counter!(
        BATCH_FAILURES,
        "Batch attempts failed because PostgreSQL was unavailable or a statement failed (retried)"
    );
    describe_counter!(
        BATCH_CONFLICTS,
        "Batch transactions rolled back because another writer changed what their read saw (read again at once)"
    );
    describe_counter!(
        FENCED_BATCHES,
        "Batches refused because a newer owner holds the partition"
    );
    describe_counter!(DEAD_LETTERED, "Messages sent to PURCHASES_DLQ");
    describe_gauge!(
        DEAD_LETTERS_PENDING,
        "Dead letters waiting for an operator (global count, refreshed every 10 s)"
    );

    describe_gauge!(
        NATS_CONNECTED,
        "1 while the worker is connected to NATS (checked every second), else 0"
    );
    giftcard_shared::telemetry::record_build_info("giftcard-worker");
    describe_counter!(
        MESSAGES_VERIFIED,
        "Purchase messages whose signature verified, by the secret that signed them (current, or previous during a rotation)"
    );
    describe_counter!(
        UNAUTHENTICATED,
        "Messages dead-lettered because no api signed them (missing, unknown or wrong signature)"
    );
    for key in ["current", "previous"] {
        metrics::counter!(MESSAGES_VERIFIED, "key" => key).increment(0);
    }

    for status in ["succeeded", "failed"] {
        metrics::counter!(PURCHASES, "status" => status).increment(0);
    }
    for c in [
        PARTITIONS_ACQUIRED,
        LEASES_LOST,
        BATCH_FAILURES,
        BATCH_CONFLICTS,
        FENCED_BATCHES,
        DEAD_LETTERED,
        UNAUTHENTICATED,
    ] {
        metrics::counter!(c).increment(0);
    }
    for g in [PARTITIONS_OWNED, LIVE_WORKERS, PARTITIONS_WAITING] {
        metrics::gauge!(g).increment(0.0);
    }
    for h in [
        PURCHASE_LATENCY,
        BATCH_SIZE,
        GROUP_PARTITIONS,
        BATCH_SECONDS,
        TRANSACTION_SECONDS,
    ] {
        let _ = metrics::histogram!(h);
    }
}
