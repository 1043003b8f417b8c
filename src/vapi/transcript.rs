//! `transcript` (and `transcript[transcriptType="final"]`, which names its type): a final line
//! is a `LineEvent`; a partial one is acknowledged, not stored.

use std::borrow::Cow;

use super::wire::{call_and_routes, message};
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
    }
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
    // Nothing said, or no moment to key the line by (a retry would store it again): the same
    // utterance reaches the call's lines through conversation-update and the report.
    let Some(spoken_at) = msg.timestamp.as_ref() else {
        return Ok(super::acknowledge("transcript[no timestamp]", kind));
    };
    if msg.transcript.as_deref() == Some("") {
        return Ok(super::acknowledge("transcript[empty]", kind));
    }
    let line = LineEvent {
        vapi_call_id,
        routes,
        lines: vec![Line {
            role,
            text: line_text("message.transcript", msg.transcript.as_deref())?,
            spoken_at: spoken_at.resolve("message.timestamp")?,
            transcript_type,
        }],
    };
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
}
