//! Monitoring as code against real processes: every metric that the alert
//! rules (deploy/monitoring/alerts.yaml) and the dashboard
//! (deploy/monitoring/dashboard.json) query is served by a running api or
//! worker, so that no alert or panel watches a name nobody exports.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use giftcard_tests::processes::{wait_balanced, ApiProcess, WorkerProcess};
use giftcard_tests::{Options, TestApp};

use crate::operations::families;

const API: &str = env!("CARGO_BIN_EXE_giftcard-api-under-test");
const WORKER: &str = env!("CARGO_BIN_EXE_giftcard-worker-under-test");

/// The files whose queries must name served metrics.
const MONITORING_FILES: [&str; 2] = [
    "deploy/monitoring/alerts.yaml",
    "deploy/monitoring/dashboard.json",
];

/// Every `giftcard_…` and `process_…` metric name in `text`, with the
/// histogram series suffixes `_bucket`, `_sum` and `_count` taken off (the
/// metric family is what `/metrics` declares).
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_name_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = BTreeSet::new();
    for prefix in ["giftcard_", "process_"] {
        for (at, _) in text.match_indices(prefix) {
            if text[..at].chars().next_back().is_some_and(is_name_char) {
                continue; // inside a longer word
            }
            let rest = &text[at + prefix.len()..];
            let len = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
            if len == 0 {
                continue; // "giftcard_ metric" in prose
            }
            let name = &text[at..at + prefix.len() + len];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(family.to_owned());
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_queries_and_histogram_suffixes_come_off() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(giftcard_api_publish_seconds_bucket[5m]))) > 0.5
        and giftcard_worker_live_workers, rate(process_cpu_seconds_total[1m]); every giftcard_ metric
        xgiftcard_not_one GIFTCARD_PARTITIONS giftcard-api"#,
    );
    let want: BTreeSet<String> = [
        "giftcard_api_publish_seconds",
        "giftcard_worker_live_workers",
        "process_cpu_seconds_total",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, want);
}

/// The metric families of both processes' `/metrics` pages together.
async fn served(app: &TestApp, urls: [&str; 2]) -> BTreeSet<String> {
    let mut served = BTreeSet::new();
    for url in urls {
        served.extend(families(&app.http, url).await.into_keys());
    }
    served
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_query_is_served_by_the_api_or_a_worker() {
    let app = TestApp::spawn_with(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let api = ApiProcess::spawn_api(API.as_ref(), &app, "monitoring-api", &[]);
    let worker = WorkerProcess::spawn_worker(WORKER.as_ref(), &app, "monitoring-w", &[]);
    api.wait_ready(&app.http).await;
    worker.wait_ready(&app.http).await;
    wait_balanced(&app, &["monitoring-w"], Duration::from_secs(15)).await;

    let mut named = BTreeSet::new();
    for file in MONITORING_FILES {
        let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let in_file = metric_names(&text);
        // Each file queries well over a dozen metrics; far fewer means the
        // extraction is broken, and an empty set would pass vacuously.
        assert!(in_file.len() >= 12, "{file}: only {in_file:?}");
        named.extend(in_file.into_iter().map(|name| (name, file)));
    }
    // Some gauges appear with their first update (the api's database probe
    // runs every second): give them a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut served_now = served(&app, [&api.url, &worker.url]).await;
    while named.iter().any(|(n, _)| !served_now.contains(n)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        served_now = served(&app, [&api.url, &worker.url]).await;
    }
    let missing: Vec<String> = named
        .iter()
        .filter(|(n, _)| !served_now.contains(n))
        .map(|(n, file)| format!("{n} ({file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "queried but served by neither the api's nor the worker's /metrics: {missing:?} \
         (served: {served_now:?}); fix the name in deploy/monitoring, or export the metric"
    );
    app.stop().await;
}
