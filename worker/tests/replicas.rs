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
