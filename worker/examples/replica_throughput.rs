//! Throughput of a load spread over many cards with 1, 2 and 3 worker
//! replicas (real processes, one machine). A measurement, not a test:
//!
//! ```sh
//! cargo build --release -p giftcard-worker --bins --examples
//! target/release/examples/replica_throughput      # GIFTCARD_MEASURE_SECS=20
//! ```

use std::time::Duration;

use giftcard_tests::load::Load;
use giftcard_tests::processes::{wait_balanced, WorkerProcess};
use giftcard_tests::{invariants, Options, TestApp};

/// The worker binary next to this example's directory.
fn worker_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("giftcard-worker");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --release -p giftcard-worker --bins --examples`",
        bin.display()
    );
    bin
}

#[tokio::main]
async fn main() {
    measure().await;
}

/// Throughput of a load spread over many cards with 1, 2 and 3 worker
/// replicas. A measurement, not a check: run it in release mode (see the
/// module's header).
async fn measure() {
    let seconds = std::env::var("GIFTCARD_MEASURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20u64);
    let worker = worker_binary();
    for replicas in 1..=3usize {
        let app = TestApp::spawn_with(Options {
            partitions: 64,
            start_worker: false,
            ..Options::default()
        })
        .await;
        let mut cards = Vec::new();
        for _ in 0..300 {
            cards.push(app.card_with_stock("1.00", 200).await);
        }
        let users: Vec<String> = (0..64).map(|i| format!("buyer{i}")).collect();
        for u in &users {
            app.credit(u, "100000.00").await;
        }
        let workers: Vec<WorkerProcess> = (0..replicas)
            .map(|i| WorkerProcess::spawn(&worker, &app, &format!("m{i}")))
            .collect();
        let names: Vec<String> = workers.iter().map(|w| w.id.clone()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        wait_balanced(&app, &names, Duration::from_secs(30)).await;
        // Warm up, then measure a window of requests that each wait for
        // their result.
        let warm = Load::start(&app, &cards, &users, 64, 30);
        tokio::time::sleep(Duration::from_secs(3)).await;
        warm.stop().await;
        let started = std::time::Instant::now();
        let load = Load::start(&app, &cards, &users, 64, 30);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let outcome = load.stop().await;
        let elapsed = started.elapsed().as_secs_f64();
        let ok: Vec<Duration> = outcome
            .accepted
            .iter()
            .filter(|a| a.status == 201)
            .map(|a| a.latency)
            .collect();
        let mut sorted = ok.clone();
        sorted.sort();
        let pct = |q: f64| {
            sorted
                .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        println!(
            "replicas={replicas} purchases_per_sec={:.0} succeeded={} other_statuses={} p50={:?} p99={:?}",
            ok.len() as f64 / elapsed,
            ok.len(),
            outcome.accepted.len() - ok.len() + outcome.other.len(),
            pct(0.50),
            pct(0.99)
        );
        invariants::check(&app.db).await;
        drop(workers);
        app.stop().await;
    }
}
