//! Group commit: every partition loop of this worker hands its ready batch
//! to one committer, which merges whatever batches are waiting into one
//! transaction. With many cards spread over many partitions, each partition
//! has only a message or two at a time; merging them pays for the
//! transaction's statements and its commit once instead of once per
//! partition. Each partition still submits its next batch only after the
//! previous one is answered, so per-card order is unchanged.

use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};

use std::sync::Arc;

use crate::batch::{self, BatchError, Cursors, Fence, Item, Outcomes};

struct Submission {
    fence: Fence,
    items: Vec<Item>,
    reply: oneshot::Sender<Result<Outcomes, BatchError>>,
}

/// Handle to the worker's committer task.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Submission>,
}

impl Committer {
    /// Starts the committer; a group holds at most `max_items` messages.
    pub fn start(db: DatabaseConnection, max_items: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Submission>(1024);
        let cursors = Arc::new(Cursors::default());
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut group = vec![first];
                let mut size = group[0].items.len();
                while size < max_items {
                    match rx.try_recv() {
                        Ok(s) => {
                            size += s.items.len();
                            group.push(s);
                        }
                        Err(_) => break,
                    }
                }
                metrics::histogram!(crate::telemetry::GROUP_PARTITIONS).record(group.len() as f64);
                commit(&db, &cursors, group).await;
            }
        });
        Self { tx }
    }

    /// Processes one partition's batch (possibly together with others).
    pub async fn submit(&self, fence: Fence, items: Vec<Item>) -> Result<Outcomes, BatchError> {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Submission {
                fence,
                items,
                reply,
            })
            .await
            .is_err()
        {
            return Err(BatchError::Db(sea_orm::DbErr::Custom(
                "committer stopped".into(),
            )));
        }
        rx.await.unwrap_or_else(|_| {
            Err(BatchError::Db(sea_orm::DbErr::Custom(
                "committer dropped a batch".into(),
            )))
        })
    }
}

async fn commit(db: &DatabaseConnection, cursors: &Cursors, group: Vec<Submission>) {
    let groups: Vec<(Fence, Vec<Item>)> = group
        .iter()
        .map(|s| (s.fence.clone(), s.items.clone()))
        .collect();
    match batch::process_group(db, &groups, cursors).await {
        Ok(results) => {
            for (s, r) in group.into_iter().zip(results) {
                let _ = s.reply.send(r);
            }
        }
        // A failing statement may be one partition's doing: give each batch
        // its own transaction so the others are not held back by it.
        Err(e) if group.len() > 1 && !e.is_connectivity() => {
            for s in group {
                let r = batch::process(db, &s.fence, &s.items, cursors).await;
                let _ = s.reply.send(r);
            }
        }
        Err(e) => {
            let shared = e.to_string();
            let mut first = Some(e);
            for s in group {
                let err = first
                    .take()
                    .unwrap_or_else(|| BatchError::Db(sea_orm::DbErr::Custom(shared.clone())));
                let _ = s.reply.send(Err(err));
            }
        }
    }
}
