//! Purchases per second and p99 latencies for the overview, from this api
//! process's own Prometheus metrics: every [`PERIOD`] the sampler reads
//! `giftcard_api_purchases_total` and the buckets of
//! `giftcard_api_purchase_seconds` and `giftcard_api_accept_seconds`, and
//! keeps [`KEEP`] samples in memory. A window's rate is the counter's
//! increase over the window; its p99 is estimated from the increase of
//! the histogram's buckets, as Prometheus's `histogram_quantile` does.
//! The figures are this replica's (each api replica sees the purchases
//! routed to it), which the page says.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::telemetry::{ACCEPT_SECONDS, PURCHASES, PURCHASE_SECONDS};

/// How often the sampler reads the metrics.
pub const PERIOD: Duration = Duration::from_secs(5);
/// Samples kept: five minutes and one.
pub const KEEP: usize = 61;

/// Cumulative `(upper bound, count)` pairs of a histogram, `+Inf` last.
type Buckets = Vec<(f64, f64)>;

/// One reading of the metrics.
#[derive(Debug, Clone, Default)]
struct Sample {
    at: DateTime<Utc>,
    purchases: f64,
    answer: Buckets,
    accept: Buckets,
}

/// The figures of one window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// How much time the samples really cover (less than asked for while
    /// the api has not run that long).
    pub seconds: f64,
    pub purchases_per_second: f64,
    /// p99 of `POST /v1/purchases` answers, seconds (None: none answered).
    pub answer_p99: Option<f64>,
    /// p99 of the durable acceptance (publish and PubAck), seconds.
    pub accept_p99: Option<f64>,
}

/// The sampler's memory.
#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<VecDeque<Sample>>,
}

impl Rates {
    /// Starts sampling `handle` until `shutdown`.
    pub fn start(handle: PrometheusHandle, shutdown: CancellationToken) -> Arc<Self> {
        let rates = Arc::new(Self::default());
        let sampler = rates.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PERIOD);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => sampler.record(parse(&handle.render(), Utc::now())),
                }
            }
        });
        rates
    }

    fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock().expect("rates lock");
        samples.push_back(sample);
        while samples.len() > KEEP {
            samples.pop_front();
        }
    }

    /// The figures over the last `span` (None before two samples exist).
    pub fn window(&self, span: Duration) -> Option<Window> {
        let samples = self.samples.lock().expect("rates lock");
        let last = samples.back()?;
        let span = chrono::Duration::from_std(span).ok()?;
        let first = samples.iter().find(|s| last.at - s.at <= span)?;
        let seconds = (last.at - first.at).num_milliseconds() as f64 / 1000.0;
        if seconds <= 0.0 {
            return None;
        }
        Some(Window {
            seconds,
            purchases_per_second: (last.purchases - first.purchases).max(0.0) / seconds,
            answer_p99: quantile(0.99, &increase(&first.answer, &last.answer)),
            accept_p99: quantile(0.99, &increase(&first.accept, &last.accept)),
        })
    }

    /// Purchases per second between consecutive samples, oldest first.
    pub fn series(&self) -> Vec<f64> {
        let samples = self.samples.lock().expect("rates lock");
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(a, b)| {
                let secs = (b.at - a.at).num_milliseconds() as f64 / 1000.0;
                if secs > 0.0 {
                    (b.purchases - a.purchases).max(0.0) / secs
                } else {
                    0.0
                }
            })
            .collect()
    }
}

/// The samples' metrics out of Prometheus text.
fn parse(text: &str, at: DateTime<Utc>) -> Sample {
    let mut s = Sample {
        at,
        ..Default::default()
    };
    let answer_bucket = format!("{PURCHASE_SECONDS}_bucket");
    let accept_bucket = format!("{ACCEPT_SECONDS}_bucket");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        if name == PURCHASES {
            s.purchases += value;
        } else if name == answer_bucket || name == accept_bucket {
            let Some(le) = label(labels, "le").and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let target = if name == answer_bucket {
                &mut s.answer
            } else {
                &mut s.accept
            };
            target.push((le, value));
        }
    }
    s.answer.sort_by(|a, b| a.0.total_cmp(&b.0));
    s.accept.sort_by(|a, b| a.0.total_cmp(&b.0));
    s
}

/// The value of label `name` in `a="x",b="y"}`.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// Bucket counts of `last` minus those of `first` (same bounds; a reset
/// counter counts from zero).
fn increase(first: &Buckets, last: &Buckets) -> Buckets {
    last.iter()
        .map(|&(le, n)| {
            let before = first
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, m)| *m);
            (le, if n >= before { n - before } else { n })
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside
/// the bucket it falls in; the highest finite bound if it falls in `+Inf`.
fn quantile(q: f64, buckets: &Buckets) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, n) in buckets {
        if n >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let inside = n - lower.1;
            let fraction = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * fraction);
        }
        lower = (le, n);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(ok: u64, fast: u64, slow: u64) -> String {
        format!(
            "# HELP {PURCHASES} x\n{PURCHASES}{{status=\"201\"}} {ok}\n{PURCHASES}{{status=\"409\"}} 1\n\
             {PURCHASE_SECONDS}_bucket{{le=\"0.01\"}} {fast}\n\
             {PURCHASE_SECONDS}_bucket{{le=\"1\"}} {}\n\
             {PURCHASE_SECONDS}_bucket{{le=\"+Inf\"}} {}\n\
             {PURCHASE_SECONDS}_sum 3.5\n{PURCHASE_SECONDS}_count {}\n",
            fast + slow,
            fast + slow,
            fast + slow
        )
    }

    #[test]
    fn a_window_has_the_rate_and_the_p99_of_what_happened_in_it() {
        let rates = Rates::default();
        let t0 = Utc::now();
        rates.record(parse(&text(100, 100, 0), t0));
        rates.record(parse(
            &text(150, 140, 10),
            t0 + chrono::Duration::seconds(10),
        ));
        let w = rates.window(Duration::from_secs(60)).unwrap();
        assert_eq!(w.seconds, 10.0);
        assert_eq!(w.purchases_per_second, 5.0);
        // 50 answers in the window: 40 under 10 ms, 10 between 10 ms and
        // 1 s; the 49.5th lies 95% into the second bucket.
        let p99 = w.answer_p99.unwrap();
        assert!((p99 - (0.01 + 0.99 * 0.95)).abs() < 1e-9, "{p99}");
        assert_eq!(w.accept_p99, None, "nothing accepted in the text");
        assert_eq!(rates.series(), vec![5.0]);
    }

    #[test]
    fn quantiles_stay_within_the_buckets() {
        assert_eq!(
            quantile(0.99, &vec![(1.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        assert_eq!(
            quantile(0.99, &vec![(1.0, 0.0), (f64::INFINITY, 5.0)]),
            Some(1.0)
        );
        assert_eq!(
            quantile(0.5, &vec![(0.1, 10.0), (f64::INFINITY, 10.0)]),
            Some(0.05)
        );
        assert!(Rates::default().window(Duration::from_secs(60)).is_none());
    }
}
