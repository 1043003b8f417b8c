//! POST to the webhook path: authenticate, check the body is JSON, hand it to
//! `voxanne.handle_vapi_message`. A body the database refuses as bad input is kept with
//! `voxanne.record_rejected_event` (the dead letter) and answered 422. Nothing touches the
//! database before authentication has passed.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;
use tracing::Span;

use crate::app::AppState;
use crate::db::{Answer, DbError};
use crate::error::RelayError;
use crate::metrics;
use crate::verify::Verifier;

/// The labels of a webhook's metrics. The handler returns them as a response extension, which
/// the `observe` middleware (app.rs) reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labels {
    pub message_type: &'static str,
    pub outcome: &'static str,
}

/// Longest message type or call id recorded in the request span, in bytes.
const LOGGED_ID_MAX: usize = 128;

/// `s` cut to at most `max` bytes, at a char boundary.
fn clip(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// The handler. The span gets the message's type and call id before the statement, its org and
/// outcome after; the labels go back with the response, whatever it is.
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (Extension<Labels>, Result<Json<Value>, RelayError>) {
    let span = Span::current();
    let (message_type, result) = match read(&state.verifier, &headers, &body) {
        Ok(request) => (request.record(&span), deliver(&state, request.text).await),
        Err(err) => (metrics::message_type_label(None), Err(err)),
    };
    let outcome = match &result {
        Ok(json) => {
            let answer = Answer::of(json);
            if let Some(org_id) = answer.org_id {
                span.record("org_id", org_id);
            }
            answer.outcome_label()
        }
        Err(err) => err.outcome(),
    };
    span.record("outcome", outcome);
    (Extension(Labels { message_type, outcome }), result.map(Json))
}

/// An authenticated request whose body is JSON.
struct Request<'a> {
    text: &'a str,
    envelope: Envelope<'a>,
}

/// The parts of a Vapi message the relay looks at, for logs and metrics only; the database
/// parses the body for real.
#[derive(Default, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    message: Option<Message<'a>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    call: Option<CallRef<'a>>,
}

#[derive(Deserialize)]
struct CallRef<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
}

impl<'a> Envelope<'a> {
    /// Checks that `text` is one JSON value and reads the envelope, in one pass. JSON of
    /// another shape (a `message` that is not an object, a `type` that is not a string, a
    /// repeated key) or holding a value serde has no type for (a number beyond f64, a lone
    /// surrogate escape) is still the database's to judge: it reads as an empty envelope, after
    /// a second pass that checks the syntax only.
    fn read(text: &'a str) -> Result<Self, RelayError> {
        serde_json::from_str(text).or_else(|_| match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => Ok(Self::default()),
            Err(e) => Err(RelayError::bad_request(format!("body is not valid JSON: {e}"))),
        })
    }
}

impl Request<'_> {
    /// Records the message's type and call id in the request span; returns the type's label.
    fn record(&self, span: &Span) -> &'static str {
        let message = self.envelope.message.as_ref();
        let kind = message.and_then(|m| m.kind.as_deref());
        if let Some(kind) = kind {
            span.record("message_type", clip(kind, LOGGED_ID_MAX));
        }
        if let Some(id) = message.and_then(|m| m.call.as_ref()).and_then(|c| c.id.as_deref()) {
            span.record("vapi_call_id", clip(id, LOGGED_ID_MAX));
        }
        metrics::message_type_label(kind)
    }
}

/// Size, authentication, UTF-8 and JSON syntax, in this order.
fn read<'a>(
    verifier: &Verifier,
    headers: &HeaderMap,
    body: &'a Result<Bytes, BytesRejection>,
) -> Result<Request<'a>, RelayError> {
    let body = body.as_ref().map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => RelayError::PayloadTooLarge,
        _ => RelayError::bad_request(rejection.body_text()),
    })?;
    verifier.verify(headers, body)?;
    let text = std::str::from_utf8(body).map_err(|e| RelayError::bad_request(format!("body is not UTF-8: {e}")))?;
    Ok(Request { text, envelope: Envelope::read(text)? })
}

/// The database's answer, or the error to send; a body refused as bad input is stored first.
async fn deliver(state: &AppState, text: &str) -> Result<Value, RelayError> {
    match state.db.handle_vapi_message(text).await {
        Ok(json) => Ok(json),
        Err(DbError::Permanent { code, message }) => Err(dead_letter(state, text, code, message).await),
        Err(err) => Err(err.into()),
    }
}

