//! `handle_vapi_message`: one Vapi server message in, one effect out.
//!
//! The body stays jsonb: `message.type` is a key lookup, and only a type we act on is decoded,
//! once, into its own struct (one file per type). A type we ignore never fails on fields we do
//! not read, so Vapi can add message types and fields without making its retries loop on errors.

mod conversation_update;
mod end_of_call_report;
mod reply;
mod status_update;
mod transcript;
pub mod wire;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use serde::Deserialize;

use crate::credentials::Writer;
use crate::error::VoxError;
use crate::jsonb::{JsonbArg, JsonbOut, Node};
use crate::outcome::Ignored;

/// Decode `message` as `T`; an error names the JSON path as it was sent (`message.call.id`).
fn decode<'a, T: Deserialize<'a>>(message: Node<'a>) -> Result<T, VoxError> {
    serde_path_to_error::deserialize(message).map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => "message".to_string(),
            p => format!("message.{p}"),
        };
        let detail = e.into_inner().to_string();
        // serde reports a missing field at its parent's path
        match detail.strip_prefix("missing field `").and_then(|rest| rest.strip_suffix('`')) {
            Some(name) => VoxError::missing(format!("{path}.{name}")),
            None => VoxError::wrong_shape(path, &detail),
        }
    })
}

/// The answer for a type this product does not act on.
fn acknowledge(ignored: &str, message_type: &str) -> JsonbOut {
    JsonbOut::of(&Ignored::new(ignored, message_type))
}

fn dispatch(arg: &JsonbArg) -> Result<JsonbOut, VoxError> {
    let body = arg.root();
    if !matches!(body, Node::Object(..)) {
        return Err(VoxError::wrong_shape("p_body", "expected an object {\"message\": {...}}"));
    }
    let message = body.get("message").ok_or_else(|| VoxError::missing("message"))?;
    if !matches!(message, Node::Object(..)) {
        return Err(VoxError::wrong_shape("message", "expected an object"));
    }
    let kind: &str = match message.get("type") {
        // the SDK's ServerMessageToolCalls alone has an optional `type`
        None if message.get("toolCallList").is_some() => "tool-calls",
        None => return Err(VoxError::missing("message.type")),
        Some(kind) => <&str>::deserialize(kind).map_err(|e| VoxError::wrong_shape("message.type", &e.to_string()))?,
    };
    match kind {
        "status-update" => status_update::handle(message, kind),
        "end-of-call-report" => end_of_call_report::handle(message, kind, arg.bind()),
        "conversation-update" => conversation_update::handle(message, kind),
        k if k == "transcript" || k.starts_with("transcript[") => transcript::handle(message, kind),
        other => reply::handle(message, other).unwrap_or_else(|| Ok(acknowledge(other, other))),
    }
}

