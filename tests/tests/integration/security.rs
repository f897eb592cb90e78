//! The queue as a trust boundary: NATS refuses anyone without credentials,
//! each identity holds only its permissions, and the worker acts on no
//! message an api did not sign, whoever managed to publish it.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use giftcard_shared::contract::{purchase_subject, HEADER_REPLY_TO};
use giftcard_tests::load::{wait_all_terminal, Load};
use giftcard_tests::processes::{wait_balanced, ApiProcess, WorkerProcess};
use giftcard_tests::servers::NatsOptions;
use giftcard_tests::{invariants, Options, Role, TestApp, MESSAGE_SECRET};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const API: &str = env!("CARGO_BIN_EXE_giftcard-api-under-test");
const WORKER: &str = env!("CARGO_BIN_EXE_giftcard-worker-under-test");

/// Waits until the dead-letter list holds an entry whose reason contains
/// `needle`; returns it.
async fn dead_letter_with(app: &TestApp, needle: &str) -> Value {
    let admin = app.admin_token();
    for _ in 0..200 {
        let (_, _, list) = app
            .call(
                Method::GET,
                "/v1/admin/dead-letters?state=all",
                Some(&admin),
                None,
                &[],
            )
            .await;
        if let Some(item) = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["reason"].as_str().is_some_and(|r| r.contains(needle)))
        {
            return item.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no dead letter mentioning {needle:?} after 10 s");
}

/// Messages that arrive on `sub` within `within`.
async fn received(sub: &mut async_nats::Subscriber, within: Duration) -> usize {
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, sub.next()).await {
        n += 1;
    }
    n
}

#[tokio::test]
async fn anonymous_and_wrong_credentials_are_refused_with_a_message_that_says_what_to_set() {
    let app = TestApp::spawn_with(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let anonymous = async_nats::connect(app.nats.url()).await;
    assert!(
        anonymous.is_err(),
        "the server accepted an anonymous client"
    );

    let mut wrong = app.nats.settings(Role::Api);
    wrong.password = Some(giftcard_shared::config::Secret::new("not-the-password"));
    let err = giftcard_shared::nats::connect(&wrong, giftcard_shared::nats::API)
        .await
        .expect_err("a wrong password must be refused")
        .to_string();
    assert!(
        err.contains("refused the credentials") && err.contains("NATS_PASSWORD"),
        "{err}"
    );
    assert!(
        !err.contains("not-the-password"),
        "the password leaked: {err}"
    );

    // A real api process with a wrong password stops at start, saying so.
    let mut api = ApiProcess::spawn_api(
        API.as_ref(),
        &app,
        "wrong-password",
        &[("NATS_PASSWORD", "not-the-password")],
    );
    api.wait_exit(Duration::from_secs(20)).await;
    let log = api.output();
    assert!(log.contains("refused the credentials"), "{log}");
    assert!(
        !log.contains("not-the-password"),
        "the password leaked: {log}"
    );
    app.stop().await;
}

#[tokio::test]
async fn each_identity_is_refused_what_its_role_does_not_need() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("1.00", 3).await;
    app.credit("ivy", "5.00").await;

    // Only the api reads replies (they carry codes): the worker, the
    // operator and an intruder subscribing to every reply receive nothing
    // while a purchase is answered.
    let mut eavesdroppers = Vec::new();
    for role in [Role::Worker, Role::Operator, Role::Intruder] {
        let client = app.nats.connect(role).await;
        let sub = client.subscribe("giftcard.reply.>").await.unwrap();
        eavesdroppers.push((role, client, sub));
    }
    let (s, _, b) = app.buy("ivy", card, 1, Some("eaves"), "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    for (role, _client, sub) in &mut eavesdroppers {
        assert_eq!(
            received(sub, Duration::from_millis(500)).await,
            0,
            "{role:?} read a reply"
        );
    }

    // Only the api publishes purchases: the worker's and the operator's
    // publishes are refused by the server (never stored).
    let before = app.nats_purchases().await;
    for role in [Role::Worker, Role::Operator] {
        let js = jetstream::new(app.nats.connect(role).await);
        let ack = tokio::time::timeout(
            Duration::from_secs(3),
            js.publish(purchase_subject(card, app.options.partitions), "x".into()),
        )
        .await;
        let stored = match ack {
            Ok(Ok(f)) => matches!(
                tokio::time::timeout(Duration::from_secs(3), f).await,
                Ok(Ok(_))
            ),
            _ => false,
        };
        assert!(!stored, "{role:?} published a purchase");
    }
    assert_eq!(app.nats_purchases().await, before);

    // Nobody but the provisioner creates streams.
    for role in [Role::Api, Role::Worker, Role::Operator] {
        let js = jetstream::new(app.nats.connect(role).await);
        let made = js
            .create_stream(jetstream::stream::Config {
                name: "ROGUE".into(),
                subjects: vec!["rogue.>".into()],
                ..Default::default()
            })
            .await;
        assert!(made.is_err(), "{role:?} created a stream");
    }
    app.stop().await;
}

