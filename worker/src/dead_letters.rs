//! Dead letters: publishing a message the worker gives up on to
//! `PURCHASES_DLQ` (with its reason, attempts and origin in headers), and
//! indexing that stream into PostgreSQL so operators can list, replay and
//! discard, and the purchase reads `dead_lettered` instead of `pending`.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{self, AckKind};
use async_nats::HeaderMap;
use futures::StreamExt;
use giftcard_shared::contract::*;
use giftcard_shared::signing::{signature_of, MessageSigner, SignedParts, HEADER_SIGNATURE};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Namespace of dead-letter ids: one id per original stream sequence, so a
/// dead-lettering retried after a crash does not create a second entry.
const DLQ_NAMESPACE: Uuid = Uuid::from_u128(0x2d1e_57c0_44a3_4b8e_9a55_0f3c_6e7d_8a9b);

/// Why a message is dead-lettered.
#[derive(Debug, Clone)]
pub struct Reason {
    pub text: String,
    pub attempts: u32,
}

/// Publishes `msg` to the dead-letter stream and waits for the PubAck. The
/// caller acks the original only after this succeeds.
pub async fn publish(
    js: &jetstream::Context,
    msg: &jetstream::Message,
    decoded: Option<&PurchaseMessage>,
    reason: &Reason,
) -> anyhow::Result<Uuid> {
    let info = msg
        .info()
        .map_err(|e| anyhow::anyhow!("message without info: {e}"))?;
    let seq = info.stream_sequence;
    let id = Uuid::new_v5(&DLQ_NAMESPACE, seq.to_string().as_bytes());
    let card = decoded
        .map(|m| m.gift_card_id)
        .or_else(|| card_of_subject(&msg.subject));
    let mut h = HeaderMap::new();
    h.insert(HEADER_DLQ_ID, id.to_string().as_str());
    h.insert(HEADER_DLQ_REASON, truncate(&reason.text, 1000).as_str());
    h.insert(HEADER_DLQ_ATTEMPTS, reason.attempts.to_string().as_str());
    h.insert(HEADER_DLQ_SUBJECT, msg.subject.as_str());
    h.insert(HEADER_DLQ_SEQUENCE, seq.to_string().as_str());
    if let Some(m) = decoded {
        h.insert(HEADER_DLQ_PURCHASE_ID, m.purchase_id.to_string().as_str());
        h.insert(HEADER_DLQ_USER_ID, m.user_id.as_str());
    }
    if let Some(c) = card {
        h.insert(HEADER_DLQ_GIFT_CARD_ID, c.to_string().as_str());
    }
    // What the original's signature covers, so that the indexer and a
    // replay can tell an api's message from a forgery.
    if let Some(original) = msg.headers.as_ref() {
        for name in [
            HEADER_REPLAY_OF,
            HEADER_REPLY_TO,
            HEADER_REQUEST_ID,
            HEADER_VERSION,
            HEADER_SIGNATURE,
        ] {
            if let Some(v) = original.get(name) {
                h.insert(name, v.as_str());
            }
        }
        if let Some(v) = original.get(async_nats::header::NATS_MESSAGE_ID) {
            h.insert(HEADER_DLQ_MSG_ID, v.as_str());
        }
    }
    let subject = format!(
        "{DLQ_SUBJECT_PREFIX}.{}",
        card.map_or_else(|| "unknown".to_owned(), |c| c.to_string())
    );
    let publish = Publish::build()
        .payload(msg.payload.clone())
        .headers(h)
        .message_id(format!("dlq:{seq}"));
    js.send_publish(subject, publish).await?.await?;
    metrics::counter!(crate::telemetry::DEAD_LETTERED).increment(1);
    tracing::warn!(dead_letter = %id, sequence = seq, subject = %msg.subject, reason = %reason.text,
        attempts = reason.attempts, "message dead-lettered");
    Ok(id)
}

fn truncate(s: &str, max: usize) -> String {
    // Header values must be one line.
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one_line.chars().take(max).collect()
}

fn header<'a>(h: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    h?.get(name).map(|v| v.as_str())
}

/// Indexes the dead-letter stream into PostgreSQL until `shutdown`;
/// retries (without acking) while PostgreSQL is down.
pub async fn run_indexer(
    consumer: PullConsumer,
    db: DatabaseConnection,
    signer: MessageSigner,
    shutdown: CancellationToken,
) {
    loop {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "dead-letter indexer cannot pull; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                m = messages.next() => m,
            };
            let msg = match msg {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "dead-letter pull interrupted");
                    continue;
                }
                None => break,
            };
            match index(&db, &signer, &msg).await {
                Ok(()) => {
                    let _ = msg.ack().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot index dead letter yet; will retry");
                    let _ = msg
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(2))))
                        .await;
                }
            }
        }
    }
}

