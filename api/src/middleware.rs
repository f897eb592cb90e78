//! The api's own middleware, outermost first in [`crate::app`]:
//!
//! - [`request_id`]: every request gets an `X-Request-Id`; a client's is
//!   kept only if it is 1 to 128 visible ASCII characters (it is copied
//!   into NATS headers and every log line), else replaced by a UUID.
//! - [`observe`]: per-route metrics (method, route template, status class)
//!   and the contract's error body on every error a layer below produced
//!   without one.
//! - [`deadline`]: a request still running after
//!   [`request_timeout`] is answered 503 with `Retry-After` and the error body.
//!
//! The request span records the route template (`MatchedPath`), never the
//! raw path: `/v1/admin/gift-cards/{id}/codes/{code}` would otherwise carry
//! an activation code into logs and traces.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use giftcard_shared::config::ApiSettings;
use metrics::{Counter, Histogram};

use crate::error::{error_response, ApiError};
use crate::state::AppState;
use crate::REQUEST_ID;

/// Longest `X-Request-Id` kept as sent.
pub const MAX_REQUEST_ID: usize = 128;

/// Whether a client's `X-Request-Id` may be kept.
pub fn acceptable_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

/// Middleware: keeps an acceptable `X-Request-Id`, else sets a new one.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let keep = request
        .headers()
        .get(REQUEST_ID)
        .is_some_and(acceptable_request_id);
    if !keep {
        let id = uuid::Uuid::new_v4().to_string();
        let value = HeaderValue::from_str(&id).expect("a UUID is a valid header value");
        request.headers_mut().insert(REQUEST_ID, value);
    }
    next.run(request).await
}

/// The route template a request matched, for spans and metrics; never the
/// raw path.
pub fn route_of(request: &Request) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
}

/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

/// Middleware: answers 503 (with the error body and `Retry-After`) when
/// the request runs past the api's request timeout.
pub async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = request_timeout(&state.settings);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_secs = limit.as_secs(), "request timed out");
            ApiError::Unavailable(format!(
                "the request took longer than {} s and was abandoned; retry (a purchase \
                 answered so was not queued)",
                limit.as_secs()
            ))
            .into_response()
        }
    }
}

/// Middleware: counts and times each request by method, route template
/// and status class, and gives any error response without the contract's
/// body (a framework rejection, for instance) that body.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = with_error_body(next.run(request).await);
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    state
        .http_metrics
        .record(method, route, response.status(), started.elapsed());
    response
}

/// How long the api works on a request before answering 503: longer than
/// a purchase can take (its acceptance, the longest `Prefer: wait`, and the
/// recording of a 202), so that a purchase that was queued is always
/// answered 201/202/404/409 by its handler, never 503 by this timeout.
pub fn request_timeout(settings: &ApiSettings) -> Duration {
    crate::routes::purchases::longest(settings.publish_timeout) + Duration::from_secs(5)
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// `response` itself, or, for an error without a body of its own (none, or
/// the plain text of axum's and tower-http's rejections), the contract's
/// error body with a code for its status. JSON errors and the console's
/// HTML pages are kept.
fn with_error_body(response: Response) -> Response {
    let status = response.status();
    let own_body = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || own_body {
        return response;
    }
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "VALIDATION_FAILED",
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::TOO_MANY_REQUESTS => "RATE_LIMITED",
        StatusCode::SERVICE_UNAVAILABLE => "SERVICE_UNAVAILABLE",
        s if s.is_client_error() => "VALIDATION_FAILED",
        _ => "INTERNAL",
    };
    let message = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let mut fixed = error_response(status, code, format!("{message}; see GET /openapi.json"));
    if let Some(v) = retry_after.or_else(|| {
        (status == StatusCode::SERVICE_UNAVAILABLE).then(|| HeaderValue::from_static("1"))
    }) {
        fixed.headers_mut().insert(header::RETRY_AFTER, v);
    }
    fixed
}

/// `giftcard_api_http_requests_total` and
/// `giftcard_api_http_request_duration_seconds`, with each label set's
/// handles made once: a request costs a map lookup and two atomic
/// updates, no allocation once its series exists.
#[derive(Default)]
pub struct HttpMetrics {
    routes: RwLock<HashMap<String, Vec<Series>>>,
}

struct Series {
    method: &'static str,
    class: &'static str,
    count: Counter,
    seconds: Histogram,
}

impl HttpMetrics {
    pub fn record(&self, method: &'static str, route: &str, status: StatusCode, took: Duration) {
        let class = status_class(status);
        let observe = |s: &Series| {
            s.count.increment(1);
            s.seconds.record(took.as_secs_f64());
        };
        let find = |list: &[Series]| {
            list.iter()
                .position(|s| s.method == method && s.class == class)
        };
        {
            let routes = self.routes.read().expect("http metrics lock");
            if let Some(list) = routes.get(route) {
                if let Some(i) = find(list) {
                    return observe(&list[i]);
                }
            }
        }
        let mut routes = self.routes.write().expect("http metrics lock");
        let list = routes.entry(route.to_owned()).or_default();
        let i = find(list).unwrap_or_else(|| {
            list.push(Series::new(method, route, class));
            list.len() - 1
        });
        observe(&list[i]);
    }
}

impl Series {
    fn new(method: &'static str, route: &str, class: &'static str) -> Self {
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status_class", class.to_owned()),
        ];
        Self {
            method,
            class,
            count: metrics::counter!(crate::telemetry::HTTP_REQUESTS, &labels),
            seconds: metrics::histogram!(crate::telemetry::HTTP_SECONDS, &labels),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_short_and_visible() {
        let ok = |s: &str| acceptable_request_id(&HeaderValue::from_str(s).unwrap());
        assert!(ok("abc-123"));
        assert!(ok(&"x".repeat(128)));
        assert!(!ok(&"x".repeat(129)));
        assert!(!ok(""));
        assert!(!ok("has space"));
        assert!(!acceptable_request_id(
            &HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()
        ));
    }

    #[test]
    fn an_error_without_a_body_gets_the_contract_body() {
        let bare = (StatusCode::PAYLOAD_TOO_LARGE, "length limit exceeded").into_response();
        let fixed = with_error_body(bare);
        assert_eq!(fixed.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            fixed.headers()[header::CONTENT_TYPE],
            "application/json",
            "{:?}",
            fixed.headers()
        );
        let unavailable = with_error_body(StatusCode::SERVICE_UNAVAILABLE.into_response());
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "1");
        let fine = with_error_body(StatusCode::NO_CONTENT.into_response());
        assert_eq!(fine.status(), StatusCode::NO_CONTENT);
    }
}
