use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream;
use giftcard_shared::contract::{purchase_subject, PurchaseMessage, HEADER_REPLY_TO};
use giftcard_tests::{assert_error, invariants, Options, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn one_key_retried_concurrently_yields_one_purchase_and_one_charge() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("4.00", 10).await;
    app.credit("frank", "20.00").await;
    let results = futures::future::join_all(
        (0..16).map(|_| app.buy("frank", card, 2, Some("order-77"), "wait=20")),
    )
    .await;
    let ids: HashSet<String> = results
        .iter()
        .map(|(_, _, b)| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "one purchase id for one key");
    let codes: HashSet<String> = results
        .iter()
        .map(|(_, _, b)| b["activation_codes"].to_string())
        .collect();
    assert_eq!(codes.len(), 1, "every retry sees the same codes");
    for (s, _, b) in &results {
        assert_eq!(*s, StatusCode::CREATED, "{b}");
    }
    assert_eq!(app.balance("frank").await, "12.00", "charged once");

    // Later retries, long after completion, give the same answer.
    let (s, _, again) = app.buy("frank", card, 2, Some("order-77"), "wait=5").await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(again, results[0].2);
    assert_eq!(app.balance("frank").await, "12.00");
    invariants::check(&app.db).await;
    app.stop().await;
}

#[tokio::test]
async fn one_key_with_another_body_is_rejected_before_and_after_completion() {
    let mut app = TestApp::spawn_with(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let card = app.card_with_stock("1.00", 10).await;
    app.credit("gina", "10.00").await;
    // Still queued: the stream's copy is compared.
    let (s, _, _) = app.buy("gina", card, 1, Some("k"), "respond-async").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _, b) = app.buy("gina", card, 2, Some("k"), "respond-async").await;
    assert_error(s, &b, 422, "IDEMPOTENCY_KEY_REUSED");
    // Another user may use the same key freely.
    let (s, _, other) = app.buy("hank", card, 2, Some("k"), "respond-async").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{other}");

    app.start_worker().await;
    let (s, _, b) = app.buy("gina", card, 1, Some("k"), "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, _, b) = app
        .buy("gina", uuid::Uuid::new_v4(), 1, Some("k"), "wait=10")
        .await;
    assert_error(s, &b, 422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(app.balance("gina").await, "9.00");
    app.stop().await;
}

#[tokio::test]
async fn without_a_key_every_post_is_a_new_purchase() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("1.00", 10).await;
    app.credit("ivy", "10.00").await;
    let (_, _, a) = app.buy("ivy", card, 1, None, "wait=10").await;
    let (_, _, b) = app.buy("ivy", card, 1, None, "wait=10").await;
    assert_ne!(a["id"], b["id"]);
    assert_eq!(app.balance("ivy").await, "8.00");
    app.stop().await;
}

/// A message delivered again (a worker crashed after commit, before its
/// ack; or the duplicate window passed) is answered from the stored result.
#[tokio::test]
async fn a_redelivered_message_is_answered_from_the_stored_result() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("2.00", 10).await;
    app.credit("jack", "10.00").await;
    let (s, _, first) = app.buy("jack", card, 3, Some("redeliver"), "wait=10").await;
    assert_eq!(s, StatusCode::CREATED);
    let id: uuid::Uuid = first["id"].as_str().unwrap().parse().unwrap();

    // Re-publish the same purchase under another message id, as a replay
    // past the duplicate window would, and listen for the worker's answer.
    let nats = app.nats_client().await;
    let reply_to = format!("giftcard.reply.test.{id}");
    let mut replies = nats.subscribe(reply_to.clone()).await.unwrap();
    let js = jetstream::new(nats.clone());
    let user = giftcard_shared::domain::UserId::parse("jack").unwrap();
    let key = giftcard_shared::domain::IdempotencyKey::parse("redeliver").unwrap();
    let qty = giftcard_shared::domain::Quantity::parse(3).unwrap();
    let msg = PurchaseMessage {
        v: 1,
        purchase_id: giftcard_shared::domain::purchase_id_for(&user, Some(&key)),
        user_id: "jack".into(),
        gift_card_id: card,
        quantity: 3,
        request_hash: giftcard_shared::domain::request_hash(card, qty),
        idempotency_key: Some("redeliver".into()),
        accepted_at: chrono::Utc::now(),
    };
    assert_eq!(msg.purchase_id, id);
    let subject = purchase_subject(card, app.options.partitions);
    let payload = serde_json::to_vec(&msg).unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HEADER_REPLY_TO, reply_to.as_str());
    TestApp::sign(&subject, &mut headers, &payload);
    js.publish_with_headers(subject, headers, payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures::StreamExt::next(&mut replies),
    )
    .await
    .expect("a reply")
    .unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["outcome"], "completed");
    assert_eq!(
        reply["purchase"], first,
        "the stored result, not a new purchase"
    );
    assert_eq!(app.balance("jack").await, "4.00", "charged once");
    let (_, _, c) = app
        .call(
            Method::GET,
            &format!("/v1/gift-cards/{card}"),
            Some(&app.token("jack")),
            None,
            &[],
        )
        .await;
    assert_eq!(c["available_codes"], 7);
    invariants::check(&app.db).await;
    app.stop().await;
}

