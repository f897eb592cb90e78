use std::time::Duration;

use giftcard_tests::{assert_error, invariants, Options, TestApp};
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn with_nats_down_the_api_answers_503_and_accepts_nothing() {
    let mut app = TestApp::spawn().await;
    let card = app.card_with_stock("1.00", 5).await;
    app.credit("nora", "5.00").await;
    app.nats.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _, b) = app
        .buy("nora", card, 1, Some("during-outage"), "wait=2")
        .await;
    assert_error(s, &b, 503, "SERVICE_UNAVAILABLE");
    let (s, _, r) = app.call(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{r}");

    app.nats.restart();
    let mut ok = false;
    for _ in 0..100 {
        let (s, _, _) = app.call(Method::GET, "/readyz", None, None, &[]).await;
        if s == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the api reconnects by itself");
    let (s, _, b) = app
        .buy("nora", card, 1, Some("during-outage"), "wait=15")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(
        app.balance("nora").await,
        "4.00",
        "nothing was charged for the refused request"
    );
    invariants::check(&app.db).await;
    app.stop().await;
}

#[tokio::test]
async fn a_process_configured_with_another_partition_count_refuses_to_start() {
    let app = TestApp::spawn_with(Options {
        partitions: 4,
        start_worker: false,
        ..Options::default()
    })
    .await;
    let mut settings = app.api_settings();
    settings.common.partitions = 8;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let db = giftcard_shared::db::connect(&settings.common, true)
        .await
        .unwrap();
    let nats = app.nats_client().await;
    let err = giftcard_api::run(
        settings,
        listener,
        db,
        nats,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("must refuse");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("4 partitions") && msg.contains("GIFTCARD_PARTITIONS=8"),
        "{msg}"
    );
    app.stop().await;
}

#[tokio::test]
async fn with_postgres_down_purchases_are_accepted_and_complete_when_it_returns() {
    let mut app = TestApp::spawn_with(Options {
        own_postgres: true,
        ..Options::default()
    })
    .await;
    let card = app.card_with_stock("2.00", 10).await;
    app.credit("olga", "10.00").await;
    app.pg.as_mut().unwrap().stop();
    // The api notices within a few seconds (it probes every second) and
    // stays ready: it still accepts purchases.
    let mut readiness = serde_json::Value::Null;
    for _ in 0..100 {
        let (s, _, r) = app.call(Method::GET, "/readyz", None, None, &[]).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        readiness = r;
        if readiness["status"] == "degraded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(readiness["status"], "degraded", "{readiness}");

    let mut ids = Vec::new();
    for i in 0..3 {
        let (s, _, b) = app
            .buy("olga", card, 1, Some(&format!("pg-down-{i}")), "wait=1")
            .await;
        assert_eq!(
            s,
            StatusCode::ACCEPTED,
            "accepted while PostgreSQL is down: {b}"
        );
        ids.push(b["id"].as_str().unwrap().to_owned());
    }
    let (s, _, b) = app
        .call(
            Method::GET,
            &format!("/v1/purchases/{}", ids[0]),
            Some(&app.token("olga")),
            None,
            &[],
        )
        .await;
    assert_error(s, &b, 503, "SERVICE_UNAVAILABLE");

    app.pg.as_mut().unwrap().restart();
    for id in &ids {
        let p = app.wait_terminal("olga", id).await;
        assert_eq!(p["status"], "succeeded", "{p}");
    }
    assert_eq!(app.balance("olga").await, "4.00");
    // Retrying a key after the outage returns the same purchase.
    let (s, _, again) = app.buy("olga", card, 1, Some("pg-down-0"), "wait=5").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(again["id"], ids[0].as_str());
    invariants::check(&app.db).await;
    app.stop().await;
}

/// The lock-wait check of invariant 5 is only evidence if it can see a wait.
#[tokio::test]
async fn the_lock_wait_detector_sees_a_real_lock_wait() {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let app = TestApp::spawn_with(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    app.credit("pat", "1.00").await;
    let holder = app.db.begin().await.unwrap();
    holder
        .execute_unprepared("SELECT * FROM wallets WHERE user_id = 'pat' FOR UPDATE")
        .await
        .unwrap();
    let other = Database::connect(&app.db_url).await.unwrap();
    let waiter = tokio::spawn(async move {
        other
            .execute_unprepared("SET lock_timeout = '300ms'")
            .await
            .unwrap();
        other
            .execute_unprepared("UPDATE wallets SET balance = balance WHERE user_id = 'pat'")
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.rollback().await.unwrap();
    let _ = waiter.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waits = giftcard_tests::servers::lock_waits_in(&app.db_name, None);
    if let Some(waits) = waits {
        assert!(!waits.is_empty(), "the detector missed a 100 ms lock wait");
    }
    app.stop().await;
}

#[tokio::test]
async fn provisioning_changes_the_partition_count_only_when_told_to() {
    let app = TestApp::spawn_with(giftcard_tests::Options {
        start_worker: false,
        ..giftcard_tests::Options::default()
    })
    .await;
    let mut eight = app.topology_options();
    eight.partitions = 8;
    let js = async_nats::jetstream::new(app.nats.connect(giftcard_tests::Role::Provisioner).await);
    let err = giftcard_shared::topology::provision(&js, &eight)
        .await
        .expect_err("a different count must be refused");
    assert!(err.to_string().contains("4 partitions"), "{err}");
    eight.change_partitions = true;
    giftcard_shared::topology::provision(&js, &eight)
        .await
        .expect("recorded when told to");
    let js = async_nats::jetstream::new(app.nats_client().await);
    giftcard_shared::topology::open(&js, 8)
        .await
        .expect("the stream now has 8 partitions");
    app.stop().await;
}