/// Handle one Vapi server message (`{"message": {...}}`) in the caller's transaction.
/// `p_credential`: the SHA-256 of the tenant credential that authenticated it, NULL for a
/// platform-wide one (src/credentials.rs).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn handle_vapi_message(
    p_body: Option<JsonbArg>,
    p_credential: default!(Option<&[u8]>, "NULL"),
) -> Result<JsonbOut, ErrorReport> {
    let body = p_body.ok_or_else(|| VoxError::missing("p_body"))?;
    let writer = Writer::of(p_credential)?;
    let answer = dispatch(&body)?;
    writer.permit(&answer)?;
    Ok(answer)
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{call_row, error_of, fixture, fixture_org, handle, rows_of_org};

    #[pg_test]
    fn other_message_types_are_acknowledged_not_errors() {
        let org = fixture_org();
        for (body, kind) in [
            (fixture!("speech-update"), "speech-update"),
            (fixture!("hang"), "hang"),
            (r#"{"message":{"type":"brand-new-type-2027","call":{"id":5}}}"#, "brand-new-type-2027"),
            // valid jsonb that serde_json::Value cannot hold, in fields nobody reads
            (r#"{"message":{"type":"hang","x":1e400,"call":{"createdAt":-1e999}}}"#, "hang"),
        ] {
            let out = handle(body);
            assert_eq!(out, serde_json::json!({"applied": false, "ignored": kind, "message_type": kind}));
        }
        assert_eq!(rows_of_org(&org), 0);
    }

    /// Vapi's status enum grows (not-found and deletion-failed came in SDK 0.11.0): a value that
    /// is no step of a call's life is acknowledged, never refused, and moves nothing.
    #[pg_test]
    fn statuses_that_are_no_step_of_a_call_are_acknowledged_and_move_nothing() {
        let org = fixture_org();
        handle(
            r#"{"message":{"type":"status-update","status":"in-progress","call":{"id":"c","assistantId":"asst_fixture"}}}"#,
        );
        let before = rows_of_org(&org);
        for status in ["not-found", "deletion-failed", "dialing-2027"] {
            let body = format!(
                r#"{{"message":{{"type":"status-update","status":"{status}","call":{{"id":"c","assistantId":"asst_fixture"}}}}}}"#
            );
            let out = handle(&body);
            assert_eq!(out["ignored"], format!("status-update[{status}]"), "{out}");
            assert_eq!(out["applied"], false);
        }
        assert_eq!(rows_of_org(&org), before);
        assert_eq!(call_row(&org, "c").split('|').next(), Some("in-progress"));
    }

    /// The SDK types `timestamp` optional and `transcript` as any string: such a line is
    /// acknowledged (it reaches the call's lines through conversation-update and the report).
    #[pg_test]
    fn transcripts_without_timestamp_or_words_are_acknowledged() {
        let org = fixture_org();
        for (body, ignored) in [
            (
                r#"{"message":{"type":"transcript","transcriptType":"final","role":"user","transcript":"hi","call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "transcript[no timestamp]",
            ),
            (
                r#"{"message":{"type":"transcript","transcriptType":"final","role":"user","transcript":"","timestamp":1,"call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "transcript[empty]",
            ),
        ] {
            assert_eq!(handle(body)["ignored"], ignored, "{body}");
        }
        assert_eq!(rows_of_org(&org), 0);
    }

    #[pg_test]
    fn bad_messages_name_the_json_field_and_write_nothing() {
        let org = fixture_org();
        let cases = [
            (r#"{}"#, "22004", "message must not be null"),
            (r#"{"message":{}}"#, "22004", "message.type must not be null"),
            (r#"{"message":{"type":"status-update","status":"ringing"}}"#, "22004", "message.call must not be null"),
            (
                r#"{"message":{"type":"status-update","status":"ringing","call":{"assistantId":"asst_fixture"}}}"#,
                "22004",
                "message.call.id",
            ),
            (
                r#"{"message":{"type":"status-update","status":"ringing","call":{"id":42,"assistantId":"asst_fixture"}}}"#,
                "22023",
                "message.call.id has the wrong JSON shape: invalid type: number, expected a string",
            ),
            // an array is not an object, even one whose elements would fill the fields in order
            (
                r#"{"message":{"type":"status-update","status":"ringing","call":["c","asst_fixture"]}}"#,
                "22023",
                "message.call has the wrong JSON shape: invalid type: array, expected an object",
            ),
            (
                r#"{"message":{"type":"end-of-call-report","analysis":["s"],"call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "22023",
                "message.analysis has the wrong JSON shape",
            ),
            (
                r#"{"message":{"type":"status-update","status":"ringing","timestamp":"2026-11-25T1:00:00","call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "22007",
                "message.timestamp",
            ),
            (
                r#"{"message":{"type":"status-update","status":"ringing","timestamp":"yesterday","call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "22007",
                "message.timestamp",
            ),
            (
                r#"{"message":{"type":"status-update","status":"ringing","timestamp":1e300,"call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "22007",
                "message.timestamp",
            ),
            (
                r#"{"message":{"type":"status-update","status":"ringing","call":{"id":"c","assistantId":"asst_nobody"}}}"#,
                "42704",
                "message.call.assistantId 'asst_nobody'",
            ),
            (
                r#"{"message":{"type":"status-update","status":"ringing","call":{"id":"c"}}}"#,
                "22004",
                "message.call.assistantId",
            ),
            (
                r#"{"message":{"type":"status-update","status":"ringing","call":{"id":"c","phoneNumberId":"pn_nobody"}}}"#,
                "42704",
                "message.call.phoneNumberId 'pn_nobody'",
            ),
            (
                r#"{"message":{"type":"transcript","transcriptType":"final","role":"robot","transcript":"hi","timestamp":1,"call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "22023",
                "message.role",
            ),
            (
                r#"{"message":{"type":"end-of-call-report","cost":-3,"call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "22003",
                "message.cost",
            ),
            (
                r#"{"message":{"type":"end-of-call-report","startedAt":"2026-13-45T99:00:00Z","call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "22007",
                "message.startedAt",
            ),
            (
                r#"{"message":{"type":"end-of-call-report","artifact":{"recordingUrl":"ftp://x"},"call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "22023",
                "message.artifact.recordingUrl",
            ),
            (
                r#"{"message":{"type":"end-of-call-report","cost":1e400,"call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "22023",
                "message.cost has the wrong JSON shape",
            ),
            (
                r#"{"message":{"type":"status-update","status":"ringing","timestamp":1e400,"call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "22023",
                "message.timestamp",
            ),
        ];
        // nesting deeper than serde_json::Value allows, in a part nobody reads, is skipped
        let deep = format!(r#"{{"message":{{"type":"speech-update","x":{}{}}}}}"#, "[".repeat(500), "]".repeat(500));
        assert_eq!(handle(&deep)["ignored"], "speech-update");
        for (body, code, text) in cases {
            let err =
                error_of(&format!("SELECT voxanne.handle_vapi_message({}::jsonb)", pgrx::spi::quote_literal(body)));
            assert!(err.starts_with(code) && err.contains(text), "{body}\n  expected {code} '{text}', got: {err}");
        }
        assert_eq!(rows_of_org(&org), 0);
    }
}