/// Stores a body the database refused, and answers it `Rejected` (422). Storing must never
/// fail as "bad input": that would answer 422 (do not retry) for a body that was not kept.
/// `record_rejected_event` clips what it must and refuses no body; any permanent failure of the
/// store itself is answered 500, so the sender comes back.
async fn dead_letter(state: &AppState, text: &str, code: String, message: String) -> RelayError {
    match state.db.record_rejected_event(text, &code, &message).await {
        Ok(id) => {
            tracing::info!(sqlstate = %code, message = %message, rejected_event_id = id, "rejected as bad input; body stored");
            RelayError::Rejected { code, message }
        }
        Err(DbError::Permanent { code, message }) => {
            RelayError::internal(format!("storing the rejected body failed ({code}): {message}"))
        }
        Err(err) => err.into(),
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;
    use crate::app::app;
    use crate::app::tests::{post, send, state};
    use crate::db;
    use crate::verify::{sign, unix_now, SECRET_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

    #[test]
    fn clipping_keeps_whole_characters() {
        assert_eq!(clip("abc", 10), "abc");
        assert_eq!(clip("abc", 2), "ab");
        assert_eq!(clip("aé", 2), "a", "é is two bytes");
        assert_eq!(clip("😀😀", 7), "😀");
        assert_eq!(clip("", 0), "");
    }

    #[tokio::test]
    async fn missing_or_wrong_credentials_are_401() {
        let ts = unix_now().to_string();
        let bad_sig = sign(b"wrong", &ts, b"{}");
        let stale = (unix_now() - 3600).to_string();
        let stale_sig = sign(b"k3y", &stale, b"{}");
        for headers in [
            vec![],
            vec![(SECRET_HEADER, "nope")],
            vec![(TIMESTAMP_HEADER, ts.as_str()), (SIGNATURE_HEADER, bad_sig.as_str())],
            vec![(TIMESTAMP_HEADER, stale.as_str()), (SIGNATURE_HEADER, stale_sig.as_str())],
        ] {
            let (status, _, body) = send(post("{}", &headers)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
            assert!(body["message"].is_string());
        }
    }

    #[tokio::test]
    async fn authentication_comes_before_json_validation() {
        let (status, _, _) = send(post("not json", &[])).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn malformed_json_is_400() {
        for body in ["not json", "{\"message\":", "", "{} trailing"] {
            let (status, _, json) = send(post(body, &[(SECRET_HEADER, "n3w")])).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
            assert!(json["message"].as_str().unwrap().contains("JSON"), "{json}");
        }
        let (status, _, json) = send(post(vec![b'"', 0xff, b'"'], &[(SECRET_HEADER, "n3w")])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(json["message"].as_str().unwrap().contains("UTF-8"));
    }

    /// The test state's database is a closed port: reaching it answers 503 `CANNOT_CONNECT`.
    async fn reaches_the_database(body: &str) -> bool {
        let (status, _, json) = send(post(body.to_string(), &[(SECRET_HEADER, "s3cret")])).await;
        status == StatusCode::SERVICE_UNAVAILABLE && json["code"] == db::CANNOT_CONNECT
    }

    #[tokio::test]
    async fn json_of_any_shape_goes_to_the_database() {
        for body in [
            r#"{"message":{"type":"status-update","call":{"id":"call-1"}}}"#,
            r#"{"message":5}"#,
            r#"{"message":{"type":5}}"#,
            r#"{"message":{"type":"status-update","call":"call-1"}}"#,
            r#"{"message":{"type":"status-update"},"message":{"type":"hang"}}"#,
            r#"{"message":{"type":"hang","x":1e400}}"#,
            r#"{"message":{"type":"\ud800"}}"#,
            r#"{"message":{"type":"hang","x":"\udc00"}}"#,
            r#"[1,2]"#,
            r#""just a string""#,
            r#"-1e400"#,
            " {} \n",
        ] {
            assert!(reaches_the_database(body).await, "{body}");
        }
        let deep = format!(r#"{{"message":{{"type":"hang","x":{}{}}}}}"#, "[".repeat(400), "]".repeat(400));
        assert!(reaches_the_database(&deep).await, "nesting deeper than serde_json's recursion limit");
    }

    async fn labels_of(body: &str, headers: &[(&str, &str)]) -> Labels {
        let response = app(state()).oneshot(post(body.to_string(), headers)).await.unwrap();
        *response.extensions().get::<Labels>().expect("the webhook's labels travel with its response")
    }

    #[tokio::test]
    async fn the_response_carries_the_labels_of_its_metrics() {
        let secret = [(SECRET_HEADER, "s3cret")];
        let status_update = r#"{"message":{"type":"status-update","call":{"id":"call-1"}}}"#;
        for (body, headers, message_type, outcome) in [
            (status_update, &secret[..], "status-update", "unavailable"),
            (status_update, &[], "unknown", "unauthorized"),
            (r#"{"message":{"type":7}}"#, &secret, "unknown", "unavailable"),
            (r#"{"message":{"type":"x-new"}}"#, &secret, "other", "unavailable"),
            ("{", &secret, "unknown", "bad_request"),
        ] {
            assert_eq!(labels_of(body, headers).await, Labels { message_type, outcome }, "{body}");
        }
    }
}
