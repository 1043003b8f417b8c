//! `transcript` (and `transcript[transcriptType="final"]`, which names its type): a final line
//! is a `LineEvent`; a partial one is acknowledged, not stored.
//!
//! Its moment is the utterance's `time` when the message's `artifact.messages` lists it (the
//! last entry of the same speaker and words), so its key is the one conversation-update and the
//! report give the same utterance; otherwise the moment the message was sent (`timestamp`).

use std::borrow::Cow;

use serde::Deserialize;

use super::wire::{call_and_routes, listed_moment, message, ListMessage};
use crate::domain::{required, Role, TranscriptType, SHORT_TEXT_MAX};
use crate::error::VoxError;
use crate::jsonb::{JsonbOut, Node};
use crate::transcript::{line_text, Line, LineEvent};

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
    let spoken_at = match listed_moment("message.artifact.messages", listed, role, text)? {
        Some(moment) => moment,
        None => match &msg.timestamp {
            Some(timestamp) => timestamp.resolve("message.timestamp")?,
            // no moment to key the line by (a retry would store it again): the utterance
            // reaches the call's lines through conversation-update and the report
            None => return Ok(super::acknowledge("transcript[no timestamp]", kind)),
        },
    };
    let line = LineEvent { vapi_call_id, routes, lines: vec![Line { role, text, spoken_at, transcript_type }] };
    Ok(line.apply()?.of_message(kind).jsonb())
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{fixture, fixture_org, handle};

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
}
