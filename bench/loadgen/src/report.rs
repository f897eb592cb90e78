//! The JSON report of one run (stdout summary line and `--out` file).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Scenario;

/// One run's results. Field order is the JSON order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub scenario: Scenario,
    pub clients: usize,
    /// Measured window: `--duration` (hot/spread) or start → last terminal result (sellout).
    pub window_secs: f64,
    /// Terminal purchases (201/404/409, or followed 202) completed inside the window.
    pub completed: u64,
    pub throughput_per_sec: f64,
    pub latency_ms: LatencyMs,
    /// First HTTP status of each measured POST (`"202"` included), keyed by status.
    pub statuses: BTreeMap<String, u64>,
    /// `error.code` of each measured failed purchase (after following).
    pub failures: BTreeMap<String, u64>,
    /// Measured requests answered 202 and followed by polling.
    pub followed_202: u64,
    /// Transport errors, non-contract statuses (503 included), follow time-outs.
    pub errors: u64,
    /// Up to 5 error descriptions.
    pub error_samples: Vec<String>,
    pub invariants: Invariants,
    /// Extension: every purchase sent, warm-up included.
    #[serde(default)]
    pub sent: u64,
    /// Extension: requests started inside the window (the latency population).
    #[serde(default)]
    pub measured: u64,
    /// Extension: terminal purchase `status` of the measured requests.
    #[serde(default)]
    pub outcomes: BTreeMap<String, u64>,
    /// Extension: CPU seconds (user + system) over the measured window, by
    /// process (`loadgen` is the load generator itself).
    #[serde(default)]
    pub cpu_seconds: BTreeMap<String, f64>,
}

/// Latency from send until terminal result, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// Post-run invariant check through the API (over all purchases, warm-up included).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Invariants {
    /// False with `--no-check`: then only `succeeded` is filled in.
    pub checked: bool,
    /// Activation codes seen more than once (each extra occurrence counts).
    pub duplicate_codes: u64,
    /// Units sold beyond the seed stock, summed over cards.
    pub over_stock: u64,
    /// Users whose `GET /v1/wallet` balance ≠ credit − their succeeded totals (or unreadable).
    pub wallet_mismatches: u64,
    /// Winners not among the lowest sequences (see [`crate::out_of_order`]), summed over cards.
    pub out_of_order: u64,
    /// Succeeded purchases.
    pub succeeded: u64,
    /// Extension: purchases whose outcome could not be established (the other checks may be off).
    #[serde(default)]
    pub unresolved: u64,
    /// Extension: up to 10 human-readable violations.
    #[serde(default)]
    pub details: Vec<String>,
}

impl Invariants {
    /// True when checked and nothing is violated or unresolved.
    pub fn ok(&self) -> bool {
        self.checked
            && self.duplicate_codes == 0
            && self.over_stock == 0
            && self.wallet_mismatches == 0
            && self.out_of_order == 0
            && self.unresolved == 0
    }

    /// The one-line verdict the binary prints.
    pub fn verdict(&self) -> String {
        let counts = format!(
            "duplicate_codes={} over_stock={} wallet_mismatches={} out_of_order={} unresolved={} succeeded={}",
            self.duplicate_codes,
            self.over_stock,
            self.wallet_mismatches,
            self.out_of_order,
            self.unresolved,
            self.succeeded
        );
        if !self.checked {
            format!(
                "INVARIANTS NOT CHECKED (--no-check) succeeded={}",
                self.succeeded
            )
        } else if self.ok() {
            format!("INVARIANTS OK: {counts}")
        } else {
            format!("INVARIANT VIOLATION: {counts}")
        }
    }
}
