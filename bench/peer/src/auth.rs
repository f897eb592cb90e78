//! Extractors answering bad input with the contract's error body: the
//! bearer token, JSON bodies, path parameters and the `Idempotency-Key`.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use giftcard_shared::auth::{self, Principal};
use giftcard_shared::domain::IdempotencyKey;
use serde::de::DeserializeOwned;

use crate::errors::PeerError;
use crate::AppState;

/// An authenticated caller: `Authorization: Bearer <HS256 JWT>`.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = PeerError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| {
                PeerError::Unauthenticated("missing `Authorization: Bearer <token>` header".into())
            })?
            .to_str()
            .map_err(|_| PeerError::Unauthenticated("malformed Authorization header".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                PeerError::Unauthenticated(
                    "the Authorization header must be `Bearer <token>`".into(),
                )
            })?;
        auth::verify(&state.jwt_secret, token)
            .map(Auth)
            .map_err(|e| PeerError::Unauthenticated(e.to_string()))
    }
}

/// A JSON body: syntax errors 400, shape and rule errors (unknown fields,
/// bad quantity) 422, wrong content type 415, oversized 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = PeerError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(PeerError::Unprocessable(format!(
                "the request body does not match the expected shape: {}",
                e.body_text().trim_start_matches(
                    "Failed to deserialize the JSON body into the target type: "
                )
            ))),
            Err(JsonRejection::JsonSyntaxError(_)) => Err(PeerError::BadRequest(
                "the request body is not valid JSON".into(),
            )),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(PeerError::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            )),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(PeerError::PayloadTooLarge)
            }
            Err(other) => Err(PeerError::BadRequest(format!(
                "the request body could not be read: {other}"
            ))),
        }
    }
}

/// A path parameter; a malformed one (e.g. not a UUID) is a 400.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = PeerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(PeerError::BadRequest(
                format!("invalid path parameter: {}", e.body_text()),
            )),
            Err(e) => Err(PeerError::BadRequest(format!("invalid path: {e}"))),
        }
    }
}

/// The optional `Idempotency-Key` header (1..=255 visible ASCII characters).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, PeerError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let s = v.to_str().map_err(|_| {
        PeerError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
    })?;
    IdempotencyKey::parse(s)
        .map(Some)
        .map_err(|e| PeerError::BadRequest(e.0))
}
