//! Replies through the relay and the real database, over real HTTP, with a fake upstream app:
//! the database's answer to an assistant-request names the reply, the relay follows it.
//!
//! Each test first asks the database directly whether its answers carry `reply` (voxanne_ext
//! with replies). When they do not, the test prints why and passes without checking anything:
//! the relay's side is proved without a database in tests/upstream.rs and `reply::tests`.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;
use voxanne_relay::testing::{metric_sum, refused_url, Behaviour, FakeUpstream};

/// An assistant-request for a call to `phone_number_id`.
fn assistant_request(phone_number_id: &str) -> String {
    json!({ "message": {
        "type": "assistant-request",
        "timestamp": 1_732_540_000_000_i64,
        "phoneNumberId": phone_number_id,
        "call": {
            "id": new_call_id(),
            "type": "inboundPhoneCall",
            "phoneNumberId": phone_number_id,
            "customer": { "number": "+15551234567" },
        },
    }})
    .to_string()
}

fn new_phone_number_id() -> String {
    format!("pn_{}", Uuid::new_v4().simple())
}

/// The database's own answer to `body` (an assistant-request writes nothing), or None, after
/// saying so, when it has no `reply`.
async fn database_answer(db: &tokio_postgres::Client, test: &str, body: &str) -> Option<Value> {
    let answer: Value = db
        .query_one(voxanne_relay::db::HANDLE_VAPI_MESSAGE, &[&body, &None::<&[u8]>])
        .await
        .expect("handle_vapi_message answers an assistant-request")
        .get(0);
    if answer.get("reply").is_some() {
        return Some(answer);
    }
    eprintln!(
        "SKIPPED {test}: the database answers an assistant-request without \"reply\" ({answer}); \
         the installed voxanne_ext predates replies, so there is nothing for the relay to follow yet"
    );
    None
}

/// An org whose agent answers calls to its phone number.
async fn registered_number(db: &tokio_postgres::Client) -> (String, String) {
    let (org, assistant, number) =
        (Uuid::new_v4().to_string(), format!("asst_{}", Uuid::new_v4().simple()), new_phone_number_id());
    db.execute(
        "SELECT voxanne.upsert_agent(p_org_id => $1::text::uuid, p_vapi_assistant_id => $2, \
         p_name => 'relay reply test', p_vapi_phone_number_id => $3)",
        &[&org, &assistant, &number],
    )
    .await
    .expect("upsert_agent");
    (assistant, number)
}

#[tokio::test]
async fn a_registered_number_is_answered_by_the_database_without_asking_the_upstream() {
    let db = db().await;
    let (assistant, number) = registered_number(&db).await;
    let body = assistant_request(&number);
    let Some(answer) = database_answer(&db, "a_registered_number_is_answered_by_the_database", &body).await else {
        return;
    };
    assert_eq!(answer["upstream"], false, "{answer}");

    let app = FakeUpstream::start(Behaviour::Answer { status: 200, content_type: None, body: b"app".to_vec() }).await;
    let relay = start_relay(&["--upstream-url", &app.url]).await;
    let (status, json) = relay.deliver_json(&body).await;
    assert_eq!((status, &json), (StatusCode::OK, &json!({ "assistantId": assistant })));
    assert!(app.received().is_empty(), "the upstream was asked");
    let replied = r#"voxanne_relay_webhook_requests_total{message_type="assistant-request",outcome="replied"}"#;
    assert!(relay.metrics().await.contains(replied), "counted as replied");
}

#[tokio::test]
async fn an_unregistered_number_is_forwarded_and_the_upstream_answer_comes_back_verbatim() {
    let db = db().await;
    // the odd spacing would not survive a re-serialization
    let body = assistant_request(&new_phone_number_id()).replace("{\"message\":", "{ \"message\" :");
    let Some(answer) = database_answer(&db, "an_unregistered_number_is_forwarded", &body).await else { return };
    assert_eq!(answer["upstream"], true, "{answer}");

    for (status, content_type, app_answer) in [
        (201, "application/json; charset=utf-8", &br#"{ "assistantId" : "asst_from_app" }"#[..]),
        // an error of the app's is an answer too, and not turned into the relay's JSON
        (500, "text/plain", &b"the app failed"[..]),
    ] {
        let app = FakeUpstream::start(Behaviour::Answer {
            status,
            content_type: Some(content_type),
            body: app_answer.to_vec(),
        })
        .await;
        let relay = start_relay(&["--upstream-url", &app.url]).await;
        let response = relay.post(body.clone(), &[("x-vapi-secret", SECRET), ("x-request-id", "req-reply-1")]).await;
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.headers()["content-type"], content_type);
        assert_eq!(response.bytes().await.unwrap(), app_answer, "byte for byte");

        let received = app.received();
        assert_eq!(received.len(), 1, "asked once");
        assert_eq!(received[0].body, body.as_bytes(), "the exact bytes Vapi sent");
        assert_eq!(received[0].headers["x-vapi-secret"], SECRET);
        assert_eq!(received[0].headers["x-request-id"], "req-reply-1");
        assert_eq!(received[0].headers["content-type"], "application/json");
        let forwarded = r#"voxanne_relay_webhook_requests_total{message_type="assistant-request",outcome="forwarded"}"#;
        assert!(relay.metrics().await.contains(forwarded), "counted as forwarded");
    }
}

#[tokio::test]
async fn without_a_reachable_upstream_the_databases_reply_is_sent() {
    let db = db().await;
    let body = assistant_request(&new_phone_number_id());
    let Some(answer) = database_answer(&db, "without_a_reachable_upstream", &body).await else { return };

    let unreachable = refused_url();
    for (flags, outcome) in [(vec!["--upstream-url", unreachable.as_str()], "upstream_failed"), (vec![], "replied")] {
        let relay = start_relay(&flags).await;
        let (status, json) = relay.deliver_json(&body).await;
        assert_eq!((status, &json), (StatusCode::OK, &answer["reply"]), "{flags:?}");
        let series =
            format!(r#"voxanne_relay_webhook_requests_total{{message_type="assistant-request",outcome="{outcome}"}}"#);
        assert!(metric_sum(&relay.metrics().await, "voxanne_relay_webhook_requests_total") >= 1);
        assert!(relay.metrics().await.contains(&series), "counted as {outcome}");
    }
}
