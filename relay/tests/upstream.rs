//! The reply leg against a fake upstream over real HTTP, with no database: `reply::respond` is
//! what the webhook handler calls with the database's answer, here given as data. (The same path
//! through the relay and the real database: tests/replies.rs.)

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use voxanne_relay::reply::{respond, Reply, FORWARDED, REPLIED, UPSTREAM_FAILED};
use voxanne_relay::testing::{refused_url, Behaviour, FakeUpstream};
use voxanne_relay::upstream::{Upstream, UpstreamAnswer};

/// A body as Vapi sends it; the odd spacing would not survive a re-serialization.
const BODY: &[u8] = br#"{ "message" : {"type":"assistant-request",  "call":{"id":"call_1","phoneNumberId":"pn_1"}}}"#;

fn upstream(url: &str, timeout: Duration) -> Upstream {
    let credential_headers = ["x-vapi-secret", "x-signature", "x-timestamp", "authorization"];
    Upstream::new(
        &url.parse().unwrap(),
        timeout,
        16 * 1024 * 1024,
        credential_headers.map(HeaderName::from_static).to_vec(),
    )
    .unwrap()
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(*name, value.parse().unwrap());
    }
    headers
}

/// What Vapi sent with a shared secret, plus headers the upstream must not get.
fn vapi_headers() -> HeaderMap {
    headers(&[
        ("x-vapi-secret", "the-secret"),
        ("x-request-id", "req-42"),
        ("content-type", "application/json; charset=utf-8"),
        ("user-agent", "Vapi/1.0"),
        ("cookie", "session=abc"),
        ("x-forwarded-for", "10.1.2.3"),
    ])
}

fn answer(reply: Value, upstream: bool) -> Value {
    json!({"applied": false, "message_type": "assistant-request", "reply": reply, "upstream": upstream})
}

/// The status, content type and body the relay sends for `reply`.
async fn sent(reply: Reply) -> (StatusCode, Option<String>, Bytes) {
    let response = reply.into_response();
    let status = response.status();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    (status, content_type, response.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn the_upstream_gets_the_exact_body_and_the_credential_and_its_answer_comes_back_verbatim() {
    let app = FakeUpstream::start(Behaviour::Answer {
        status: 202,
        content_type: Some("application/vnd.app+json; charset=latin1"),
        body: br#"{ "assistantId" : "asst_from_app" }"#.to_vec(),
    })
    .await;
    let upstream = upstream(&app.url, Duration::from_secs(5));
    let fallback = json!({"error": "this phone number is not registered"});

    let (reply, outcome) =
        respond(Some(&upstream), &vapi_headers(), &Bytes::from_static(BODY), answer(fallback, true)).await;
    assert_eq!(outcome, FORWARDED);
    let (status, content_type, body) = sent(reply).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(content_type.as_deref(), Some("application/vnd.app+json; charset=latin1"));
    assert_eq!(body, &br#"{ "assistantId" : "asst_from_app" }"#[..], "byte for byte");

    let received = app.received();
    assert_eq!(received.len(), 1, "asked once");
    assert_eq!(received[0].body, BODY, "the exact request bytes");
    let got = &received[0].headers;
    assert_eq!(got["x-vapi-secret"], "the-secret");
    assert_eq!(got["x-request-id"], "req-42");
    assert_eq!(got["content-type"], "application/json");
    for absent in ["user-agent", "cookie", "x-forwarded-for", "x-signature", "x-timestamp"] {
        assert!(got.get(absent).is_none(), "{absent} was forwarded: {got:?}");
    }
    // only what HTTP itself needs, and reqwest's Accept, besides the forwarded headers
    let mut names: Vec<&str> = got.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["accept", "content-length", "content-type", "host", "x-request-id", "x-vapi-secret"]);
}

#[tokio::test]
async fn a_signed_request_forwards_its_signature_and_timestamp() {
    let app = FakeUpstream::start(Behaviour::Answer { status: 200, content_type: None, body: b"ok".to_vec() }).await;
    let upstream = upstream(&app.url, Duration::from_secs(5));
    let signed = headers(&[("x-signature", "ab12"), ("x-timestamp", "1732540000"), ("x-request-id", "req-7")]);

    let (reply, outcome) = respond(Some(&upstream), &signed, &Bytes::from_static(BODY), answer(json!({}), true)).await;
    assert_eq!(outcome, FORWARDED);
    let (status, content_type, body) = sent(reply).await;
    assert_eq!((status, content_type, &body[..]), (StatusCode::OK, None, &b"ok"[..]), "no content type: none sent");
    let got = &app.received()[0].headers;
    assert_eq!((&got["x-signature"], &got["x-timestamp"]), (&"ab12".parse().unwrap(), &"1732540000".parse().unwrap()));
    assert!(got.get("x-vapi-secret").is_none());
}

#[tokio::test]
async fn an_upstream_error_status_is_an_answer_and_comes_back_verbatim() {
    let app = FakeUpstream::start(Behaviour::Answer {
        status: 500,
        content_type: Some("text/plain"),
        body: b"app exploded".to_vec(),
    })
    .await;
    let upstream = upstream(&app.url, Duration::from_secs(5));
    let (reply, outcome) =
        respond(Some(&upstream), &vapi_headers(), &Bytes::from_static(BODY), answer(json!({}), true)).await;
    assert_eq!(outcome, FORWARDED);
    assert_eq!(
        reply,
        Reply::Upstream(UpstreamAnswer {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            content_type: Some("text/plain".parse().unwrap()),
            body: Bytes::from_static(b"app exploded"),
        })
    );
}

#[tokio::test]
async fn a_slow_upstream_gets_the_deadline_then_the_reply_is_sent() {
    let app = FakeUpstream::start(Behaviour::Sleep(Duration::from_secs(5))).await;
    let upstream = upstream(&app.url, Duration::from_millis(300));
    let fallback = json!({"timeoutSeconds": 1.5});

    let started = Instant::now();
    let (reply, outcome) =
        respond(Some(&upstream), &vapi_headers(), &Bytes::from_static(BODY), answer(fallback.clone(), true)).await;
    let elapsed = started.elapsed();
    assert_eq!(outcome, UPSTREAM_FAILED);
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2), "took {elapsed:?}");
    let (status, content_type, body) = sent(reply).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), fallback);
    assert_eq!(app.received().len(), 1, "asked once, never retried");
}

