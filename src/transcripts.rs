//! `record_transcript`: one line of the conversation, stored exactly once by content hash.

use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::calls::Effect;
use crate::error::VoxError;
use crate::events::{CallRef, TranscriptLine};
use crate::plans::{Statement, BYTEA, TEXT, TIMESTAMPTZ};


static RECORD: Statement = Statement {
    sql: include_str!("../sql/queries/record_transcript.sql"),
    arg_types: &[TEXT, TEXT, TEXT, TEXT, TIMESTAMPTZ, TEXT, BYTEA],
};

/// How often the statement is re-run when the call row was committed by a concurrent session
/// after the statement's snapshot. Once is enough in READ COMMITTED; the rest is headroom.
const SNAPSHOT_RETRIES: usize = 3;

#[derive(Debug)]
pub struct Recorded {
    pub effect: Effect,
    pub org_id: Uuid,
    pub call_id: i64,
    pub content_hash: [u8; 32],
}

impl Recorded {
    pub fn to_json(&self, line: &TranscriptLine<'_>) -> JsonB {
        let hash = hex::encode(self.content_hash);
        JsonB(serde_json::json!({
            "applied": self.effect == Effect::Applied,
            "outcome": self.effect.as_str(),
            "org_id": self.org_id.to_string(),
            "call_id": self.call_id,
            "vapi_call_id": line.call.vapi_call_id,
            "event_id": format!("transcript:{}:{hash}", line.call.vapi_call_id),
            "content_hash": hash,
        }))
    }
}

pub fn record(line: &TranscriptLine<'_>) -> Result<Recorded, VoxError> {
    let content_hash = line.content_hash();
    Spi::connect_mut(|client| {
        for _ in 0..SNAPSHOT_RETRIES {
            let table = RECORD.run(
                client,
                &[
                    line.call.assistant_id.into(),
                    line.call.vapi_call_id.into(),
                    line.role.as_str().into(),
                    line.text.into(),
                    line.spoken_at.into(),
                    line.transcript_type.as_str().into(),
                    content_hash.as_slice().into(),
                ],
            )?;
            let Some(row) = table.into_iter().next() else {
                return Err(VoxError::unknown_agent("p_assistant_id", line.call.assistant_id));
            };
            let org_id: Option<Uuid> = row.get(1)?;
            let call_id: Option<i64> = row.get(2)?;
            let outbox_id: Option<i64> = row.get(3)?;
            if let (Some(org_id), Some(call_id)) = (org_id, call_id) {
                let effect = if outbox_id.is_some() { Effect::Applied } else { Effect::Duplicate };
                return Ok(Recorded { effect, org_id, call_id, content_hash });
            }
        }
        Err(VoxError::Contended { vapi_call_id: line.call.vapi_call_id.to_string() })
    })
}

/// Store one transcript line. A retry of the same message is a duplicate; the same words
/// spoken at another moment are a new line. A line for a call not seen yet creates the call.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn record_transcript(
    p_vapi_call_id: Option<&str>,
    p_assistant_id: Option<&str>,
    p_role: Option<&str>,
    p_text: Option<&str>,
    p_spoken_at: Option<TimestampWithTimeZone>,
    p_transcript_type: default!(Option<&str>, "'final'"),
) -> Result<JsonB, ErrorReport> {
    let call = CallRef::new(p_vapi_call_id, p_assistant_id)?;
    let line = TranscriptLine::new(call, p_role, p_text, p_spoken_at, p_transcript_type)?;
    Ok(record(&line)?.to_json(&line))
}
