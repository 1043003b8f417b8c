//! POST /vapi/webhook against the real extension, over real HTTP.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use voxanne_relay::testing::{config, HMAC_KEY};
use voxanne_relay::verify::{sign, unix_now};

/// Rows in voxanne.outbox for an org.
async fn outbox(db: &tokio_postgres::Client, org: &str) -> i64 {
    count(db, "SELECT count(*) FROM voxanne.outbox WHERE org_id = $1::text::uuid", &[&org]).await
}

/// Rows in voxanne.rejected_events holding exactly this body.
async fn rejected(db: &tokio_postgres::Client, body: &str) -> i64 {
    count(db, "SELECT count(*) FROM voxanne.rejected_events WHERE body = $1", &[&body]).await
}

fn transcript(assistant: &str, call_id: &str, text: &str) -> String {
    json!({ "message": {
        "type": "transcript",
        "role": "user",
        "transcriptType": "final",
        "transcript": text,
        "timestamp": 1_732_540_001_000_i64,
        "call": call(assistant, call_id),
    }})
    .to_string()
}

fn end_of_call_report(assistant: &str, call_id: &str) -> String {
    json!({ "message": {
        "type": "end-of-call-report",
        "endedReason": "customer-ended-call",
        "startedAt": "2026-11-25T10:00:00Z",
        "endedAt": "2026-11-25T10:01:00Z",
        "cost": 0.12,
        "analysis": { "summary": "The caller asked about opening hours." },
        "artifact": { "transcript": "AI: Hello\nUser: hello", "recordingUrl": "https://recordings.example/r.wav" },
        "timestamp": 1_732_540_060_000_i64,
        "call": call(assistant, call_id),
    }})
    .to_string()
}

fn message_of_type(kind: &str, assistant: &str, call_id: &str) -> String {
    json!({ "message": {
        "type": kind,
        "status": "started",
        "role": "user",
        "timestamp": 1_732_540_000_500_i64,
        "call": call(assistant, call_id),
    }})
    .to_string()
}

/// Nothing of this delivery reached the database.
async fn assert_nothing_written(db: &tokio_postgres::Client, t: &Tenant, call: &str, body: &str) {
    assert_eq!(calls(db, call).await, 0, "no calls row");
    assert_eq!(outbox(db, &t.org).await, 0, "no outbox row");
    assert_eq!(
        count(db, "SELECT count(*) FROM voxanne.processed_webhook_events WHERE org_id = $1::text::uuid", &[&t.org])
            .await,
        0,
        "no processed event"
    );
    assert_eq!(rejected(db, body).await, 0, "not stored as rejected");
}

#[tokio::test]
async fn missing_secret_is_401_and_writes_nothing() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&[]).await;
    let call = new_call_id();
    let body = status_update(&t.assistant, &call, "ringing");

    let (status, json) = answer(relay.post(body.clone(), &[]).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(json["message"].as_str().unwrap().contains("missing"), "{json}");
    assert_nothing_written(&db, &t, &call, &body).await;
}

#[tokio::test]
async fn wrong_secret_is_401_and_writes_nothing() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&[]).await;
    let call = new_call_id();
    let body = status_update(&t.assistant, &call, "ringing");

    for wrong in ["wrong", "", SECRET.trim_end_matches('t'), &format!("{SECRET}x")] {
        let (status, json) = answer(relay.post(body.clone(), &[("x-vapi-secret", wrong)]).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}");
        assert_eq!(json["message"], "invalid token");
    }
    assert_nothing_written(&db, &t, &call, &body).await;
}

#[tokio::test]
async fn bad_hmac_is_401_and_writes_nothing() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&["--hmac-secrets", HMAC_KEY]).await;
    let call = new_call_id();
    let body = status_update(&t.assistant, &call, "ringing");
    let ts = unix_now().to_string();

    let other_key = sign(b"another-key", &ts, body.as_bytes());
    let other_body = sign(HMAC_KEY.as_bytes(), &ts, b"{}");
    for signature in [other_key.as_str(), other_body.as_str(), "not-hex", ""] {
        let (status, json) =
            answer(relay.post(body.clone(), &[("x-timestamp", &ts), ("x-signature", signature)]).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{signature:?}");
        assert_eq!(json["message"], "invalid signature");
    }
    // a correct signature without its timestamp
    let good = sign(HMAC_KEY.as_bytes(), &ts, body.as_bytes());
    let (status, _) = answer(relay.post(body.clone(), &[("x-signature", &good)]).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_nothing_written(&db, &t, &call, &body).await;
}

#[tokio::test]
async fn stale_or_future_timestamp_is_401_and_writes_nothing() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&["--hmac-secrets", HMAC_KEY]).await;
    let call = new_call_id();
    let body = status_update(&t.assistant, &call, "ringing");

    for (ts, expected) in [
        (unix_now() - 301, "signature timestamp too old"),
        (unix_now() - 86_400, "signature timestamp too old"),
        (unix_now() + 301, "signature timestamp too far in the future"),
    ] {
        let ts = ts.to_string();
        // correctly signed, so only the window refuses it: a replay
        let signature = sign(HMAC_KEY.as_bytes(), &ts, body.as_bytes());
        let (status, json) =
            answer(relay.post(body.clone(), &[("x-timestamp", &ts), ("x-signature", &signature)]).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json["message"], expected);
    }
    assert_nothing_written(&db, &t, &call, &body).await;
}

