//! Group commit: every partition loop of this worker hands its ready batch
//! to one committer, which merges whatever batches are waiting into one
//! transaction. With many cards spread over many partitions, each partition
//! has only a message or two at a time; merging them pays for the
//! transaction's round trips and its commit once instead of once per
//! partition. Each partition still submits its next batch only after the
//! previous one is answered, so per-card order is unchanged.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};

use crate::batch::{self, Cursors, Fence, Group, Item, Outcomes};
use crate::error::BatchError;

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
        let gone = || BatchError::Unavailable("the worker's committer stopped".into());
        let submission = Submission {
            fence,
            items,
            reply,
        };
        self.tx.send(submission).await.map_err(|_| gone())?;
        rx.await.unwrap_or_else(|_| Err(gone()))
    }
}

async fn commit(db: &DatabaseConnection, cursors: &Cursors, group: Vec<Submission>) {
    let groups: Vec<Group> = group
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
        Err(BatchError::Statement(_)) if group.len() > 1 => {
            for s in group {
                let one = [(s.fence, s.items)];
                let r = match batch::process_group(db, &one, cursors).await {
                    Ok(mut results) => results.pop().expect("one group, one result"),
                    Err(e) => Err(e),
                };
                let _ = s.reply.send(r);
            }
        }
        Err(e) => {
            for s in group {
                let _ = s.reply.send(Err(e.clone()));
            }
        }
    }
}
