//! Which partitions this worker owns, and the fencing token of each.
//!
//! This version owns every partition, with a token taken from the clock at
//! start, so that the most recently started worker fences off older ones
//! (every batch checks the token in PostgreSQL). Lease-based sharing among
//! replicas replaces it without changing the partition loops.

use giftcard_shared::contract::consumer_name;
use uuid::Uuid;

use crate::batch::Fence;

pub struct Ownership {
    owner: String,
    token: i64,
    partitions: u16,
}

impl Ownership {
    pub fn new(partitions: u16) -> Self {
        Self {
            owner: format!("worker-{}", Uuid::new_v4().simple()),
            token: chrono::Utc::now().timestamp_micros(),
            partitions,
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn partitions(&self) -> impl Iterator<Item = u16> {
        0..self.partitions
    }

    pub fn fence(&self, partition: u16) -> Fence {
        debug_assert!(!consumer_name(partition).is_empty());
        Fence {
            partition,
            token: self.token,
            owner: self.owner.clone(),
        }
    }
}
