//! Per-request records and the pure summary code (histograms, counts).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use uuid::Uuid;

use crate::api::Purchase;
use crate::report::LatencyMs;

/// Highest trackable latency: 60 s in microseconds.
const MAX_MICROS: u64 = 60_000_000;
const MAX_ERROR_SAMPLES: usize = 5;

/// One purchase request as the load generator saw it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Index into `seed.users`.
    pub user: usize,
    /// Index into `seed.cards`.
    pub card: usize,
    /// The `Idempotency-Key` sent (reused to settle an unknown outcome).
    pub key: Uuid,
    /// Offset from the start of the run when the POST was sent.
    pub started: Duration,
    /// Offset when the terminal result (or the error) was known.
    pub finished: Duration,
    /// HTTP status of the POST (None on transport error).
    pub status: Option<u16>,
    /// Answered 202 and followed by polling.
    pub followed: bool,
    pub result: AttemptResult,
}

#[derive(Debug, Clone)]
pub enum AttemptResult {
    /// A terminal purchase body (succeeded, failed or dead_lettered).
    Terminal(Purchase),
    /// A 404/409 answered with a bare error body: failed, no purchase to track.
    Rejected { code: String },
    /// Anything else. `ambiguous`: the purchase may exist without us knowing its id.
    Error {
        message: String,
        purchase_id: Option<Uuid>,
        ambiguous: bool,
    },
}

impl AttemptResult {
    pub fn error(message: String, purchase_id: Option<Uuid>, ambiguous: bool) -> Self {
        Self::Error {
            message,
            purchase_id,
            ambiguous,
        }
    }
}

/// The measured part of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    pub measured: u64,
    pub completed: u64,
    pub latency: LatencyMs,
    pub statuses: BTreeMap<String, u64>,
    pub failures: BTreeMap<String, u64>,
    pub outcomes: BTreeMap<String, u64>,
    pub followed_202: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

/// A latency histogram in microseconds, 1 µs..60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Summarizes requests started in `[from, to)`; `completed` counts terminal
/// results that finished inside `[from, to]`.
pub fn summarize(attempts: &[Attempt], from: Duration, to: Duration) -> Measured {
    let mut m = Measured::default();
    let mut hist = new_histogram();
    for a in attempts {
        let terminal = !matches!(a.result, AttemptResult::Error { .. });
        if terminal && a.finished >= from && a.finished <= to {
            m.completed += 1;
        }
        if a.started < from || a.started >= to {
            continue;
        }
        m.measured += 1;
        if let Some(s) = a.status {
            *m.statuses.entry(s.to_string()).or_default() += 1;
        }
        m.followed_202 += u64::from(a.followed);
        let failure = match &a.result {
            AttemptResult::Terminal(p) => {
                *m.outcomes.entry(p.status.clone()).or_default() += 1;
                p.failure_code()
            }
            AttemptResult::Rejected { code } => {
                *m.outcomes.entry("failed".to_owned()).or_default() += 1;
                Some(code.clone())
            }
            AttemptResult::Error { message, .. } => {
                m.errors += 1;
                if m.error_samples.len() < MAX_ERROR_SAMPLES {
                    m.error_samples.push(message.clone());
                }
                continue;
            }
        };
        if let Some(code) = failure {
            *m.failures.entry(code).or_default() += 1;
        }
        let micros =
            u64::try_from(a.finished.saturating_sub(a.started).as_micros()).unwrap_or(u64::MAX);
        hist.saturating_record(micros.max(1));
    }
    m.latency = latency_ms(&hist);
    m
}

