//! Dead letters with a real worker process: PostgreSQL stops under load,
//! batches are retried with backoff and then dead-lettered; when it returns,
//! the purchases read `dead_lettered`, and replaying them all completes
//! every one of them exactly once.

use std::time::Duration;

use giftcard_tests::load::{wait_all_terminal, Load};
use giftcard_tests::processes::{wait_balanced, WorkerProcess};
use giftcard_tests::{invariants, Options, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const WORKER: &str = env!("CARGO_BIN_EXE_giftcard-worker");

async fn all_dead_letters(app: &TestApp, state: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/dead-letters?state={state}&limit=50&cursor={c}"),
            None => format!("/v1/admin/dead-letters?state={state}&limit=50"),
        };
        let (s, _, b) = app
            .call(Method::GET, &path, Some(&app.admin_token()), None, &[])
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        out.extend(b["items"].as_array().unwrap().iter().cloned());
        match &b["next_cursor"] {
            Value::String(c) => cursor = Some(c.clone()),
            _ => return out,
        }
    }
}

#[tokio::test]
async fn a_postgres_outage_dead_letters_after_retries_and_replay_all_completes_everything() {
    let mut app = TestApp::spawn_with(Options {
        partitions: 4,
        start_worker: false,
        own_postgres: true,
        max_attempts: 3,
        retry_base: Duration::from_millis(100),
        ..Options::default()
    })
    .await;
    let mut cards = Vec::new();
    for _ in 0..4 {
        cards.push(app.card_with_stock("1.00", 300).await);
    }
    let users: Vec<String> = (0..8).map(|i| format!("dl{i}")).collect();
    for u in &users {
        app.credit(u, "100.00").await;
    }
    let worker = WorkerProcess::spawn(WORKER.as_ref(), &app, "dlw");
    worker.wait_ready(&app.http).await;
    wait_balanced(&app, &["dlw"], Duration::from_secs(15)).await;

    let load = Load::start(&app, &cards, &users, 4, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.pg.as_mut().unwrap().stop();
    // Each attempt waits up to the pool's 3 s acquire timeout and the
    // worker's partitions take turns in its one committer, so how long 3
    // attempts take depends on the machine's load: keep PostgreSQL down
    // until the worker has dead-lettered (at most 60 s), at least 12 s.
    let down = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let dead = worker
            .metric(&app.http, "giftcard_worker_dead_lettered_total")
            .await;
        if (dead > 0.0 && down.elapsed() >= Duration::from_secs(12))
            || down.elapsed() >= Duration::from_secs(60)
        {
            break;
        }
    }
    app.pg.as_mut().unwrap().restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcome = load.stop().await;
    assert!(
        outcome.other.is_empty(),
        "NATS was up: nothing may be refused: {:?}",
        &outcome.other[..outcome.other.len().min(3)]
    );
    wait_all_terminal(&app, &outcome.accepted, Duration::from_secs(60)).await;

    // The retried-then-given-up purchases read dead_lettered, with a reason.
    let dead = all_dead_letters(&app, "pending").await;
    assert!(
        !dead.is_empty(),
        "a PostgreSQL outage outlasting 3 attempts must dead-letter something"
    );
    for d in &dead {
        assert!(
            d["reason"]
                .as_str()
                .unwrap()
                .starts_with("technical failure"),
            "{d}"
        );
        assert!(d["attempts"].as_u64().unwrap() >= 3, "{d}");
        assert!(
            d["original_subject"]
                .as_str()
                .unwrap()
                .starts_with("purchases."),
            "{d}"
        );
        assert!(d["original_sequence"].as_u64().unwrap() > 0, "{d}");
    }
    // Every one of them reads dead_lettered: none was also processed.
    for d in &dead {
        let user = d["user_id"].as_str().unwrap();
        let pid = d["purchase_id"].as_str().unwrap();
        let (s, _, p) = app
            .call(
                Method::GET,
                &format!("/v1/purchases/{pid}"),
                Some(&app.token(user)),
                None,
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(p["status"], "dead_lettered", "{p}");
        assert_eq!(p["error"]["code"], "DEAD_LETTERED");
    }
    let dead_lettered = worker
        .metric(&app.http, "giftcard_worker_dead_lettered_total")
        .await;
    assert!(
        dead_lettered >= dead.len() as f64,
        "metric {dead_lettered} < {}",
        dead.len()
    );

    let (s, _, r) = app
        .call(
            Method::POST,
            "/v1/admin/dead-letters/replay",
            Some(&app.admin_token()),
            Some(json!({})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["replayed"].as_u64().unwrap() as usize, dead.len());
    wait_all_terminal(&app, &outcome.accepted, Duration::from_secs(60)).await;
    // Every purchase is now succeeded or failed for a business reason.
    for a in &outcome.accepted {
        let (_, _, p) = app
            .call(
                Method::GET,
                &format!("/v1/purchases/{}", a.id),
                Some(&app.token(&a.user)),
                None,
                &[],
            )
            .await;
        assert!(p["status"] == "succeeded" || p["status"] == "failed", "{p}");
        assert_ne!(p["status"], "dead_lettered");
    }
    assert!(all_dead_letters(&app, "pending").await.is_empty());
    assert_eq!(all_dead_letters(&app, "replayed").await.len(), dead.len());
    invariants::check(&app.db).await;
    drop(worker);
    app.stop().await;
}
