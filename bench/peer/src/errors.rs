//! The peer's error type, answered with the contract's body
//! `{"error": {"code", "message"}}`; a 5xx shows the client nothing internal.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sea_orm::{DbErr, RuntimeErr};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("no such resource")]
    NotFound,
    #[error("gift card {0} does not exist")]
    GiftCardNotFound(uuid::Uuid),
    /// 400: not well formed (syntax, headers, path).
    #[error("{0}")]
    BadRequest(String),
    /// 422: well formed, but a value breaks a rule.
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("this Idempotency-Key was already used for a different request; use a new key for a new purchase")]
    IdempotencyKeyReused,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl PeerError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
            Self::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::GiftCardNotFound(_) => (StatusCode::NOT_FOUND, "GIFT_CARD_NOT_FOUND"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
            Self::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_FAILED"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
            }
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Self::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED")
            }
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }
}

impl From<DbErr> for PeerError {
    fn from(e: DbErr) -> Self {
        match e {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::Unavailable("the database is unavailable; retry shortly".into())
            }
            other => Self::Internal(anyhow::Error::new(other).context("database statement failed")),
        }
    }
}

impl IntoResponse for PeerError {
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
        let body = json!({"error": {"code": code, "message": message}});
        (status, Json(body)).into_response()
    }
}

pub type PeerResult<T> = Result<T, PeerError>;

/// The SQLSTATE of a failed statement, if PostgreSQL reported one.
pub fn sqlstate(e: &DbErr) -> Option<String> {
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(s)) | DbErr::Query(RuntimeErr::SqlxError(s)) => s
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned()),
        _ => None,
    }
}

/// Whether PostgreSQL aborted the statement to resolve a concurrency clash
/// (deadlock or serialization failure): the transaction may be retried.
pub fn is_concurrency_abort(e: &DbErr) -> bool {
    matches!(sqlstate(e).as_deref(), Some("40P01" | "40001"))
}
