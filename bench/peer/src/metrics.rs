//! Hand-written Prometheus counters of the peer (`GET /metrics`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// How a `POST /v1/purchases` was answered (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    GiftCardNotFound,
    GiftCardInactive,
    ActivationCodesNotAvailable,
    InsufficientFunds,
    ConcurrencyConflict,
    /// An earlier purchase with the same Idempotency-Key, returned as stored.
    Replayed,
    IdempotencyKeyReused,
    /// A 5xx.
    Error,
}

impl Outcome {
    const ALL: [Outcome; 9] = [
        Self::Succeeded,
        Self::GiftCardNotFound,
        Self::GiftCardInactive,
        Self::ActivationCodesNotAvailable,
        Self::InsufficientFunds,
        Self::ConcurrencyConflict,
        Self::Replayed,
        Self::IdempotencyKeyReused,
        Self::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::GiftCardNotFound => "gift_card_not_found",
            Self::GiftCardInactive => "gift_card_inactive",
            Self::ActivationCodesNotAvailable => "activation_codes_not_available",
            Self::InsufficientFunds => "insufficient_funds",
            Self::ConcurrencyConflict => "concurrency_conflict",
            Self::Replayed => "replayed",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::Error => "error",
        }
    }

    /// The outcome of a stored purchase's error code (`None`: succeeded).
    pub fn of_error_code(code: Option<&str>) -> Self {
        match code {
            None => Self::Succeeded,
            Some("GIFT_CARD_NOT_FOUND") => Self::GiftCardNotFound,
            Some("GIFT_CARD_INACTIVE") => Self::GiftCardInactive,
            Some("ACTIVATION_CODES_NOT_AVAILABLE") => Self::ActivationCodesNotAvailable,
            Some("INSUFFICIENT_FUNDS") => Self::InsufficientFunds,
            Some("CONCURRENCY_CONFLICT") => Self::ConcurrencyConflict,
            Some(_) => Self::Error,
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    purchases: [AtomicU64; 9],
    /// Optimistic version mismatches (and deadlock aborts), every attempt.
    pub conflicts: AtomicU64,
    /// Attempts started again after a conflict.
    pub retries: AtomicU64,
    /// Purchases that ran out of retries (409 CONCURRENCY_CONFLICT).
    pub conflict_failures: AtomicU64,
    purchase_micros: AtomicU64,
    purchase_count: AtomicU64,
    in_flight: AtomicU64,
}

impl Metrics {
    /// A purchase request arrived (ended by [`Metrics::purchase`]).
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// A purchase request was answered.
    pub fn purchase(&self, outcome: Outcome, took: Duration) {
        self.in_flight.fetch_sub(1, Relaxed);
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.purchases[i].fetch_add(1, Relaxed);
        self.purchase_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
        self.purchase_count.fetch_add(1, Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, strategy: &str) -> String {
        let mut s = String::with_capacity(2048);
        let _ = writeln!(
            s,
            "# HELP peer_info The peer's strategy.\n# TYPE peer_info gauge"
        );
        let _ = writeln!(s, "peer_info{{strategy=\"{strategy}\"}} 1");
        let _ = writeln!(
            s,
            "# HELP peer_purchases_total Purchase requests answered, by outcome.\n# TYPE peer_purchases_total counter"
        );
        for (o, n) in Outcome::ALL.iter().zip(&self.purchases) {
            let _ = writeln!(
                s,
                "peer_purchases_total{{outcome=\"{}\"}} {}",
                o.label(),
                n.load(Relaxed)
            );
        }
        let counters = [
            (
                "peer_conflicts_total",
                "Optimistic concurrency conflicts (row version mismatches), every attempt.",
                &self.conflicts,
            ),
            (
                "peer_retries_total",
                "Purchase attempts retried after a conflict.",
                &self.retries,
            ),
            (
                "peer_conflict_failures_total",
                "Purchases failed with CONCURRENCY_CONFLICT after the last retry.",
                &self.conflict_failures,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(s, "{name} {}", v.load(Relaxed));
        }
        let _ = writeln!(
            s,
            "# HELP peer_purchase_seconds Time to answer a purchase request.\n# TYPE peer_purchase_seconds summary"
        );
        let secs = self.purchase_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(s, "peer_purchase_seconds_sum {secs}");
        let _ = writeln!(
            s,
            "peer_purchase_seconds_count {}",
            self.purchase_count.load(Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP peer_purchases_in_flight Purchase requests being processed.\n# TYPE peer_purchases_in_flight gauge"
        );
        let _ = writeln!(
            s,
            "peer_purchases_in_flight {}",
            self.in_flight.load(Relaxed)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = Metrics::default();
        m.start();
        m.purchase(Outcome::ConcurrencyConflict, Duration::from_millis(1500));
        Metrics::inc(&m.conflicts);
        let text = m.render("optimistic");
        for line in [
            "peer_info{strategy=\"optimistic\"} 1",
            "peer_purchases_total{outcome=\"concurrency_conflict\"} 1",
            "peer_purchases_total{outcome=\"succeeded\"} 0",
            "peer_conflicts_total 1",
            "peer_retries_total 0",
            "peer_conflict_failures_total 0",
            "peer_purchase_seconds_sum 1.5",
            "peer_purchase_seconds_count 1",
            "peer_purchases_in_flight 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
