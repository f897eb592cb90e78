//! The NATS contract between the api and the worker: stream and subject
//! names, headers, and the versioned payloads. Changing a payload means a new
//! `v`; the worker dead-letters versions it does not know.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{FailureCode, PurchaseStatus};

/// Stream holding every accepted purchase, one subject per card.
pub const PURCHASES_STREAM: &str = "PURCHASES";
/// Stream holding messages the worker gave up on.
pub const DLQ_STREAM: &str = "PURCHASES_DLQ";
/// KV bucket mapping a purchase id to what the api accepted, so that a 202'd
/// purchase reads `pending` before the worker wrote anything to PostgreSQL.
pub const ACCEPTED_BUCKET: &str = "purchases_accepted";

/// KV bucket of partition leases: key [`lease_key`], value [`LeaseValue`];
/// the bucket's max age is the lease TTL.
pub const LEASES_BUCKET: &str = "partition_leases";
/// KV bucket of live workers: key = worker id, value [`WorkerInfo`];
/// entries expire like leases unless refreshed.
pub const WORKERS_BUCKET: &str = "workers";

/// Subject prefix of the purchases stream.
pub const SUBJECT_PREFIX: &str = "purchases";
/// Subject prefix of the dead-letter stream.
pub const DLQ_SUBJECT_PREFIX: &str = "purchases_dlq";

/// The payload version this build writes and understands.
pub const MESSAGE_VERSION: u32 = 1;

/// Header naming the subject on which the worker publishes the result.
/// (JetStream does not keep a message's NATS reply subject.) Always under
/// [`REPLY_PREFIX`]; the worker replies to nothing else.
pub const HEADER_REPLY_TO: &str = "Giftcard-Reply-To";
/// Prefix of every reply subject: `giftcard.reply.<api instance>.<purchase>`.
/// Only the api's NATS identity may subscribe to it.
pub const REPLY_PREFIX: &str = "giftcard.reply.";
/// Header carrying the payload version (also inside the payload).
pub const HEADER_VERSION: &str = "Giftcard-Version";
/// The `X-Request-Id` of the HTTP request that published the message (for
/// the worker's logs).
pub const HEADER_REQUEST_ID: &str = "Giftcard-Request-Id";
/// W3C trace context of the purchase's trace (HTTP request → message →
/// worker transaction → reply).
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Dead-letter headers.
pub const HEADER_DLQ_REASON: &str = "Giftcard-Dlq-Reason";
pub const HEADER_DLQ_ATTEMPTS: &str = "Giftcard-Dlq-Attempts";
pub const HEADER_DLQ_SUBJECT: &str = "Giftcard-Dlq-Original-Subject";
pub const HEADER_DLQ_SEQUENCE: &str = "Giftcard-Dlq-Original-Sequence";
/// The original message's `Nats-Msg-Id` (part of what its signature covers).
pub const HEADER_DLQ_MSG_ID: &str = "Giftcard-Dlq-Original-Msg-Id";
pub const HEADER_DLQ_ID: &str = "Giftcard-Dlq-Id";
pub const HEADER_DLQ_PURCHASE_ID: &str = "Giftcard-Dlq-Purchase-Id";
pub const HEADER_DLQ_GIFT_CARD_ID: &str = "Giftcard-Dlq-Gift-Card-Id";
pub const HEADER_DLQ_USER_ID: &str = "Giftcard-Dlq-User-Id";
/// On a replayed message (and on its dead letter, if it fails again): the
/// dead letter it was replayed from.
pub const HEADER_REPLAY_OF: &str = "Giftcard-Replay-Of";

/// Partition of a card: a stable FNV-1a hash of the card id's bytes, so the
/// api and every worker agree without coordination.
pub fn partition_of(gift_card_id: Uuid, partitions: u16) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in gift_card_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u16
}

/// The subject a card's purchases are published to.
pub fn purchase_subject(gift_card_id: Uuid, partitions: u16) -> String {
    format!(
        "{SUBJECT_PREFIX}.{}.{gift_card_id}",
        partition_of(gift_card_id, partitions)
    )
}

/// The filter subject of one partition's consumer.
pub fn partition_filter(partition: u16) -> String {
    format!("{SUBJECT_PREFIX}.{partition}.*")
}