async fn index(
    db: &DatabaseConnection,
    signer: &MessageSigner,
    msg: &jetstream::Message,
) -> anyhow::Result<()> {
    let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
    let dlq_seq = info.stream_sequence as i64;
    let h = msg.headers.as_ref();
    let id: Uuid = header(h, HEADER_DLQ_ID)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Uuid::new_v5(&DLQ_NAMESPACE, format!("dlq-seq:{dlq_seq}").as_bytes()));
    let reason = header(h, HEADER_DLQ_REASON).unwrap_or("unknown").to_owned();
    let attempts: i32 = header(h, HEADER_DLQ_ATTEMPTS)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let subject = header(h, HEADER_DLQ_SUBJECT).unwrap_or("").to_owned();
    let partition: i32 = subject
        .split('.')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(-1);
    let published = chrono::DateTime::from_timestamp(
        info.published.unix_timestamp(),
        info.published.nanosecond(),
    )
    .unwrap_or_else(chrono::Utc::now);
    let orig_seq: i64 = header(h, HEADER_DLQ_SEQUENCE)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // A dead letter names a purchase (and marks it dead-lettered) only if
    // an api signed its message: a forgery must not touch anyone's purchase.
    let authentic = signer
        .verify(
            signature_of(h),
            &SignedParts::of_dead_letter(h, &msg.payload),
        )
        .is_ok();
    let decoded = authentic
        .then(|| serde_json::from_slice::<PurchaseMessage>(&msg.payload).ok())
        .flatten();
    let card: Option<Uuid> = header(h, HEADER_DLQ_GIFT_CARD_ID).and_then(|s| s.parse().ok());
    let replayed_from: Option<Uuid> = header(h, HEADER_REPLAY_OF).and_then(|s| s.parse().ok());
    let txn = db.begin().await?;
    let inserted = txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO dead_letters (id, purchase_id, gift_card_id, user_id, reason, attempts, original_subject, \
           original_sequence, dlq_sequence, dead_lettered_at, replayed_from) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, (SELECT d.id FROM dead_letters d WHERE d.id = $11)) \
         ON CONFLICT (id) DO NOTHING",
        [
            id.into(),
            decoded.as_ref().map(|m| m.purchase_id).into(),
            card.into(),
            decoded.as_ref().map(|m| m.user_id.clone()).into(),
            reason.clone().into(),
            attempts.into(),
            subject.into(),
            orig_seq.into(),
            dlq_seq.into(),
            published.into(),
            replayed_from.into(),
        ],
    ))
    .await?
    .rows_affected();
    if inserted == 1 {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO dead_letter_events (dead_letter_id, action, actor, outcome, at) \
             VALUES ($1, 'dead_lettered', 'worker', $2, $3)",
            [
                id.into(),
                format!("after {attempts} attempt(s): {reason}").into(),
                published.into(),
            ],
        ))
        .await?;
    }
    if let Some(m) = decoded.as_ref().filter(|m| (1..=10).contains(&m.quantity)) {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO purchases (id, user_id, gift_card_id, quantity, status, error_code, error_message, \
               idempotency_key, request_hash, stream_sequence, partition, created_at) \
             VALUES ($1, $2, $3, $4, 'dead_lettered', 'DEAD_LETTERED', $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO NOTHING",
            [
                m.purchase_id.into(),
                m.user_id.clone().into(),
                m.gift_card_id.into(),
                i16::from(m.quantity).into(),
                format!("dead-lettered after {attempts} attempt(s): {reason}").into(),
                m.idempotency_key.clone().into(),
                m.request_hash.clone().into(),
                orig_seq.into(),
                partition.into(),
                m.accepted_at.into(),
            ],
        ))
        .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Publishes the number of dead letters waiting for an operator as
/// `giftcard_worker_dead_letters_pending`, every 10 s until `shutdown`.
pub async fn run_backlog_gauge(db: DatabaseConnection, shutdown: CancellationToken) {
    loop {
        let count = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT count(*) AS n FROM dead_letters WHERE state = 'pending'".to_owned(),
            ))
            .await;
        if let Ok(Some(row)) = count {
            if let Ok(n) = row.try_get::<i64>("", "n") {
                metrics::gauge!(crate::telemetry::DEAD_LETTERS_PENDING).set(n as f64);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

/// A bounded set of recently dead-lettered stream sequences, so that a
/// redelivered copy of such a message is dropped instead of processed.
#[derive(Default)]
pub struct RecentSequences(
    std::sync::Mutex<(
        std::collections::HashSet<u64>,
        std::collections::VecDeque<u64>,
    )>,
);

impl RecentSequences {
    const CAPACITY: usize = 100_000;

    pub fn insert(&self, seq: u64) {
        let mut guard = self.0.lock().expect("recent sequences lock");
        let (set, order) = &mut *guard;
        if set.insert(seq) {
            order.push_back(seq);
            if order.len() > Self::CAPACITY {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.0
            .lock()
            .expect("recent sequences lock")
            .0
            .contains(&seq)
    }
}
