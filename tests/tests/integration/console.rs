//! The operator's console over plain HTTP: who gets in, the session
//! cookie, CSRF, the security headers, masking, bulk replay. The browser
//! test (console_browser.rs) drives the same pages in Chromium.

use std::time::Duration;

use async_nats::jetstream;
use giftcard_shared::contract::purchase_subject;
use giftcard_tests::TestApp;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use sea_orm::ConnectionTrait;
use serde_json::Value;
use uuid::Uuid;

/// The policy every console response must carry.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A client that does not follow redirects, so tests see them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Publishes `payload` to `card`'s subject, signed as an api would or not.
pub async fn publish_poison(app: &TestApp, card: Uuid, payload: &[u8], signed: bool) {
    let js = jetstream::new(app.nats_client().await);
    let subject = purchase_subject(card, app.options.partitions);
    let mut headers = async_nats::HeaderMap::new();
    if signed {
        TestApp::sign(&subject, &mut headers, payload);
    }
    js.publish_with_headers(subject, headers, payload.to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

/// An admin token for `sub`, valid for `minutes`.
fn admin_token(sub: &str, minutes: i64) -> String {
    giftcard_shared::auth::mint(
        giftcard_tests::SECRET,
        sub,
        true,
        chrono::Duration::minutes(minutes),
    )
    .expect("mint")
}

/// Logs in as `sub`; returns the `Cookie` header value and the CSRF token.
async fn login(app: &TestApp, sub: &str) -> (String, String) {
    let http = client();
    let r = http
        .post(format!("{}/console/login", app.api_url))
        .form(&[("token", admin_token(sub, 30).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = get(app, "/console/dead-letters", Some(&cookie)).await.2;
    (cookie, csrf_of(&page))
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..at + 64].to_owned()
}

async fn get(app: &TestApp, path: &str, cookie: Option<&str>) -> (StatusCode, HeaderMap, String) {
    let mut req = client().get(format!("{}{path}", app.api_url));
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.headers().clone(), r.text().await.unwrap())
}

async fn post(
    app: &TestApp,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut req = client()
        .post(format!("{}{path}", app.api_url))
        .header("Cookie", cookie)
        .form(form);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.headers().clone(), r.text().await.unwrap())
}

async fn dead_letter_state(app: &TestApp, id: &str) -> Value {
    let (s, _, b) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/admin/dead-letters/{id}"),
            Some(&app.admin_token()),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

#[tokio::test]
async fn anonymous_requests_get_the_login_page_and_never_data() {
    let app = TestApp::spawn().await;
    let id = Uuid::new_v4();
    for path in [
        "/console/".to_owned(),
        "/console/dead-letters?state=all".to_owned(),
        format!("/console/dead-letters/{id}"),
        "/console/dead-letters/replay".to_owned(),
        format!("/console/purchases/{id}"),
        "/console/cards".to_owned(),
        format!("/console/cards/{id}"),
        "/console/no-such-page".to_owned(),
    ] {
        let (s, h, body) = get(&app, &path, None).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{path}: {body}");
        let to = h[LOCATION].to_str().unwrap();
        assert!(to.starts_with("/console/login?next="), "{path} -> {to}");
        assert!(body.is_empty(), "{path} answered data: {body}");
        assert_eq!(h["content-security-policy"], CSP, "{path}");
    }
    // The page's own background requests get a 401, not a page.
    let r = client()
        .get(format!("{}/console/live/overview", app.api_url))
        .header("X-Requested-With", "console")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // An anonymous form post does nothing but redirect.
    let (s, h, _) = post(
        &app,
        &format!("/console/dead-letters/{id}/discard"),
        "",
        &[("confirm", "yes")],
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(h[LOCATION].to_str().unwrap().starts_with("/console/login"));

    let (s, h, page) = get(&app, "/console/login", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-security-policy"], CSP);
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    assert!(page.contains("name=\"token\""), "{page}");
    // The assets need no session and are cached for long.
    let css = page
        .split("href=\"/console/assets/console.css")
        .nth(1)
        .unwrap();
    let css_url = format!(
        "/console/assets/console.css{}",
        &css[..css.find('"').unwrap()]
    );
    let (s, h, _) = get(&app, &css_url, None).await;
    assert_eq!(s, StatusCode::OK, "{css_url}");
    assert!(h["cache-control"].to_str().unwrap().contains("immutable"));
    assert_eq!(h["content-type"], "text/css; charset=utf-8");
    app.stop().await;
}

/// The `Max-Age` of a `Set-Cookie` value.
fn max_age_of(set_cookie: &str) -> i64 {
    let after = set_cookie.split("Max-Age=").nth(1).expect("a Max-Age");
    after.split(';').next().unwrap().parse().expect("a number")
}

#[tokio::test]
async fn login_takes_admin_tokens_only_and_sets_a_strict_session_cookie() {
    let app = TestApp::spawn().await;
    let url = format!("{}/console/login", app.api_url);
    let http = client();
    let send = |token: String, headers: Vec<(&'static str, &'static str)>| {
        let mut req = http.post(&url).form(&[("token", token)]);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };

    let r = send(app.token("mallory"), vec![]).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.headers().get(SET_COOKIE).is_none(),
        "a non-admin got a session"
    );
    assert!(r.text().await.unwrap().contains("not an admin token"));
    let r = send("not-a-jwt".into(), vec![]).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());
    let r = send(
        admin_token("ops-bob", 10),
        vec![("Origin", "http://evil.example")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "cross-site login");
    assert!(r.headers().get(SET_COOKIE).is_none());

    let token = admin_token("ops-bob", 10);
    let r = send(token.clone(), vec![]).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/console/");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert!(!set.contains(&token), "the token itself is in the cookie");
    let max_age = max_age_of(&set);
    assert!(
        (500..=600).contains(&max_age),
        "ends with the token: {max_age}"
    );
    let r = send(
        admin_token("ops-bob", 24 * 60),
        vec![("X-Forwarded-Proto", "https")],
    )
    .await
    .unwrap();
    let set_tls = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set_tls.contains("; Secure"), "{set_tls}");
    let max_age = max_age_of(&set_tls);
    assert!(max_age <= 8 * 3600, "capped at 8 hours: {max_age}");

    let cookie = set.split(';').next().unwrap();
    let (s, h, page) = get(&app, "/console/", Some(cookie)).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(h["content-security-policy"], CSP);
    assert!(page.contains("ops-bob"), "{page}");
    assert!(
        page.contains("Readiness") && page.contains("Partitions"),
        "{page}"
    );
    assert!(!page.contains("style="), "inline style");
    assert!(!page.contains("<script>"), "inline script");
    // The same cookie with its subject changed is refused.
    let (prefix, _) = cookie.rsplit_once('.').unwrap();
    let forged = format!(
        "{}.{}",
        prefix.replace(&hex::encode("ops-bob"), &hex::encode("ops-eve")),
        "00".repeat(32)
    );
    let (s, h, _) = get(&app, "/console/", Some(&forged)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(h[LOCATION].to_str().unwrap().starts_with("/console/login"));
    app.stop().await;
}

#[tokio::test]
async fn actions_need_the_sessions_csrf_token_and_a_confirmation_and_record_the_operator() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("1.00", 1).await;
    publish_poison(&app, card, b"not json", true).await;
    let dl = app.dead_letters_at_least(1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (cookie, csrf) = login(&app, "ops-carol").await;
    let path = format!("/console/dead-letters/{dl}/discard");

    let (s, _, body) = post(&app, &path, &cookie, &[("confirm", "yes")], &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, _, _) = post(
        &app,
        &path,
        &cookie,
        &[("csrf", &"ab".repeat(32)), ("confirm", "yes")],
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = post(
        &app,
        &path,
        &cookie,
        &[("csrf", &csrf), ("confirm", "yes")],
        &[("Origin", "null")],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "cross-site post");
    let (s, _, body) = post(&app, &path, &cookie, &[("csrf", &csrf)], &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("tick the confirmation box"), "{body}");
    assert_eq!(dead_letter_state(&app, &dl).await["state"], "pending");

    let origin = app.api_url.clone();
    let (s, h, _) = post(
        &app,
        &path,
        &cookie,
        &[("csrf", &csrf), ("confirm", "yes")],
        &[("Origin", &origin)],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(
        h[LOCATION],
        format!("/console/dead-letters/{dl}?outcome=discarded")
    );
    let d = dead_letter_state(&app, &dl).await;
    assert_eq!(d["state"], "discarded");
    assert_eq!(d["resolved_by"], "ops-carol", "the operator's own subject");
    let (_, _, page) = get(
        &app,
        &format!("/console/dead-letters/{dl}?outcome=discarded"),
        Some(&cookie),
    )
    .await;
    assert!(
        page.contains("Done:") && page.contains("ops-carol"),
        "{page}"
    );
    // Twice: refused, said so.
    let (s, _, body) = post(
        &app,
        &path,
        &cookie,
        &[("csrf", &csrf), ("confirm", "yes")],
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(body.contains("already discarded"), "{body}");

    // Logging out needs the token too, and ends the session's cookie.
    let (s, _, _) = post(&app, "/console/logout", &cookie, &[], &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, h, _) = post(&app, "/console/logout", &cookie, &[("csrf", &csrf)], &[]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(h[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    app.stop().await;
}

#[tokio::test]
async fn purchase_pages_mask_codes_and_card_pages_count_stock_expiring_soon() {
    let app = TestApp::spawn().await;
    let card = app.create_card("2.00").await;
    let soon = (chrono::Utc::now() + chrono::Duration::days(10))
        .format("%Y-%m-%d")
        .to_string();
    let later = (chrono::Utc::now() + chrono::Duration::days(20))
        .format("%Y-%m-%d")
        .to_string();
    let far = (chrono::Utc::now() + chrono::Duration::days(90))
        .format("%Y-%m-%d")
        .to_string();
    app.import_codes_expiring(card, "SECRETPART-AAAA-W1X2", &soon)
        .await;
    app.import_codes_expiring(card, "SECRETPART-BBBB-Y3Z4", &later)
        .await;
    app.import_codes_expiring(card, "SECRETPART-CCCC-Q5R6", &far)
        .await;
    app.credit("dana", "10.00").await;
    let (s, _, p) = app.buy("dana", card, 1, None, "wait=10").await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let code = p["activation_codes"][0].as_str().unwrap().to_owned();
    let id = p["id"].as_str().unwrap();
    let (cookie, _) = login(&app, "ops-dave").await;

    let (s, _, page) = get(&app, &format!("/console/purchases/{id}"), Some(&cookie)).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("succeeded"), "{page}");
    assert!(
        page.contains(&code[code.len() - 4..]),
        "last 4 characters shown: {page}"
    );
    assert!(
        !page.contains("SECRETPART"),
        "a code is shown in full: {page}"
    );
    let (s, h, _) = get(&app, &format!("/console/purchases?id={id}"), Some(&cookie)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[LOCATION], format!("/console/purchases/{id}"));

    let (s, _, page) = get(&app, &format!("/console/cards/{card}"), Some(&cookie)).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let number_in = |id: &str| {
        let at = page
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id}: {page}"));
        let rest = &page[at..];
        let start = rest.find("<strong>").unwrap() + 8;
        rest[start..start + rest[start..].find('<').unwrap()].to_owned()
    };
    assert_eq!(number_in("available"), "2");
    assert_eq!(
        number_in("expiring"),
        "1",
        "one left expires within 30 days"
    );
    let (s, _, page) = get(&app, "/console/cards", Some(&cookie)).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains(&format!("/console/cards/{card}")), "{page}");
    let (s, _, _) = get(
        &app,
        &format!("/console/cards/{}", Uuid::new_v4()),
        Some(&cookie),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn bulk_replay_replays_a_filter_in_batches_with_progress_and_skips_forgeries() {
    let app = TestApp::spawn().await;
    let card = app.card_with_stock("1.00", 1).await;
    let other = app.card_with_stock("1.00", 1).await;
    for payload in [&b"not json 1"[..], b"not json 2", b"not json 3"] {
        publish_poison(&app, card, payload, true).await;
    }
    publish_poison(&app, card, b"forged", false).await;
    publish_poison(&app, other, b"not json, other card", true).await;
    app.dead_letters_at_least(5).await;
    let (cookie, csrf) = login(&app, "ops-erin").await;
    // The list's reason filter: any case, wildcards typed are literal.
    let (s, _, page) = get(
        &app,
        "/console/dead-letters?reason=UNAUTHENTICATED",
        Some(&cookie),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page.matches("class=\"open\"").count(), 1, "{page}");
    let (s, _, page) = get(&app, "/console/dead-letters?reason=%25_%5C", Some(&cookie)).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("No dead letters match."), "{page}");

    let (s, _, page) = get(
        &app,
        &format!("/console/dead-letters/replay?card={card}"),
        Some(&cookie),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("id=\"total\">4<"), "4 of this card: {page}");
    let upto = page.split("name=\"upto\" value=\"").nth(1).unwrap();
    let upto = upto[..upto.find('"').unwrap()].to_owned();
    let card = card.to_string();
    let mut form = [
        ("csrf", csrf.clone()),
        ("confirm", "yes".to_owned()),
        ("card", card.clone()),
        ("reason", String::new()),
        ("upto", upto),
        ("after", String::new()),
        ("replayed", "0".to_owned()),
        ("not_authentic", "0".to_owned()),
    ];
    let mut last = Value::Null;
    for _ in 0..10 {
        let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, _, body) = post(
            &app,
            "/console/dead-letters/replay",
            &cookie,
            &fields,
            &[("X-Requested-With", "console")],
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        last = serde_json::from_str(&body).unwrap();
        if last["done"] == true {
            break;
        }
        form[5].1 = last["after"].as_str().unwrap().to_owned();
        form[6].1 = last["replayed"].to_string();
        form[7].1 = last["not_authentic"].to_string();
    }
    assert_eq!(last["done"], true, "{last}");
    assert_eq!(last["replayed"], 3, "{last}");
    assert_eq!(last["not_authentic"], 1, "{last}");
    assert_eq!(last["remaining"], 0);

    // The three come back as new dead letters; this run did not loop on
    // them. The forgery and the other card's stay pending.
    let items = app.dead_letters_at_least(5).await;
    let from_replays = items
        .iter()
        .filter(|i| i["reason"].as_str().unwrap().contains("undecodable"))
        .count();
    assert_eq!(items.len(), 5, "{items:?}");
    assert_eq!(
        from_replays, 4,
        "three replays back, plus the other card's: {items:?}"
    );
    let (n,): (i64,) = {
        let row = app
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT count(*) AS n FROM dead_letter_events WHERE action = 'replayed' AND actor = 'ops-erin'",
            ))
            .await
            .unwrap()
            .unwrap();
        (row.try_get("", "n").unwrap(),)
    };
    assert_eq!(n, 3, "each replay recorded with the operator");

    // Without the script: one batch per post, answered with a page.
    let other = other.to_string();
    let (_, _, page) = get(
        &app,
        &format!("/console/dead-letters/replay?card={other}"),
        Some(&cookie),
    )
    .await;
    let upto = page.split("name=\"upto\" value=\"").nth(1).unwrap();
    let upto = &upto[..upto.find('"').unwrap()];
    let fields: Vec<(&str, &str)> = vec![
        ("csrf", &csrf),
        ("confirm", "yes"),
        ("card", &other),
        ("upto", upto),
    ];
    let (s, _, page) = post(&app, "/console/dead-letters/replay", &cookie, &fields, &[]).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("replayed 1; 0 left pending"), "{page}");
    app.stop().await;
}
