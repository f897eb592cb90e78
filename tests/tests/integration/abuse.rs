//! Abuse and overload: nothing a caller sends can exhaust, stall or
//! corrupt the service. Real api processes with their limits set, real
//! NATS and PostgreSQL.

use std::time::{Duration, Instant};

use futures::StreamExt;
use giftcard_tests::processes::ApiProcess;
use giftcard_tests::{assert_error, invariants, Options, TestApp};
use reqwest::{Method, StatusCode};
use sea_orm::ConnectionTrait;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const API: &str = env!("CARGO_BIN_EXE_giftcard-api-under-test");

/// One user bursting 60 purchases at 5/s: most are refused with 429 and
/// `Retry-After` before anything is queued; nothing refused is charged;
/// another user is served meanwhile; after `Retry-After` the user buys again.
#[tokio::test]
async fn a_user_bursting_purchases_is_rate_limited_and_charged_only_for_what_was_accepted() {
    let mut app = TestApp::spawn().await;
    let api = ApiProcess::spawn_api(
        API.as_ref(),
        &app,
        "rate-api",
        &[("GIFTCARD_USER_RATE_LIMIT", "5")],
    );
    api.wait_ready(&app.http).await;
    app.api_url = api.url.clone();
    let card = app.card_with_stock("1.00", 100).await;
    app.credit("burst", "100.00").await;
    app.credit("calm", "10.00").await;

    let app_ref = &app;
    let burst = futures::stream::iter(0..60)
        .map(|i| async move {
            app_ref
                .buy("burst", card, 1, Some(&format!("burst-{i}")), "wait=10")
                .await
        })
        .buffer_unordered(60)
        .collect::<Vec<_>>();
    let calm = app.buy("calm", card, 1, Some("calm-1"), "wait=10");
    let (answers, (calm_status, _, calm_body)) = tokio::join!(burst, calm);
    assert_eq!(calm_status, StatusCode::CREATED, "{calm_body}");

    let mut accepted = 0;
    let mut retry_after = 0;
    for (s, h, b) in &answers {
        match s.as_u16() {
            201 => accepted += 1,
            429 => {
                assert_error(*s, b, 429, "RATE_LIMITED");
                let secs: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(secs >= 1, "Retry-After {secs}");
                retry_after = retry_after.max(secs);
            }
            other => panic!("unexpected {other}: {b}"),
        }
    }
    let refused = answers.len() - accepted;
    eprintln!("60 purchases in a burst at 5/s: {accepted} accepted, {refused} refused with 429 (Retry-After up to {retry_after} s)");
    assert!(refused >= 30, "only {refused} of 60 were refused");
    // Nothing refused was queued or charged.
    assert_eq!(app.nats_purchases().await, accepted as u64 + 1);
    assert_eq!(app.balance("burst").await, format!("{}.00", 100 - accepted));

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (s, _, b) = app.buy("burst", card, 1, Some("after"), "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "after Retry-After: {b}");
    assert!(
        api.metric(&app.http, "giftcard_api_purchases_rate_limited_total")
            .await
            >= 30.0
    );
    invariants::check(&app.db).await;
    app.stop().await;
}

/// 200 clients sending their headers a byte a second hold no connection
/// for long: `/healthz` answers meanwhile, and every one of them is
/// dropped within 60 s (the header timeout is 30 s).
#[tokio::test]
async fn slow_header_clients_are_dropped_while_others_are_served() {
    let app = TestApp::spawn_with(Options::without_worker()).await;
    let api = ApiProcess::spawn_api(API.as_ref(), &app, "slow-api", &[]);
    api.wait_ready(&app.http).await;
    let addr = api.url.trim_start_matches("http://").to_owned();

    let started = Instant::now();
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
                let (mut read, mut write) = stream.into_split();
                let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
                let trickle = async {
                    for b in request.iter().take(request.len() - 2) {
                        if write.write_all(&[*b]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    // Never finishes the headers.
                    futures::future::pending::<()>().await;
                };
                let closed = async {
                    let mut buf = [0u8; 256];
                    // EOF or reset: the server dropped the connection.
                    while let Ok(n) = read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                };
                tokio::select! {
                    _ = trickle => unreachable!(),
                    _ = closed => {}
                }
                started.elapsed()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resp = app
        .http
        .get(format!("{}/healthz", api.url))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/healthz answers while 200 clients trickle their headers");
    assert_eq!(resp.status(), StatusCode::OK);

    let mut last = Duration::ZERO;
    for c in clients {
        let dropped = tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("a slow client was still connected after 60 s")
            .expect("client task");
        last = last.max(dropped);
    }
    eprintln!("200 slow-header clients: all dropped after {last:?}");
    assert!(api.alive());
    app.stop().await;
}

/// Peak resident memory of a process (kB), from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// A 16 MiB CSV of tiny rows (millions of them) is refused with 413 at the
/// row cap, and the api's memory stays bounded.
#[tokio::test]
async fn a_16_mib_csv_of_tiny_rows_is_refused_in_bounded_memory() {
    let app = TestApp::spawn_with(Options::without_worker()).await;
    let api = ApiProcess::spawn_api(API.as_ref(), &app, "csv-api", &[]);
    api.wait_ready(&app.http).await;
    let mut app = app;
    app.api_url = api.url.clone();
    let card = app.create_card("1.00").await;
    let mut body = String::from("code,expires_on\n");
    while body.len() + 3 <= 16 * 1024 * 1024 {
        body.push_str("a,\n");
    }
    let rows = body.lines().count() - 1;
    let started = Instant::now();
    let resp = app
        .http
        .post(format!("{}/v1/admin/gift-cards/{card}/codes", api.url))
        .bearer_auth(app.admin_token())
        .header("Content-Type", "text/csv")
        .body(body)
        .send()
        .await
        .expect("answered");
    let took = started.elapsed();
    let status = resp.status();
    let b: serde_json::Value = resp.json().await.expect("an error body");
    assert_error(status, &b, 413, "PAYLOAD_TOO_LARGE");
    let peak = peak_rss_kib(api.pid());
    eprintln!(
        "16 MiB CSV of {rows} rows: {status} in {took:?}; api peak RSS {} MiB",
        peak / 1024
    );
    assert!(peak < 256 * 1024, "peak RSS {} MiB", peak / 1024);
    let (s, _, b) = app
        .call(
            Method::GET,
            &format!("/v1/gift-cards/{card}"),
            Some(&app.token("x")),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["available_codes"], 0, "nothing of it was imported");
    app.stop().await;
}

/// Both streams carry limits: PURCHASES a size with discard "new" (a full
/// stream refuses new purchases, 503, and drops nothing), PURCHASES_DLQ an
/// age.
#[tokio::test]
async fn both_streams_report_their_limits_and_a_full_stream_refuses_new_purchases_only() {
    let app = TestApp::spawn_with(Options::without_worker()).await;
    let js = async_nats::jetstream::new(app.nats_client().await);
    let mut purchases = js.get_stream("PURCHASES").await.unwrap();
    let config = purchases.info().await.unwrap().config.clone();
    eprintln!(
        "PURCHASES: max_bytes {}, discard {:?}, max_age {:?}",
        config.max_bytes, config.discard, config.max_age
    );
    assert_eq!(config.max_bytes, giftcard_tests::TEST_PURCHASES_MAX_BYTES);
    assert_eq!(
        config.discard,
        async_nats::jetstream::stream::DiscardPolicy::New
    );
    let dlq = js
        .get_stream("PURCHASES_DLQ")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    eprintln!("PURCHASES_DLQ: max_age {:?}", dlq.max_age);
    assert_eq!(dlq.max_age, Duration::from_secs(30 * 24 * 3600));

    // Shrink the stream to a few messages and fill it.
    let mut tiny = app.topology_options();
    tiny.max_bytes = 8 * 1024;
    app.nats.provision(&tiny).await;
    let card = app.card_with_stock("1.00", 1).await;
    let mut queued = 0;
    let mut refused = None;
    for i in 0..100 {
        let (s, h, b) = app
            .buy(
                "filler",
                card,
                1,
                Some(&format!("fill-{i}")),
                "respond-async",
            )
            .await;
        match s.as_u16() {
            202 => queued += 1,
            _ => {
                assert_error(s, &b, 503, "SERVICE_UNAVAILABLE");
                assert!(h.contains_key("retry-after"));
                refused = Some(b);
                break;
            }
        }
    }
    let refused = refused.expect("a full stream refuses new purchases");
    eprintln!("full stream after {queued} purchases: {refused}");
    assert!(queued > 0);
    let state = purchases.info().await.unwrap().state.clone();
    assert_eq!(
        state.messages, queued,
        "every queued purchase is still there"
    );
    assert_eq!(state.first_sequence, 1, "nothing old was dropped");
    app.stop().await;
}

/// Money is exact: more than two decimal places is refused, never
/// rounded, and a credit that would overflow a balance is a 422 that
/// changes nothing.
#[tokio::test]
async fn amounts_are_exact_and_a_balance_cannot_overflow() {
    let app = TestApp::spawn_with(Options::without_worker()).await;
    let admin = app.admin_token();
    let credit = |amount: &'static str, reference: String| {
        let app = &app;
        let admin = admin.clone();
        async move {
            app.call(
                Method::POST,
                "/v1/admin/wallets/exact/credits",
                Some(&admin),
                Some(json!({"amount": amount, "reference": reference})),
                &[],
            )
            .await
        }
    };
    for bad in ["0.0100000000000000000000000000001", "1.000", "+1.00", "1e2"] {
        let (s, _, b) = credit(bad, uuid::Uuid::new_v4().to_string()).await;
        assert_error(s, &b, 422, "VALIDATION_FAILED");
    }
    let (s, _, b) = app
        .call(
            Method::POST,
            "/v1/admin/gift-cards",
            Some(&admin),
            Some(json!({"name": "x", "price": "1000000000.00", "value": "1.00"})),
            &[],
        )
        .await;
    assert_error(s, &b, 422, "VALIDATION_FAILED");

    let (s, _, b) = credit("999999999.99", "first".into()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Bring the balance next to the column's limit without 1000 credits.
    app.db
        .execute_unprepared(
            "UPDATE wallets SET balance = 999999999999.00 WHERE user_id = 'exact'; \
             UPDATE wallet_entries SET amount = 999999999999.00 WHERE reference = 'first'",
        )
        .await
        .unwrap();
    let (s, _, b) = credit("1.00", "overflow".into()).await;
    let msg = assert_error(s, &b, 422, "VALIDATION_FAILED");
    assert!(msg.contains("999999999999.99"), "{msg}");
    assert_eq!(app.balance("exact").await, "999999999999.00");
    let (s, _, b) = credit("0.99", "fits".into()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["balance"], "999999999999.99");
    // The refused reference was not used up.
    let (s, _, b) = credit("1.00", "overflow".into()).await;
    assert_error(s, &b, 422, "VALIDATION_FAILED");
    invariants::check(&app.db).await;
    app.stop().await;
}
