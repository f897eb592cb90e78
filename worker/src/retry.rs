//! The worker's failure policy, as one function: [`Policy::next`] says what
//! a partition does after a failed attempt at its batch.
//!
//! | why the attempt failed ([`BatchError`]) | next [`Step`] |
//! | --- | --- |
//! | `Fenced`: a newer owner holds the partition | `GiveUp`: hand the batch and the partition back |
//! | `Conflict`: another writer moved what the read saw | `ReadAgain` at once (after ten in a row, with a short jittered pause); never an attempt, never a dead letter |
//! | `Unavailable`: PostgreSQL unreachable, pool timeout, connection reset, statement timeout, shutdown | `Wait`: hold the batch and its messages, back off (capped, exponential, jittered); never an attempt, never a dead letter |
//! | `Statement`, batch of several messages | `Split`: each message alone, in stream order |
//! | `Statement`, one message | `Retry` after a backoff, counting an attempt; `DeadLetter` once `max_attempts` are spent |
//!
//! Only the last row belongs to a message: a statement that fails for it
//! alone, with an error about its data, while batches without it commit.

use std::time::Duration;

use crate::error::BatchError;

/// What a partition does next with its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read and decide again, after `pause` (usually zero).
    ReadAgain { pause: Duration },
    /// Keep the messages, wait `delay`, try again.
    Wait { delay: Duration },
    /// Process each message as a batch of its own.
    Split,
    /// Wait `delay`, try again; an attempt was spent.
    Retry { delay: Duration },
    /// Give the message up to the dead-letter stream.
    DeadLetter,
    /// Return the batch to the stream and the partition to the pool.
    GiveUp,
}

/// The knobs of the policy (from `GIFTCARD_MAX_ATTEMPTS`,
/// `GIFTCARD_RETRY_BASE_MS`, `GIFTCARD_RETRY_MAX_MS`).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Attempts a message whose statement fails may spend.
    pub max_attempts: u32,
    /// The first backoff; it doubles with each wait or attempt.
    pub base: Duration,
    /// The backoff's cap.
    pub max: Duration,
}

/// What one batch went through so far.
#[derive(Debug, Default, Clone)]
pub struct Tries {
    /// Conflicts in a row.
    pub conflicts: u32,
    /// Outage waits in a row.
    pub waits: u32,
    /// Attempts spent by statement failures (never reset).
    pub attempts: u32,
}

/// Conflicts in a row retried without any pause.
const FREE_CONFLICTS: u32 = 10;

impl Policy {
    /// The step after `error` for a batch of `messages` messages; `jitter`
    /// is a random number in [0, 1).
    pub fn next(
        &self,
        error: &BatchError,
        messages: usize,
        tries: &mut Tries,
        jitter: f64,
    ) -> Step {
        match error {
            BatchError::Fenced { .. } => Step::GiveUp,
            BatchError::Conflict(_) => {
                tries.conflicts = tries.conflicts.saturating_add(1);
                tries.waits = 0;
                let pause = if tries.conflicts <= FREE_CONFLICTS {
                    Duration::ZERO
                } else {
                    let ms = u64::from(tries.conflicts.min(50));
                    Duration::from_millis(ms).mul_f64(0.5 + jitter / 2.0)
                };
                Step::ReadAgain { pause }
            }
            BatchError::Unavailable(_) => {
                tries.waits = tries.waits.saturating_add(1);
                tries.conflicts = 0;
                Step::Wait {
                    delay: self.backoff(tries.waits, jitter),
                }
            }
            BatchError::Statement(_) if messages > 1 => Step::Split,
            BatchError::Statement(_) => {
                tries.attempts = tries.attempts.saturating_add(1);
                tries.conflicts = 0;
                tries.waits = 0;
                if tries.attempts >= self.max_attempts {
                    Step::DeadLetter
                } else {
                    Step::Retry {
                        delay: self.backoff(tries.attempts, jitter),
                    }
                }
            }
        }
    }

