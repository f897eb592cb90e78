//! The loop of one owned partition: pull in order, decode, process the
//! batch in one transaction (through the worker's committer), reply, then
//! ack. What happens when an attempt fails is [`crate::retry`]'s decision:
//! the loop holds the batch through outages and conflicts (telling
//! JetStream it is still working on the messages, and never nak-ing, which
//! would let later messages of the same card overtake them) and
//! dead-letters only what fails by itself.

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

use crate::batch::{self, Fence, Item};
use crate::dead_letters::{self, Reason};
use crate::error::BatchError;
use crate::ops::Waiting;
use crate::retry::{Policy, Step, Tries};

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
    /// Partitions holding a batch until PostgreSQL is usable again.
    pub waiting: Waiting,
}

impl Ctx {
    fn policy(&self) -> Policy {
        Policy {
            max_attempts: self.settings.max_attempts,
            base: self.settings.retry_base,
            max: self.settings.retry_max,
        }
    }
}

/// Why a partition loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Shutdown,
    Fenced,
    /// A message came without its JetStream metadata, or after a gap in
    /// the consumer's deliveries: the partition is handed back, so that
    /// the next lease's consumer redelivers it, and everything after it,
    /// in order.
    Restart,
}

/// Whether deliveries reach this worker in order: each message's consumer
/// sequence must follow the last one's. A gap means a delivery was lost
/// on the way (a NATS node or consumer leader died with it in flight);
/// what comes after it must wait until the lost one is redelivered, or
/// the card's later purchases would be decided before an earlier one.
#[derive(Debug, Default)]
struct Deliveries {
    last: Option<u64>,
}

impl Deliveries {
    /// Takes `consumer_sequence` if it follows the last one taken.
    fn take(&mut self, consumer_sequence: u64) -> bool {
        if self.last.is_some_and(|last| consumer_sequence != last + 1) {
            return false;
        }
        self.last = Some(consumer_sequence);
        true
    }
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
    /// `None` if the message lacks its JetStream metadata (its stream
    /// position), which a message from a pull consumer always has, or if
    /// it does not follow the last delivery taken.
    fn new(msg: jetstream::Message, partition: u16, deliveries: &mut Deliveries) -> Option<Self> {
        let info = msg.info().ok()?;
        if !deliveries.take(info.consumer_sequence) {
            return None;
        }
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

/// The usable prefix of a pulled batch: `usable` applied to each message
/// until it first returns `None`; `true` if it did. The message it failed
/// on and everything after it are left unacknowledged.
fn usable_prefix<T, U>(batch: Vec<T>, mut usable: impl FnMut(T) -> Option<U>) -> (Vec<U>, bool) {
    let mut out = Vec::with_capacity(batch.len());
    for m in batch {
        match usable(m) {
            Some(u) => out.push(u),
            None => return (out, true),
        }
    }
    (out, false)
}

/// Runs partition `fence.partition` until `stop` is cancelled or a newer
/// owner fences this one off.
pub async fn run(
    ctx: Arc<Ctx>,
    consumer: PullConsumer,
    fence: Fence,
    stop: CancellationToken,
) -> Exit {
    if let Some(exit) = claim(&ctx, &fence, &stop).await {
        return exit;
    }
    let batch_size = ctx.settings.batch_size;
    let mut deliveries = Deliveries::default();
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
            let (pulled, cut) =
                usable_prefix(batch, |m| Pulled::new(m, fence.partition, &mut deliveries));
            if let Some(exit) = handle(&ctx, &fence, pulled, &stop).await {
                return exit;
            }
            if cut {
                tracing::warn!(
                    partition = fence.partition,
                    "a delivery was lost or came without JetStream metadata; handing the \
                     partition back so that the rest is redelivered in order"
                );
                return Exit::Restart;
            }
        }
    }
}

