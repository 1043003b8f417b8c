//! The oracle itself, pinned by hand-written known answers: the independent model
//! (voxanne_it::model) that the storms, races and crash tests compare the database with must
//! agree with values written out by hand here, and so must the database.

use serde_json::json;
use voxanne_it::model;
use voxanne_it::vapi::{self, HANDLE_VAPI_MESSAGE};
use voxanne_it::*;

/// Computed outside this code base (Python's hashlib over the framing docs/ARCHITECTURE.md
/// documents): sha256("voxanne.transcript.v1" ‖ len‖"call_known_answer" ‖ len‖"user" ‖
/// len‖"final" ‖ len‖micros(2026-11-25T10:00:03Z since 2000-01-01, i64 BE) ‖ len‖text),
/// every len a u64, big-endian.
const KNOWN_HASH: &str = "7d092e275db45967db936af08332879a86dee0576cc76fa10e8bf7b219162ec8";

#[tokio::test]
async fn the_transcript_hash_is_the_documented_framing_of_a_known_vector() {
    let (call, text, at_ms) = ("call_known_answer", "hello from call_known_answer", vapi::T0_MS + 3_000);
    assert_eq!(model::content_hash(call, "user", "final", at_ms, text), KNOWN_HASH);
    let db = connect().await;
    let org = Org::create(&db).await;
    let body = vapi::transcript_body(&org.assistant_id, call, "user", text, at_ms);
    let answer: serde_json::Value = db.query_one(HANDLE_VAPI_MESSAGE, &[&body, &vapi::PLATFORM]).await.unwrap().get(0);
    assert_eq!(answer["content_hash"], KNOWN_HASH);
    let stored: String = db
        .query_one("SELECT encode(content_hash, 'hex') FROM voxanne.call_transcripts WHERE org_id = $1", &[&org.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, KNOWN_HASH);
}

#[tokio::test]
async fn a_whole_call_leaves_the_hand_written_row_in_the_model_and_in_the_database() {
    let db = connect().await;
    let org = Org::create(&db).await;
    let call = format!("call_known_{}", uuid::Uuid::new_v4().simple());
    let start = vapi::T0_MS;
    // in reverse: the report first, ringing last
    let mut script = vapi::call_script(0, &call, start);
    script.reverse();
    for m in &script {
        let body = m.body(&org.assistant_id);
        db.query_one(HANDLE_VAPI_MESSAGE, &[&body, &vapi::PLATFORM]).await.unwrap();
    }
    let user = model::content_hash(&call, "user", "final", start + 3_000, &format!("hello from {call}"));
    let assistant_text = format!("Voxanne here: how can I help? ({call}) — ünïcödé ✓");
    let assistant = model::content_hash(&call, "assistant", "final", start + 4_250, &assistant_text);
    // written out by hand from the documented rules: the report's values win, its event owns
    // the ended status, the duration is endedAt - startedAt, the statuses before the end give
    // the number, type and phone number id
    let by_hand = json!({
        "consumer_status": "ended",
        "status": "ended",
        "status_event_id": format!("report:{call}"),
        "ended_reason": "customer-ended-call",
        "started_at_ms": start + 1_000,
        "ended_at_ms": start + 61_500,
        "duration_seconds": 60.5,
        "cost": 0.1234,
        "summary": format!("summary of {call}"),
        "transcript": format!("AI: Hello\nUser: this is {call}"),
        "recording_url": format!("https://recordings.example.com/{call}.wav"),
        "customer_number": "+15551230001",
        "call_type": "inboundPhoneCall",
        "phone_number_id": "pn_it",
        "lines": [
            [start + 3_000, "user", "final", format!("hello from {call}"), user],
            [start + 4_250, "assistant", "final", assistant_text, assistant],
        ],
        "ledger": [
            format!("report:{call}/end-of-call-report"),
            format!("status:{call}:ended/status-update"),
            format!("status:{call}:in-progress/status-update"),
            format!("status:{call}:ringing/status-update"),
        ],
        "ended_events": [{"status": "ended", "ended_reason": "customer-ended-call", "started_at_ms": start + 1_000,
                          "ended_at_ms": start + 61_500, "duration_seconds": 60.5, "cost": 0.1234,
                          "source": "end-of-call-report"}],
    });
    let messages: Vec<&vapi::Message> = script.iter().collect();
    let mut modelled = model::expected(&messages).remove(&call).expect("the model has the call");
    let mut stored = model::observed(&db, org.id).await.remove(&call).expect("the database has the call");
    for state in [&mut modelled, &mut stored] {
        let events = state.as_object_mut().unwrap().remove("transcript_events").unwrap();
        assert_eq!(events.as_array().map(Vec::len), Some(2), "one call.transcript row per line");
        for key in ["lines", "ledger"] {
            let items = state[key].as_array_mut().unwrap();
            items.sort_by_key(|x| x.to_string());
        }
    }
    let mut by_hand = by_hand;
    for key in ["lines", "ledger"] {
        by_hand[key].as_array_mut().unwrap().sort_by_key(|x| x.to_string());
    }
    assert_eq!(modelled, by_hand, "the model");
    assert_eq!(stored, by_hand, "the database");
}