    /// The `n`th backoff (n >= 1): `base` doubled `n - 1` times, capped at
    /// `max`, then jittered down by up to half ("equal jitter"), so that
    /// partitions waiting on the same outage do not retry in step.
    pub fn backoff(&self, n: u32, jitter: f64) -> Duration {
        let doubled = self
            .base
            .saturating_mul(1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX));
        let capped = doubled.min(self.max);
        capped.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Conflict;

    const POLICY: Policy = Policy {
        max_attempts: 3,
        base: Duration::from_millis(200),
        max: Duration::from_secs(10),
    };

    fn outage() -> BatchError {
        BatchError::Unavailable("connection refused".into())
    }

    fn conflict() -> BatchError {
        BatchError::Conflict(Conflict::Serialization)
    }

    fn statement() -> BatchError {
        BatchError::Statement("numeric field overflow".into())
    }

    /// Issue 13, 2: an outage of any length never spends an attempt.
    #[test]
    fn an_outage_waits_forever_with_capped_backoff_and_never_dead_letters() {
        let mut tries = Tries::default();
        let mut delays = Vec::new();
        for _ in 0..1000 {
            match POLICY.next(&outage(), 64, &mut tries, 0.999) {
                Step::Wait { delay } => delays.push(delay),
                other => panic!("an outage must only wait, got {other:?}"),
            }
        }
        assert_eq!(tries.attempts, 0);
        assert!(delays[0] < delays[3], "{delays:?}");
        assert!(delays.iter().all(|d| *d <= POLICY.max));
        assert!(delays[999] > POLICY.max / 2);
    }

    /// Issue 13, 3: the conflict counter used to carry on, so that after 50
    /// conflicts every further one spent an attempt.
    #[test]
    fn conflicts_never_spend_attempts_whatever_their_number() {
        let mut tries = Tries::default();
        for n in 1..=10_000 {
            match POLICY.next(&conflict(), 64, &mut tries, 0.5) {
                Step::ReadAgain { pause } => {
                    if n <= FREE_CONFLICTS {
                        assert_eq!(pause, Duration::ZERO);
                    }
                    assert!(pause <= Duration::from_millis(50));
                }
                other => panic!("a conflict must only read again, got {other:?}"),
            }
        }
        assert_eq!(tries.attempts, 0);
    }

    #[test]
    fn a_failing_statement_splits_a_batch_and_dead_letters_one_message_after_its_attempts() {
        let mut tries = Tries::default();
        assert_eq!(POLICY.next(&statement(), 5, &mut tries, 0.0), Step::Split);
        assert_eq!(tries.attempts, 0);
        let mut tries = Tries::default();
        assert!(matches!(
            POLICY.next(&statement(), 1, &mut tries, 0.0),
            Step::Retry { .. }
        ));
        // Outages and conflicts in between neither spend nor refund attempts.
        assert!(matches!(
            POLICY.next(&outage(), 1, &mut tries, 0.0),
            Step::Wait { .. }
        ));
        assert!(matches!(
            POLICY.next(&conflict(), 1, &mut tries, 0.0),
            Step::ReadAgain { .. }
        ));
        assert!(matches!(
            POLICY.next(&statement(), 1, &mut tries, 0.0),
            Step::Retry { .. }
        ));
        assert_eq!(
            POLICY.next(&statement(), 1, &mut tries, 0.0),
            Step::DeadLetter
        );
    }

    #[test]
    fn a_fenced_batch_gives_the_partition_up() {
        let fenced = BatchError::Fenced { partition: 3 };
        assert_eq!(
            POLICY.next(&fenced, 1, &mut Tries::default(), 0.0),
            Step::GiveUp
        );
    }

    #[test]
    fn backoff_doubles_from_base_to_cap_with_equal_jitter() {
        assert_eq!(POLICY.backoff(1, 1.0), Duration::from_millis(200));
        assert_eq!(POLICY.backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(POLICY.backoff(3, 1.0), Duration::from_millis(800));
        assert_eq!(POLICY.backoff(60, 1.0), POLICY.max);
    }
}
