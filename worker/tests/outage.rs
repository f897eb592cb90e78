//! A PostgreSQL outage delays purchases; it never fails them (issue 13).
//! A real worker process keeps its batch, and its messages alive in
//! JetStream, for as long as PostgreSQL is down, says so on `/readyz` and
//! `/metrics`, and completes everything in order when it returns, without
//! an operator and without a single dead letter.

use std::time::{Duration, Instant};

use giftcard_tests::load::{wait_all_terminal, Load};
use giftcard_tests::processes::{wait_balanced, WorkerProcess};
use giftcard_tests::{invariants, Options, TestApp};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

const WORKER: &str = env!("CARGO_BIN_EXE_giftcard-worker");
const OUTAGE: Duration = Duration::from_secs(90);

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .expect("count")
        .expect("row")
        .try_get_by_index::<i64>(0)
        .expect("bigint")
}

#[tokio::test]
async fn a_90_second_postgres_outage_delays_purchases_and_dead_letters_none() {
    let mut app = TestApp::spawn_with(Options {
        partitions: 4,
        start_worker: false,
        own_postgres: true,
        // Would dead-letter within seconds if an outage spent attempts.
        max_attempts: 2,
        retry_base: Duration::from_millis(100),
        ..Options::default()
    })
    .await;
    let mut cards = Vec::new();
    for _ in 0..4 {
        cards.push(app.card_with_stock("1.00", 1000).await);
    }
    let users: Vec<String> = (0..8).map(|i| format!("out{i}")).collect();
    for u in &users {
        app.credit(u, "500.00").await;
    }
    let worker = WorkerProcess::spawn(WORKER.as_ref(), &app, "ow");
    worker.wait_ready(&app.http).await;
    wait_balanced(&app, &["ow"], Duration::from_secs(15)).await;

    let load = Load::start(&app, &cards, &users, 4, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.pg.as_mut().expect("own cluster").stop();
    let down = Instant::now();
    eprintln!("PostgreSQL stopped for {OUTAGE:?}");

    // The worker says it is waiting: not ready, partitions holding batches.
    worker
        .wait_readiness(&app.http, 503, Some("unavailable"), Duration::from_secs(30))
        .await;
    let mut waiting = 0.0;
    while waiting < 1.0 {
        assert!(
            down.elapsed() < Duration::from_secs(45),
            "no partition reported waiting for PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        waiting = worker
            .metric(&app.http, "giftcard_worker_partitions_waiting")
            .await;
    }
    let (_, body) = worker.readiness(&app.http).await;
    assert_eq!(body["database"], "down", "{body}");
    assert!(
        body["waiting_partitions"].as_u64().unwrap_or(0) >= 1,
        "{body}"
    );
    tokio::time::sleep(OUTAGE.saturating_sub(down.elapsed())).await;
    let dead = worker
        .metric(&app.http, "giftcard_worker_dead_lettered_total")
        .await;
    assert_eq!(dead, 0.0, "the worker dead-lettered during the outage");

    app.pg.as_mut().expect("own cluster").restart();
    eprintln!("PostgreSQL back after {:?}", down.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcome = load.stop().await;
    assert!(
        outcome.other.is_empty(),
        "NATS was up: nothing may be refused: {:?}",
        &outcome.other[..outcome.other.len().min(3)]
    );
    let queued = outcome.accepted.iter().filter(|a| a.status == 202).count();
    assert!(
        queued >= 30,
        "only {queued} purchases were accepted (202) during the outage"
    );
    let started = Instant::now();
    let succeeded = wait_all_terminal(&app, &outcome.accepted, Duration::from_secs(120)).await;
    eprintln!(
        "{} purchases accepted ({queued} with 202), {succeeded} succeeded; all terminal {:?} \
         after PostgreSQL returned",
        outcome.accepted.len(),
        started.elapsed() + Duration::from_secs(2)
    );
    assert_eq!(
        succeeded,
        outcome.accepted.len(),
        "stock and money suffice for every purchase"
    );

    // Nothing dead-lettered, nothing for an operator to do.
    assert_eq!(count(&app, "SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM purchases WHERE status = 'dead_lettered'"
        )
        .await,
        0
    );
    assert_eq!(
        worker
            .metric(&app.http, "giftcard_worker_dead_lettered_total")
            .await,
        0.0
    );
    assert!(
        worker
            .metric(&app.http, "giftcard_worker_batch_failures_total")
            .await
            >= 1.0
    );
    worker.wait_ready(&app.http).await;
    let (_, body) = worker.readiness(&app.http).await;
    assert_eq!(body["waiting_partitions"], 0, "{body}");
    // Balances, codes, and per-card order: each card's purchases completed
    // in stream-sequence order.
    invariants::check(&app.db).await;
    drop(worker);
    app.stop().await;
}
