//! Console sessions: an admin logs in with a JWT once and gets a signed
//! cookie; every page then knows the operator by the token's own subject.
//!
//! The cookie holds no token, only `v1.<expiry>.<nonce>.<hex subject>.<mac>`,
//! HMAC-SHA256 under a key derived from `GIFTCARD_JWT_SECRET` (so every api
//! replica accepts it, a rotation keeps sessions made under the previous
//! secret while that secret is configured, and dropping a leaked secret
//! ends its sessions too). A session ends when its token would have
//! expired, and after [`MAX_SESSION`] at the latest. The CSRF token of a
//! form is a MAC of the session's nonce: no server-side state.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::Sha256;

use crate::state::AppState;

type HmacSha256 = Hmac<Sha256>;

/// The session cookie's name (scoped to `Path=/console`).
pub const COOKIE: &str = "giftcard_console";
/// The longest a session lasts, whatever the token's expiry.
pub const MAX_SESSION: i64 = 8 * 3600;
/// The header the console's script sends with its own requests, which are
/// answered 401 (not redirected) when the session is gone.
pub const FETCH_HEADER: &str = "x-requested-with";

/// A logged-in operator (an admin), from a valid session cookie.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The token's subject: the actor recorded for every action.
    pub subject: String,
    pub expires_at: i64,
    /// The value every form of this session must send back as `csrf`.
    pub csrf: String,
}

/// The session keys: one per JWT secret, the current one first.
fn keys(state: &AppState) -> Vec<HmacSha256> {
    state
        .jwt_secrets()
        .iter()
        .map(|secret| {
            let derived = HmacSha256::new_from_slice(secret.as_bytes())
                .expect("HMAC takes any key length")
                .chain_update(b"giftcard console session v1")
                .finalize()
                .into_bytes();
            HmacSha256::new_from_slice(&derived).expect("HMAC takes any key length")
        })
        .collect()
}

fn csrf_of(key: &HmacSha256, nonce: &str) -> String {
    let tag = key
        .clone()
        .chain_update(b"csrf\0")
        .chain_update(nonce.as_bytes())
        .finalize()
        .into_bytes();
    hex::encode(tag)
}

/// A new session's cookie value for `subject`, ending at `expires_at`.
pub fn issue(state: &AppState, subject: &str, expires_at: i64) -> String {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let body = format!("v1.{expires_at}.{nonce}.{}", hex::encode(subject));
    let key = &keys(state)[0];
    let tag = key.clone().chain_update(body.as_bytes()).finalize();
    format!("{body}.{}", hex::encode(tag.into_bytes()))
}

/// The operator a cookie value stands for, if it is one of ours and still
/// valid at `now` (Unix seconds).
pub fn verify(state: &AppState, value: &str, now: i64) -> Option<Operator> {
    let (body, tag) = value.rsplit_once('.')?;
    let tag = hex::decode(tag).ok()?;
    let key = keys(state).into_iter().find(|k| {
        k.clone()
            .chain_update(body.as_bytes())
            .verify_slice(&tag)
            .is_ok()
    })?;
    let mut fields = body.split('.');
    let (Some("v1"), Some(exp), Some(nonce), Some(subject), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return None;
    };
    let expires_at: i64 = exp.parse().ok()?;
    let subject = String::from_utf8(hex::decode(subject).ok()?).ok()?;
    (expires_at > now).then(|| Operator {
        csrf: csrf_of(&key, nonce),
        subject,
        expires_at,
    })
}

/// The value of cookie `name` in the request, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the client reached us over TLS (through a proxy that says so):
/// the cookie is then `Secure`.
pub fn over_tls(headers: &HeaderMap) -> bool {
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    value("x-forwarded-proto") == "https" || value("forwarded").contains("proto=https")
}

/// The `Set-Cookie` value of a session lasting `max_age` seconds (0 ends it).
pub fn set_cookie(value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

/// Whether a form post comes from a console page: its `Origin` (which
/// browsers send on posts; `null` from other sites under our referrer
/// policy) names this host. Without an `Origin` (old clients), the CSRF
/// token and the SameSite cookie still decide.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Why a request has no operator: pages go to the login page, the
/// console's own background requests get a 401.
pub enum NoSession {
    Redirect(String),
    Fetch,
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            Self::Redirect(to) => Redirect::to(&to).into_response(),
            Self::Fetch => (
                StatusCode::UNAUTHORIZED,
                "the console session has ended; log in again",
            )
                .into_response(),
        }
    }
}

/// The operator of the request's session cookie, if valid now.
pub fn current(state: &AppState, headers: &HeaderMap) -> Option<Operator> {
    cookie(headers, COOKIE).and_then(|v| verify(state, v, Utc::now().timestamp()))
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = NoSession;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(op) = current(state, &parts.headers) {
            return Ok(op);
        }
        if parts.headers.contains_key(FETCH_HEADER) {
            return Err(NoSession::Fetch);
        }
        let next = match parts.uri.path_and_query() {
            Some(pq) if parts.method == axum::http::Method::GET => {
                serde_urlencoded::to_string([("next", pq.as_str())]).unwrap_or_default()
            }
            _ => String::new(),
        };
        Err(NoSession::Redirect(format!("/console/login?{next}")))
    }
}

/// Where to go after logging in: a console path, else the overview (never
/// another site).
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/console/")
                && !n.contains("//")
                && !n.contains('\\')
                && n.chars().all(|c| c.is_ascii_graphic()) =>
        {
            n
        }
        _ => "/console/",
    }
}

/// A form post of a logged-in operator, checked before the handler runs:
/// the session, the `Origin`, and the form's `csrf` field against the
/// session's token.
pub struct Action<T> {
    pub operator: Operator,
    pub form: T,
}

#[derive(Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Action<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let operator = Operator::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let refused = |why: &str| {
            super::page::message(StatusCode::FORBIDDEN, Some(&operator), "Refused", why)
        };
        if !same_origin(&parts.headers) {
            return Err(refused(
                "this form was not sent from a console page (its Origin is another site); \
                 open the console and use its forms",
            ));
        }
        let req = Request::from_parts(parts, body);
        let Form(raw) = Form::<WithCsrf<T>>::from_request(req, state)
            .await
            .map_err(|e| {
                super::page::message(
                    StatusCode::BAD_REQUEST,
                    Some(&operator),
                    "Bad form",
                    &format!("the form could not be read ({e}); reload the page and try again"),
                )
            })?;
        if !constant_time_eq(raw.csrf.as_bytes(), operator.csrf.as_bytes()) {
            return Err(refused(
                "this form's security token does not belong to your session (it is from an \
                 older session or another site); reload the page and try again",
            ));
        }
        Ok(Self {
            operator,
            form: raw.form,
        })
    }
}

/// Equality that takes as long whichever byte differs (the length is no
/// secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
