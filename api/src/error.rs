//! One error type for every handler, mapped to a status and the contract's
//! body `{"error": {"code", "message"}}`. A 5xx logs its cause chain and
//! shows the client nothing internal.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use giftcard_shared::domain::FailureCode;
use sea_orm::DbErr;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("this route needs an admin token (role \"admin\")")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("gift card {0} does not exist")]
    GiftCardNotFound(uuid::Uuid),
    /// 400: the request is not well formed (syntax, headers, path, query).
    #[error("{0}")]
    BadRequest(String),
    /// 422: well formed, but a value breaks a rule.
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("this Idempotency-Key was already used for a different request; use a new key for a new purchase")]
    IdempotencyKeyReused,
    #[error("{message}")]
    Conflict { code: ConflictCode, message: String },
    /// 429: this user sent more purchases than their rate allows.
    #[error(
        "too many purchases from this user; retry after {} s (the Retry-After header)",
        retry_after_secs(*retry_after)
    )]
    RateLimited { retry_after: Duration },
    /// 503: nothing was done (a purchase was not queued); retry shortly.
    #[error("{0}")]
    Unavailable(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// The 409 codes of admin operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictCode {
    /// The code was already sold and cannot be withdrawn.
    ActivationCodeUsed,
    /// The dead letter was already replayed or discarded.
    DeadLetterResolved,
    /// The dead letter's message was not signed by an api: discard it.
    DeadLetterNotAuthentic,
    /// The dead letter's message is past PURCHASES_DLQ's retention.
    DeadLetterExpired,
}

impl ConflictCode {
    pub const ALL: [Self; 4] = [
        Self::ActivationCodeUsed,
        Self::DeadLetterResolved,
        Self::DeadLetterNotAuthentic,
        Self::DeadLetterExpired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ActivationCodeUsed => "ACTIVATION_CODE_USED",
            Self::DeadLetterResolved => "DEAD_LETTER_RESOLVED",
            Self::DeadLetterNotAuthentic => "DEAD_LETTER_NOT_AUTHENTIC",
            Self::DeadLetterExpired => "DEAD_LETTER_EXPIRED",
        }
    }
}

/// `error.code` of a purchase that a worker dead-lettered.
pub const DEAD_LETTERED: &str = "DEAD_LETTERED";

/// Every `error.code` the api can answer with, in an error body or in a
/// purchase's `error`; the OpenAPI document names them all.
pub fn all_codes() -> Vec<&'static str> {
    let mut codes = vec![
        "UNAUTHENTICATED",
        "FORBIDDEN",
        "NOT_FOUND",
        "GIFT_CARD_NOT_FOUND",
        "VALIDATION_FAILED",
        "UNSUPPORTED_MEDIA_TYPE",
        "PAYLOAD_TOO_LARGE",
        "IDEMPOTENCY_KEY_REUSED",
        "RATE_LIMITED",
        "SERVICE_UNAVAILABLE",
        "METHOD_NOT_ALLOWED",
        "INTERNAL",
        DEAD_LETTERED,
    ];
    codes.extend(ConflictCode::ALL.map(ConflictCode::as_str));
    codes.extend(FailureCode::ALL.map(FailureCode::as_str));
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// Whole seconds for a `Retry-After` header: rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The contract's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// SCREAMING_SNAKE_CASE code, e.g. `VALIDATION_FAILED`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::GiftCardNotFound(_) => (StatusCode::NOT_FOUND, "GIFT_CARD_NOT_FOUND"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
            Self::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
            }
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Self::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
            }
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code.as_str()),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }

    pub fn not_found() -> Self {
        Self::NotFound("no such resource".into())
    }
}

impl From<DbErr> for ApiError {
    fn from(e: DbErr) -> Self {
        match e {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::Unavailable(
                    "the database is unavailable; retry shortly (purchases are still accepted)"
                        .into(),
                )
            }
            other => Self::Internal(anyhow::Error::new(other).context("database statement failed")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            Self::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "internal error");
                "an internal error occurred; retry, and report the X-Request-Id if it persists"
                    .to_owned()
            }
            other => other.to_string(),
        };
        let retry_after = match &self {
            Self::RateLimited { retry_after } => Some(retry_after_secs(*retry_after)),
            Self::Unavailable(_) => Some(1),
            _ => None,
        };
        let mut response = error_response(status, code, message);
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A response with the contract's error body.
pub fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message,
        },
    };
    (status, Json(body)).into_response()
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_answers_a_code_the_document_names() {
        let codes = all_codes();
        let errors = [
            ApiError::Unauthenticated(String::new()),
            ApiError::Forbidden,
            ApiError::not_found(),
            ApiError::GiftCardNotFound(uuid::Uuid::nil()),
            ApiError::BadRequest(String::new()),
            ApiError::Unprocessable(String::new()),
            ApiError::UnsupportedMediaType(String::new()),
            ApiError::PayloadTooLarge(String::new()),
            ApiError::IdempotencyKeyReused,
            ApiError::RateLimited {
                retry_after: Duration::from_millis(1),
            },
            ApiError::Unavailable(String::new()),
            ApiError::MethodNotAllowed,
            ApiError::Internal(anyhow::anyhow!("x")),
        ];
        for e in errors {
            let (_, code) = e.status_and_code();
            assert!(codes.contains(&code), "{code} missing from all_codes()");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn a_429_and_a_503_carry_retry_after() {
        let r = ApiError::RateLimited {
            retry_after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = ApiError::Unavailable("x".into()).into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
