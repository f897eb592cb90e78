//! Extractors that answer bad input with the contract's error body:
//! JSON bodies, path and query parameters, the bearer token, and the
//! `Idempotency-Key` / `Prefer` headers.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use giftcard_shared::auth::{self, AuthError, Principal};
use giftcard_shared::domain::IdempotencyKey;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body; syntax errors are 400, type and rule errors 422, a wrong
/// content type 415, an oversized body 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

pub fn json_rejection(e: JsonRejection) -> ApiError {
    match e {
        JsonRejection::JsonDataError(e) => ApiError::Unprocessable(format!(
            "the request body does not match the expected shape: {}",
            e.body_text()
                .trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        )),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::BadRequest("the request body is not valid JSON".into())
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "send the body as JSON with `Content-Type: application/json`".into(),
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("the request body is too large".into())
        }
        other => ApiError::BadRequest(format!("the request body could not be read: {other}")),
    }
}

/// A path parameter; a malformed one (e.g. not a UUID) is a 400.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::BadRequest(
                format!("invalid path parameter: {}", e.body_text()),
            )),
            Err(e) => Err(ApiError::BadRequest(format!("invalid path: {e}"))),
        }
    }
}

/// Query parameters; unknown or malformed ones are a 400.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::BadRequest(
                format!("invalid query string: {}", e.body_text()),
            )),
            Err(e) => Err(ApiError::BadRequest(format!("invalid query string: {e}"))),
        }
    }
}

/// An authenticated caller (any role).
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::Unauthenticated("missing `Authorization: Bearer <token>` header".into())
            })?
            .to_str()
            .map_err(|_| ApiError::Unauthenticated("malformed Authorization header".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthenticated(
                    "the Authorization header must be `Bearer <token>`".into(),
                )
            })?;
        auth::verify_any(&state.jwt_secrets(), token)
            .map(Auth)
            .map_err(|e| match e {
                AuthError::Expired => ApiError::Unauthenticated(e.to_string()),
                other => ApiError::Unauthenticated(other.to_string()),
            })
    }
}

/// An authenticated admin; others get 403.
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Auth(p) = Auth::from_request_parts(parts, state).await?;
        if p.admin {
            Ok(Self(p))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// The optional `Idempotency-Key` header.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let s = v.to_str().map_err(|_| {
        ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
    })?;
    IdempotencyKey::parse(s)
        .map(Some)
        .map_err(|e| ApiError::BadRequest(e.0))
}

/// The longest a client may ask the api to hold a purchase request.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// How long to wait for the worker, from `Prefer: wait=N` (clamped to 30 s)
/// or `Prefer: respond-async` (0); other preferences are ignored (RFC 7240).
pub fn preferred_wait(headers: &HeaderMap, default: Duration) -> Result<Duration, ApiError> {
    let mut wait = default;
    for v in headers.get_all("prefer") {
        let s = v
            .to_str()
            .map_err(|_| ApiError::BadRequest("the Prefer header is not valid ASCII".into()))?;
        for pref in s.split(',').map(str::trim) {
            let (name, value) = match pref.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (pref, None),
            };
            if name.eq_ignore_ascii_case("respond-async") {
                wait = Duration::ZERO;
            } else if name.eq_ignore_ascii_case("wait") {
                let secs: u64 = value.and_then(|v| v.parse().ok()).ok_or_else(|| {
                    ApiError::BadRequest(
                        "Prefer: wait must be a whole number of seconds, e.g. `Prefer: wait=5`"
                            .into(),
                    )
                })?;
                wait = Duration::from_secs(secs).min(MAX_WAIT);
            }
        }
    }
    Ok(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn prefer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("prefer", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn prefer_wait_parses_clamps_and_rejects() {
        let d = Duration::from_secs(5);
        assert_eq!(preferred_wait(&HeaderMap::new(), d).unwrap(), d);
        assert_eq!(
            preferred_wait(&prefer("wait=2"), d).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(
            preferred_wait(&prefer("respond-async"), d).unwrap(),
            Duration::ZERO
        );
        assert_eq!(preferred_wait(&prefer("wait=99"), d).unwrap(), MAX_WAIT);
        assert_eq!(
            preferred_wait(&prefer("handling=lenient, wait=1"), d).unwrap(),
            Duration::from_secs(1)
        );
        assert!(preferred_wait(&prefer("wait=soon"), d).is_err());
        assert!(preferred_wait(&prefer("wait=-1"), d).is_err());
    }

    proptest::proptest! {
        /// Any `Prefer` header gives a wait of at most 30 s or a 400;
        /// never a panic.
        #[test]
        fn any_prefer_header_is_a_bounded_wait_or_a_400(v in "[ -~]{0,80}") {
            let d = Duration::from_secs(5);
            match preferred_wait(&prefer(&v), d) {
                Ok(w) => proptest::prop_assert!(w <= MAX_WAIT),
                Err(e) => proptest::prop_assert_eq!(e.status_and_code().0, StatusCode::BAD_REQUEST),
            }
        }
    }
}
