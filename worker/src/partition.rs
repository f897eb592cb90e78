//! The loop of one owned partition: pull in order, decode, process a batch
//! in one transaction, reply, then ack. Poison messages go to the
//! dead-letter stream at once; a batch failing for a technical reason is
//! retried in place with exponential backoff (holding its messages, so
//! nothing of the same card overtakes it), split to isolate a bad message,
//! and dead-lettered after `max_attempts`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use giftcard_shared::config::WorkerSettings;
use giftcard_shared::contract::{
    card_of_subject, PurchaseMessage, PurchaseReply, ReplyOutcome, HEADER_REPLY_TO,
    HEADER_REQUEST_ID, HEADER_TRACEPARENT, MESSAGE_VERSION, REPLY_PREFIX,
};
use giftcard_shared::domain::UserId;
use giftcard_shared::signing::{signature_of, MessageSigner, SignedParts, Signer};
use giftcard_shared::telemetry;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::batch::{self, BatchError, Fence, Item};
use crate::dead_letters::{self, Reason};

/// What a partition loop needs.
pub struct Ctx {
    /// Verifies that an api signed each message before anything is done
    /// with it.
    pub signer: MessageSigner,
    /// Stream sequences this worker dead-lettered recently.
    pub dead_lettered: dead_letters::RecentSequences,
    pub settings: WorkerSettings,
    pub committer: crate::committer::Committer,
    pub db: DatabaseConnection,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
}

/// Why a partition loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Shutdown,
    Fenced,
}

struct Pulled {
    msg: jetstream::Message,
    sequence: u64,
    delivered: i64,
    /// This message's span in its purchase's trace (continued from the
    /// message's `traceparent` header), from pull to reply.
    span: tracing::Span,
}

impl Pulled {
    fn new(msg: jetstream::Message, partition: u16) -> Option<Self> {
        let info = msg.info().ok()?;
        let (sequence, delivered) = (info.stream_sequence, info.delivered);
        let span = tracing::info_span!(
            "purchase",
            partition,
            sequence,
            delivered,
            purchase_id = tracing::field::Empty,
            request_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str())
        };
        if let Some(id) = header(HEADER_REQUEST_ID) {
            span.record("request_id", id);
        }
        telemetry::continue_trace(&span, header(HEADER_TRACEPARENT), header("tracestate"));
        Some(Pulled {
            msg,
            sequence,
            delivered,
            span,
        })
    }
}

/// Runs partition `fence.partition` until `stop` is cancelled or a newer
/// owner fences this one off.
pub async fn run(
    ctx: Arc<Ctx>,
    consumer: PullConsumer,
    fence: Fence,
    stop: CancellationToken,
) -> Exit {
    let batch_size = ctx.settings.batch_size;
    loop {
        match batch::claim(&ctx.db, &fence).await {
            Ok(()) => break,
            Err(BatchError::Fenced { .. }) => {
                metrics::counter!(crate::telemetry::FENCED_BATCHES).increment(1);
                return Exit::Fenced;
            }
            Err(e) => {
                tracing::warn!(partition = fence.partition, error = %e, "cannot record ownership in PostgreSQL yet; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return Exit::Shutdown,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    loop {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(batch_size)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(partition = fence.partition, error = %e, "cannot pull; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return Exit::Shutdown,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => {
                    // Hand back what was pulled but not started, so the next
                    // owner gets it now rather than after the ack wait.
                    while let Some(Some(Ok(m))) = messages.next().now_or_never() {
                        let _ = m.ack_with(AckKind::Nak(None)).await;
                    }
                    return Exit::Shutdown;
                }
                m = messages.next() => m,
            };
            let first = match first {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(partition = fence.partition, error = %e, "pull interrupted");
                    continue;
                }
                None => break,
            };
            let mut batch = vec![first];
            while batch.len() < batch_size {
                match messages.next().now_or_never() {
                    Some(Some(Ok(m))) => batch.push(m),
                    _ => break,
                }
            }
            let pulled = batch
                .into_iter()
                .filter_map(|msg| Pulled::new(msg, fence.partition))
                .collect();
            if handle(&ctx, &fence, pulled, &stop).await == Some(Exit::Fenced) {
                return Exit::Fenced;
            }
        }
    }
}

/// Checks that an api signed the message (payload, subject and the headers
/// the worker acts on); counts which secret did.
fn authenticate(ctx: &Ctx, msg: &jetstream::Message) -> Result<(), String> {
    let parts = SignedParts::of_message(&msg.subject, msg.headers.as_ref(), &msg.payload);
    match ctx
        .signer
        .verify(signature_of(msg.headers.as_ref()), &parts)
    {
        Ok(signer) => {
            let key = match signer {
                Signer::Current => "current",
                Signer::Previous => "previous",
            };
            metrics::counter!(crate::telemetry::MESSAGES_VERIFIED, "key" => key).increment(1);
            Ok(())
        }
        Err(e) => {
            metrics::counter!(crate::telemetry::UNAUTHENTICATED).increment(1);
            Err(e.to_string())
        }
    }
}