#[tokio::test]
async fn valid_hmac_signature_is_applied() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&["--hmac-secrets", HMAC_KEY]).await;
    let call = new_call_id();
    let body = status_update(&t.assistant, &call, "ringing");
    let ts = unix_now().to_string();
    let signature = sign(HMAC_KEY.as_bytes(), &ts, body.as_bytes());

    let (status, json) = answer(relay.post(body, &[("x-timestamp", &ts), ("x-signature", &signature)]).await).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["applied"], true);
    assert_eq!(json["org_id"], t.org.as_str());
    assert_eq!(calls(&db, &call).await, 1);
}

#[tokio::test]
async fn secret_rotation_accepts_old_and_new_secret() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&["--webhook-secrets", "rotating-old,rotating-new"]).await;

    for secret in ["rotating-old", "rotating-new"] {
        let call = new_call_id();
        let body = status_update(&t.assistant, &call, "ringing");
        let (status, json) = answer(relay.post(body, &[("x-vapi-secret", secret)]).await).await;
        assert_eq!(status, StatusCode::OK, "{secret}: {json}");
        assert_eq!(calls(&db, &call).await, 1);
    }
    let call = new_call_id();
    let body = status_update(&t.assistant, &call, "ringing");
    let (status, _) = answer(relay.post(body, &[("x-vapi-secret", SECRET)]).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a secret that is not listed");
    assert_eq!(calls(&db, &call).await, 0);
}

#[tokio::test]
async fn oversized_body_is_413_and_writes_nothing() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&[]).await;
    let call = new_call_id();
    // a valid message padded past the 16 MiB default
    let mut message: Value = serde_json::from_str(&status_update(&t.assistant, &call, "ringing")).unwrap();
    message["message"]["padding"] = Value::String("x".repeat(16 * 1024 * 1024));
    let body = message.to_string();

    let (status, json) = answer(relay.post(body.clone(), &[("x-vapi-secret", SECRET)]).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(json["message"].is_string());
    assert_nothing_written(&db, &t, &call, &body).await;

    // 15 MiB, a long call's end-of-call report, is fine
    let mut message: Value = serde_json::from_str(&end_of_call_report(&t.assistant, &call)).unwrap();
    message["message"]["artifact"]["padding"] = Value::String("x".repeat(15 * 1024 * 1024));
    let (status, json) = relay.deliver_json(&message.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["applied"], true, "{json}");
}

#[tokio::test]
async fn a_15_mib_refused_body_is_stored_whole() {
    let db = db().await;
    let relay = start_relay(&[]).await;
    let call = new_call_id();
    let assistant = format!("asst_unknown_{}", uuid::Uuid::new_v4().simple());
    let mut message: Value = serde_json::from_str(&end_of_call_report(&assistant, &call)).unwrap();
    message["message"]["artifact"]["padding"] = Value::String("x".repeat(15 * 1024 * 1024));
    let body = message.to_string();

    let (status, json) = relay.deliver_json(&body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    let stored: Vec<i32> = db
        .query("SELECT length(body) FROM voxanne.rejected_events WHERE vapi_call_id = $1", &[&call])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, [body.len() as i32], "one dead letter holding the whole body");
}

#[tokio::test]
async fn malformed_json_is_400_and_writes_nothing() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&[]).await;
    let call = new_call_id();
    let valid = status_update(&t.assistant, &call, "ringing");
    let truncated = valid[..valid.len() - 2].to_string();

    for body in [truncated.as_str(), "not json", "", "{\"message\": {}} trailing"] {
        let (status, json) = relay.deliver_json(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
        assert!(json["message"].as_str().unwrap().contains("JSON"), "{json}");
    }
    let (status, _) = answer(relay.post(vec![b'{', 0xff, b'}'], &[("x-vapi-secret", SECRET)]).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "not UTF-8");
    assert_nothing_written(&db, &t, &call, &truncated).await;
}

