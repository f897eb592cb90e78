//! The console in a real browser (headless Chromium): an operator logs in,
//! sees the workers, finds the dead letters two poison messages made and
//! resolves them through the pages. Screenshots are kept in
//! `target/test-artifacts/console/`.

use giftcard_tests::browser::Browser;
use giftcard_tests::TestApp;
use reqwest::StatusCode;
use sea_orm::ConnectionTrait;

use crate::console::publish_poison;

fn admin_token(sub: &str) -> String {
    giftcard_shared::auth::mint(
        giftcard_tests::SECRET,
        sub,
        true,
        chrono::Duration::minutes(30),
    )
    .expect("mint")
}

/// Ticks the confirmation box of form `form` and submits it.
async fn confirm_and_submit(b: &Browser, form: &str) {
    let confirm = b.find(&format!("{form} input[name='confirm']")).await;
    b.click(&confirm).await;
    let button = b.find(&format!("{form} button[type='submit']")).await;
    b.click(&button).await;
}

/// Opens the first dead letter listed for `reason`.
async fn open_dead_letter(b: &Browser, app: &TestApp, reason: &str) {
    b.goto(&format!(
        "{}/console/dead-letters?state=pending&reason={reason}",
        app.api_url
    ))
    .await;
    let open = b.find("#dead-letters a.open").await;
    b.click(&open).await;
    b.wait_for_text("#state", "pending", false).await;
}

#[tokio::test]
async fn an_operator_logs_in_sees_the_workers_and_resolves_poison_messages_in_a_browser() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("1.00", 3).await;
    app.credit("fay", "5.00").await;
    let (s, _, b) = app.buy("fay", card, 1, None, "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    publish_poison(&app, card, b"not json", true).await;
    publish_poison(&app, card, br#"{"v": 1, "forged": true}"#, false).await;
    app.dead_letters_at_least(2).await;
    let (_, _, fleet) = app
        .call(
            reqwest::Method::GET,
            "/v1/admin/partitions",
            Some(&app.admin_token()),
            None,
            &[],
        )
        .await;
    let worker = fleet["workers"][0]["id"]
        .as_str()
        .expect("a live worker")
        .to_owned();

    let b = Browser::start(1280, 900).await;
    // Anonymous: the login page, not data.
    b.goto(&format!("{}/console/", app.api_url)).await;
    assert!(
        b.url().await.contains("/console/login"),
        "{}",
        b.url().await
    );
    b.screenshot("01-login").await;
    let token = b.find("#token").await;
    b.type_into(&token, &app.token("fay")).await;
    b.click(&b.find("#login button").await).await;
    b.wait_for_text(".banner", "not an admin token", false)
        .await;

    let token = b.find("#token").await;
    b.type_into(&token, &admin_token("ops-alice")).await;
    b.click(&b.find("#login button").await).await;
    b.wait_for_text("#workers", &worker, false).await;
    let overview = b.text_of("main").await;
    assert!(b.text_of("header").await.contains("Signed in as ops-alice"));
    assert!(
        overview.contains("NATS") && overview.contains("✓ up"),
        "{overview}"
    );
    assert!(overview.contains("waiting for an operator"), "{overview}");
    assert!(
        b.text_of("#partitions").await.contains(&worker),
        "the worker owns partitions"
    );
    // The page refreshes itself (the script's status line changes).
    b.wait_for_text("[data-live-status]", "Live: refreshed", false)
        .await;
    // Tall enough for the workers and partitions too.
    b.resize(1280, 1500).await;
    b.screenshot("02-overview").await;
    b.resize(1280, 900).await;

    // A signed poison message: replay it (it fails again and comes back),
    // then discard what came back.
    open_dead_letter(&b, &app, "undecodable").await;
    assert!(b.text_of("#payload").await.contains("not json"));
    b.screenshot("03-dead-letter").await;
    confirm_and_submit(&b, "#replay").await;
    b.wait_for_text(".banner", "replayed", false).await;
    assert!(b.text_of("#state").await.contains("replayed"));
    assert!(b.text_of("#events").await.contains("ops-alice"));
    let history = b.wait_for_text("#history", "pending", true).await;
    assert!(history.contains("this one"), "{history}");
    b.screenshot("04-replayed-and-back").await;
    b.click(&b.find("#history a").await).await;
    b.wait_for_text("#state", "pending", false).await;
    confirm_and_submit(&b, "#discard").await;
    b.wait_for_text(".banner", "discarded", false).await;
    assert!(b.text_of("#state").await.contains("discarded"));
    assert!(b.text_of("#resolved").await.contains("ops-alice"));

    // An unsigned one: the replay is refused and says so; discard it.
    open_dead_letter(&b, &app, "unauthenticated").await;
    confirm_and_submit(&b, "#replay").await;
    let refusal = b
        .wait_for_text(".banner.refused", "cannot be replayed", false)
        .await;
    assert!(refusal.contains("discard it"), "{refusal}");
    assert!(b.text_of("#state").await.contains("pending"));
    b.screenshot("05-not-authentic").await;
    confirm_and_submit(&b, "#discard").await;
    b.wait_for_text(".banner", "discarded", false).await;

    // Two more: replayed in bulk, with the page's progress bar.
    publish_poison(&app, card, b"not json 2", true).await;
    publish_poison(&app, card, b"not json 3", true).await;
    app.dead_letters_at_least(2).await;
    b.goto(&format!(
        "{}/console/dead-letters/replay?reason=undecodable",
        app.api_url
    ))
    .await;
    assert_eq!(b.text_of("#total").await, "2");
    confirm_and_submit(&b, "#bulk").await;
    let done = b.wait_for_text("#bulk-status", "Done.", false).await;
    assert!(done.contains("Replayed 2; 0 left pending"), "{done}");
    b.screenshot("06-bulk-replay").await;

    // On a phone's screen.
    b.resize(390, 1400).await;
    b.goto(&format!("{}/console/", app.api_url)).await;
    b.wait_for_text("#workers", &worker, false).await;
    b.screenshot("07-overview-phone").await;

    // Log out: the console is closed again.
    b.click(&b.find("form.logout button").await).await;
    b.wait_for_text(".banner", "logged out", false).await;
    b.goto(&format!("{}/console/dead-letters", app.api_url))
        .await;
    assert!(b.url().await.contains("/console/login"));
    b.quit().await;

    let row = app
        .db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) FILTER (WHERE actor = 'ops-alice') AS mine, count(*) AS all_actions \
             FROM dead_letter_events WHERE action IN ('replayed', 'discarded')",
        ))
        .await
        .unwrap()
        .unwrap();
    let mine: i64 = row.try_get("", "mine").unwrap();
    let all: i64 = row.try_get("", "all_actions").unwrap();
    assert_eq!(
        (mine, all),
        (5, 5),
        "every action recorded with the operator's subject"
    );
    app.stop().await;
}
