//! `RelayError`: every way a webhook can fail, and the HTTP answer for each.
//!
//! | error                          | status | body                                   |
//! |--------------------------------|--------|----------------------------------------|
//! | `Unauthorized`                 | 401    | `{"message": why}`                     |
//! | `PayloadTooLarge`              | 413    | `{"message": ..}`                      |
//! | `BadRequest`                   | 400    | `{"message": why}`                     |
//! | `Forbidden` (42501)            | 403    | `{"code": sqlstate, "message": db}`    |
//! | `Rejected` (class 22, 42704..) | 422    | `{"code": sqlstate, "message": db}`    |
//! | `Unavailable` (transient)      | 503    | `{"code": .., "message": "temporarily unavailable, retry"}` |
//! | `Overloaded` (`--max-in-flight`) | 503  | `{"code": "overloaded", "message": "temporarily unavailable, retry"}` |
//! | `Internal`                     | 500    | `{"message": "internal error"}`        |
//!
//! Internal details never reach the client: the response carries the error as an extension and
//! the `observe` middleware in `app.rs` logs it (the axum error-handling example's pattern).

use std::panic::Location;
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::db::{BoxError, DbError};
use crate::verify::VerifyError;

pub const RETRY_MESSAGE: &str = "temporarily unavailable, retry";
/// The `code` of a webhook shed by `--max-in-flight`.
pub const OVERLOADED: &str = "overloaded";

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("unauthorized: {0}")]
    Unauthorized(#[from] VerifyError),

    #[error("request body is larger than the limit")]
    PayloadTooLarge,

    #[error("{0}")]
    BadRequest(String),

    /// A tenant's credential sent another org's message (stored as a rejected event).
    #[error("forbidden ({code}): {message}")]
    Forbidden { code: String, message: String },

    /// The database refused the body as bad input (it has been stored as a rejected event).
    #[error("rejected ({code}): {message}")]
    Rejected { code: String, message: String },

    /// Transient: the sender should redeliver.
    #[error("unavailable ({code}): {source}")]
    Unavailable { code: String, source: BoxError },

    /// `--max-in-flight` webhooks are in flight already.
    #[error("too many webhooks in flight")]
    Overloaded,

    #[error("internal error at {location}: {source}")]
    Internal { source: BoxError, location: &'static Location<'static> },
}

impl RelayError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    #[track_caller]
    pub fn internal(source: impl Into<BoxError>) -> Self {
        Self::Internal { source: source.into(), location: Location::caller() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable { .. } | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `outcome` label in metrics and logs.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::PayloadTooLarge => "too_large",
            Self::BadRequest(_) => "bad_request",
            Self::Forbidden { .. } => "forbidden",
            Self::Rejected { .. } => "rejected",
            Self::Unavailable { .. } => "unavailable",
            Self::Overloaded => "overloaded",
            Self::Internal { .. } => "internal",
        }
    }
}

impl From<DbError> for RelayError {
    #[track_caller]
    fn from(err: DbError) -> Self {
        match err {
            DbError::Permanent { code, message } => Self::Rejected { code, message },
            DbError::Transient { code, source } => Self::Unavailable { code, source },
            DbError::Internal(source) => Self::Internal { source, location: Location::caller() },
            // the same answer as a token the relay does not know: no oracle
            DbError::Unauthorized => Self::Unauthorized(VerifyError::InvalidToken),
            DbError::Forbidden { code, message } => Self::Forbidden { code, message },
        }
    }
}

impl IntoResponse for RelayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            Self::Unauthorized(e) => json!({ "message": e.to_string() }),
            Self::PayloadTooLarge | Self::BadRequest(_) => json!({ "message": self.to_string() }),
            Self::Rejected { code, message } | Self::Forbidden { code, message } => {
                json!({ "code": code, "message": message })
            }
            Self::Unavailable { code, .. } => json!({ "code": code, "message": RETRY_MESSAGE }),
            Self::Overloaded => json!({ "code": OVERLOADED, "message": RETRY_MESSAGE }),
            Self::Internal { .. } => json!({ "message": "internal error" }),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response.extensions_mut().insert(Arc::new(self));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn answer(err: RelayError) -> (StatusCode, serde_json::Value) {
        let response = err.into_response();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn auth_failures_are_401() {
        for e in [
            VerifyError::MissingCredentials("x-vapi-secret".into()),
            VerifyError::InvalidToken,
            VerifyError::TimestampTooOld,
        ] {
            let (status, body) = answer(e.clone().into()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(body["message"], e.to_string());
        }
    }

    #[tokio::test]
    async fn size_and_syntax_failures_are_413_and_400() {
        assert_eq!(answer(RelayError::PayloadTooLarge).await.0, StatusCode::PAYLOAD_TOO_LARGE);
        let (status, body) = answer(RelayError::bad_request("body is not valid JSON")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["message"], "body is not valid JSON");
    }

    #[tokio::test]
    async fn permanent_database_errors_are_422_with_code_and_message() {
        let err: RelayError = DbError::Permanent { code: "42704".into(), message: "no active agent".into() }.into();
        let (status, body) = answer(err).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body, json!({ "code": "42704", "message": "no active agent" }));
    }

    #[tokio::test]
    async fn transient_database_errors_are_503_without_details() {
        let err: RelayError = DbError::Transient { code: "40001".into(), source: "could not serialize".into() }.into();
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body, json!({ "code": "40001", "message": RETRY_MESSAGE }));
    }

    #[tokio::test]
    async fn overload_is_503_with_retry_after() {
        let response = RelayError::Overloaded.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body, json!({ "code": "overloaded", "message": RETRY_MESSAGE }));
    }

    #[tokio::test]
    async fn internal_errors_are_a_bare_500() {
        let err: RelayError = DbError::Internal("permission denied for function handle_vapi_message".into()).into();
        assert!(matches!(&err, RelayError::Internal { location, .. } if location.file().ends_with("error.rs")));
        let (status, body) = answer(err).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, json!({ "message": "internal error" }));
    }

    #[test]
    fn the_error_travels_with_the_response_for_logging() {
        let response = RelayError::internal("boom").into_response();
        let err = response.extensions().get::<Arc<RelayError>>().unwrap();
        assert_eq!(err.outcome(), "internal");
        assert!(err.to_string().contains("boom"));
    }
}
