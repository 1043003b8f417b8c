//! POST to the webhook path: authenticate, read the body, check it is JSON, hand it to
//! `voxanne.handle_vapi_message`, and send what its answer names (reply.rs). A body the
//! database refuses as bad input is kept with `voxanne.record_rejected_event` (the dead letter)
//! and answered 422. Nothing touches the database before authentication has passed, and a
//! request whose headers already fail it is refused before its body is read.

use std::borrow::Cow;
use std::time::Duration;

use tokio::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;
use tracing::Span;

use crate::app::AppState;
use crate::db::{Answer, DbError, CANNOT_CONNECT, CONNECTION_LOST};
use crate::error::RelayError;
use crate::json_scan::{self, Excess, JsonLimits};
use crate::metrics;
use crate::reply::{self, Reply};
use crate::spool::Spool;
use crate::verify::{Credential, HeaderCheck, VerifyError};

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
pub async fn webhook(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let span = Span::current();
    let (message_type, result, unread) = match receive(&state, &headers, body).await {
        Err(Refusal { error, unread }) => (metrics::message_type_label(None), Err(error), unread),
        Ok((bytes, credential)) => match Request::parse(&bytes, &state.json_limits) {
            Err(error) => (metrics::message_type_label(None), Err(error), false),
            Ok(request) => {
                let label = request.record(&span);
                (label, answer(&state, &headers, &bytes, &request, credential, &span).await, false)
            }
        },
    };
    let (outcome, mut response) = match result {
        Ok((reply, outcome)) => (outcome, reply.into_response()),
        Err(err) => (err.outcome(), err.into_response()),
    };
    span.record("outcome", outcome);
    if unread {
        // The rest of the body is only thrown away (`linger`), and the connection ends after
        // this answer; say so, or a client that keeps it for its next request sees that fail.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response.extensions_mut().insert(Labels { message_type, outcome });
    response
}

/// A request refused before its body was read to the end.
struct Refusal {
    error: RelayError,
    /// Some of the body was left unread (and is being [`linger`]ed over).
    unread: bool,
}

/// How long the rest of a refused request's body is read and thrown away after the answer.
const LINGER: Duration = Duration::from_secs(5);

/// Size and authentication, in this order: the declared length, the headers' credential, the
/// body read up to the limit, then an HMAC signature over it. A request refused before its body
/// is read to the end has the rest [`linger`]ed over, never buffered.
async fn receive(state: &AppState, headers: &HeaderMap, mut body: Body) -> Result<(Bytes, Credential), Refusal> {
    let limit = state.body_limit;
    let unread = |error: RelayError, body: Body| {
        linger(body, limit);
        Refusal { error, unread: true }
    };
    // the Content-Length of an HTTP/1 request
    if HttpBody::size_hint(&body).lower() > limit as u64 {
        return Err(unread(RelayError::PayloadTooLarge, body));
    }
    let check = match check_headers(state, headers).await {
        Ok(check) => check,
        Err(e) => return Err(unread(e.into(), body)),
    };
    let bytes = match read_body(&mut body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => return Err(unread(e, body)),
    };
    let credential = match check {
        HeaderCheck::Passed(credential) => credential,
        HeaderCheck::NeedsBody(signature) => {
            state.verifier.verify_body(&signature, &bytes).map_err(|e| Refusal { error: e.into(), unread: false })?
        }
    };
    Ok((bytes, credential))
}

/// The headers' check; a token that is no platform token and not among the tenants' digests
/// the relay holds is checked again once they are reloaded (a credential registered since).
async fn check_headers(state: &AppState, headers: &HeaderMap) -> Result<HeaderCheck, VerifyError> {
    match state.verifier.check_headers(headers) {
        Err(VerifyError::InvalidToken) if state.verifier.tenants().is_some() => {
            reload_tenants(state, Instant::now()).await;
            state.verifier.check_headers(headers)
        }
        checked => checked,
    }
}

/// Reloads the tenants' digests for a request that missed them at `missed` (verify/tenants.rs
/// bounds how often).
async fn reload_tenants(state: &AppState, missed: Instant) {
    let Some(tenants) = state.verifier.tenants() else { return };
    tenants
        .reload_after_miss(missed, || async {
            state
                .db
                .webhook_credential_digests()
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "could not load the tenants' credentials"))
                .ok()
        })
        .await;
}