/// Records this owner's fence before the first batch, waiting out
/// PostgreSQL outages; `Some(exit)` if the loop must end instead.
async fn claim(ctx: &Ctx, fence: &Fence, stop: &CancellationToken) -> Option<Exit> {
    let mut tries = Tries::default();
    loop {
        let error = match batch::claim(&ctx.db, fence).await {
            Ok(()) => return None,
            Err(e) => e,
        };
        let delay = match ctx.policy().next(&error, 1, &mut tries, rand::random()) {
            Step::GiveUp => {
                metrics::counter!(crate::telemetry::FENCED_BATCHES).increment(1);
                return Some(Exit::Fenced);
            }
            Step::ReadAgain { pause } => pause,
            Step::Wait { delay } | Step::Retry { delay } => delay,
            Step::Split | Step::DeadLetter => ctx.settings.retry_max,
        };
        tracing::warn!(partition = fence.partition, error = %error, retry_in = ?delay,
            "cannot record ownership in PostgreSQL yet; retrying");
        tokio::select! {
            _ = stop.cancelled() => return Some(Exit::Shutdown),
            _ = tokio::time::sleep(delay) => {}
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
    let mut pulled = pulled.into_iter();
    while let Some(p) = pulled.next() {
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
                if dead_letter_and_ack(ctx, &p, None, &reason, stop)
                    .await
                    .is_err()
                {
                    // Shutting down: hand everything not yet settled back.
                    nak_all(&good).await;
                    for rest in pulled {
                        let _ = rest.msg.ack_with(AckKind::Nak(None)).await;
                    }
                    return Some(Exit::Shutdown);
                }
            }
        }
    }
    if good.is_empty() {
        return None;
    }
    metrics::histogram!(crate::telemetry::BATCH_SIZE).record(good.len() as f64);
    let exit = settle(ctx, fence, &good, stop).await;
    metrics::histogram!(crate::telemetry::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
    exit
}

/// Tries the batch until it commits, following [`Policy::next`] after
/// each failed attempt.
async fn settle(
    ctx: &Ctx,
    fence: &Fence,
    good: &[(Pulled, Item)],
    stop: &CancellationToken,
) -> Option<Exit> {
    let mut tries = Tries::default();
    // Held while this partition waits for PostgreSQL (readiness, metrics).
    let mut waiting = None;
    loop {
        let error = match attempt(ctx, fence, good).await {
            Ok(outcomes) => {
                drop(waiting);
                finish(ctx, good, outcomes).await;
                return None;
            }
            Err(e) => e,
        };
        let partition = fence.partition;
        match ctx
            .policy()
            .next(&error, good.len(), &mut tries, rand::random())
        {
            Step::GiveUp => {
                metrics::counter!(crate::telemetry::FENCED_BATCHES).increment(1);
                tracing::warn!(
                    partition,
                    "fenced off by a newer owner; releasing the partition"
                );
                nak_all(good).await;
                return Some(Exit::Fenced);
            }
            Step::ReadAgain { pause } => {
                metrics::counter!(crate::telemetry::BATCH_CONFLICTS).increment(1);
                tracing::debug!(partition, conflicts = tries.conflicts, error = %error, "reading again");
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            Step::Wait { delay } => {
                metrics::counter!(crate::telemetry::BATCH_FAILURES).increment(1);
                waiting.get_or_insert_with(|| ctx.waiting.enter());
                tracing::warn!(partition, waits = tries.waits, error = %error, retry_in = ?delay,
                    "PostgreSQL unavailable; holding the batch");
                if hold(ctx, good, delay, stop).await.is_err() {
                    return Some(Exit::Shutdown);
                }
            }
            Step::Split => {
                drop(waiting.take());
                tracing::warn!(partition, error = %error, "batch failed; trying its messages one by one");
                for one in good {
                    let exit = Box::pin(settle(ctx, fence, std::slice::from_ref(one), stop)).await;
                    if exit.is_some() {
                        return exit;
                    }
                }
                return None;
            }
            Step::Retry { delay } => {
                drop(waiting.take());
                metrics::counter!(crate::telemetry::BATCH_FAILURES).increment(1);
                tracing::warn!(partition, attempt = tries.attempts, error = %error, retry_in = ?delay,
                    "a message's statement failed; will retry");
                if hold(ctx, good, delay, stop).await.is_err() {
                    return Some(Exit::Shutdown);
                }
            }
            Step::DeadLetter => {
                let reason = Reason {
                    text: format!("statement failed for this message alone: {error}"),
                    attempts: tries.attempts,
                };
                for (p, item) in good {
                    if dead_letter_and_ack(ctx, p, Some(&item.message), &reason, stop)
                        .await
                        .is_err()
                    {
                        return Some(Exit::Shutdown);
                    }
                }
                return None;
            }
        }
    }
}

/// One attempt at the batch's transaction, as a span in each of its
/// purchases' traces.
async fn attempt(
    ctx: &Ctx,
    fence: &Fence,
    good: &[(Pulled, Item)],
) -> Result<Vec<ReplyOutcome>, BatchError> {
    let spans: Vec<tracing::Span> = good
        .iter()
        .map(|(p, _)| tracing::info_span!(parent: &p.span, "transaction", batch = good.len()))
        .collect();
    let started = Instant::now();
    let items = good.iter().map(|(_, i)| i.clone()).collect();
    let result = with_progress(
        ctx,
        &messages(good),
        ctx.committer.submit(fence.clone(), items),
    )
    .await;
    metrics::histogram!(crate::telemetry::TRANSACTION_SECONDS)
        .record(started.elapsed().as_secs_f64());
    drop(spans);
    result
}

/// Waits `delay` holding the batch (its messages stay in flight, not
/// redelivered); `Err` if the worker is shutting down, after handing the
/// messages back.
async fn hold(
    ctx: &Ctx,
    good: &[(Pulled, Item)],
    delay: Duration,
    stop: &CancellationToken,
) -> Result<(), ()> {
    let messages = messages(good);
    progress(&messages).await;
    tokio::select! {
        _ = stop.cancelled() => {
            nak_all(good).await;
            Err(())
        }
        _ = with_progress(ctx, &messages, tokio::time::sleep(delay)) => Ok(()),
    }
}

async fn progress(messages: &[&jetstream::Message]) {
    for m in messages {
        let _ = m.ack_with(AckKind::Progress).await;
    }
}

fn messages(good: &[(Pulled, Item)]) -> Vec<&jetstream::Message> {
    good.iter().map(|(p, _)| &p.msg).collect()
}

async fn nak_all(good: &[(Pulled, Item)]) {
    for (p, _) in good {
        let _ = p.msg.ack_with(AckKind::Nak(None)).await;
    }
}

/// Awaits `work` while telling JetStream every third of the ack wait that
/// the batch's messages are still being worked on, so they are not
/// redelivered meanwhile.
async fn with_progress<T>(
    ctx: &Ctx,
    messages: &[&jetstream::Message],
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let period = ctx.settings.ack_wait / 3;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = ticker.tick() => progress(messages).await,
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

/// Publishes a message to the dead-letter stream, then terminates it. If
/// NATS cannot take it, the message is held (in flight, in order) and the
/// publish retried with backoff: a NATS outage never reorders or loses it.
/// `Err` if the worker is shutting down first (the message is handed back).
async fn dead_letter_and_ack(
    ctx: &Ctx,
    p: &Pulled,
    decoded: Option<&PurchaseMessage>,
    reason: &Reason,
    stop: &CancellationToken,
) -> Result<(), ()> {
    let mut waits = 0;
    loop {
        match dead_letters::publish(&ctx.js, &p.msg, decoded, reason).await {
            Ok(_) => {
                ctx.dead_lettered.insert(p.sequence);
                let _ = p.msg.ack_with(AckKind::Term).await;
                return Ok(());
            }
            Err(e) => {
                waits += 1;
                let delay = ctx.policy().backoff(waits, rand::random());
                tracing::error!(error = %e, sequence = p.sequence, retry_in = ?delay,
                    "cannot dead-letter yet; holding the message");
                let _ = p.msg.ack_with(AckKind::Progress).await;
                let held = [&p.msg];
                tokio::select! {
                    _ = stop.cancelled() => {
                        let _ = p.msg.ack_with(AckKind::Nak(None)).await;
                        return Err(());
                    }
                    _ = with_progress(ctx, &held, tokio::time::sleep(delay)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{usable_prefix, Deliveries};

    /// The 30-minute nemesis saw a card's later purchase decided 2 s before
    /// an earlier one while NATS nodes were killed under a frozen owner: a
    /// delivery lost in flight must stop the partition, not be skipped.
    #[test]
    fn a_gap_in_the_consumers_deliveries_stops_the_batch_at_it() {
        let mut d = Deliveries::default();
        let (taken, cut) = usable_prefix(vec![7, 8, 9, 11, 12], |seq| d.take(seq).then_some(seq));
        assert_eq!((taken, cut), (vec![7, 8, 9], true));
        let mut d = Deliveries::default();
        assert!(d.take(41), "the first delivery seen is taken");
        assert!(d.take(42));
        assert!(!d.take(42), "a repeat is not the next delivery");
        assert!(!d.take(44));
    }

    /// Issue 13, 4: a message without metadata used to be dropped while
    /// the messages after it were processed, so it came back after them.
    #[test]
    fn a_batch_stops_at_its_first_message_without_metadata() {
        let (prefix, cut) = usable_prefix(vec![Some(1), Some(2), None, Some(4)], |m| m);
        assert_eq!((prefix, cut), (vec![1, 2], true));
        let (all, cut) = usable_prefix(vec![Some(1), Some(2)], |m| m);
        assert_eq!((all, cut), (vec![1, 2], false));
    }
}
