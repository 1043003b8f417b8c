//! `transcript` (and `transcript[transcriptType="final"]`, which names its type): a final line
//! is a `LineEvent`; a partial one is acknowledged, not stored.
//!
//! Its moment is the utterance's `time` when the message's `artifact.messages` lists it (the
//! last entry of the same speaker and words), so its key is the one conversation-update and the
//! report give the same utterance; otherwise the moment the message was sent (`timestamp`),
//! and the line is provisional until a list gives the utterance (src/transcript.rs).

use std::borrow::Cow;

use serde::Deserialize;

use super::wire::{call_and_routes, listed_span, message, ListMessage};
use crate::domain::{required, Role, TranscriptType, SHORT_TEXT_MAX};
use crate::error::VoxError;
use crate::jsonb::{JsonbOut, Node};
use crate::transcript::{line_text, Heard, Line, LineEvent};

message! {
    struct Transcript {
        #[serde(borrow)]
        role: Option<Cow<'a, str>>,
        #[serde(borrow)]
        transcript_type: Option<Cow<'a, str>>,
        #[serde(borrow)]
        transcript: Option<Cow<'a, str>>,
        #[serde(borrow)]
        artifact: Option<Conversation<'a>>,
    }
}

/// The conversation so far, as a message's `artifact` may carry it.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Conversation<'a> {
    #[serde(borrow)]
    messages: Option<Vec<ListMessage<'a>>>,
}