/// The body, read frame by frame: 413 as soon as it passes `limit` bytes, the rest unread.
async fn read_body(body: &mut Body, limit: usize) -> Result<Bytes, RelayError> {
    let hint = HttpBody::size_hint(body);
    let exact = hint.exact();
    let mut bytes = Vec::with_capacity(usize::try_from(hint.lower()).unwrap_or(usize::MAX).min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| RelayError::bad_request(format!("could not read the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if data.len() > limit - bytes.len() {
                return Err(RelayError::PayloadTooLarge);
            }
            if bytes.is_empty() && exact == Some(data.len() as u64) {
                // the whole body in one frame: no copy
                return Ok(data);
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes.into())
}

/// Reads the rest of a refused request's body and throws it away, frame by frame, for at most
/// [`LINGER`] and `budget` bytes, behind the answer. Closing a connection with unread bytes
/// makes the kernel reset it, and a client still sending its body would then see the reset
/// instead of the 401 or 413 (nginx's "lingering close"). Memory stays one frame.
fn linger(mut body: Body, budget: usize) {
    tokio::spawn(async move {
        let discard = async {
            let mut left = budget;
            while let Some(Ok(frame)) = body.frame().await {
                let len = frame.data_ref().map_or(0, Bytes::len);
                if len > left {
                    break;
                }
                left -= len;
            }
        };
        let _ = tokio::time::timeout(LINGER, discard).await;
    });
}

/// The database's answer and what to send for it: its reply, the upstream's answer, or the
/// answer itself.
async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    bytes: &Bytes,
    request: &Request<'_>,
    credential: Credential,
    span: &Span,
) -> Result<(Reply, &'static str), RelayError> {
    let mut json = deliver(state, request, credential).await?;
    if let Some(org_id) = Answer::of(&json).org_id {
        span.record("org_id", org_id);
    }
    if !state.answer_tenant_ids {
        // a sender learns no internal id: another org's, if its message was forged
        if let Value::Object(fields) = &mut json {
            fields.remove("org_id");
            fields.remove("call_id");
        }
    }
    Ok(reply::respond(state.upstream.as_deref(), headers, bytes, json).await)
}

/// An authenticated request whose body is JSON.
struct Request<'a> {
    text: &'a str,
    envelope: Envelope<'a>,
    /// Within the bounds on depth and numbers (json_scan.rs), or why not.
    bounded: Result<(), Excess>,
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
    /// The message's `type`, when it has one.
    fn kind(&self) -> Option<&str> {
        self.envelope.message.as_ref().and_then(|m| m.kind.as_deref())
    }

    /// Records the message's type and call id in the request span; returns the type's label.
    fn record(&self, span: &Span) -> &'static str {
        let message = self.envelope.message.as_ref();
        let kind = self.kind();
        if let Some(kind) = kind {
            span.record("message_type", clip(kind, LOGGED_ID_MAX));
        }
        if let Some(id) = message.and_then(|m| m.call.as_ref()).and_then(|c| c.id.as_deref()) {
            span.record("vapi_call_id", clip(id, LOGGED_ID_MAX));
        }
        metrics::message_type_label(kind)
    }
}

impl<'a> Request<'a> {
    /// An authenticated body's UTF-8 and JSON syntax, in this order, then its bounds. A body out
    /// of bounds is JSON that PostgreSQL would refuse or pay dearly for: it is bad input, kept
    /// in the dead letter and answered 422 like the database's own refusals (`deliver`).
    fn parse(body: &'a [u8], limits: &JsonLimits) -> Result<Self, RelayError> {
        let text = std::str::from_utf8(body).map_err(|e| RelayError::bad_request(format!("body is not UTF-8: {e}")))?;
        let envelope = Envelope::read(text)?;
        Ok(Request { text, envelope, bounded: json_scan::check(text, limits) })
    }
}

