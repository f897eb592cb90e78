//! Routes the worker's replies to the requests waiting for them.
//!
//! Each api instance subscribes to one wildcard subject of its own and
//! names `<prefix>.<purchase id>` in the `Giftcard-Reply-To` header of what
//! it publishes. Several requests may wait on one purchase (retries of one
//! idempotency key), so waiters are kept per purchase id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use giftcard_shared::contract::{PurchaseReply, REPLY_PREFIX};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type Waiters = HashMap<Uuid, Vec<(u64, oneshot::Sender<PurchaseReply>)>>;

pub struct Replies {
    prefix: String,
    waiters: Mutex<Waiters>,
    next: std::sync::atomic::AtomicU64,
}

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
        let mut w = self.replies.waiters.lock().expect("waiters lock");
        if let Some(list) = w.get_mut(&self.id) {
            list.retain(|(t, _)| *t != self.token);
            if list.is_empty() {
                w.remove(&self.id);
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
            waiters: Mutex::new(HashMap::new()),
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
        self.waiters
            .lock()
            .expect("waiters lock")
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
            .waiters
            .lock()
            .expect("waiters lock")
            .remove(&reply.purchase_id);
        for (_, tx) in list.into_iter().flatten() {
            let _ = tx.send(reply.clone());
        }
    }
}
