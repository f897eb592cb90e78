use giftcard_tests::{assert_error, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn post_csv(app: &TestApp, card: uuid::Uuid, csv: &str) -> (StatusCode, serde_json::Value) {
    let r = app
        .http
        .post(format!("{}/v1/admin/gift-cards/{card}/codes", app.api_url))
        .bearer_auth(app.admin_token())
        .header("content-type", "text/csv")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap())
}

#[tokio::test]
async fn code_imports_count_duplicates_and_reject_bad_rows_whole() {
    let app = TestApp::spawn_with(giftcard_tests::Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let card = app.create_card("10.00").await;
    let csv = "code,expires_on\nA-1,\nA-2,2030-01-01\nA-3,2030-01-01T12:00:00Z\nA-1,\n";
    let (s, b) = post_csv(&app, card, csv).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({"inserted": 3, "duplicates": 1}));
    let (s, b) = post_csv(&app, card, csv).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b,
        json!({"inserted": 0, "duplicates": 4}),
        "the same file twice inserts nothing"
    );

    let (s, b) = post_csv(&app, card, "code,expires_on\nB-1,\nB 2,\n").await;
    let msg = assert_error(s, &b, 422, "VALIDATION_FAILED");
    assert!(msg.contains("row 2"), "names the row: {msg}");
    let (s, b) = post_csv(&app, card, "code,expires_on\nB-3,next week\n").await;
    assert_error(s, &b, 422, "VALIDATION_FAILED");
    let (s, b) = post_csv(&app, card, "wrong,header\nB-4,\n").await;
    assert_error(s, &b, 422, "VALIDATION_FAILED");
    let (s, _, c) = app
        .call(
            Method::GET,
            &format!("/v1/gift-cards/{card}"),
            Some(&app.token("u")),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["available_codes"], 3, "rejected imports inserted nothing");

    let (s, b) = post_csv(&app, uuid::Uuid::new_v4(), "code,expires_on\nZ,\n").await;
    assert_error(s, &b, 404, "GIFT_CARD_NOT_FOUND");
    let admin = app.admin_token();
    let (s, _, b) = app
        .call(
            Method::POST,
            &format!("/v1/admin/gift-cards/{card}/codes"),
            Some(&admin),
            Some(json!({"codes": [{"code": ""}]})),
            &[],
        )
        .await;
    assert_error(s, &b, 422, "VALIDATION_FAILED");
    let (s, _, b) = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/gift-cards/{card}/codes/NOPE"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_error(s, &b, 404, "NOT_FOUND");
    app.stop().await;
}

#[tokio::test]
async fn cards_and_credits_validate_money_and_apply_a_reference_once() {
    let app = TestApp::spawn_with(giftcard_tests::Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let admin = app.admin_token();
    for bad in [
        json!({"name": "x", "price": 10, "value": "1.00"}),
        json!({"name": "x", "price": "-1.00", "value": "1.00"}),
        json!({"name": "x", "price": "1.001", "value": "1.00"}),
        json!({"name": "", "price": "1.00", "value": "1.00"}),
        json!({"name": "x", "price": "0", "value": "1.00"}),
        json!({"name": "x", "price": "1.00"}),
    ] {
        let (s, _, b) = app
            .call(
                Method::POST,
                "/v1/admin/gift-cards",
                Some(&admin),
                Some(bad.clone()),
                &[],
            )
            .await;
        assert_error(s, &b, 422, "VALIDATION_FAILED");
    }
    let card = app.create_card("12.50").await;
    let (s, _, b) = app
        .call(
            Method::PATCH,
            &format!("/v1/admin/gift-cards/{card}"),
            Some(&admin),
            Some(json!({"name": "New", "price": "9.99"})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["name"].as_str(), b["price"].as_str(), b["value"].as_str()),
        (Some("New"), Some("9.99"), Some("12.50"))
    );
    let (s, _, b) = app
        .call(
            Method::PATCH,
            &format!("/v1/admin/gift-cards/{}", uuid::Uuid::new_v4()),
            Some(&admin),
            Some(json!({"active": true})),
            &[],
        )
        .await;
    assert_error(s, &b, 404, "GIFT_CARD_NOT_FOUND");

    let credit = json!({"amount": "100.00", "reference": "ref-1"});
    for _ in 0..3 {
        let (s, _, b) = app
            .call(
                Method::POST,
                "/v1/admin/wallets/kate/credits",
                Some(&admin),
                Some(credit.clone()),
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b, json!({"user_id": "kate", "balance": "100.00"}));
    }
    let (s, _, b) = app
        .call(
            Method::POST,
            "/v1/admin/wallets/kate/credits",
            Some(&admin),
            Some(json!({"amount": "5.00", "reference": "ref-1"})),
            &[],
        )
        .await;
    assert_error(s, &b, 422, "VALIDATION_FAILED");
    let (s, _, b) = app
        .call(
            Method::POST,
            "/v1/admin/wallets/kate/credits",
            Some(&admin),
            Some(json!({"amount": "-5.00", "reference": "r2"})),
            &[],
        )
        .await;
    assert_error(s, &b, 422, "VALIDATION_FAILED");
    assert_eq!(app.balance("kate").await, "100.00");
    assert_eq!(app.balance("newcomer").await, "0.00");
    let (s, _, list) = app
        .call(
            Method::GET,
            "/v1/gift-cards",
            Some(&app.token("kate")),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_sold_code_cannot_be_withdrawn() {
    let app = TestApp::spawn().await;
    let card = app.create_card("1.00").await;
    app.import_codes(card, &["ONLY".to_owned()]).await;
    app.credit("liz", "1.00").await;
    let (s, _, _) = app.buy("liz", card, 1, None, "wait=10").await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, b) = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/gift-cards/{card}/codes/ONLY"),
            Some(&app.admin_token()),
            None,
            &[],
        )
        .await;
    assert_error(s, &b, 409, "ACTIVATION_CODE_USED");
    app.stop().await;
}
