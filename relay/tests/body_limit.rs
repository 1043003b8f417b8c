//! Body sizes over real HTTP, with no database: the relay's database is a closed port, so a body
//! that passes size, authentication and JSON is answered 503 `08001` (as in the unit tests).

use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use voxanne_relay::testing::{CountingBody, Relay, SECRET};

const MIB: usize = 1024 * 1024;
const CLOSED_PORT: &str = "host=127.0.0.1 port=1 user=nobody dbname=nothing";

async fn relay() -> Relay {
    Relay::start(CLOSED_PORT, &["--pool-timeout", "1s"]).await
}

/// An end-of-call report padded to `len` bytes.
fn report(len: usize) -> String {
    let head = r#"{"message":{"type":"end-of-call-report","pad":""#;
    let tail = r#""}}"#;
    format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
}

#[tokio::test]
async fn a_15_mib_end_of_call_report_is_accepted() {
    let relay = relay().await;
    for len in [15 * MIB, 16 * MIB] {
        let (status, text) = relay.post_raw(report(len), &[("x-vapi-secret", SECRET)]).await;
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((status, &json["code"]), (StatusCode::SERVICE_UNAVAILABLE, &"08001".into()), "{len}: {json}");
    }
}

#[tokio::test]
async fn a_17_mib_body_is_413_declared_or_streamed() {
    let relay = relay().await;
    let response = relay.post(report(17 * MIB), &[("x-vapi-secret", SECRET)]).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.headers()["connection"], "close");
    assert!(response.json::<Value>().await.unwrap()["message"].is_string());

    // chunked, no Content-Length: refused while reading, at the limit
    let body = CountingBody::new(17 * MIB, 64 * 1024, b' ').without_length();
    let pulled = body.counter();
    let response = relay.post(reqwest::Body::wrap(body), &[("x-vapi-secret", SECRET)]).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(pulled.load(Ordering::SeqCst) > 16 * MIB, "it was read up to the limit");
}

#[tokio::test]
async fn an_unauthenticated_16_mib_body_is_401_without_being_read() {
    let relay = relay().await;
    for headers in [&[][..], &[("x-vapi-secret", "wrong")][..]] {
        // the client offers 1 MiB of its declared 16 and then waits: a relay that read the body
        // before refusing it would never answer
        let body = CountingBody::new(16 * MIB, 64 * 1024, b' ').stall_after(MIB);
        let pulled = body.counter();
        let response =
            tokio::time::timeout(Duration::from_secs(10), relay.post(reqwest::Body::wrap(body), headers)).await;
        let response = response.expect("answered without the rest of the body");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(response.headers()["connection"], "close");
        assert!(pulled.load(Ordering::SeqCst) <= MIB);
    }
    // the same body with the secret is read to its end: it reaches the database
    let body = CountingBody::new(16 * MIB, 64 * 1024, b' ');
    let pulled = body.counter();
    let (status, text) = relay.post_raw(reqwest::Body::wrap(body), &[("x-vapi-secret", SECRET)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "16 MiB of spaces is no JSON: {text}");
    assert_eq!(pulled.load(Ordering::SeqCst), 16 * MIB);
}