/// Name prefix of a partition's durable consumers.
pub fn partition_consumer_prefix(partition: u16) -> String {
    format!("p{partition:04}-")
}

/// The durable consumer of one partition under one lease: every owner reads
/// through a consumer of its own, so a stale owner's pulls cannot take
/// messages from the current one.
pub fn owner_consumer_name(partition: u16, token: i64) -> String {
    format!("{}{token:016x}", partition_consumer_prefix(partition))
}

/// The lease key of one partition.
pub fn lease_key(partition: u16) -> String {
    format!("p{partition:04}")
}

/// The partition named by a lease key.
pub fn partition_of_lease_key(key: &str) -> Option<u16> {
    key.strip_prefix('p')?.parse().ok()
}

/// Who holds a partition lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseValue {
    pub owner: String,
    /// The fencing token the owner commits with.
    pub token: i64,
    /// The durable consumer the owner reads through.
    #[serde(default)]
    pub consumer: String,
    pub acquired_at: DateTime<Utc>,
}

/// A live worker's registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    pub started_at: DateTime<Utc>,
    /// Where its `/metrics` and `/readyz` are served.
    pub ops_addr: String,
    pub partitions_owned: usize,
}

/// Extracts the card id from a purchase subject, if it is one.
pub fn card_of_subject(subject: &str) -> Option<Uuid> {
    let mut parts = subject.split('.');
    (parts.next()? == SUBJECT_PREFIX).then_some(())?;
    parts.next()?.parse::<u16>().ok()?;
    let id = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(id)
}

/// A purchase request as accepted by the api (payload version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseMessage {
    pub v: u32,
    pub purchase_id: Uuid,
    pub user_id: String,
    pub gift_card_id: Uuid,
    pub quantity: u8,
    pub request_hash: String,
    pub idempotency_key: Option<String>,
    pub accepted_at: DateTime<Utc>,
}

/// What the api stores in the accepted bucket for a purchase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcceptedPurchase {
    pub purchase_id: Uuid,
    pub user_id: String,
    pub gift_card_id: Uuid,
    pub quantity: u8,
    pub request_hash: String,
    pub sequence: u64,
    pub accepted_at: DateTime<Utc>,
}

/// A purchase as clients see it (also the worker's reply payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PurchaseView {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    pub user_id: String,
    #[schema(value_type = String, format = Uuid)]
    pub gift_card_id: Uuid,
    pub quantity: u8,
    pub status: PurchaseStatus,
    /// Decimal string with two places; null while pending.
    #[schema(example = "10.00")]
    pub unit_price: Option<String>,
    #[schema(example = "10.00")]
    pub total: Option<String>,
    /// Present (exactly `quantity` codes) only when `status` is `succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_codes: Option<Vec<String>>,
    pub error: Option<PurchaseErrorView>,
    /// Position in the card's queue (the JetStream stream sequence).
    pub sequence: u64,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The business reason a purchase failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PurchaseErrorView {
    pub code: String,
    pub message: String,
}

impl PurchaseErrorView {
    pub fn from_code(code: FailureCode) -> Self {
        Self {
            code: code.as_str().to_owned(),
            message: code.message().to_owned(),
        }
    }
}

/// The worker's reply to the api, published after commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurchaseReply {
    pub v: u32,
    pub purchase_id: Uuid,
    #[serde(flatten)]
    pub outcome: ReplyOutcome,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReplyOutcome {
    /// The purchase is terminal (this request made it so, or an earlier one).
    Completed { purchase: Box<PurchaseView> },
    /// The idempotency key was already used for a different request.
    IdempotencyKeyReused,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_and_partition_is_stable() {
        let card: Uuid = "0b7e2f4c-8a7d-4d9e-9f00-112233445566".parse().unwrap();
        let s = purchase_subject(card, 64);
        assert_eq!(card_of_subject(&s), Some(card));
        assert_eq!(partition_of(card, 64), partition_of(card, 64));
        assert!(partition_of(card, 64) < 64);
        assert_eq!(partition_of(card, 1), 0);
        assert_eq!(card_of_subject("purchases.x.y"), None);
    }

    #[test]
    fn partitions_spread_cards() {
        let mut seen = [0u32; 8];
        for _ in 0..8000 {
            seen[partition_of(Uuid::new_v4(), 8) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }
}