/// Checks a message's payload against the contract.
fn decode(msg: &jetstream::Message) -> Result<PurchaseMessage, String> {
    let m: PurchaseMessage = serde_json::from_slice(&msg.payload).map_err(|e| {
        // Probe for the version first, to say "unknown version" plainly.
        match serde_json::from_slice::<serde_json::Value>(&msg.payload)
            .ok()
            .and_then(|v| v.get("v").and_then(serde_json::Value::as_u64))
        {
            Some(v) if v != u64::from(MESSAGE_VERSION) => format!("unknown message version {v}"),
            _ => format!("undecodable payload: {e}"),
        }
    })?;
    if m.v != MESSAGE_VERSION {
        return Err(format!("unknown message version {}", m.v));
    }
    if card_of_subject(&msg.subject) != Some(m.gift_card_id) {
        return Err(format!(
            "gift_card_id {} does not match subject {}",
            m.gift_card_id, msg.subject
        ));
    }
    if !(1..=10).contains(&m.quantity) {
        return Err(format!("quantity {} out of range", m.quantity));
    }
    UserId::parse(&m.user_id).map_err(|e| e.0)?;
    Ok(m)
}

/// Processes one pulled batch. Returns `Some(Exit)` if the loop must end.
async fn handle(
    ctx: &Ctx,
    fence: &Fence,
    pulled: Vec<Pulled>,
    stop: &CancellationToken,
) -> Option<Exit> {
    let started = Instant::now();
    let mut good: Vec<(Pulled, Item)> = Vec::with_capacity(pulled.len());
    for p in pulled {
        if ctx.dead_lettered.contains(p.sequence) {
            // A redelivered copy of a message already dead-lettered.
            tracing::debug!(
                sequence = p.sequence,
                "dropping a redelivery of a dead-lettered message"
            );
            let _ = p.msg.ack_with(AckKind::Term).await;
            continue;
        }
        match authenticate(ctx, &p.msg).and_then(|()| decode(&p.msg)) {
            Ok(message) => {
                p.span
                    .record("purchase_id", tracing::field::display(message.purchase_id));
                let item = Item {
                    partition: fence.partition,
                    message,
                    sequence: p.sequence,
                };
                good.push((p, item));
            }
            Err(reason) => {
                let reason = Reason {
                    text: reason,
                    attempts: p.delivered as u32,
                };
                dead_letter_and_ack(ctx, &p, None, &reason).await;
            }
        }
    }
    if good.is_empty() {
        return None;
    }
    metrics::histogram!(crate::telemetry::BATCH_SIZE).record(good.len() as f64);
    let exit = process_with_retries(ctx, fence, &good, stop).await;
    metrics::histogram!(crate::telemetry::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
    exit
}

/// How many times in a row a batch may find its inputs changed before that
/// counts as a failed attempt.
const MAX_CHANGED_RETRIES: u32 = 50;

async fn process_with_retries(
    ctx: &Ctx,
    fence: &Fence,
    good: &[(Pulled, Item)],
    stop: &CancellationToken,
) -> Option<Exit> {
    let items: Vec<Item> = good.iter().map(|(_, i)| i.clone()).collect();
    // Earlier deliveries were earlier attempts.
    let mut attempt = good
        .iter()
        .map(|(p, _)| p.delivered)
        .max()
        .unwrap_or(1)
        .max(1) as u32;
    let mut delay = ctx.settings.retry_base;
    let mut changed = 0u32;
    loop {
        // The batch's transaction, as a span in each of its purchases' traces.
        let txn_spans: Vec<tracing::Span> = good
            .iter()
            .map(|(p, _)| tracing::info_span!(parent: &p.span, "transaction", attempt, batch = good.len()))
            .collect();
        let txn_started = Instant::now();
        let result = with_progress(
            ctx,
            good,
            ctx.committer.submit(fence.clone(), items.clone()),
        )
        .await;
        metrics::histogram!(crate::telemetry::TRANSACTION_SECONDS)
            .record(txn_started.elapsed().as_secs_f64());
        drop(txn_spans);
        match result {
            Ok(outcomes) => {
                finish(ctx, good, outcomes).await;
                return None;
            }
            Err(BatchError::Fenced { partition }) => {
                metrics::counter!(crate::telemetry::FENCED_BATCHES).increment(1);
                tracing::warn!(
                    partition,
                    "fenced off by a newer owner; releasing the partition"
                );
                for (p, _) in good {
                    let _ = p.msg.ack_with(AckKind::Nak(None)).await;
                }
                return Some(Exit::Fenced);
            }
            // Another writer moved what the batch read (a wallet credited,
            // a code withdrawn): nothing was written and nothing is wrong
            // with the messages. Read again at once; this does not count as
            // a failed attempt unless it keeps happening.
            Err(BatchError::Changed) if changed < MAX_CHANGED_RETRIES => {
                changed += 1;
                metrics::counter!(crate::telemetry::BATCH_CONFLICTS).increment(1);
                tracing::debug!(
                    partition = fence.partition,
                    changed,
                    "batch inputs changed; reading again"
                );
                tokio::time::sleep(Duration::from_millis(u64::from(changed.min(20)))).await;
            }
            Err(e)
                if good.len() > 1 && !e.is_connectivity() && !matches!(e, BatchError::Changed) =>
            {
                // A statement failed: find the culprit by processing one by one.
                tracing::warn!(partition = fence.partition, error = %e, "batch failed; retrying its messages one by one");
                for one in good {
                    let exit = Box::pin(process_with_retries(
                        ctx,
                        fence,
                        std::slice::from_ref(one),
                        stop,
                    ))
                    .await;
                    if exit.is_some() {
                        return exit;
                    }
                }
                return None;
            }
            Err(e) => {
                metrics::counter!(crate::telemetry::BATCH_FAILURES).increment(1);
                if attempt >= ctx.settings.max_attempts {
                    let reason = Reason {
                        text: format!("technical failure: {e}"),
                        attempts: attempt,
                    };
                    for (p, item) in good {
                        dead_letter_and_ack(ctx, p, Some(&item.message), &reason).await;
                    }
                    return None;
                }
                tracing::warn!(partition = fence.partition, attempt, error = %e, retry_in = ?delay, "batch failed; will retry");
                // Keep the messages: tell the server we are still on them.
                for (p, _) in good {
                    let _ = p.msg.ack_with(AckKind::Progress).await;
                }
                tokio::select! {
                    _ = stop.cancelled() => {
                        for (p, _) in good {
                            let _ = p.msg.ack_with(AckKind::Nak(None)).await;
                        }
                        return Some(Exit::Shutdown);
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(ctx.settings.retry_max);
                attempt += 1;
            }
        }
    }
}

/// Awaits `work` while telling JetStream every third of the ack wait that
/// the batch's messages are still being worked on, so they are not
/// redelivered (and perhaps processed after being dead-lettered) meanwhile.
async fn with_progress<T>(
    ctx: &Ctx,
    good: &[(Pulled, Item)],
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let period = ctx.settings.ack_wait / 3;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = ticker.tick() => {
                for (p, _) in good {
                    let _ = p.msg.ack_with(AckKind::Progress).await;
                }
            }
        }
    }
}

/// After commit: reply to waiting requests, then ack.
async fn finish(ctx: &Ctx, good: &[(Pulled, Item)], outcomes: Vec<ReplyOutcome>) {
    for ((p, item), outcome) in good.iter().zip(outcomes) {
        if let ReplyOutcome::Completed { purchase } = &outcome {
            metrics::counter!(crate::telemetry::PURCHASES, "status" => purchase.status.as_str())
                .increment(1);
            p.span.in_scope(|| {
                // The status only: the view holds the activation codes.
                tracing::debug!(status = purchase.status.as_str(), "purchase decided");
            });
        }
        // Signed by the api, and under the api's reply prefix (which only the
        // api may subscribe to): the outcome carries activation codes.
        let reply_to = p
            .msg
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_REPLY_TO))
            .filter(|r| r.as_str().starts_with(REPLY_PREFIX));
        if let Some(reply_to) = reply_to {
            let reply = PurchaseReply {
                v: MESSAGE_VERSION,
                purchase_id: item.message.purchase_id,
                outcome,
            };
            match serde_json::to_vec(&reply) {
                Ok(body) => {
                    let span = tracing::info_span!(parent: &p.span, "reply");
                    let mut headers = async_nats::HeaderMap::new();
                    if let Some(tp) = telemetry::traceparent(&span) {
                        headers.insert(HEADER_TRACEPARENT, tp.as_str());
                    }
                    // A missing listener is fine: the client polls.
                    let _ = ctx
                        .nats
                        .publish_with_headers(reply_to.as_str().to_owned(), headers, body.into())
                        .instrument(span)
                        .await;
                }
                Err(e) => tracing::error!(error = %e, "cannot encode reply"),
            }
        }
        let age = (chrono::Utc::now() - item.message.accepted_at).num_microseconds();
        if let Some(us) = age.filter(|us| *us >= 0) {
            metrics::histogram!(crate::telemetry::PURCHASE_LATENCY).record(us as f64 / 1e6);
        }
    }
    let acks = good.iter().map(|(p, _)| p.msg.ack());
    for r in futures::future::join_all(acks).await {
        if let Err(e) = r {
            // The message will be redelivered and answered from the stored result.
            tracing::warn!(error = %e, "ack failed");
        }
    }
}

async fn dead_letter_and_ack(
    ctx: &Ctx,
    p: &Pulled,
    decoded: Option<&PurchaseMessage>,
    reason: &Reason,
) {
    match dead_letters::publish(&ctx.js, &p.msg, decoded, reason).await {
        Ok(_) => {
            ctx.dead_lettered.insert(p.sequence);
            let _ = p.msg.ack_with(AckKind::Term).await;
        }
        Err(e) => {
            // Not dead-lettered: leave it for redelivery rather than lose it.
            tracing::error!(error = %e, sequence = p.sequence, "cannot dead-letter; leaving for redelivery");
            let _ = p
                .msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}