/// The database's answer, or the error to send; a body refused as bad input (by the bounds or
/// the database), or as another org's for a tenant's credential, is stored first.
async fn deliver(state: &AppState, request: &Request<'_>, credential: Credential) -> Result<Value, RelayError> {
    let text = request.text;
    if let Err(Excess { code, message }) = &request.bounded {
        let rejected = |code, message| RelayError::Rejected { code, message };
        return Err(dead_letter(state, text, code.to_string(), message.clone(), rejected).await);
    }
    if let Some(spool) = state.spool.as_deref().filter(|spool| spool.database_down()) {
        if spool.admits(request.kind()).is_ok() {
            let failure =
                DbError::Transient { code: CANNOT_CONNECT.into(), source: "found unreachable a moment ago".into() };
            return spool_or(spool, request, credential, failure).await;
        }
    }
    match state.db.handle_vapi_message(text, credential.digest()).await {
        Ok(json) => Ok(json),
        Err(DbError::Permanent { code, message }) => {
            Err(dead_letter(state, text, code, message, |code, message| RelayError::Rejected { code, message }).await)
        }
        Err(DbError::Forbidden { code, message }) => {
            Err(dead_letter(state, text, code, message, |code, message| RelayError::Forbidden { code, message }).await)
        }
        Err(DbError::Unauthorized) => {
            // revoked since the relay loaded the digests: drop it from them
            reload_tenants(state, Instant::now()).await;
            Err(DbError::Unauthorized.into())
        }
        Err(err @ DbError::Transient { .. }) => match &state.spool {
            Some(spool) => {
                if unreachable(&err) {
                    spool.database_unreachable();
                }
                spool_or(spool, request, credential, err).await
            }
            None => Err(err.into()),
        },
        Err(err) => Err(err.into()),
    }
}

/// A failure that says the database is not there (rather than slow): no connection could be
/// opened, or the one in use was lost.
fn unreachable(err: &DbError) -> bool {
    matches!(err, DbError::Transient { code, .. } if code == CANNOT_CONNECT || code == CONNECTION_LOST || code.starts_with("57P"))
}

/// The answer of a message the database could not take: `{"spooled": true}` once it is on disk
/// in the spool, or the database's failure (503) when it cannot be spooled.
async fn spool_or(
    spool: &Spool,
    request: &Request<'_>,
    credential: Credential,
    failure: DbError,
) -> Result<Value, RelayError> {
    let spooled = match spool.admits(request.kind()) {
        Ok(()) => spool.append(request.text, credential.digest()).await,
        Err(refused) => Err(refused),
    };
    match spooled {
        Ok(()) => {
            tracing::info!(error = %failure, "the database cannot take the message; spooled");
            Ok(serde_json::json!({ "spooled": true }))
        }
        Err(refused) => {
            metrics::record_spool_refused(refused.label());
            tracing::warn!(error = %failure, spool = %refused, "the database cannot take the message, nor the spool");
            Err(failure.into())
        }
    }
}

