//! Fencing: a partition's owner commits only while PostgreSQL's
//! `partition_fences` row holds its token, so a stale owner (one frozen
//! past its lease, say) cannot write after the next owner took over.
//!
//! A token is the pair (epoch, revision): the lease bucket's creation time
//! in microseconds and the lease's revision in that bucket. Revisions grow
//! with every write to the bucket, so a later lease has a higher one; a
//! recreated bucket starts its revisions again, but at a later epoch. Both
//! are full 64-bit numbers compared as a pair: nothing wraps.

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use crate::error::BatchError;

/// A fencing token; later leases compare greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FenceToken {
    /// The lease bucket's creation time, in microseconds since 1970.
    pub epoch: i64,
    /// The lease's revision in that bucket.
    pub revision: i64,
}

impl FenceToken {
    /// The token of a lease acquired at `revision` in a bucket created
    /// `bucket_created_nanos` after 1970.
    pub fn of_lease(bucket_created_nanos: i128, revision: u64) -> Self {
        let micros = bucket_created_nanos / 1_000;
        Self {
            epoch: i64::try_from(micros).unwrap_or(i64::MAX),
            // 2^63 revisions: more than a bucket written a million times a
            // second for 290,000 years.
            revision: i64::try_from(revision).unwrap_or(i64::MAX),
        }
    }
}

impl std::fmt::Display for FenceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.epoch, self.revision)
    }
}

/// Who is committing: the partition and its fencing token.
#[derive(Debug, Clone)]
pub struct Fence {
    pub partition: u16,
    pub token: FenceToken,
    pub owner: String,
}

/// Parameters of `claim.sql`, in `$n` order.
struct ClaimParams {
    /// `$1`: the partition.
    partition: i32,
    /// `$2`: the fencing epoch.
    epoch: i64,
    /// `$3`: the fencing token (the lease's revision).
    token: i64,
    /// `$4`: the owner.
    owner: String,
}

impl ClaimParams {
    fn values(self) -> Vec<Value> {
        vec![
            self.partition.into(),
            self.epoch.into(),
            self.token.into(),
            self.owner.into(),
        ]
    }
}

const CLAIM: &str = include_str!("sql/claim.sql");

/// Records `fence` as its partition's owner before its first batch (one
/// statement, atomic on its own); `Fenced` if a newer owner is recorded.
pub async fn claim(db: &impl ConnectionTrait, fence: &Fence) -> Result<(), BatchError> {
    let params = ClaimParams {
        partition: i32::from(fence.partition),
        epoch: fence.token.epoch,
        token: fence.token.revision,
        owner: fence.owner.clone(),
    };
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            CLAIM,
            params.values(),
        ))
        .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(BatchError::Fenced {
            partition: fence.partition,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datetime(rfc3339: &str) -> i128 {
        let t = chrono::DateTime::parse_from_rfc3339(rfc3339).expect("date");
        i128::from(t.timestamp()) * 1_000_000_000
    }

    /// Issue 13, 4: tokens kept the low 32 bits of the revision (a later
    /// lease could compare lower after 2^32 writes to the bucket, about two
    /// years of renewals at 64 partitions) and an epoch that wrapped in 2038.
    #[test]
    fn later_leases_have_higher_tokens_past_2_to_the_32_revisions_and_past_2038() {
        let created = datetime("2026-12-01T00:00:00Z");
        let before = FenceToken::of_lease(created, (1 << 32) - 1);
        let after = FenceToken::of_lease(created, (1 << 32) + 1);
        assert!(after > before, "{after} <= {before}");

        let old_bucket =
            FenceToken::of_lease(datetime("2037-12-31T23:59:00Z"), u64::from(u32::MAX) * 7);
        let new_bucket = FenceToken::of_lease(datetime("2038-02-01T00:00:00Z"), 1);
        assert!(new_bucket > old_bucket, "{new_bucket} <= {old_bucket}");
        let far = FenceToken::of_lease(datetime("2300-01-01T00:00:00Z"), 1);
        assert!(far > new_bucket);
    }
}
