//! `record_transcript`: one line of the conversation, stored exactly once by content hash.

use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::calls::Effect;
use crate::error::VoxError;
use crate::events::{CallRef, TranscriptLine};
use crate::plans::{Statement, BOOL, BYTEA, TEXT, TIMESTAMPTZ};

static RECORD: Statement = Statement {
    sql: include_str!("../sql/queries/record_transcript.sql"),
    arg_types: &[TEXT, TEXT, TEXT, TEXT, TIMESTAMPTZ, TEXT, BYTEA, BOOL],
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
                    crate::outbox::notify().into(),
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

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{call, count, org_with_agent};

    const LINE: &str = "SELECT voxanne.record_transcript($1, $2, $3, $4, $5::timestamptz)";

    fn lines_of(org: &str) -> i64 {
        count("SELECT count(*) FROM voxanne.call_transcripts WHERE org_id = $1::uuid", &[org.into()])
    }

    #[pg_test]
    fn transcript_before_any_status_creates_the_call_and_is_kept() {
        let org = org_with_agent("asst_t");
        let out = call(
            LINE,
            &["c1".into(), "asst_t".into(), "user".into(), "hello?".into(), "2026-01-01 10:00:00+00".into()],
        );
        assert_eq!(out["applied"], true);
        assert_eq!(lines_of(&org), 1);
        let status: Option<String> =
            Spi::get_one_with_args("SELECT status FROM voxanne.calls WHERE org_id = $1::uuid", &[org.as_str().into()])
                .unwrap();
        assert_eq!(status, None, "a transcript does not invent a status");
        // the first status then enriches the same row
        let started = call("SELECT voxanne.create_inbound_call('c1', 'asst_t')", &[]);
        assert_eq!(started["applied"], true);
        assert_eq!(started["call_id"], out["call_id"]);
    }

    #[pg_test]
    fn retry_of_the_same_line_is_a_duplicate() {
        let org = org_with_agent("asst_t");
        let args =
            || vec!["c1".into(), "asst_t".into(), "user".into(), "book me in".into(), "2026-01-01 10:00:00+00".into()];
        let first = call(LINE, &args());
        let retry = call(LINE, &args());
        assert_eq!(first["applied"], true);
        assert_eq!(retry["applied"], false);
        assert_eq!(retry["outcome"], "duplicate");
        assert_eq!(retry["content_hash"], first["content_hash"]);
        assert_eq!(lines_of(&org), 1);
        assert_eq!(count("SELECT count(*) FROM voxanne.outbox WHERE org_id = $1::uuid", &[org.as_str().into()]), 1);
        assert_eq!(
            count(
                "SELECT count(*) FROM voxanne.processed_webhook_events WHERE org_id = $1::uuid",
                &[org.as_str().into()]
            ),
            0,
            "the content-hash key is the mark: no ledger row"
        );
    }

    /// Seed #5: a 50-character prefix and a one-second bucket dropped genuine lines.
    #[pg_test]
    fn genuine_repeats_and_shared_prefixes_are_all_kept() {
        let org = org_with_agent("asst_t");
        let prefix = "Hello, how can I help you today? This is Sarah from";
        let lines: [(&str, &str, &str); 5] = [
            ("assistant", "Sure.", "2026-01-01 10:00:00.100+00"),
            ("assistant", "Sure.", "2026-01-01 10:00:00.900+00"), // same words, same second
            ("user", "Sure.", "2026-01-01 10:00:00.100+00"),      // same moment, other speaker
            ("assistant", &format!("{prefix} the clinic"), "2026-01-01 10:00:01+00"),
            ("assistant", &format!("{prefix} the front desk"), "2026-01-01 10:00:01+00"),
        ];
        for (role, text, at) in lines {
            let out = call(LINE, &["c1".into(), "asst_t".into(), role.into(), text.into(), at.into()]);
            assert_eq!(out["applied"], true, "{role} {text} {at}");
        }
        assert_eq!(lines_of(&org), 5);
    }

    #[pg_test]
    fn partial_and_final_of_the_same_words_are_distinct_lines() {
        let org = org_with_agent("asst_t");
        call(
            "SELECT voxanne.record_transcript('c1', 'asst_t', 'user', 'hi', '2026-01-01 10:00:00+00', 'partial')",
            &[],
        );
        let fin = call(
            "SELECT voxanne.record_transcript('c1', 'asst_t', 'user', 'hi', '2026-01-01 10:00:00+00', 'final')",
            &[],
        );
        assert_eq!(fin["applied"], true);
        assert_eq!(lines_of(&org), 2);
    }

    #[pg_test]
    fn same_line_in_two_orgs_is_stored_in_each() {
        let org_a = org_with_agent("asst_a");
        let org_b = org_with_agent("asst_b");
        for asst in ["asst_a", "asst_b"] {
            let out =
                call(LINE, &["c1".into(), asst.into(), "user".into(), "hi".into(), "2026-01-01 10:00:00+00".into()]);
            assert_eq!(out["applied"], true);
        }
        assert_eq!((lines_of(&org_a), lines_of(&org_b)), (1, 1));
    }

    #[pg_test]
    fn sql_injection_text_is_stored_verbatim() {
        let org = org_with_agent("asst_t");
        let evil = "'); DROP TABLE voxanne.calls; --";
        call(LINE, &["c1'--".into(), "asst_t".into(), "user".into(), evil.into(), "2026-01-01 10:00:00+00".into()]);
        let stored: String = Spi::get_one_with_args(
            "SELECT c.vapi_call_id || '|' || t.text FROM voxanne.call_transcripts t
             JOIN voxanne.calls c ON c.org_id = t.org_id AND c.id = t.call_id WHERE t.org_id = $1::uuid",
            &[org.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(stored, format!("c1'--|{evil}"));
    }
}