/// Stores a body the database refused, and answers it with `refusal` (422 or 403). Storing must
/// never fail as "bad input": that would answer 422 (do not retry) for a body that was not kept.
/// `record_rejected_event` clips what it must and refuses no body; any permanent failure of the
/// store itself is answered 500, so the sender comes back.
async fn dead_letter(
    state: &AppState,
    text: &str,
    code: String,
    message: String,
    refusal: fn(String, String) -> RelayError,
) -> RelayError {
    match state.db.record_rejected_event(text, &code, &message).await {
        Ok(id) => {
            tracing::info!(sqlstate = %code, message = %message, rejected_event_id = id, "refused; body stored");
            refusal(code, message)
        }
        Err(DbError::Permanent { code, message }) => {
            RelayError::internal(format!("storing the rejected body failed ({code}): {message}"))
        }
        Err(err) => err.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use axum::http::StatusCode;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::app::app;
    use crate::app::tests::{post, send, send_to, state, state_with};
    use crate::db;
    use crate::testing::CountingBody;
    use crate::verify::{sign, unix_now, SECRET_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

    const MIB: usize = 1024 * 1024;

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
        // past serde_json's recursion limit (128), within a raised --json-max-depth: no 400
        let deep = format!(r#"{{"message":{{"type":"hang","x":{}{}}}}}"#, "[".repeat(400), "]".repeat(400));
        let (status, _, json) =
            send_to(state_with(&["--json-max-depth", "1000"]), post(deep, &[(SECRET_HEADER, "s3cret")])).await;
        assert_eq!((status, &json["code"]), (StatusCode::SERVICE_UNAVAILABLE, &db::CANNOT_CONNECT.into()));
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

    /// The answer to `request`, which must come within 5 s.
    async fn answer_to(request: axum::http::Request<Body>) -> (StatusCode, HeaderMap, Value) {
        let answered = tokio::time::timeout(Duration::from_secs(5), send_to(state_with(&[]), request)).await;
        answered.expect("answered without waiting for the rest of the body")
    }

    #[tokio::test]
    async fn headers_that_fail_authentication_are_refused_before_the_body_is_read() {
        let ts = unix_now().to_string();
        let stale = (unix_now() - 3600).to_string();
        let stale_sig = sign(b"k3y", &stale, b"{}");
        for headers in [
            vec![],
            vec![(SECRET_HEADER, "nope")],
            vec![(TIMESTAMP_HEADER, stale.as_str()), (SIGNATURE_HEADER, stale_sig.as_str())],
            vec![(TIMESTAMP_HEADER, ts.as_str()), (SIGNATURE_HEADER, "not hex")],
        ] {
            // 16 MiB declared, none of it ever sent: a handler that read it would wait for ever
            let body = CountingBody::new(16 * MIB, 64 * 1024, b' ').stall_after(0);
            let pulled = body.counter();
            let (status, response_headers, json) = answer_to(post(Body::new(body), &headers)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
            assert!(json["message"].is_string());
            assert_eq!(pulled.load(Ordering::SeqCst), 0, "{headers:?}");
            assert_eq!(response_headers[header::CONNECTION], "close", "the connection cannot be reused");
        }
    }

    #[tokio::test]
    async fn a_signature_is_checked_over_the_whole_body() {
        let ts = unix_now().to_string();
        let wrong = sign(b"k3y", &ts, b"another body");
        let body = CountingBody::new(2 * MIB, 64 * 1024, b' ');
        let pulled = body.counter();
        let headers = [(TIMESTAMP_HEADER, ts.as_str()), (SIGNATURE_HEADER, wrong.as_str())];
        let (status, response_headers, json) = answer_to(post(Body::new(body), &headers)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json["message"], "invalid signature");
        assert_eq!(pulled.load(Ordering::SeqCst), 2 * MIB, "HMAC needs the body");
        assert!(response_headers.get(header::CONNECTION).is_none(), "the body was read to its end");
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_413_before_anything_is_read() {
        for headers in [&[(SECRET_HEADER, "s3cret")][..], &[]] {
            let body = CountingBody::new(16 * MIB + 1, 64 * 1024, b' ').stall_after(0);
            let pulled = body.counter();
            let (status, response_headers, json) = answer_to(post(Body::new(body), headers)).await;
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{headers:?}");
            assert!(json["message"].is_string());
            assert_eq!(response_headers[header::CONNECTION], "close");
            assert_eq!(pulled.load(Ordering::SeqCst), 0);
        }
    }

    #[tokio::test]
    async fn a_streamed_body_is_413_as_soon_as_it_passes_the_limit() {
        // no length; the body offers two chunks past the limit, then waits: a handler that read
        // further before answering would wait for ever
        let chunk = 64 * 1024;
        let body = CountingBody::new(64 * MIB, chunk, b' ').without_length().stall_after(16 * MIB + 2 * chunk);
        let (status, response_headers, json) = answer_to(post(Body::new(body), &[(SECRET_HEADER, "s3cret")])).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(json["message"].is_string());
        assert_eq!(response_headers[header::CONNECTION], "close");
    }

    #[tokio::test]
    async fn bodies_up_to_sixteen_mib_are_accepted() {
        let pad = |n: usize| format!(r#"{{"message":{{"type":"end-of-call-report","pad":"{}"}}}}"#, "x".repeat(n));
        for body in [pad(15 * MIB), pad(16 * MIB - 64)] {
            let len = body.len();
            assert!(len <= 16 * MIB);
            let (status, _, json) = send_to(state_with(&[]), post(body, &[(SECRET_HEADER, "s3cret")])).await;
            // the closed port of the test state's database: it got past size, auth and JSON
            assert_eq!((status, &json["code"]), (StatusCode::SERVICE_UNAVAILABLE, &db::CANNOT_CONNECT.into()), "{len}");
        }
        let (status, _, _) = send_to(state_with(&[]), post(pad(17 * MIB), &[(SECRET_HEADER, "s3cret")])).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "17 MiB");
    }
}