#[tokio::test]
async fn unknown_assistant_is_422_and_stored_once_however_often_it_is_sent() {
    let db = db().await;
    let relay = start_relay(&[]).await;
    let assistant = format!("asst_unknown_{}", uuid::Uuid::new_v4().simple());
    let call = new_call_id();
    let body = status_update(&assistant, &call, "ringing");

    let (status, json) = relay.deliver_json(&body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert_eq!(json["code"], "42704");
    assert!(json["message"].as_str().unwrap().contains(&assistant), "{json}");
    assert_eq!(rejected(&db, &body).await, 1, "exactly one rejected_events row with this body");
    let stored =
        db.query_one("SELECT sqlstate, message FROM voxanne.rejected_events WHERE body = $1", &[&body]).await.unwrap();
    assert_eq!(stored.get::<_, String>(0), "42704");
    assert_eq!(stored.get::<_, Option<String>>(1).as_deref(), json["message"].as_str());
    assert_eq!(calls(&db, &call).await, 0);

    // the sender's retries of the 422 are counted on the one row
    for _ in 0..2 {
        assert_eq!(relay.deliver_json(&body).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_eq!(rejected(&db, &body).await, 1, "one row per distinct body");
    let seen: i32 =
        db.query_one("SELECT times_seen FROM voxanne.rejected_events WHERE body = $1", &[&body]).await.unwrap().get(0);
    assert_eq!(seen, 3);
}

#[tokio::test]
async fn data_exceptions_are_422_and_stored() {
    let db = db().await;
    let relay = start_relay(&[]).await;
    // valid JSON, wrong shape: class 22 from the database
    let body = format!("{{\"message\": \"not an object {}\"}}", uuid::Uuid::new_v4());
    let (status, json) = relay.deliver_json(&body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert!(json["code"].as_str().unwrap().starts_with("22"), "{json}");
    assert_eq!(rejected(&db, &body).await, 1);
}

#[tokio::test]
async fn duplicate_delivery_has_one_effect() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&[]).await;
    let call = new_call_id();
    let body = status_update(&t.assistant, &call, "ringing");

    let (status, first) = relay.deliver_json(&body).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["applied"], true);
    assert_eq!(first["outcome"], "applied");
    assert_eq!(first["message_type"], "status-update");
    assert_eq!(first["vapi_call_id"], call.as_str());

    let (status, second) = relay.deliver_json(&body).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["applied"], false);
    assert_eq!(second["outcome"], "duplicate");
    assert_eq!(second["call_id"], first["call_id"]);

    assert_eq!(calls(&db, &call).await, 1, "one calls row");
    assert_eq!(outbox(&db, &t.org).await, 1, "one outbox row");
}

#[tokio::test]
async fn unknown_message_types_are_200_ignored() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&[]).await;
    for kind in ["speech-update", "some-future-type"] {
        let call = new_call_id();
        let (status, json) = relay.deliver_json(&message_of_type(kind, &t.assistant, &call)).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["applied"], false, "{json}");
        assert_eq!(json["ignored"], kind, "{json}");
        assert_eq!(calls(&db, &call).await, 0);
    }
    assert_eq!(outbox(&db, &t.org).await, 0);
}

#[tokio::test]
async fn a_call_lifecycle_is_applied_in_order() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&[]).await;
    let call = new_call_id();

    for body in [
        status_update(&t.assistant, &call, "ringing"),
        status_update(&t.assistant, &call, "in-progress"),
        transcript(&t.assistant, &call, "hello"),
        end_of_call_report(&t.assistant, &call),
    ] {
        let (status, json) = relay.deliver_json(&body).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["applied"], true, "{json}");
    }
    let row =
        db.query_one("SELECT status, ended_reason FROM voxanne.calls WHERE vapi_call_id = $1", &[&call]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "ended");
    assert_eq!(row.get::<_, String>(1), "customer-ended-call");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM voxanne.call_transcripts ct JOIN voxanne.calls c ON (c.org_id, c.id) = (ct.org_id, ct.call_id) WHERE c.vapi_call_id = $1",
            &[&call]
        )
        .await,
        1
    );
}

#[tokio::test]
async fn works_as_the_voxanne_relay_login_role() {
    let db = db().await;
    let t = tenant(&db).await;
    let mut config = config(&database_url(), &[]);
    config.database_url.user("voxanne_relay");
    let relay = Relay::start_with(config).await;

    let call = new_call_id();
    let (status, json) = relay.deliver_json(&status_update(&t.assistant, &call, "ringing")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(calls(&db, &call).await, 1);

    let unknown = status_update(&format!("asst_{}", uuid::Uuid::new_v4().simple()), &new_call_id(), "ringing");
    let (status, json) = relay.deliver_json(&unknown).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert_eq!(rejected(&db, &unknown).await, 1);

    let (status, json) = answer(relay.get("/readyz").await).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}
