//! Routes the worker's replies to the requests waiting for them.
//!
//! Each api instance subscribes to one wildcard subject of its own and
//! names `<prefix>.<purchase id>` in the `Giftcard-Reply-To` header of what
//! it publishes. Several requests may wait on one purchase (retries of one
//! idempotency key), so waiters are kept per purchase id.
//!
//! A retry may have missed the reply (it went to the first request), so
//! its outcome is also looked up in PostgreSQL: [`Replies::poll_for`] runs
//! one poller per purchase id, however many retries wait on it, with a
//! growing delay, and only while someone waits.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use giftcard_shared::contract::{PurchaseReply, REPLY_PREFIX};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Who waits for which purchase, and which purchases are being polled.
#[derive(Default)]
struct Table {
    waiters: HashMap<Uuid, Vec<(u64, oneshot::Sender<PurchaseReply>)>>,
    polling: HashSet<Uuid>,
}

pub struct Replies {
    prefix: String,
    table: Mutex<Table>,
    next: std::sync::atomic::AtomicU64,
}

/// First and longest delay between two polls of one purchase.
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(2);

/// A registered wait; deregisters itself when dropped.
pub struct Waiter {
    replies: Arc<Replies>,
    id: Uuid,
    token: u64,
    rx: Option<oneshot::Receiver<PurchaseReply>>,
}

impl Waiter {
    /// The reply, if it arrives.
    pub async fn recv(&mut self) -> Option<PurchaseReply> {
        match self.rx.as_mut() {
            Some(rx) => rx.await.ok(),
            None => None,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut t = self.replies.table.lock().expect("waiters lock");
        if let Some(list) = t.waiters.get_mut(&self.id) {
            list.retain(|(t, _)| *t != self.token);
            if list.is_empty() {
                t.waiters.remove(&self.id);
            }
        }
    }
}

impl Replies {
    /// Subscribes to this instance's reply subjects and dispatches until
    /// `shutdown`.
    pub async fn start(
        client: &async_nats::Client,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let prefix = format!("{REPLY_PREFIX}{}", Uuid::new_v4().simple());
        let mut sub = client.subscribe(format!("{prefix}.*")).await?;
        let me = Arc::new(Self {
            prefix,
            table: Mutex::new(Table::default()),
            next: 0.into(),
        });
        let replies = me.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = sub.next() => match m { Some(m) => m, None => break },
                };
                match serde_json::from_slice::<PurchaseReply>(&msg.payload) {
                    Ok(reply) => replies.deliver(reply),
                    Err(e) => tracing::warn!(error = %e, "undecodable worker reply ignored"),
                }
            }
        });
        Ok(me)
    }

    pub fn subject_for(&self, id: Uuid) -> String {
        format!("{}.{id}", self.prefix)
    }

    pub fn register(self: &Arc<Self>, id: Uuid) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let token = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.table
            .lock()
            .expect("waiters lock")
            .waiters
            .entry(id)
            .or_default()
            .push((token, tx));
        Waiter {
            replies: self.clone(),
            id,
            token,
            rx: Some(rx),
        }
    }

    fn deliver(&self, reply: PurchaseReply) {
        let list = self
            .table
            .lock()
            .expect("waiters lock")
            .waiters
            .remove(&reply.purchase_id);
        for (_, tx) in list.into_iter().flatten() {
            let _ = tx.send(reply.clone());
        }
    }

    /// Makes sure one task looks up purchase `id` with `fetch` while anyone
    /// waits for it (after 100 ms, then twice as long each time up to 2 s),
    /// delivering what it finds to every waiter. Call it after
    /// [`Replies::register`]ing.
    pub fn poll_for<F, Fut>(self: &Arc<Self>, id: Uuid, fetch: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Option<PurchaseReply>> + Send + 'static,
    {
        if !self.table.lock().expect("waiters lock").polling.insert(id) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut delay = POLL_FIRST;
            loop {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(POLL_MAX);
                if !me.still_waited_for(id) {
                    return;
                }
                if let Some(reply) = fetch().await {
                    // Waiters that came meanwhile are served by the next
                    // round, which finds the purchase at once.
                    me.deliver(reply);
                    delay = POLL_FIRST;
                }
            }
        });
    }

    /// Whether anyone waits for `id`; if not, its poller stops (decided
    /// under the same lock as registrations, so no waiter is left without
    /// a poller).
    fn still_waited_for(&self, id: Uuid) -> bool {
        let mut t = self.table.lock().expect("waiters lock");
        let waited = t.waiters.contains_key(&id);
        if !waited {
            t.polling.remove(&id);
        }
        waited
    }

    /// Purchases polled right now (tests).
    pub fn polled(&self) -> usize {
        self.table.lock().expect("waiters lock").polling.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use giftcard_shared::contract::ReplyOutcome;

    use super::*;

    fn detached() -> Arc<Replies> {
        Arc::new(Replies {
            prefix: "test".into(),
            table: Mutex::new(Table::default()),
            next: 0.into(),
        })
    }

    /// Fifty retries of one purchase share one poller: each round looks it
    /// up once, and the find reaches every one of them.
    #[tokio::test(start_paused = true)]
    async fn retries_of_one_purchase_share_one_poller() {
        let replies = detached();
        let id = Uuid::new_v4();
        let lookups = Arc::new(AtomicUsize::new(0));
        let found = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut waiters: Vec<Waiter> = (0..50).map(|_| replies.register(id)).collect();
        for _ in 0..50 {
            let (lookups, found) = (lookups.clone(), found.clone());
            replies.poll_for(id, move || {
                let (lookups, found) = (lookups.clone(), found.clone());
                async move {
                    lookups.fetch_add(1, Ordering::SeqCst);
                    found.load(Ordering::SeqCst).then_some(PurchaseReply {
                        v: 1,
                        purchase_id: id,
                        outcome: ReplyOutcome::IdempotencyKeyReused,
                    })
                }
            });
        }
        assert_eq!(replies.polled(), 1);
        // 100 ms, 200 ms, 400 ms: three lookups, not 150.
        tokio::time::sleep(Duration::from_millis(750)).await;
        assert_eq!(lookups.load(Ordering::SeqCst), 3);
        found.store(true, Ordering::SeqCst);
        for w in &mut waiters {
            assert!(w.recv().await.is_some(), "every waiter gets the find");
        }
        drop(waiters);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(replies.polled(), 0, "the poller stops once nobody waits");
    }
}
