//! The operator's console: server-rendered pages under `/console/` on the
//! api's own listener, for admins (what Sidekiq Web or Oban Web give their
//! operators, for this pipeline: partitions, owners, fencing tokens and
//! per-card order included).
//!
//! - [`session`]: login with an admin JWT, the signed session cookie, the
//!   CSRF-checked [`session::Action`] every form post goes through.
//! - [`overview`]: readiness, purchases per second and p99 ([`rates`]),
//!   dead letters, workers and partitions, refreshed by the page.
//! - [`dead_letters`], [`dead_letter_page`], [`bulk`]: list, inspect,
//!   replay, discard, bulk replay with progress.
//! - [`lookup`]: purchases (codes masked) and cards (stock).
//! - [`page`], [`assets`]: the shell, shared pieces, CSS and script.
//!
//! The data comes from the same functions as the JSON routes
//! (`routes::dead_letters`, `routes::partitions`, `routes::purchases`,
//! `routes::catalog`). Every response carries a strict
//! Content-Security-Policy: no inline script or style, nothing from
//! elsewhere.

pub mod assets;
pub mod bulk;
pub mod dead_letter_page;
pub mod dead_letters;
pub mod lookup;
pub mod overview;
pub mod page;
pub mod rates;
pub mod session;

use axum::extract::{Form, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::Utc;
use giftcard_shared::auth;
use maud::html;
use serde::Deserialize;

use self::page::{banner, layout, Nav, Tone};
use self::session::{Action, Operator};
use crate::state::AppState;

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// The console's routes; starts the throughput sampler (until the api's
/// shutdown).
pub fn router(state: &AppState) -> Router<AppState> {
    let rates = rates::Rates::start(state.metrics.clone(), state.shutdown.clone());
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(overview::page))
        .route("/console/live/overview", get(overview::fragment))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/dead-letters", get(dead_letters::list))
        .route(
            "/console/dead-letters/replay",
            get(bulk::confirm).post(bulk::run_batch),
        )
        .route("/console/dead-letters/{id}", get(dead_letters::show))
        .route(
            "/console/dead-letters/{id}/replay",
            post(dead_letters::replay),
        )
        .route(
            "/console/dead-letters/{id}/discard",
            post(dead_letters::discard),
        )
        .route("/console/purchases", get(lookup::purchases))
        .route("/console/purchases/{id}", get(lookup::purchase))
        .route("/console/cards", get(lookup::cards))
        .route("/console/cards/{id}", get(lookup::card))
        .route("/console/assets/{name}", get(assets::serve))
        .route("/console/{*rest}", get(not_found))
        .layer(Extension(rates))
        .layer(middleware::from_fn(security_headers))
}

/// The headers every console response carries; pages are never cached.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

async fn not_found(operator: Operator) -> Response {
    page::message(
        StatusCode::NOT_FOUND,
        Some(&operator),
        "Not found",
        "no such console page",
    )
}

#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    out: String,
}

/// `GET /console/login`.
async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if session::current(&state, &headers).is_some() {
        return Redirect::to(session::safe_next(Some(&q.next))).into_response();
    }
    let notice = (q.out == "1").then(|| banner(Tone::Done, "logged out."));
    login_form(StatusCode::OK, &q.next, notice)
}

fn login_form(status: StatusCode, next: &str, notice: Option<maud::Markup>) -> Response {
    let body = html! {
        @if let Some(n) = notice { (n) }
        form.login #login method="post" action="/console/login" {
            input type="hidden" name="next" value=(next);
            label for="token" { "Admin token (a JWT with role admin)" }
            input #token type="password" name="token" required autocomplete="off" spellcheck="false";
            button type="submit" { "Log in" }
        }
        p.note {
            "Mint one with " code { "giftcardctl token --sub <your name> --admin --ttl-hours 8" }
            ". The token is not kept: the console keeps a signed session cookie naming you, \
             which ends when the token would (8 hours at most). Every action is recorded with your name."
        }
    };
    (
        status,
        Html(layout("Log in", None, Nav::None, body).into_string()),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /console/login`: an admin token becomes a session; anything else
/// gets the form again, with why, and no session.
async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !session::same_origin(&headers) {
        let text = "this login was not sent from the console's login page; open /console/login";
        return login_form(StatusCode::FORBIDDEN, "", Some(banner(Tone::Refused, text)));
    }
    let refused =
        |status, text: &str| login_form(status, &f.next, Some(banner(Tone::Refused, text)));
    let principal = match auth::verify_any(&state.jwt_secrets(), f.token.trim()) {
        Ok(p) => p,
        Err(e) => return refused(StatusCode::UNAUTHORIZED, &e.to_string()),
    };
    if !principal.admin {
        tracing::warn!(
            user = principal.user.as_str(),
            "console login refused: not an admin"
        );
        return refused(
            StatusCode::FORBIDDEN,
            "this token is not an admin token (role \"admin\"); the console is for operators",
        );
    }
    let now = Utc::now().timestamp();
    let expires_at = principal.expires_at.min(now + session::MAX_SESSION);
    let value = session::issue(&state, principal.user.as_str(), expires_at);
    let cookie = session::set_cookie(&value, expires_at - now, session::over_tls(&headers));
    tracing::info!(operator = principal.user.as_str(), "console login");
    let to = session::safe_next(Some(&f.next)).to_owned();
    ([(header::SET_COOKIE, cookie)], Redirect::to(&to)).into_response()
}

/// `POST /console/logout`: ends the session in this browser.
async fn logout(headers: HeaderMap, action: Action<Empty>) -> Response {
    tracing::info!(operator = action.operator.subject, "console logout");
    let cookie = session::set_cookie("", 0, session::over_tls(&headers));
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to("/console/login?out=1"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Empty {}