#[tokio::test]
async fn a_refused_connection_sends_the_reply() {
    let upstream = upstream(&refused_url(), Duration::from_secs(5));
    let fallback = json!({"eligible": false});
    let started = Instant::now();
    let (reply, outcome) =
        respond(Some(&upstream), &vapi_headers(), &Bytes::from_static(BODY), answer(fallback.clone(), true)).await;
    assert_eq!(outcome, UPSTREAM_FAILED);
    assert!(started.elapsed() < Duration::from_secs(2), "a refusal is not waited out");
    let (status, _, body) = sent(reply).await;
    assert_eq!((status, serde_json::from_slice::<Value>(&body).unwrap()), (StatusCode::OK, fallback));
}

#[tokio::test]
async fn upstream_false_never_calls_the_upstream() {
    let app = FakeUpstream::start(Behaviour::Answer { status: 200, content_type: None, body: b"app".to_vec() }).await;
    let upstream = upstream(&app.url, Duration::from_secs(5));
    let db_reply = json!({"assistantId": "asst_1"});

    let (reply, outcome) =
        respond(Some(&upstream), &vapi_headers(), &Bytes::from_static(BODY), answer(db_reply.clone(), false)).await;
    assert_eq!((reply, outcome), (Reply::Database(db_reply), REPLIED));
    // nor does an answer without a reply
    let plain = json!({"applied": true, "outcome": "applied", "upstream": true});
    let (reply, outcome) = respond(Some(&upstream), &vapi_headers(), &Bytes::from_static(BODY), plain.clone()).await;
    assert_eq!((reply, outcome), (Reply::Answer(plain), "applied"));
    assert!(app.received().is_empty(), "the upstream was called: {:?}", app.received());
}

#[tokio::test]
async fn a_null_reply_is_an_empty_200_even_when_the_upstream_fails() {
    let voice = json!({"applied": false, "message_type": "voice-request", "reply": null, "upstream": true});
    let refused = upstream(&refused_url(), Duration::from_secs(5));
    for upstream in [None, Some(&refused)] {
        let (reply, _) = respond(upstream, &vapi_headers(), &Bytes::from_static(BODY), voice.clone()).await;
        let (status, content_type, body) = sent(reply).await;
        assert_eq!((status, content_type, body.len()), (StatusCode::OK, None, 0), "{upstream:?}");
    }
}

#[tokio::test]
async fn no_upstream_configured_sends_the_reply() {
    let db_reply = json!({"error": "no tool handler is configured for this assistant"});
    let (reply, outcome) =
        respond(None, &vapi_headers(), &Bytes::from_static(BODY), answer(db_reply.clone(), true)).await;
    assert_eq!(outcome, REPLIED);
    let (status, _, body) = sent(reply).await;
    assert_eq!((status, serde_json::from_slice::<Value>(&body).unwrap()), (StatusCode::OK, db_reply));
}
