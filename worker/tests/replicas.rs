//! Worker replicas as real processes: balance, kill -9, SIGSTOP past the
//! lease, and scaling 1 → 3 → 1, under purchase load. Afterwards every
//! accepted purchase is terminal and the invariants hold.

use std::time::Duration;

use giftcard_tests::load::{wait_all_terminal, Load};
use giftcard_tests::processes::{lease_owners, wait_balanced, WorkerProcess};
use giftcard_tests::{invariants, Options, TestApp};

const WORKER: &str = env!("CARGO_BIN_EXE_giftcard-worker");

async fn deployment() -> (TestApp, Vec<uuid::Uuid>, Vec<String>) {
    let app = TestApp::spawn_with(Options {
        partitions: 12,
        start_worker: false,
        ..Options::default()
    })
    .await;
    let mut cards = Vec::new();
    for _ in 0..24 {
        cards.push(app.card_with_stock("1.00", 150).await);
    }
    let users: Vec<String> = (0..16).map(|i| format!("user{i}")).collect();
    for u in &users {
        app.credit(u, "400.00").await;
    }
    (app, cards, users)
}

async fn finish(app: &TestApp, load: Load) -> usize {
    let outcome = load.stop().await;
    assert!(
        outcome.other.is_empty(),
        "the api refused or failed requests: {:?}",
        &outcome.other[..outcome.other.len().min(5)]
    );
    assert!(
        outcome.accepted.len() > 100,
        "too little load to mean anything: {}",
        outcome.accepted.len()
    );
    let succeeded = wait_all_terminal(app, &outcome.accepted, Duration::from_secs(90)).await;
    invariants::check(&app.db).await;
    eprintln!(
        "{} purchases accepted, {succeeded} succeeded",
        outcome.accepted.len()
    );
    succeeded
}

#[tokio::test]
async fn three_workers_survive_a_kill_and_a_pause_past_the_lease() {
    let (app, cards, users) = deployment().await;
    let http = app.http.clone();
    let a = WorkerProcess::spawn(WORKER.as_ref(), &app, "wa");
    let b = WorkerProcess::spawn(WORKER.as_ref(), &app, "wb");
    let c = WorkerProcess::spawn(WORKER.as_ref(), &app, "wc");
    for w in [&a, &b, &c] {
        w.wait_ready(&http).await;
    }
    let took = wait_balanced(&app, &["wa", "wb", "wc"], Duration::from_secs(15)).await;
    eprintln!(
        "3 workers balanced after {took:?}: {:?}",
        lease_owners(&app).await
    );
    let load = Load::start(&app, &cards, &users, 8, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;

    a.signal("KILL");
    let took = wait_balanced(&app, &["wb", "wc"], Duration::from_secs(15)).await;
    eprintln!("re-owned {took:?} after kill -9");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Freeze b past its lease: c takes everything; when b wakes up it must
    // not commit anything for the partitions it lost.
    b.signal("STOP");
    let took = wait_balanced(&app, &["wc"], Duration::from_secs(15)).await;
    eprintln!("c owns everything {took:?} after b froze");
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.signal("CONT");
    let took = wait_balanced(&app, &["wb", "wc"], Duration::from_secs(15)).await;
    eprintln!("b back in the rotation after {took:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    finish(&app, load).await;
    let fenced = b
        .metric(&http, "giftcard_worker_fenced_batches_total")
        .await;
    let lost = b.metric(&http, "giftcard_worker_leases_lost_total").await;
    eprintln!("stale worker b: {fenced} fenced-off batches, {lost} leases lost");
    assert!(lost >= 1.0, "b should have noticed it lost its leases");
    assert!(
        fenced >= 1.0,
        "b resumed with work in hand; its batches must have been fenced off"
    );
    app.stop().await;
}

#[tokio::test]
async fn scaling_one_to_three_to_one_hands_partitions_over_within_seconds() {
    let (app, cards, users) = deployment().await;
    let http = app.http.clone();
    let a = WorkerProcess::spawn(WORKER.as_ref(), &app, "s1");
    a.wait_ready(&http).await;
    wait_balanced(&app, &["s1"], Duration::from_secs(15)).await;
    let load = Load::start(&app, &cards, &users, 8, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut b = WorkerProcess::spawn(WORKER.as_ref(), &app, "s2");
    let mut c = WorkerProcess::spawn(WORKER.as_ref(), &app, "s3");
    let took = wait_balanced(&app, &["s1", "s2", "s3"], Duration::from_secs(10)).await;
    eprintln!("scaled 1 -> 3, balanced after {took:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = std::time::Instant::now();
    b.terminate(Duration::from_secs(10)).await;
    c.terminate(Duration::from_secs(10)).await;
    let took = wait_balanced(&app, &["s1"], Duration::from_secs(10)).await;
    eprintln!(
        "scaled 3 -> 1, s1 owns all after {:?}",
        started.elapsed().max(took)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    finish(&app, load).await;
    assert_eq!(
        a.metric(&http, "giftcard_worker_partitions_owned").await,
        12.0
    );
    app.stop().await;
}

/// Throughput of a load spread over many cards with 1, 2 and 3 worker
/// replicas. A measurement, not a check: run it in release mode with
/// `cargo test --release -p giftcard-worker --test replicas -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "measurement; run with --release -- --ignored --nocapture"]
async fn throughput_with_one_two_and_three_replicas() {
    let seconds = std::env::var("GIFTCARD_MEASURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20u64);
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
            .map(|i| WorkerProcess::spawn(WORKER.as_ref(), &app, &format!("m{i}")))
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
