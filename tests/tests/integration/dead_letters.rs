use std::time::Duration;

use async_nats::jetstream;
use giftcard_shared::contract::purchase_subject;
use giftcard_tests::{assert_error, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Publishes `payload` to `subject`, signed as an api would sign it (so
/// that the worker judges it on its content).
async fn publish_signed(js: &jetstream::Context, subject: &str, payload: &[u8]) {
    let mut headers = async_nats::HeaderMap::new();
    TestApp::sign(subject, &mut headers, payload);
    js.publish_with_headers(subject.to_owned(), headers, payload.to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_the_worker_keeps_going() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("1.00", 5).await;
    app.credit("max", "5.00").await;
    let js = jetstream::new(app.nats_client().await);
    let subject = purchase_subject(card, app.options.partitions);
    // Signed as an api would (so they are judged on their content), but not
    // what the contract says.
    for payload in [
        &b"not json"[..],
        br#"{"v": 99, "purchase_id": "x"}"#,
        br#"{"v": 1}"#,
    ] {
        publish_signed(&js, &subject, payload).await;
    }
    let list = app.dead_letters_at_least(3).await;
    let reasons: Vec<&str> = list.iter().map(|i| i["reason"].as_str().unwrap()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("unknown message version 99")),
        "{reasons:?}"
    );
    assert!(reasons.iter().all(|r| !r.is_empty()));
    assert_eq!(list[0]["gift_card_id"], json!(card));

    // The worker still serves the card.
    let (s, _, b) = app.buy("max", card, 1, None, "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // Discard one, replay the others (they come back as dead letters).
    let first = list[0]["id"].as_str().unwrap().to_owned();
    let admin = app.admin_token();
    let (s, _, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/dead-letters/{first}"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, b) = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/dead-letters/{first}"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_error(s, &b, 409, "DEAD_LETTER_RESOLVED");
    let (s, _, b) = app
        .call(
            Method::POST,
            "/v1/admin/dead-letters/replay",
            Some(&admin),
            Some(json!({"gift_card_id": card})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["replayed"], 2);
    let again = app.dead_letters_at_least(2).await;
    assert_eq!(again.len(), 2, "replayed poison is dead-lettered again");
    let (s, _, b) = app
        .call(
            Method::POST,
            &format!("/v1/admin/dead-letters/{}/replay", uuid::Uuid::new_v4()),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_error(s, &b, 404, "NOT_FOUND");
    app.stop().await;
}

/// A purchase dead-lettered because its statement failed for it alone (a
/// trigger stands in for a bug that rejects its row), replayed twice at the
/// same moment once the bug is fixed, is processed once and charged once;
/// the replay is recorded. (An outage never dead-letters: the worker's
/// `outage` test.)
#[tokio::test]
async fn replaying_one_dead_letter_twice_concurrently_charges_once() {
    use sea_orm::ConnectionTrait;
    let app = TestApp::spawn_with(giftcard_tests::Options {
        max_attempts: 2,
        retry_base: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    let card = app.card_with_stock("3.00", 5).await;
    app.credit("quinn", "13.00").await;
    let (s, _, b) = app.buy("quinn", card, 1, None, "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    app.db
        .execute_unprepared(
            "CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               RAISE EXCEPTION 'rejected by the test' USING ERRCODE = 'data_exception'; END $$; \
             CREATE TRIGGER test_poison BEFORE INSERT ON purchases FOR EACH ROW \
               WHEN (NEW.idempotency_key = 'poisoned' AND NEW.status <> 'dead_lettered') \
               EXECUTE FUNCTION test_poison()",
        )
        .await
        .unwrap();
    let (s, _, b) = app.buy("quinn", card, 1, Some("poisoned"), "wait=1").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let pid = b["id"].as_str().unwrap().to_owned();
    // Two attempts fail, then the message is dead-lettered.
    let js = jetstream::new(app.nats_client().await);
    let mut dlq = js
        .get_stream(giftcard_shared::contract::DLQ_STREAM)
        .await
        .unwrap();
    for _ in 0..300 {
        if dlq.info().await.unwrap().state.messages >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        dlq.info().await.unwrap().state.messages,
        1,
        "dead-lettered within 30 s"
    );
    // The bug is fixed.
    app.db
        .execute_unprepared("DROP TRIGGER test_poison ON purchases")
        .await
        .unwrap();
    let list = app.dead_letters_at_least(1).await;
    let dl = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["purchase_id"], pid.as_str());
    let p = app.wait_terminal("quinn", &pid).await;
    assert_eq!(p["status"], "dead_lettered", "{p}");

    let admin = app.admin_token();
    let (s, _, detail) = app
        .call(
            Method::GET,
            &format!("/v1/admin/dead-letters/{dl}"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{detail}");
    assert_eq!(detail["payload"]["purchase_id"], pid.as_str());
    assert!(
        detail["headers"]["Giftcard-Dlq-Reason"]
            .as_str()
            .unwrap()
            .contains("statement failed for this message alone"),
        "{detail}"
    );
    assert_eq!(detail["history"].as_array().unwrap().len(), 1);
    assert_eq!(detail["events"][0]["action"], "dead_lettered");

    let path = format!("/v1/admin/dead-letters/{dl}/replay");
    let (a, b) = tokio::join!(
        app.call(Method::POST, &path, Some(&admin), None, &[]),
        app.call(Method::POST, &path, Some(&admin), None, &[])
    );
    for (s, _, body) in [&a, &b] {
        assert!(
            *s == StatusCode::ACCEPTED || *s == StatusCode::CONFLICT,
            "{s}: {body}"
        );
    }
    let p = app.wait_terminal("quinn", &pid).await;
    assert_eq!(p["status"], "succeeded", "{p}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.balance("quinn").await, "7.00", "charged once");
    let (s, _, b) = app.call(Method::POST, &path, Some(&admin), None, &[]).await;
    assert_error(s, &b, 409, "DEAD_LETTER_RESOLVED");
    let (_, _, detail) = app
        .call(
            Method::GET,
            &format!("/v1/admin/dead-letters/{dl}"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(detail["state"], "replayed");
    assert_eq!(detail["resolved_by"], "admin");
    let actions: Vec<&str> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"replayed"), "{actions:?}");
    giftcard_tests::invariants::check(&app.db).await;
    app.stop().await;
}

/// Replay-all goes in bounded batches: each call says how many it replayed
/// and how many remain, its cursor goes on, and a pass ends even though
/// every replay is dead-lettered again (poison). `giftcardctl dlq
/// replay-all --server-side` follows the cursors to the end.
#[tokio::test]
async fn replay_all_goes_in_bounded_batches_that_count_and_end() {
    let app = TestApp::spawn().await;
    let card = app.create_card("1.00").await;
    let js = jetstream::new(app.nats_client().await);
    let subject = purchase_subject(card, app.options.partitions);
    for _ in 0..5 {
        publish_signed(&js, &subject, br#"{"v": 1}"#).await;
    }
    app.dead_letters_at_least(5).await;
    let admin = app.admin_token();
    let batch = |body: serde_json::Value| {
        let (app, admin) = (&app, admin.clone());
        async move {
            app.call(
                Method::POST,
                "/v1/admin/dead-letters/replay",
                Some(&admin),
                Some(body),
                &[],
            )
            .await
        }
    };
    let mut cursor = serde_json::Value::Null;
    let mut seen = Vec::new();
    loop {
        let mut body = json!({"gift_card_id": card, "limit": 2});
        if !cursor.is_null() {
            body["cursor"] = cursor.clone();
        }
        let (s, _, b) = batch(body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        assert!(b["stopped"].is_null(), "{b}");
        seen.push((
            b["replayed"].as_u64().unwrap(),
            b["remaining"].as_u64().unwrap(),
        ));
        cursor = b["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
        // Let the replays come back as dead letters (5 pending again): the
        // pass must not pick them up.
        app.dead_letters_at_least(5).await;
        assert!(seen.len() < 10, "the pass does not end: {seen:?}");
    }
    assert_eq!(seen, [(2, 3), (2, 1), (1, 0)]);

    let (s, _, b) = batch(json!({"limit": 0})).await;
    assert_error(s, &b, 422, "VALIDATION_FAILED");
    let (s, _, b) = batch(json!({"cursor": "not-a-cursor"})).await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");

    // The poison came back; giftcardctl replays the new ones, in batches.
    let again = app.dead_letters_at_least(5).await;
    assert_eq!(again.len(), 5);
    let argv = [
        "giftcardctl",
        "--api-url",
        &app.api_url,
        "--token",
        &admin,
        "dlq",
        "replay-all",
        "--server-side",
        "--yes",
    ];
    let cli = <giftcard_ctl::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
    giftcard_ctl::run(cli)
        .await
        .expect("replay-all --server-side");
    let (s, _, b) = app
        .call(
            Method::GET,
            "/v1/admin/dead-letters?state=replayed&limit=500",
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["items"].as_array().unwrap().len(), 10, "{b}");
    app.stop().await;
}