/// p50/p90/p99/p99.9/max/mean of a microsecond histogram, in milliseconds (0 when empty).
pub fn latency_ms(hist: &Histogram<u64>) -> LatencyMs {
    if hist.is_empty() {
        return LatencyMs::default();
    }
    let ms = |micros: f64| micros.round() / 1000.0;
    let q = |quantile: f64| ms(hist.value_at_quantile(quantile) as f64);
    LatencyMs {
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: ms(hist.max() as f64),
        mean: ms(hist.mean()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(
        started_ms: u64,
        took_ms: u64,
        status: Option<u16>,
        result: AttemptResult,
    ) -> Attempt {
        Attempt {
            user: 0,
            card: 0,
            key: Uuid::nil(),
            started: Duration::from_millis(started_ms),
            finished: Duration::from_millis(started_ms + took_ms),
            status,
            followed: status == Some(202),
            result,
        }
    }

    fn purchase(status: &str, code: Option<&str>) -> AttemptResult {
        let error = code.map(|c| serde_json::json!({"code": c, "message": ""}));
        let p = serde_json::json!({"id": Uuid::new_v4(), "status": status, "error": error});
        AttemptResult::Terminal(serde_json::from_value(p).unwrap())
    }

    #[test]
    fn percentiles_of_known_distribution() {
        let mut h = new_histogram();
        for ms in 1..=1000u64 {
            h.record(ms * 1000).unwrap();
        }
        let l = latency_ms(&h);
        assert!((l.p50 - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p90 - 900.0).abs() < 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() < 1.0, "{l:?}");
        assert!((l.p999 - 999.0).abs() < 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() < 1.0, "{l:?}");
        assert!((l.mean - 500.5).abs() < 1.0, "{l:?}");
        assert_eq!(latency_ms(&new_histogram()), LatencyMs::default());
    }

    #[test]
    fn huge_latencies_saturate() {
        let a = attempt(0, 120_000, Some(201), purchase("succeeded", None));
        let m = summarize(&[a], Duration::ZERO, Duration::MAX);
        assert!(
            m.latency.max >= 59_000.0 && m.latency.max <= 61_000.0,
            "{:?}",
            m.latency
        );
    }

    #[test]
    fn summary_counts_only_the_window() {
        let attempts = vec![
            attempt(100, 10, Some(201), purchase("succeeded", None)), // warm-up, completes in warm-up
            attempt(990, 20, Some(201), purchase("succeeded", None)), // warm-up start, completes in window
            attempt(
                1000,
                10,
                Some(409),
                purchase("failed", Some("ACTIVATION_CODES_NOT_AVAILABLE")),
            ),
            attempt(1500, 30, Some(202), purchase("succeeded", None)),
            attempt(
                1600,
                5,
                Some(503),
                AttemptResult::error("POST 503".into(), None, false),
            ),
            attempt(
                1700,
                5,
                None,
                AttemptResult::error("POST transport".into(), None, true),
            ),
            attempt(
                1800,
                5,
                Some(409),
                AttemptResult::Rejected {
                    code: "INSUFFICIENT_FUNDS".into(),
                },
            ),
            attempt(1990, 50, Some(201), purchase("succeeded", None)), // finishes after the window
            attempt(2100, 5, Some(201), purchase("succeeded", None)),  // drained after the window
        ];
        let m = summarize(&attempts, Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(m.measured, 6);
        assert_eq!(m.completed, 4);
        assert_eq!(m.errors, 2);
        assert_eq!(
            m.error_samples,
            vec!["POST 503".to_owned(), "POST transport".to_owned()]
        );
        assert_eq!(m.followed_202, 1);
        let statuses: Vec<_> = m.statuses.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            statuses,
            vec![("201", 1), ("202", 1), ("409", 2), ("503", 1)]
        );
        assert_eq!(m.failures["ACTIVATION_CODES_NOT_AVAILABLE"], 1);
        assert_eq!(m.failures["INSUFFICIENT_FUNDS"], 1);
        assert_eq!(m.outcomes["succeeded"], 2);
        assert_eq!(m.outcomes["failed"], 2);
        assert!((m.latency.max - 50.0).abs() < 0.1, "{:?}", m.latency);
        assert!((m.latency.p50 - 10.0).abs() < 0.1, "{:?}", m.latency);
    }

    #[test]
    fn error_samples_are_capped() {
        let attempts: Vec<_> = (0..9)
            .map(|i| {
                attempt(
                    i,
                    1,
                    None,
                    AttemptResult::error(format!("e{i}"), None, true),
                )
            })
            .collect();
        let m = summarize(&attempts, Duration::ZERO, Duration::MAX);
        assert_eq!((m.errors, m.error_samples.len(), m.completed), (9, 5, 0));
    }
}
