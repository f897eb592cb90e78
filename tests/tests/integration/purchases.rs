use std::collections::HashSet;

use giftcard_tests::{invariants, Options, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn purchase_with_stock_and_funds_succeeds_with_one_code() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("10.00", 3).await;
    app.credit("alice", "25.00").await;

    let (s, h, b) = app.buy("alice", card, 1, Some("k1"), "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["status"], "succeeded");
    assert_eq!(b["unit_price"], "10.00");
    assert_eq!(b["total"], "10.00");
    assert_eq!(b["activation_codes"].as_array().unwrap().len(), 1);
    assert!(b["error"].is_null());
    assert!(b["sequence"].as_u64().unwrap() >= 1);
    assert!(h.contains_key("x-request-id"));
    assert_eq!(app.balance("alice").await, "15.00");

    let id = b["id"].as_str().unwrap();
    let (s, _, got) = app
        .call(
            Method::GET,
            &format!("/v1/purchases/{id}"),
            Some(&app.token("alice")),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, b, "GET returns what the POST answered");

    let (_, _, cards) = app
        .call(
            Method::GET,
            &format!("/v1/gift-cards/{card}"),
            Some(&app.token("alice")),
            None,
            &[],
        )
        .await;
    assert_eq!(cards["available_codes"], 2);
    invariants::check(&app.db).await;
    app.stop().await;
}

#[tokio::test]
async fn codes_are_assigned_soonest_expiring_first_skipping_expired_and_deleted() {
    let app = TestApp::spawn().await;
    let card = app.create_card("5.00").await;
    let admin = app.admin_token();
    let (s, _, b) = app
        .call(
            Method::POST,
            &format!("/v1/admin/gift-cards/{card}/codes"),
            Some(&admin),
            Some(json!({"codes": [
                {"code": "NEVER", "expires_on": null},
                {"code": "LATE", "expires_on": "2099-01-01"},
                {"code": "SOON", "expires_on": "2090-01-01T00:00:00Z"},
                {"code": "EXPIRED", "expires_on": "2001-01-01"},
                {"code": "WITHDRAWN", "expires_on": "2080-01-01"},
            ]})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({"inserted": 5, "duplicates": 0}));
    let (s, _, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/gift-cards/{card}/codes/WITHDRAWN"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    app.credit("bob", "100.00").await;

    let (s, _, b) = app.buy("bob", card, 2, None, "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let mut codes: Vec<String> = serde_json::from_value(b["activation_codes"].clone()).unwrap();
    codes.sort();
    assert_eq!(codes, vec!["LATE", "SOON"]);
    assert_eq!(b["total"], "10.00");

    // A code imported now that expires sooner than the ones already sold
    // is next, even though the worker resumes its scan after the last sale.
    app.import_codes_expiring(card, "SOONEST", "2085-01-01")
        .await;
    let (s, _, b) = app.buy("bob", card, 1, None, "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["activation_codes"], json!(["SOONEST"]));

    let (s, _, b) = app.buy("bob", card, 1, None, "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["activation_codes"], json!(["NEVER"]));

    let (s, _, b) = app.buy("bob", card, 1, None, "wait=10").await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["status"], "failed");
    assert_eq!(b["error"]["code"], "ACTIVATION_CODES_NOT_AVAILABLE");
    assert!(b.get("activation_codes").is_none());
    assert_eq!(app.balance("bob").await, "80.00");
    invariants::check(&app.db).await;
    app.stop().await;
}

#[tokio::test]
async fn sixty_four_concurrent_buyers_of_scarce_stock_get_distinct_codes_in_sequence_order() {
    let app = TestApp::spawn_with(Options {
        partitions: 8,
        ..Options::default()
    })
    .await;
    let stock = 40;
    let card = app.card_with_stock("3.00", stock).await;
    for i in 0..64 {
        app.credit(&format!("buyer{i}"), "10.00").await;
    }
    let results = futures::future::join_all((0..64).map(|i| {
        let app = &app;
        async move {
            app.buy(
                &format!("buyer{i}"),
                card,
                1,
                Some(&format!("key-{i}")),
                "wait=30",
            )
            .await
        }
    }))
    .await;

    let mut winners = Vec::new();
    let mut losers = Vec::new();
    let mut codes = HashSet::new();
    for (s, _, b) in &results {
        match *s {
            StatusCode::CREATED => {
                for c in b["activation_codes"].as_array().unwrap() {
                    assert!(
                        codes.insert(c.as_str().unwrap().to_owned()),
                        "code {c} assigned twice"
                    );
                }
                winners.push(b["sequence"].as_u64().unwrap());
            }
            StatusCode::CONFLICT => {
                assert_eq!(b["error"]["code"], "ACTIVATION_CODES_NOT_AVAILABLE", "{b}");
                losers.push(b["sequence"].as_u64().unwrap());
            }
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(winners.len(), stock, "exactly `stock` buyers succeed");
    assert_eq!(losers.len(), 64 - stock);
    let last_winner = winners.iter().max().unwrap();
    let first_loser = losers.iter().min().unwrap();
    assert!(
        last_winner < first_loser,
        "winners are the lowest sequences ({last_winner} vs {first_loser})"
    );
    for (s, _, b) in &results {
        let user = b["user_id"].as_str().unwrap();
        let want = if *s == StatusCode::CREATED {
            "7.00"
        } else {
            "10.00"
        };
        assert_eq!(app.balance(user).await, want);
    }
    let (_, _, c) = app
        .call(
            Method::GET,
            &format!("/v1/gift-cards/{card}"),
            Some(&app.token("x")),
            None,
            &[],
        )
        .await;
    assert_eq!(c["available_codes"], 0);
    invariants::check(&app.db).await;
    app.assert_no_lock_waits();
    app.stop().await;
}

#[tokio::test]
async fn business_failures_are_terminal_results_with_their_codes() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("10.00", 5).await;
    app.credit("poor", "9.99").await;

    let (s, _, b) = app.buy("poor", card, 1, None, "wait=10").await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "INSUFFICIENT_FUNDS");
    assert_eq!(b["status"], "failed");
    assert_eq!(app.balance("poor").await, "9.99");

    let (s, _, b) = app
        .buy("poor", uuid::Uuid::new_v4(), 1, None, "wait=10")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(b["status"], "failed");
    assert_eq!(b["error"]["code"], "GIFT_CARD_NOT_FOUND");

    let (s, _, b) = app
        .call(
            Method::PATCH,
            &format!("/v1/admin/gift-cards/{card}"),
            Some(&app.admin_token()),
            Some(json!({"active": false})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["active"], false);
    app.credit("rich", "100.00").await;
    let (s, _, b) = app.buy("rich", card, 1, None, "wait=10").await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(b["error"]["code"], "GIFT_CARD_INACTIVE");

    let (s, _, b) = app
        .buy("nobody-has-no-wallet", card, 1, None, "wait=10")
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    invariants::check(&app.db).await;
    app.stop().await;
}

#[tokio::test]
async fn accepted_purchase_reads_pending_then_reaches_its_terminal_state() {
    let mut app = TestApp::spawn_with(Options {
        start_worker: false,
        ..Options::default()
    })
    .await;
    let card = app.card_with_stock("1.00", 2).await;
    app.credit("carol", "5.00").await;

    let (s, h, b) = app
        .buy("carol", card, 1, Some("async-1"), "respond-async")
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["status"], "pending");
    assert!(b["unit_price"].is_null() && b["total"].is_null());
    assert!(b.get("activation_codes").is_none());
    let id = b["id"].as_str().unwrap().to_owned();
    assert_eq!(h["location"], format!("/v1/purchases/{id}").as_str());

    let (s, _, pending) = app
        .call(
            Method::GET,
            &format!("/v1/purchases/{id}"),
            Some(&app.token("carol")),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["sequence"], b["sequence"]);
    // Nobody else sees it.
    let (s, _, _) = app
        .call(
            Method::GET,
            &format!("/v1/purchases/{id}"),
            Some(&app.token("mallory")),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A short wait with no worker also answers 202.
    let (s, _, _) = app.buy("carol", card, 1, None, "wait=1").await;
    assert_eq!(s, StatusCode::ACCEPTED);

    app.start_worker().await;
    let done = app.wait_terminal("carol", &id).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["sequence"], b["sequence"]);
    assert_eq!(done["created_at"], b["created_at"]);
    // An admin may read it too.
    let (s, _, _) = app
        .call(
            Method::GET,
            &format!("/v1/purchases/{id}"),
            Some(&app.admin_token()),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    invariants::check(&app.db).await;
    app.stop().await;
}

#[tokio::test]
async fn purchases_list_pages_newest_first() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("1.00", 5).await;
    app.credit("dave", "10.00").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (s, _, b) = app.buy("dave", card, 1, None, "wait=10").await;
        assert_eq!(s, StatusCode::CREATED);
        ids.push(b["id"].as_str().unwrap().to_owned());
    }
    app.buy("erin", card, 1, None, "wait=10").await;
    let token = app.token("dave");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/purchases?limit=2&cursor={c}"),
            None => "/v1/purchases?limit=2".to_owned(),
        };
        let (s, _, b) = app.call(Method::GET, &path, Some(&token), None, &[]).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        for p in b["items"].as_array().unwrap() {
            assert_eq!(p["user_id"], "dave");
            seen.push(p["id"].as_str().unwrap().to_owned());
        }
        match &b["next_cursor"] {
            Value::String(c) => cursor = Some(c.clone()),
            _ => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    app.stop().await;
}

/// The batch locks the wallets it debits from its read to its commit:
/// credits landing meanwhile wait for it (milliseconds) instead of making
/// it redo its work, so no credit is lost, no wallet is debited twice or
/// below zero, and no batch is rolled back for them.
#[tokio::test]
async fn credits_racing_batches_on_the_same_wallets_wait_for_them_and_debits_stay_exact() {
    use giftcard_tests::load::{wait_all_terminal, Load};
    use std::time::Duration;

    fn conflicts() -> f64 {
        giftcard_shared::telemetry::metrics_handle()
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("giftcard_worker_batch_conflicts_total "))
            .map_or(0.0, |v| v.trim().parse().unwrap_or(0.0))
    }

    let app = TestApp::spawn_with(Options {
        partitions: 4,
        ..Options::default()
    })
    .await;
    let cards = [
        app.card_with_stock("1.00", 3000).await,
        app.card_with_stock("1.00", 3000).await,
    ];
    let users: Vec<String> = (0..4).map(|i| format!("racer{i}")).collect();
    for u in &users {
        app.credit(u, "2.00").await;
    }
    let before = conflicts();
    let load = Load::start(&app, &cards, &users, 8, 10);
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut credits = 0;
    while tokio::time::Instant::now() < until {
        for u in &users {
            app.credit(u, "0.50").await;
            credits += 1;
        }
    }
    let outcome = load.stop().await;
    let succeeded = wait_all_terminal(&app, &outcome.accepted, Duration::from_secs(30)).await;
    assert!(succeeded > 0, "no purchase succeeded");
    // Balances equal credits minus succeeded totals, never negative.
    invariants::check(&app.db).await;
    let redone = conflicts() - before;
    assert_eq!(
        redone,
        0.0,
        "{credits} credits during {} purchases made batches redo their work",
        outcome.accepted.len()
    );
    app.stop().await;
}
