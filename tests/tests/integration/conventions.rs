//! HTTP conventions of the contract: the error body on every error,
//! `Retry-After` on 503 and 429, `Idempotent-Replayed`, capped request
//! ids, per-route metrics, load shedding, the API reference page and an
//! OpenAPI document that names every answer.

use std::collections::BTreeSet;
use std::time::Duration;

use giftcard_tests::processes::ApiProcess;
use giftcard_tests::{assert_error, Options, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const API: &str = env!("CARGO_BIN_EXE_giftcard-api-under-test");

#[tokio::test]
async fn errors_of_every_layer_carry_the_contract_body() {
    let app = TestApp::spawn_with(Options::without_worker()).await;
    let admin = app.admin_token();
    // Over the 64 KiB body limit on a route that reads raw bytes.
    let resp = app
        .http
        .post(format!("{}/v1/admin/dead-letters/replay", app.api_url))
        .bearer_auth(&admin)
        .header("Content-Type", "application/json")
        .body(vec![b' '; 200 * 1024])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let b: Value = resp.json().await.expect("a JSON error body");
    assert_error(status, &b, 413, "PAYLOAD_TOO_LARGE");
    let (s, _, b) = app
        .call(Method::GET, "/no/such/route", None, None, &[])
        .await;
    assert_error(s, &b, 404, "NOT_FOUND");
    let (s, _, b) = app
        .call(Method::PUT, "/v1/purchases", Some(&admin), None, &[])
        .await;
    assert_error(s, &b, 405, "METHOD_NOT_ALLOWED");
    let (s, _, b) = app.call(Method::GET, "/v1/wallet", None, None, &[]).await;
    assert_error(s, &b, 401, "UNAUTHENTICATED");
    app.stop().await;
}

#[tokio::test]
async fn a_retried_purchase_is_marked_idempotent_replayed() {
    let mut app = TestApp::spawn().await;
    let card = app.card_with_stock("1.00", 5).await;
    app.credit("ida", "5.00").await;
    let (s, h, b) = app.buy("ida", card, 1, Some("k1"), "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(!h.contains_key("idempotent-replayed"), "a first answer");
    let (s, h, again) = app.buy("ida", card, 1, Some("k1"), "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{again}");
    assert_eq!(h["idempotent-replayed"], "true");
    assert_eq!(again["id"], b["id"]);
    assert_eq!(again["activation_codes"], b["activation_codes"]);

    // Queued, not yet processed: a retry is answered from the queue.
    app.stop_worker().await;
    let (s, h, first) = app.buy("ida", card, 1, Some("k2"), "respond-async").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    assert!(!h.contains_key("idempotent-replayed"));
    let (s, h, b) = app.buy("ida", card, 1, Some("k2"), "respond-async").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(h["idempotent-replayed"], "true");
    assert_eq!(b["id"], first["id"]);
    app.stop().await;
}

#[tokio::test]
async fn request_ids_are_echoed_only_when_short_and_visible() {
    let app = TestApp::spawn_with(Options::without_worker()).await;
    let echoed = |id: String| {
        let app = &app;
        async move {
            let (_, h, _) = app
                .call(
                    Method::GET,
                    "/healthz",
                    None,
                    None,
                    &[("X-Request-Id", &id)],
                )
                .await;
            h["x-request-id"].to_str().unwrap().to_owned()
        }
    };
    let ok = "a".repeat(128);
    assert_eq!(echoed(ok.clone()).await, ok);
    for bad in ["a".repeat(129), "two words".to_owned()] {
        let got = echoed(bad.clone()).await;
        assert_ne!(got, bad);
        assert!(
            uuid::Uuid::parse_str(&got).is_ok(),
            "replaced by a UUID: {got}"
        );
    }
    app.stop().await;
}

/// `giftcard_api_http_requests_total{method,route,status_class}`: 401s,
/// 4xx and 2xx visible per route template, never per raw path.
#[tokio::test]
async fn requests_are_counted_per_route_template_and_status_class() {
    let app = TestApp::spawn_with(Options::without_worker()).await;
    let api = ApiProcess::spawn_api(API.as_ref(), &app, "routes-api", &[]);
    api.wait_ready(&app.http).await;
    let id = uuid::Uuid::new_v4();
    let get = |path: String, token: Option<String>| {
        let (http, url) = (app.http.clone(), api.url.clone());
        async move {
            let mut r = http.get(format!("{url}{path}"));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send().await.unwrap().status()
        }
    };
    assert_eq!(get("/v1/wallet".into(), None).await, 401);
    assert_eq!(
        get(format!("/v1/purchases/{id}"), Some(app.token("m"))).await,
        404
    );
    assert_eq!(
        get("/v1/gift-cards".into(), Some(app.token("m"))).await,
        200
    );
    let text = api
        .metrics_text(&app.http)
        .await
        .expect("the api's /metrics");
    for series in [
        r#"giftcard_api_http_requests_total{method="GET",route="/v1/wallet",status_class="4xx"} 1"#,
        r#"giftcard_api_http_requests_total{method="GET",route="/v1/purchases/{id}",status_class="4xx"} 1"#,
        r#"giftcard_api_http_requests_total{method="GET",route="/v1/gift-cards",status_class="2xx"} 1"#,
        r#"giftcard_api_http_request_duration_seconds_count{method="GET",route="/v1/wallet",status_class="4xx"} 1"#,
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    assert!(
        !text.contains(&id.to_string()),
        "a raw path reached a label"
    );
    app.stop().await;
}

/// Over `GIFTCARD_MAX_IN_FLIGHT` a request is shed at once with 503 and
/// `Retry-After` (health stays up); over `GIFTCARD_MAX_WAITING_PURCHASES`
/// a purchase is answered 202 as soon as it is queued.
#[tokio::test]
async fn requests_over_the_limits_are_shed_or_not_held() {
    let app = TestApp::spawn_with(Options::without_worker()).await;
    let card = app.card_with_stock("1.00", 5).await;
    let shedding = ApiProcess::spawn_api(
        API.as_ref(),
        &app,
        "shed-api",
        &[("GIFTCARD_MAX_IN_FLIGHT", "2")],
    );
    let holding = ApiProcess::spawn_api(
        API.as_ref(),
        &app,
        "hold-api",
        &[("GIFTCARD_MAX_WAITING_PURCHASES", "1")],
    );
    shedding.wait_ready(&app.http).await;
    holding.wait_ready(&app.http).await;
    let buy = |url: String, key: &'static str| {
        let (http, token) = (app.http.clone(), app.token("shed"));
        async move {
            let r = http
                .post(format!("{url}/v1/purchases"))
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .header("Prefer", "wait=10")
                .json(&json!({"gift_card_id": card}))
                .send()
                .await
                .unwrap();
            let (s, h) = (r.status(), r.headers().clone());
            (s, h, r.json::<Value>().await.unwrap())
        }
    };
    // No worker runs: each purchase waits its full 10 s.
    let held: Vec<_> = ["a", "b"]
        .map(|k| tokio::spawn(buy(shedding.url.clone(), k)))
        .into();
    while shedding
        .metric(&app.http, "giftcard_api_requests_in_flight")
        .await
        < 2.0
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, h, b) = buy(shedding.url.clone(), "c").await;
    assert_error(s, &b, 503, "SERVICE_UNAVAILABLE");
    assert_eq!(h["retry-after"], "1");
    let health = app
        .http
        .get(format!("{}/healthz", shedding.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK, "health is never shed");
    for h in held {
        let (s, _, b) = h.await.unwrap();
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    }
    assert_eq!(
        shedding
            .metric(&app.http, "giftcard_api_requests_shed_total")
            .await,
        1.0
    );

    let waiting = tokio::spawn(buy(holding.url.clone(), "w1"));
    while holding
        .metric(&app.http, "giftcard_api_purchases_waiting")
        .await
        < 1.0
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, _, b) = buy(holding.url.clone(), "w2").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert!(!waiting.is_finished(), "the first is still held");
    assert_eq!(
        holding
            .metric(&app.http, "giftcard_api_purchases_not_held_total")
            .await,
        1.0
    );
    assert_eq!(waiting.await.unwrap().0, StatusCode::ACCEPTED);
    app.stop().await;
}

/// `/docs` renders `/openapi.json` with the vendored Swagger UI under a
/// strict Content-Security-Policy, and the document declares what every
/// operation can answer and names every error code.
#[tokio::test]
async fn the_reference_page_is_served_and_the_document_declares_every_answer() {
    let app = TestApp::spawn_with(Options::without_worker()).await;
    let page = app
        .http
        .get(format!("{}/docs", app.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    let html = page.text().await.unwrap();
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/init.js",
    ] {
        assert!(html.contains(asset), "the page loads {asset}");
        let r = app
            .http
            .get(format!("{}{asset}", app.api_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
        assert!(r.bytes().await.unwrap().len() > 100);
    }
    assert!(!html.contains("http"), "nothing is loaded from elsewhere");

    let (s, _, doc) = app
        .call(Method::GET, "/openapi.json", None, None, &[])
        .await;
    assert_eq!(s, StatusCode::OK);
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let r = &op["responses"];
            let has = |status: &str| r.get(status).is_some();
            let what = format!("{} {path}", method.to_uppercase());
            if op.get("security").is_some() {
                assert!(has("401"), "{what} does not declare 401");
            }
            if path.starts_with("/v1/admin/") {
                assert!(has("403"), "{what} does not declare 403");
            }
            if op.get("requestBody").is_some() {
                assert!(has("400") && has("422"), "{what} takes a body: 400/422");
            } else if op.get("parameters").is_some() {
                assert!(has("400"), "{what} takes parameters: 400");
            }
            if path.starts_with("/v1/") {
                assert!(has("503"), "{what} does not declare 503");
            }
            operations += 1;
        }
    }
    assert!(
        doc["paths"]["/v1/purchases"]["post"]["responses"]
            .get("429")
            .is_some(),
        "purchases declare 429"
    );
    let text = doc.to_string();
    let missing: BTreeSet<&str> = giftcard_api::error::all_codes()
        .into_iter()
        .filter(|c| !text.contains(&format!("\"{c}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "codes not named in the document: {missing:?}"
    );
    eprintln!("{operations} operations checked");
    app.stop().await;
}
