use giftcard_tests::{assert_error, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn raw_post(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    ctype: &str,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let mut req = app
        .http
        .post(format!("{}{path}", app.api_url))
        .header("content-type", ctype)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn malformed_purchase_requests_get_4xx_with_the_error_body() {
    let app = TestApp::spawn_with(giftcard_tests::Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let t = app.token("alice");
    let card = uuid::Uuid::new_v4();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("application/json", b"{not json".to_vec(), 400),
        ("application/json", b"".to_vec(), 400),
        ("application/json", br#"{"gift_card_id": 5}"#.to_vec(), 422),
        (
            "application/json",
            br#"{"gift_card_id": "not-a-uuid"}"#.to_vec(),
            422,
        ),
        ("application/json", br#"{}"#.to_vec(), 422),
        ("application/json", br#"[]"#.to_vec(), 422),
        (
            "application/json",
            format!(r#"{{"gift_card_id": "{card}", "quantity": 0}}"#).into_bytes(),
            422,
        ),
        (
            "application/json",
            format!(r#"{{"gift_card_id": "{card}", "quantity": 11}}"#).into_bytes(),
            422,
        ),
        (
            "application/json",
            format!(r#"{{"gift_card_id": "{card}", "quantity": "1"}}"#).into_bytes(),
            422,
        ),
        (
            "application/json",
            format!(r#"{{"gift_card_id": "{card}", "quantity": 1.5}}"#).into_bytes(),
            422,
        ),
        (
            "application/json",
            format!(r#"{{"gift_card_id": "{card}", "extra": true}}"#).into_bytes(),
            422,
        ),
        (
            "text/plain",
            format!(r#"{{"gift_card_id": "{card}"}}"#).into_bytes(),
            415,
        ),
    ];
    for (ctype, body, want) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (s, b) = raw_post(&app, "/v1/purchases", Some(&t), ctype, body).await;
        assert_eq!(s.as_u16(), want, "{shown}: {b}");
        assert!(
            b["error"]["code"].is_string() && b["error"]["message"].is_string(),
            "{shown}: {b}"
        );
        if want == 400 || want == 422 {
            assert_eq!(b["error"]["code"], "VALIDATION_FAILED", "{shown}");
        }
    }
    let huge = format!(
        r#"{{"gift_card_id": "{card}", "pad": "{}"}}"#,
        "x".repeat(200_000)
    )
    .into_bytes();
    let (s, b) = raw_post(&app, "/v1/purchases", Some(&t), "application/json", huge).await;
    assert_error(s, &b, 413, "PAYLOAD_TOO_LARGE");

    let body = json!({"gift_card_id": card});
    for (k, v) in [("Idempotency-Key", "has space"), ("Prefer", "wait=soon")] {
        let (s, _, b) = app
            .call(
                Method::POST,
                "/v1/purchases",
                Some(&t),
                Some(body.clone()),
                &[(k, v)],
            )
            .await;
        assert_error(s, &b, 400, "VALIDATION_FAILED");
    }
    let long_key = "k".repeat(256);
    let (s, _, b) = app
        .call(
            Method::POST,
            "/v1/purchases",
            Some(&t),
            Some(body),
            &[("Idempotency-Key", long_key.as_str())],
        )
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    app.stop().await;
}

#[tokio::test]
async fn bad_expired_or_missing_tokens_are_401_and_non_admins_get_403() {
    let app = TestApp::spawn_with(giftcard_tests::Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let expired = giftcard_shared::auth::mint(
        giftcard_tests::SECRET,
        "alice",
        false,
        chrono::Duration::seconds(-10),
    )
    .unwrap();
    let wrong_key = giftcard_shared::auth::mint(
        "another-secret-another-secret-0000",
        "alice",
        true,
        chrono::Duration::minutes(5),
    )
    .unwrap();
    for token in [
        None,
        Some("garbage"),
        Some(expired.as_str()),
        Some(wrong_key.as_str()),
        Some(""),
    ] {
        let (s, _, b) = app.call(Method::GET, "/v1/wallet", token, None, &[]).await;
        assert_error(s, &b, 401, "UNAUTHENTICATED");
    }
    let (s, _, b) = app
        .call(
            Method::POST,
            "/v1/admin/gift-cards",
            Some(&app.token("alice")),
            Some(json!({"name": "x", "price": "1.00", "value": "1.00"})),
            &[],
        )
        .await;
    assert_error(s, &b, 403, "FORBIDDEN");
    let (s, _, b) = app
        .call(
            Method::GET,
            "/v1/admin/dead-letters",
            Some(&app.token("alice")),
            None,
            &[],
        )
        .await;
    assert_error(s, &b, 403, "FORBIDDEN");
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let (s, _, _) = app.call(Method::GET, open, None, None, &[]).await;
        assert_eq!(s, StatusCode::OK, "{open} needs no token");
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_ids_and_other_users_purchases_are_404() {
    let app = TestApp::spawn_with(giftcard_tests::Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let t = app.token("alice");
    let (s, _, b) = app
        .call(Method::GET, "/v1/nothing-here", Some(&t), None, &[])
        .await;
    assert_error(s, &b, 404, "NOT_FOUND");
    let (s, _, b) = app
        .call(
            Method::GET,
            &format!("/v1/purchases/{}", uuid::Uuid::new_v4()),
            Some(&t),
            None,
            &[],
        )
        .await;
    assert_error(s, &b, 404, "NOT_FOUND");
    let (s, _, b) = app
        .call(Method::GET, "/v1/purchases/not-a-uuid", Some(&t), None, &[])
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, _, b) = app
        .call(
            Method::GET,
            &format!("/v1/gift-cards/{}", uuid::Uuid::new_v4()),
            Some(&t),
            None,
            &[],
        )
        .await;
    assert_error(s, &b, 404, "GIFT_CARD_NOT_FOUND");
    let (s, _, b) = app
        .call(Method::GET, "/v1/purchases?limit=0", Some(&t), None, &[])
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, _, b) = app
        .call(Method::GET, "/v1/purchases?cursor=zzz", Some(&t), None, &[])
        .await;
    assert_error(s, &b, 400, "VALIDATION_FAILED");
    let (s, _, b) = app
        .call(Method::PUT, "/v1/purchases", Some(&t), None, &[])
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{b}");
    app.stop().await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated_and_openapi_is_served() {
    let app = TestApp::spawn_with(giftcard_tests::Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let (_, h, _) = app
        .call(
            Method::GET,
            "/healthz",
            None,
            None,
            &[("X-Request-Id", "abc-123")],
        )
        .await;
    assert_eq!(h["x-request-id"], "abc-123");
    let (_, h, _) = app.call(Method::GET, "/v1/wallet", None, None, &[]).await;
    assert!(!h["x-request-id"].is_empty(), "generated for errors too");
    let (s, _, doc) = app
        .call(Method::GET, "/openapi.json", None, None, &[])
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/v1/purchases",
        "/v1/purchases/{id}",
        "/v1/gift-cards",
        "/v1/wallet",
        "/v1/admin/gift-cards/{id}/codes",
        "/v1/admin/dead-letters",
        "/v1/admin/dead-letters/{id}/replay",
        "/readyz",
    ] {
        assert!(doc["paths"][path].is_object(), "OpenAPI lacks {path}");
    }
    let (s, _, r) = app.call(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["status"], "ready");
    app.stop().await;
}