pub fn handle(message: Node<'_>, kind: &str) -> Result<JsonbOut, VoxError> {
    let msg: Transcript = super::decode(message)?;
    // `transcript[transcriptType="final"]` carries the type in its name
    let named = if kind.contains("final") { "final" } else { "partial" };
    let transcript_type =
        required("message.transcriptType", Some(msg.transcript_type.as_deref().unwrap_or(named)), SHORT_TEXT_MAX)?;
    let transcript_type = TranscriptType::parse("message.transcriptType", transcript_type)?;
    if transcript_type == TranscriptType::Partial {
        return Ok(super::acknowledge("transcript[partial]", kind));
    }
    let (_, vapi_call_id, routes) = call_and_routes(&msg.call, msg.assistant_id.as_deref(), &msg.assistant)?;
    let role = Role::parse("message.role", required("message.role", msg.role.as_deref(), SHORT_TEXT_MAX)?)?;
    // nothing said: acknowledged
    if msg.transcript.as_deref() == Some("") {
        return Ok(super::acknowledge("transcript[empty]", kind));
    }
    let text = line_text("message.transcript", msg.transcript.as_deref())?;
    let listed = msg.artifact.as_ref().and_then(|a| a.messages.as_deref()).unwrap_or_default();
    let (heard, spoken_at, ended_at) = match listed_span("message.artifact.messages", listed, role, text)? {
        Some((began, ended)) => (Heard::Listed, began, Some(ended)),
        None => match &msg.timestamp {
            Some(timestamp) => (Heard::Sent, timestamp.resolve("message.timestamp")?, None),
            // no moment to key the line by (a retry would store it again): the utterance
            // reaches the call's lines through conversation-update and the report
            None => return Ok(super::acknowledge("transcript[no timestamp]", kind)),
        },
    };
    let line = Line { role, text, spoken_at, ended_at, transcript_type };
    let line = LineEvent { vapi_call_id, routes, heard, lines: vec![line] };
    Ok(line.apply()?.of_message(kind).jsonb())
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{fixture, fixture_org, handle, json_of};

    #[pg_test]
    fn final_transcripts_are_recorded_in_both_type_spellings_and_partials_ignored() {
        let org = fixture_org();
        assert_eq!(handle(fixture!("transcript-final"))["applied"], true);
        assert_eq!(handle(fixture!("transcript-final-typed-name"))["applied"], true);
        let partial = handle(fixture!("transcript-partial"));
        assert_eq!(partial["applied"], false);
        assert_eq!(partial["ignored"], "transcript[partial]");
        let lines: String = Spi::get_one_with_args(
            "SELECT string_agg(role || '@' || spoken_at, ',' ORDER BY spoken_at) FROM voxanne.call_transcripts
             WHERE org_id = $1::uuid",
            &[org.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(lines, "user@2026-11-25 10:00:10.1235+00,assistant@2026-11-25 10:00:12+00");
        // a redelivery is a duplicate
        assert_eq!(handle(fixture!("transcript-final"))["outcome"], "duplicate");
    }

    /// A transcript message whose artifact lists the utterance is keyed by the utterance's
    /// `time`, as conversation-update and the report key it: whichever comes first stores it.
    #[pg_test]
    fn a_transcript_listed_in_its_artifact_is_the_same_line_as_the_lists_give() {
        let org = fixture_org();
        let listed = r#"{"role":"user","message":"Tuesday works.","time":1795600810500,"endTime":1795600811400,"secondsFromStart":10.5}"#;
        let transcript = |timestamp: &str| {
            format!(
                r#"{{"message":{{"type":"transcript","transcriptType":"final","role":"user","transcript":"Tuesday works."{timestamp},
                    "artifact":{{"messages":[{{"role":"bot","message":"Which day?","time":1795600808000}},{listed}]}},
                    "call":{{"id":"c-live","assistantId":"asst_fixture"}}}}}}"#
            )
        };
        let live = handle(&transcript(r#","timestamp":1795600811900"#));
        assert_eq!(live["applied"], true);
        // the same utterance from the list, and again without a timestamp: one line
        let update = handle(&format!(
            r#"{{"message":{{"type":"conversation-update","messages":[{listed}],"call":{{"id":"c-live","assistantId":"asst_fixture"}}}}}}"#
        ));
        assert_eq!(update["outcome"], "duplicate");
        assert_eq!(update["content_hash"], live["content_hash"]);
        assert_eq!(handle(&transcript(""))["outcome"], "duplicate");
        let at: String = Spi::get_one_with_args(
            "SELECT string_agg(spoken_at::text, ',') FROM voxanne.call_transcripts WHERE org_id = $1::uuid",
            &[org.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(at, "2026-11-25 10:00:10.5+00", "the utterance's time, not the message's");
    }

    /// A transcript message its artifact does not list is keyed by when it was sent and is
    /// provisional: the listed entry of the same utterance replaces it when it comes after, and
    /// makes it a duplicate when it came before, so both orders end with the same lines. The
    /// same words sent long after the entry ended are another utterance, kept.
    #[pg_test]
    fn a_provisional_line_gives_way_to_its_listed_utterance_in_either_order() {
        let org = fixture_org();
        let sent = |call: &str, at: i64| {
            handle(&format!(
                r#"{{"message":{{"type":"transcript","transcriptType":"final","role":"user","transcript":"Yes.",
                    "timestamp":{at},"call":{{"id":"{call}","assistantId":"asst_fixture"}}}}}}"#
            ))
        };
        let listed = |call: &str| {
            handle(&format!(
                r#"{{"message":{{"type":"conversation-update","call":{{"id":"{call}","assistantId":"asst_fixture"}},
                    "messages":[{{"role":"bot","message":"Tuesday?","time":1795600806000,"endTime":1795600807000}},
                                {{"role":"user","message":"Yes.","time":1795600810500,"endTime":1795600811400}}]}}}}"#
            ))
        };
        let lines = |call: &str| -> String {
            Spi::get_one_with_args(
                "SELECT string_agg(t.role || '@' || to_char(t.spoken_at AT TIME ZONE 'UTC', 'SS.MS')
                                   || CASE WHEN t.provisional THEN '?' ELSE '' END, ' ' ORDER BY t.spoken_at)
                 FROM voxanne.call_transcripts t JOIN voxanne.calls c ON (c.org_id, c.id) = (t.org_id, t.call_id)
                 WHERE t.org_id = $1::uuid AND c.vapi_call_id = $2",
                &[org.as_str().into(), call.into()],
            )
            .unwrap()
            .unwrap_or_default()
        };
        // sent first: stored provisional, then replaced
        let first = sent("c-sent-first", 1_795_600_811_700);
        assert_eq!(first["applied"], true);
        assert_eq!(lines("c-sent-first"), "user@11.700?");
        assert_eq!(listed("c-sent-first")["stored"], 2);
        assert_eq!(lines("c-sent-first"), "assistant@06.000 user@10.500");
        let replaces = json_of(
            "SELECT payload->'replaces' FROM voxanne.outbox WHERE org_id = $1::uuid AND payload ? 'replaces'",
            &[org.as_str().into()],
        );
        assert_eq!(replaces, serde_json::json!([first["content_hash"]]));
        // its redelivery finds the listed line
        assert_eq!(sent("c-sent-first", 1_795_600_811_700)["outcome"], "duplicate");
        // listed first: the transcript is a duplicate; the same lines
        assert_eq!(listed("c-listed-first")["stored"], 2);
        assert_eq!(sent("c-listed-first", 1_795_600_811_700)["outcome"], "duplicate");
        assert_eq!(lines("c-listed-first"), lines("c-sent-first"));
        // "Yes." sent 12 s after the listed one ended is said again: kept, in both orders
        assert_eq!(sent("c-listed-first", 1_795_600_823_400)["applied"], true);
        assert_eq!(lines("c-listed-first"), "assistant@06.000 user@10.500 user@23.400?");
        assert_eq!(sent("c-sent-first", 1_795_600_823_400)["applied"], true);
        assert_eq!(lines("c-sent-first"), lines("c-listed-first"));
    }

    /// A transcript sent at the very millisecond its words began has the listed line's key: the
    /// list confirms it (no longer provisional, with the list's end) instead of removing it, so
    /// both orders end with the same row.
    #[pg_test]
    fn a_provisional_line_with_the_listed_key_is_confirmed_not_removed() {
        let org = fixture_org();
        let sent = |call: &str| {
            handle(&format!(
                r#"{{"message":{{"type":"transcript","transcriptType":"final","role":"user","transcript":"Yes.",
                    "timestamp":1795600810500,"call":{{"id":"{call}","assistantId":"asst_fixture"}}}}}}"#
            ))
        };
        let listed = |call: &str| {
            handle(&format!(
                r#"{{"message":{{"type":"conversation-update","call":{{"id":"{call}","assistantId":"asst_fixture"}},
                    "messages":[{{"role":"user","message":"Yes.","time":1795600810500,"endTime":1795600811400}}]}}}}"#
            ))
        };
        let row = |call: &str| -> String {
            Spi::get_one_with_args(
                "SELECT string_agg(t.spoken_at || ' ' || t.provisional || ' ' || t.ended_at, ',')
                 FROM voxanne.call_transcripts t JOIN voxanne.calls c ON (c.org_id, c.id) = (t.org_id, t.call_id)
                 WHERE t.org_id = $1::uuid AND c.vapi_call_id = $2",
                &[org.as_str().into(), call.into()],
            )
            .unwrap()
            .unwrap_or_default()
        };
        assert_eq!(sent("c-a")["applied"], true);
        assert_eq!(listed("c-a")["outcome"], "duplicate");
        assert_eq!(listed("c-b")["applied"], true);
        assert_eq!(sent("c-b")["outcome"], "duplicate");
        assert_eq!(row("c-a"), "2026-11-25 10:00:10.5+00 false 2026-11-25 10:00:11.4+00");
        assert_eq!(row("c-a"), row("c-b"));
    }
}