/// What a client holding only "publish to purchases.>, subscribe to
/// _INBOX.>" (a leaked credential) can do: have JetStream store a forged
/// purchase, and nothing more.
#[tokio::test]
async fn a_leaked_publish_credential_cannot_spend_a_wallet_or_receive_codes() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("1.00", 5).await;
    app.credit("alice", "10.00").await;
    let intruder = app.nats.connect(Role::Intruder).await;
    let mut inbox = intruder.subscribe("_INBOX.forger.>").await.unwrap();
    let js = jetstream::new(intruder.clone());

    // A purchase of 3 codes on alice's wallet, answered to the forger.
    let forged = json!({
        "v": 1,
        "purchase_id": uuid::Uuid::new_v4(),
        "user_id": "alice",
        "gift_card_id": card,
        "quantity": 3,
        "request_hash": giftcard_shared::domain::request_hash(
            card, giftcard_shared::domain::Quantity::parse(3).unwrap()),
        "idempotency_key": null,
        "accepted_at": chrono::Utc::now(),
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HEADER_REPLY_TO, "_INBOX.forger.1");
    // A made-up signature changes nothing.
    headers.insert("Giftcard-Signature", "v1 00000000 00");
    let ack = js
        .publish_with_headers(
            purchase_subject(card, app.options.partitions),
            headers,
            serde_json::to_vec(&forged).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .expect("JetStream stores what the credential may publish");
    assert!(ack.sequence > 0);

    let dl = dead_letter_with(&app, "unauthenticated").await;
    assert_eq!(
        dl["user_id"],
        Value::Null,
        "a forgery names nobody's purchase"
    );
    assert_eq!(dl["purchase_id"], Value::Null);
    assert_eq!(
        app.balance("alice").await,
        "10.00",
        "the wallet was touched"
    );
    assert_eq!(received(&mut inbox, Duration::from_secs(1)).await, 0);

    // It cannot be made genuine by a replay.
    let (s, _, b) = app
        .call(
            Method::POST,
            &format!(
                "/v1/admin/dead-letters/{}/replay",
                dl["id"].as_str().unwrap()
            ),
            Some(&app.admin_token()),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "DEAD_LETTER_NOT_AUTHENTIC", "{b}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.balance("alice").await, "10.00");

    // The worker serves alice as before.
    let (s, _, b) = app.buy("alice", card, 1, None, "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    invariants::check(&app.db).await;
    app.stop().await;
}

#[tokio::test]
async fn a_genuine_message_republished_to_the_forgers_inbox_reaches_nobody_and_charges_once() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("1.00", 5).await;
    app.credit("bob", "10.00").await;
    let (s, _, first) = app.buy("bob", card, 2, Some("genuine"), "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let sequence = first["sequence"].as_u64().unwrap();

    // The genuine, signed message as the stream holds it (the test reads
    // it; an eavesdropper on the wire could have too).
    let js = jetstream::new(app.nats_client().await);
    let stream = js
        .get_stream(giftcard_shared::contract::PURCHASES_STREAM)
        .await
        .unwrap();
    let genuine = stream.direct_get(sequence).await.unwrap();

    let intruder = app.nats.connect(Role::Intruder).await;
    let mut inbox = intruder.subscribe("_INBOX.forger.>").await.unwrap();
    let ijs = jetstream::new(intruder.clone());
    let publish = |headers: async_nats::HeaderMap| {
        let ijs = ijs.clone();
        let (subject, payload) = (genuine.subject.to_string(), genuine.payload.clone());
        async move {
            ijs.publish_with_headers(subject, headers, payload)
                .await
                .unwrap()
                .await
                .unwrap()
        }
    };
    // 1. Reply header pointed at the forger (fresh message id, past dedup).
    let mut h = genuine.headers.clone();
    h.insert(HEADER_REPLY_TO, "_INBOX.forger.codes");
    h.insert("Nats-Msg-Id", "replayed-by-forger-1");
    publish(h).await;
    dead_letter_with(&app, "does not match").await;
    // 2. Unchanged but under another message id: refused too (the id is
    //    signed), so even the genuine api's inbox gets nothing from it.
    let mut h = genuine.headers.clone();
    h.insert("Nats-Msg-Id", "replayed-by-forger-2");
    publish(h).await;
    // 3. Unchanged, same message id: the stream drops it as a duplicate.
    let dup = publish(genuine.headers.clone()).await;
    assert!(dup.duplicate);

    assert_eq!(received(&mut inbox, Duration::from_secs(2)).await, 0);
    assert_eq!(app.balance("bob").await, "8.00", "charged once");
    let again = app
        .wait_terminal("bob", first["id"].as_str().unwrap())
        .await;
    assert_eq!(again["activation_codes"], first["activation_codes"]);
    invariants::check(&app.db).await;
    app.stop().await;
}

/// Messages the workers verified with the `key` secret since they started.
async fn verified(http: &reqwest::Client, workers: &[WorkerProcess], key: &str) -> f64 {
    let mut sum = 0.0;
    for w in workers {
        sum += w
            .metric_where(
                http,
                "giftcard_worker_messages_verified_total",
                &[("key", key)],
            )
            .await;
    }
    sum
}

#[tokio::test]
async fn a_rotation_of_the_message_secret_under_load_loses_and_refuses_no_purchase() {
    const NEW: &str = "rotated-message-key-rotated-message-key-99";
    let app = TestApp::spawn_with(Options {
        partitions: 8,
        start_worker: false,
        ..Options::default()
    })
    .await;
    let http = app.http.clone();
    let mut apis = [
        ApiProcess::spawn_api(API.as_ref(), &app, "rot-api-a", &[]),
        ApiProcess::spawn_api(API.as_ref(), &app, "rot-api-b", &[]),
    ];
    let mut workers = [
        WorkerProcess::spawn_worker(WORKER.as_ref(), &app, "rot-w1", &[]),
        WorkerProcess::spawn_worker(WORKER.as_ref(), &app, "rot-w2", &[]),
    ];
    for p in apis.iter().chain(&workers) {
        p.wait_ready(&http).await;
    }
    wait_balanced(&app, &["rot-w1", "rot-w2"], Duration::from_secs(15)).await;
    let cards: Vec<uuid::Uuid> =
        futures::future::join_all((0..4).map(|_| app.card_with_stock("1.00", 400))).await;
    let users: Vec<String> = (0..8).map(|i| format!("rot{i}")).collect();
    for u in &users {
        app.credit(u, "200.00").await;
    }
    let urls: Vec<String> = apis.iter().map(|a| a.url.clone()).collect();
    let load = Load::start_on(&app, &urls, true, &cards, &users, 6, 2);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The runbook's order: workers accept both secrets, then apis sign with
    // the new one, then (the old one no longer in use) both drop it.
    let both = [
        ("GIFTCARD_MESSAGE_SECRET", Some(NEW)),
        ("GIFTCARD_MESSAGE_PREVIOUS_SECRET", Some(MESSAGE_SECRET)),
    ];
    let only_new = [
        ("GIFTCARD_MESSAGE_SECRET", Some(NEW)),
        ("GIFTCARD_MESSAGE_PREVIOUS_SECRET", None),
    ];
    for (n, step) in [&both, &only_new].into_iter().enumerate() {
        for w in workers.iter_mut() {
            w.terminate(Duration::from_secs(20)).await;
            w.restart_with(step.as_slice());
            w.wait_ready(&http).await;
        }
        if n == 0 {
            // The apis still sign with the old secret: the workers take it
            // as the previous one.
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(verified(&http, &workers, "previous").await > 0.0);
        }
        for a in apis.iter_mut() {
            a.terminate(Duration::from_secs(20)).await;
            a.restart_with(step.as_slice());
            a.wait_ready(&http).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let outcome = load.stop().await;
    assert!(
        outcome.other.is_empty(),
        "requests refused or unanswered: {:?}",
        outcome.other
    );
    assert!(outcome.accepted.len() >= 200, "too little load");
    let ids: BTreeSet<&str> = outcome.accepted.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        outcome.accepted.len(),
        "one purchase per request"
    );
    wait_all_terminal(&app, &outcome.accepted, Duration::from_secs(90)).await;

    // Nothing was refused as unauthenticated.
    let admin = app.admin_token();
    let (_, _, dls) = app
        .call(
            Method::GET,
            "/v1/admin/dead-letters?state=all",
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(dls["items"], json!([]), "dead letters during the rotation");
    assert!(verified(&http, &workers, "current").await > 0.0);
    assert_eq!(verified(&http, &workers, "previous").await, 0.0);
    let logs: String = workers.iter().map(|w| w.output()).collect();
    assert!(
        !logs.contains(NEW) && !logs.contains(MESSAGE_SECRET),
        "a secret reached the logs"
    );
    assert_eq!(app.purchase_count().await, outcome.accepted.len() as i64);
    invariants::check(&app.db).await;
    app.stop().await;
}

#[tokio::test]
async fn services_connect_over_tls_with_client_certificates_and_with_an_nkey() {
    let nkey = nkeys::KeyPair::new_user();
    let app = TestApp::spawn_with(Options {
        nats: NatsOptions {
            tls: true,
            extra_users: vec![format!(
                "{{ nkey: {}, permissions: $GIFTCARD_API_PERMISSIONS }}",
                nkey.public_key()
            )],
        },
        ..Options::default()
    })
    .await;
    assert!(app.nats.url().starts_with("tls://"));
    // The in-process api and worker (and the provisioning step) connected
    // over TLS with a client certificate: a purchase goes through.
    let card = app.card_with_stock("1.00", 5).await;
    app.credit("tess", "5.00").await;
    let (s, _, b) = app.buy("tess", card, 1, None, "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // Plain TCP is refused.
    let plain = app.nats.url().replace("tls://", "nats://");
    let mut settings = app.nats.settings(Role::Api);
    settings.url = plain;
    settings.tls_ca_file = None;
    settings.tls_cert_file = None;
    settings.tls_key_file = None;
    assert!(
        giftcard_shared::nats::connect(&settings, giftcard_shared::nats::API)
            .await
            .is_err()
    );

    // An api process authenticating with an nkey seed file.
    let seed = app.nats.store.path().join("api.nk");
    std::fs::write(&seed, nkey.seed().unwrap()).unwrap();
    let seed = seed.to_string_lossy().into_owned();
    let by_nkey = ApiProcess::spawn_api(
        API.as_ref(),
        &app,
        "nkey-api",
        &[
            ("NATS_USER", ""),
            ("NATS_PASSWORD", ""),
            ("NATS_NKEY_SEED_FILE", &seed),
        ],
    );
    by_nkey.wait_ready(&app.http).await;
    let (s, _, b) = app
        .call_at(
            &by_nkey.url,
            Method::POST,
            "/v1/purchases",
            Some(&app.token("tess")),
            Some(json!({"gift_card_id": card, "quantity": 1})),
            &[("Prefer", "wait=10")],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // Without the CA the server's certificate is not trusted: the process
    // stops, naming the setting to fix.
    let mut untrusting =
        ApiProcess::spawn_api(API.as_ref(), &app, "no-ca-api", &[("NATS_TLS_CA_FILE", "")]);
    untrusting.wait_exit(Duration::from_secs(20)).await;
    let log = untrusting.output();
    assert!(log.contains("NATS_TLS_CA_FILE"), "{log}");
    invariants::check(&app.db).await;
    app.stop().await;
}

#[tokio::test]
async fn the_api_metrics_listener_keeps_metrics_off_the_public_port() {
    let app = TestApp::spawn_with(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let port = giftcard_tests::servers::free_port();
    let listen = format!("127.0.0.1:{port}");
    let api = ApiProcess::spawn_api(
        API.as_ref(),
        &app,
        "metrics-apart",
        &[("GIFTCARD_API_METRICS_LISTEN", &listen)],
    );
    api.wait_ready(&app.http).await;
    let public = app
        .http
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let body: Value = public.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    let private = app
        .http
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(private.status(), StatusCode::OK);
    assert!(private
        .text()
        .await
        .unwrap()
        .contains("giftcard_api_purchases_total"));
    app.stop().await;
}