/// Waiters are shared per purchase id, so a request with another body
/// under a key whose purchase completed while it waited was handed that
/// purchase's outcome (201 with the first request's card, quantity and
/// codes; the nemesis found it). Its answer is 422 `IDEMPOTENCY_KEY_REUSED`.
#[tokio::test]
async fn a_request_with_another_body_is_never_answered_with_the_purchases_outcome() {
    let mut app = TestApp::spawn_with(Options {
        duplicate_window: Some(Duration::from_secs(1)),
        ..Options::without_worker()
    })
    .await;
    let card = app.card_with_stock("1.00", 5).await;
    app.credit("hana", "10.00").await;
    let (s, _, first) = app.buy("hana", card, 1, Some("k"), "wait=0").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    // Past the duplicate window: the api publishes the other body, and it
    // waits on the purchase id while no worker runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let other = {
        let (http, url, token) = (app.http.clone(), app.api_url.clone(), app.token("hana"));
        tokio::spawn(async move {
            let resp = http
                .post(format!("{url}/v1/purchases"))
                .bearer_auth(token)
                .header("Prefer", "wait=20")
                .header("Idempotency-Key", "k")
                .json(&json!({"gift_card_id": card, "quantity": 2}))
                .send()
                .await
                .unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The first message is decided first; its reply reaches every waiter.
    app.start_worker().await;
    let (s, body) = other.await.unwrap();
    assert_error(s, &body, 422, "IDEMPOTENCY_KEY_REUSED");
    let done = app
        .wait_terminal("hana", first["id"].as_str().unwrap())
        .await;
    assert_eq!(done["quantity"], 1, "{done}");
    assert_eq!(app.balance("hana").await, "9.00", "charged once");
    invariants::check(&app.db).await;
    app.stop().await;
}

/// After the duplicate window, a request with another body takes the
/// purchase id in the stream; a retry of the original body then collides
/// with it. The purchase is stored as the original: the retry gets its
/// outcome, not 422.
#[tokio::test]
async fn a_retry_of_the_original_body_after_another_body_gets_the_outcome() {
    let app = TestApp::spawn_with(Options {
        duplicate_window: Some(Duration::from_secs(1)),
        ..Options::default()
    })
    .await;
    let card = app.card_with_stock("1.00", 5).await;
    app.credit("iris", "10.00").await;
    let (s, _, first) = app.buy("iris", card, 1, Some("k"), "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, _, body) = app.buy("iris", card, 2, Some("k"), "wait=10").await;
    assert_error(s, &body, 422, "IDEMPOTENCY_KEY_REUSED");
    let (s, headers, again) = app.buy("iris", card, 1, Some("k"), "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert_eq!(again, first);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(app.balance("iris").await, "9.00", "charged once");
    app.stop().await;
}
