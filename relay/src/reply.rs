//! Replies: for a message whose HTTP answer Vapi takes as its reply (assistant-request,
//! tool-calls, ...), the database answers `{"reply": <body for Vapi>, "upstream": <bool>, ..}`.
//! The relay follows those two keys and nothing else: which types expect a reply, and what a
//! refusal says, are the database's answer.
//!
//! - no `reply` key: the whole answer is the body, as for any other message;
//! - `"upstream": true` and an upstream configured: the upstream's answer, verbatim (upstream.rs),
//!   or `reply` when it cannot be reached or does not answer in time;
//! - otherwise: `reply`. A `null` reply is an empty 200 (voice-request wants raw audio, which the
//!   database has none of).

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use tracing::Span;

use crate::db::Answer;
use crate::upstream::{millis, Upstream, UpstreamAnswer};

/// `outcome` of a reply sent from the database's answer.
pub const REPLIED: &str = "replied";
/// `outcome` of an upstream's answer passed back.
pub const FORWARDED: &str = "forwarded";
/// `outcome` of a reply sent because the upstream gave no answer.
pub const UPSTREAM_FAILED: &str = "upstream_failed";

/// What the database's answer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// No `reply`: send the whole answer.
    Answer(Value),
    /// Send `reply`.
    Reply(Value),
    /// Ask the upstream; send `fallback` (the reply) when it gives no answer.
    AskUpstream { fallback: Value },
}

/// The selection for `answer`, given whether an upstream is configured. `upstream` asks only
/// when it is JSON `true`.
pub fn select(answer: Value, upstream_configured: bool) -> Selection {
    let Value::Object(mut fields) = answer else { return Selection::Answer(answer) };
    let Some(reply) = fields.remove("reply") else { return Selection::Answer(Value::Object(fields)) };
    if upstream_configured && fields.get("upstream") == Some(&Value::Bool(true)) {
        Selection::AskUpstream { fallback: reply }
    } else {
        Selection::Reply(reply)
    }
}

/// The body of a webhook's 200, or the upstream's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The database's whole answer (it had no `reply`).
    Answer(Value),
    /// The database's `reply`; `null` is an empty body.
    Database(Value),
    /// The upstream's answer, as it came.
    Upstream(UpstreamAnswer),
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Self::Answer(json) => Json(json).into_response(),
            Self::Database(Value::Null) => StatusCode::OK.into_response(),
            Self::Database(json) => Json(json).into_response(),
            Self::Upstream(answer) => {
                let mut response = Response::new(Body::from(answer.body));
                *response.status_mut() = answer.status;
                if let Some(content_type) = answer.content_type {
                    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
                }
                response
            }
        }
    }
}

/// What to send for the database's `answer` to the request with these `headers` and `body`, and
/// its `outcome` label. Asks `upstream` when the answer says so; records the upstream's status,
/// latency or failure in the request span.
pub async fn respond(
    upstream: Option<&Upstream>,
    headers: &HeaderMap,
    body: &Bytes,
    answer: Value,
) -> (Reply, &'static str) {
    let upstream_configured = upstream.is_some();
    match (select(answer, upstream_configured), upstream) {
        (Selection::Answer(answer), _) => {
            let outcome = Answer::of(&answer).outcome_label();
            (Reply::Answer(answer), outcome)
        }
        (Selection::Reply(reply), _) => (Reply::Database(reply), REPLIED),
        (Selection::AskUpstream { fallback }, None) => (Reply::Database(fallback), REPLIED),
        (Selection::AskUpstream { fallback }, Some(upstream)) => {
            let span = Span::current();
            let started = Instant::now();
            let forwarded = upstream.forward(headers, body.clone()).await;
            span.record("upstream_latency_ms", millis(started));
            match forwarded {
                Ok(answer) => {
                    span.record("upstream_status", answer.status.as_u16());
                    (Reply::Upstream(answer), FORWARDED)
                }
                Err(err) => {
                    span.record("upstream_error", err.kind());
                    tracing::warn!(error = %err, "the upstream gave no answer; sending the database's reply");
                    (Reply::Database(fallback), UPSTREAM_FAILED)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_answer_without_reply_is_sent_whole() {
        let answer = json!({"applied": true, "outcome": "applied", "message_type": "status-update"});
        assert_eq!(select(answer.clone(), true), Selection::Answer(answer.clone()));
        assert_eq!(select(answer.clone(), false), Selection::Answer(answer));
        for other in [json!([1, 2]), json!("reply"), Value::Null] {
            assert_eq!(select(other.clone(), true), Selection::Answer(other));
        }
    }

    #[test]
    fn upstream_true_asks_the_upstream_when_there_is_one() {
        let reply = json!({"error": "this phone number is not registered"});
        let answer = json!({"applied": false, "message_type": "assistant-request", "reply": reply, "upstream": true});
        assert_eq!(select(answer.clone(), true), Selection::AskUpstream { fallback: reply.clone() });
        assert_eq!(select(answer, false), Selection::Reply(reply), "no upstream: the reply");
    }

    #[test]
    fn anything_but_upstream_true_sends_the_reply() {
        let reply = json!({"assistantId": "asst_1"});
        for upstream in [json!(false), json!("true"), json!(1), Value::Null] {
            let answer = json!({"applied": false, "reply": reply, "upstream": upstream});
            assert_eq!(select(answer, true), Selection::Reply(reply.clone()), "upstream: {upstream}");
        }
        assert_eq!(select(json!({"reply": reply}), true), Selection::Reply(reply.clone()), "upstream missing");
    }

    #[test]
    fn a_null_reply_is_a_reply() {
        let answer = json!({"message_type": "voice-request", "reply": null, "upstream": true});
        assert_eq!(select(answer.clone(), true), Selection::AskUpstream { fallback: Value::Null });
        assert_eq!(select(answer, false), Selection::Reply(Value::Null));
    }

    #[tokio::test]
    async fn replies_are_sent_as_json_and_null_as_an_empty_200() {
        use http_body_util::BodyExt;
        let body = |r: Response| async { r.into_body().collect().await.unwrap().to_bytes() };

        let response = Reply::Database(json!({"eligible": false})).into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body(response).await, r#"{"eligible":false}"#);

        let response = Reply::Database(Value::Null).into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get(header::CONTENT_TYPE).is_none());
        assert!(body(response).await.is_empty());

        let answer = UpstreamAnswer {
            status: StatusCode::ACCEPTED,
            content_type: Some("audio/pcm".parse().unwrap()),
            body: Bytes::from_static(b"\x00\x01raw"),
        };
        let response = Reply::Upstream(answer).into_response();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "audio/pcm");
        assert_eq!(body(response).await, &b"\x00\x01raw"[..]);
    }

    #[tokio::test]
    async fn without_an_upstream_the_outcome_is_replied() {
        let answer = json!({"reply": {"timeoutSeconds": 1.5}, "upstream": true});
        let (reply, outcome) = respond(None, &HeaderMap::new(), &Bytes::new(), answer).await;
        assert_eq!((reply, outcome), (Reply::Database(json!({"timeoutSeconds": 1.5})), REPLIED));
        let (reply, outcome) = respond(None, &HeaderMap::new(), &Bytes::new(), json!({"outcome": "stale"})).await;
        assert_eq!((reply, outcome), (Reply::Answer(json!({"outcome": "stale"})), "stale"));
    }
}
