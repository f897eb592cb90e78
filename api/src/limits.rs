//! Overload protection, per api replica: nothing a caller sends can
//! exhaust the process.
//!
//! - [`Limits::check_purchase_rate`]: each user may send
//!   `GIFTCARD_USER_RATE_LIMIT` purchases per second (bursts of twice
//!   that); more are answered 429 `RATE_LIMITED` with `Retry-After`, before
//!   anything is published, so nothing refused is charged. A keyed GCRA
//!   limiter (`governor`): one lock-free state per user, no lock held
//!   across an await.
//! - [`shed`]: at most `GIFTCARD_MAX_IN_FLIGHT` requests under `/v1` at
//!   once; one more is answered 503 with `Retry-After` at once instead of
//!   queueing for memory, database connections or NATS (health, readiness,
//!   metrics and the documents are never shed).
//! - [`Limits::hold_waiting`]: at most `GIFTCARD_MAX_WAITING_PURCHASES`
//!   purchase requests held open for their outcome; beyond it a purchase is
//!   answered 202 as soon as it is queued.
//!
//! Each replica counts on its own: with N api replicas behind a load
//! balancer a user can get up to N times the rate, and the replicas
//! together hold N times the requests.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use giftcard_shared::config::ApiSettings;
use giftcard_shared::domain::UserId;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::state::AppState;

/// A user's burst: this many seconds' worth of purchases at once.
const BURST_FACTOR: NonZeroU32 = NonZeroU32::new(2).unwrap();

pub struct Limits {
    max_in_flight: usize,
    in_flight: Semaphore,
    max_waiting: usize,
    waiting: Semaphore,
    purchases: Option<DefaultKeyedRateLimiter<UserId>>,
}

impl Limits {
    pub fn new(settings: &ApiSettings) -> Self {
        let purchases = NonZeroU32::new(settings.user_rate_limit).map(|rate| {
            let burst = rate.saturating_mul(BURST_FACTOR);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            max_in_flight: settings.max_in_flight,
            in_flight: Semaphore::new(settings.max_in_flight),
            max_waiting: settings.max_waiting_purchases,
            waiting: Semaphore::new(settings.max_waiting_purchases),
            purchases,
        }
    }

    /// Counts one purchase of `user`; `RateLimited` (with how long to wait)
    /// when over the user's rate.
    pub fn check_purchase_rate(&self, user: &UserId) -> Result<(), ApiError> {
        let Some(limiter) = &self.purchases else {
            return Ok(());
        };
        limiter.check_key(user).map_err(|not_until| {
            metrics::counter!(crate::telemetry::RATE_LIMITED).increment(1);
            ApiError::RateLimited {
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            }
        })
    }

    /// A place among the purchase requests waiting for their outcome, or
    /// `None` when they are all taken.
    pub fn hold_waiting(&self) -> Option<SemaphorePermit<'_>> {
        let permit = self.waiting.try_acquire().ok();
        if permit.is_none() {
            metrics::counter!(crate::telemetry::NOT_HELD).increment(1);
        }
        permit
    }

    /// (requests in flight, purchases waiting) right now, for `/metrics`.
    pub fn occupancy(&self) -> (usize, usize) {
        (
            self.max_in_flight - self.in_flight.available_permits(),
            self.max_waiting - self.waiting.available_permits(),
        )
    }

    /// Forgets users idle long enough to be back at a full burst, every
    /// minute until `shutdown`, so the limiter's memory follows the active
    /// users rather than every user ever seen.
    pub fn spawn_housekeeping(state: AppState, shutdown: CancellationToken) {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
                if let Some(limiter) = &state.limits.purchases {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            }
        });
    }
}

/// Middleware: answers 503 at once when `GIFTCARD_MAX_IN_FLIGHT` requests
/// under `/v1` are already being worked on (nothing of this one was done).
pub async fn shed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let Ok(_permit) = state.limits.in_flight.try_acquire() else {
        metrics::counter!(crate::telemetry::SHED).increment(1);
        return ApiError::Unavailable(format!(
            "this api replica is already working on {} requests (GIFTCARD_MAX_IN_FLIGHT); \
             nothing was done: retry after the Retry-After delay",
            state.limits.max_in_flight
        ))
        .into_response();
    };
    next.run(request).await
}
