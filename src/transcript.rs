//! What was said: `record_transcript`, and the event the webhook's `transcript`,
//! `conversation-update` and the report's messages decode into. Each line is stored exactly once
//! by its content hash; the same words spoken at another moment are another line. A line for a
//! call not seen yet creates the call.
//!
//! A transcript message that its own artifact does not list knows only when it was sent, not
//! when the words began, so it cannot have the key the lists give the same utterance. Its line
//! is provisional: it is not stored when a listed line of the same speaker and words was
//! spoken over the moment it was sent (`voxanne._heard_during`), and a listed line removes it
//! when it comes later. Both hold the call's line lock, so neither can miss the other, and
//! the lines a call ends with do not depend on the order its messages arrived in.

use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use sha2::{Digest, Sha256};

use crate::domain::{defaulted, moment, required, Role, TranscriptType, ID_MAX, LINE_MAX, SHORT_TEXT_MAX};
use crate::error::VoxError;
use crate::jsonb::JsonbOut;
use crate::outcome::{Answer, Detail, Effect};
use crate::routing::{routed, unset_binds, Routed, Routes};

static GIVEN_LINE: Routed = routed!("line_call.sql", "line_given.sql", "lines_announce.sql");
static LISTED_LINE: Routed = routed!("line_call.sql", "line_listed.sql", "lines_announce.sql");
static LISTED_LINES: Routed = routed!("line_call.sql", "line_many.sql", "lines_announce.sql");
static SENT_LINE: Routed = routed!("line_call.sql", "line_sent.sql", "lines_announce.sql");
/// The class of the line locks in the two-key advisory lock space ("vox"), apart from an
/// application's one-key advisory locks.
const LINE_LOCK_CLASS: i32 = 0x766f78;

/// How often the statement is re-run when the call row was committed by a concurrent session
/// after the statement's snapshot. Once is enough in READ COMMITTED; the rest is headroom.
const SNAPSHOT_RETRIES: usize = 3;

/// Who said what, when.
pub struct Line<'a> {
    pub role: Role,
    pub text: &'a str,
    pub spoken_at: TimestampWithTimeZone,
    /// When the words ended, as a message list gives it.
    pub ended_at: Option<TimestampWithTimeZone>,
    pub transcript_type: TranscriptType,
}

/// Where the moments of an event's lines come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// `record_transcript`: the caller's moment, a line of its own.
    Given,
    /// A message list's entries (conversation-update, the report's messages, a transcript's
    /// own artifact): when the utterance began and ended.
    Listed,
    /// A transcript message its artifact does not list: when Vapi sent it. Provisional.
    Sent,
}

/// The lines of one call that one message carries: a transcript message's (or
/// `record_transcript`'s) one, or the whole conversation so far of a conversation-update or a
/// report, of which most are already stored.
pub struct LineEvent<'a> {
    pub vapi_call_id: &'a str,
    pub routes: Routes<'a>,
    pub heard: Heard,
    pub lines: Vec<Line<'a>>,
}

/// The text of a line, as both ways in check it.
pub fn line_text<'a>(field: &'static str, value: Option<&'a str>) -> Result<&'a str, VoxError> {
    required(field, value, LINE_MAX)
}

impl Line<'_> {
    /// sha256 over length-prefixed fields, so no two different lines frame to the same bytes
    /// (seed #5: a prefix or a one-second bucket dropped genuine repeats).
    pub fn content_hash(&self, vapi_call_id: &str) -> [u8; 32] {
        let micros = self.spoken_at.into_inner().to_be_bytes();
        let fields: [&[u8]; 5] = [
            vapi_call_id.as_bytes(),
            self.role.as_str().as_bytes(),
            self.transcript_type.as_str().as_bytes(),
            &micros,
            self.text.as_bytes(),
        ];
        let mut hasher = Sha256::new();
        hasher.update(b"voxanne.transcript.v1");
        for field in fields {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field);
        }
        hasher.finalize().into()
    }
}

impl<'a> LineEvent<'a> {
    /// Stores the lines not stored yet, each with its outbox row. One line is answered with its
    /// key; many with how many were new.
    pub fn apply(self) -> Result<Answer<'a>, VoxError> {
        let hashes: Vec<[u8; 32]> = self.lines.iter().map(|l| l.content_hash(self.vapi_call_id)).collect();
        let mut args = Vec::from(unset_binds());
        args.push(self.vapi_call_id.into());
        // one line's values as they are (measured: arrays cost one line 16% more server CPU)
        let (statement, ended_at) = match (self.lines.as_slice(), hashes.as_slice()) {
            ([one], [hash]) => {
                args.extend([
                    one.role.as_str().into(),
                    one.text.into(),
                    one.spoken_at.into(),
                    one.transcript_type.as_str().into(),
                    hash.as_slice().into(),
                ]);
                let statement = match self.heard {
                    Heard::Given => &GIVEN_LINE,
                    Heard::Listed => &LISTED_LINE,
                    Heard::Sent => &SENT_LINE,
                };
                (statement, one.ended_at.into())
            }
            (lines, hashes) => {
                args.extend([
                    lines.iter().map(|l| l.role.as_str()).collect::<Vec<_>>().into(),
                    lines.iter().map(|l| l.text).collect::<Vec<_>>().into(),
                    lines.iter().map(|l| l.spoken_at).collect::<Vec<_>>().into(),
                    lines.iter().map(|l| l.transcript_type.as_str()).collect::<Vec<_>>().into(),
                    hashes.iter().map(|h| h.as_slice()).collect::<Vec<_>>().into(),
                ]);
                (&LISTED_LINES, lines.iter().map(|l| l.ended_at).collect::<Vec<_>>().into())
            }
        };
        args.push(crate::notify::notify().into());
        args.push(ended_at);
        if self.heard != Heard::Given {
            lock_lines(self.vapi_call_id);
        }
        let (org_id, call_id, stored) = self.routes.first_connected(statement, args, |client, form, args| {
            for _ in 0..SNAPSHOT_RETRIES {
                let table = form.run(client, args)?;
                // org_id, call_id, stored; no row: this route has no org
                let Some(row) = table.into_iter().next() else { return Ok(None) };
                let (org_id, call_id, stored): (Option<Uuid>, Option<i64>, Option<i64>) =
                    (row.get(1)?, row.get(2)?, row.get(3)?);
                if let (Some(org_id), Some(call_id)) = (org_id, call_id) {
                    return Ok(Some((org_id, call_id, stored.unwrap_or(0))));
                }
            }
            Err(VoxError::Contended { vapi_call_id: self.vapi_call_id.to_string() })
        })?;
        let effect = if stored > 0 { Effect::Applied } else { Effect::Duplicate };
        let (event_id, detail) = match hashes.as_slice() {
            [one] => {
                let hash = hex::encode(one);
                (format!("transcript:{}:{hash}", self.vapi_call_id), Detail::Line { content_hash: hash })
            }
            _ => (format!("lines:{}", self.vapi_call_id), Detail::Lines { lines: hashes.len(), stored }),
        };
        Ok(Answer::new(effect, org_id.to_string(), Some(call_id), self.vapi_call_id, event_id, detail))
    }
}

/// Takes the line lock of a Vapi call id to the end of the transaction:
/// `pg_advisory_xact_lock(LINE_LOCK_CLASS, <the first 4 bytes of sha256(call id)>)`, by the id
/// as sent, before any route (the same id in two orgs shares a lock, which only makes them
/// wait). Called directly (as an SPI statement it cost 70 µs more), before the line statement,
/// whose snapshot then sees every line a message of this call committed before.
fn lock_lines(vapi_call_id: &str) {
    let digest = Sha256::digest(vapi_call_id.as_bytes());
    let key = i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    // SAFETY: a V1 function of two strict int4 arguments, called with two
    unsafe {
        pgrx::direct_function_call_as_datum(
            pg_sys::pg_advisory_xact_lock_int4,
            &[LINE_LOCK_CLASS.into_datum(), key.into_datum()],
        );
    }
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
) -> Result<JsonbOut, ErrorReport> {
    let event = LineEvent {
        vapi_call_id: required("p_vapi_call_id", p_vapi_call_id, ID_MAX)?,
        routes: Routes::by_assistant("p_assistant_id", p_assistant_id)?,
        heard: Heard::Given,
        lines: vec![Line {
            role: Role::parse("p_role", required("p_role", p_role, SHORT_TEXT_MAX)?)?,
            text: line_text("p_text", p_text)?,
            spoken_at: moment("p_spoken_at", defaulted("p_spoken_at", p_spoken_at)?)?,
            ended_at: None,
            transcript_type: TranscriptType::parse(
                "p_transcript_type",
                required("p_transcript_type", p_transcript_type, SHORT_TEXT_MAX)?,
            )?,
        }],
    };
    Ok(event.apply()?.jsonb())
}
#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{count, json_of, org_with_agent};

    const LINE: &str = "SELECT voxanne.record_transcript($1, $2, $3, $4, $5::timestamptz)";

    fn lines_of(org: &str) -> i64 {
        count("SELECT count(*) FROM voxanne.call_transcripts WHERE org_id = $1::uuid", &[org.into()])
    }

    #[pg_test]
    fn transcript_before_any_status_creates_the_call_and_is_kept() {
        let org = org_with_agent("asst_t");
        let out = json_of(
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
        let started = json_of("SELECT voxanne.create_inbound_call('c1', 'asst_t')", &[]);
        assert_eq!(started["applied"], true);
        assert_eq!(started["call_id"], out["call_id"]);
    }

    #[pg_test]
    fn retry_of_the_same_line_is_a_duplicate() {
        let org = org_with_agent("asst_t");
        let args =
            || vec!["c1".into(), "asst_t".into(), "user".into(), "book me in".into(), "2026-01-01 10:00:00+00".into()];
        let first = json_of(LINE, &args());
        let retry = json_of(LINE, &args());
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
            let out = json_of(LINE, &["c1".into(), "asst_t".into(), role.into(), text.into(), at.into()]);
            assert_eq!(out["applied"], true, "{role} {text} {at}");
        }
        assert_eq!(lines_of(&org), 5);
    }

    #[pg_test]
    fn partial_and_final_of_the_same_words_are_distinct_lines() {
        let org = org_with_agent("asst_t");
        json_of(
            "SELECT voxanne.record_transcript('c1', 'asst_t', 'user', 'hi', '2026-01-01 10:00:00+00', 'partial')",
            &[],
        );
        let fin = json_of(
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
                json_of(LINE, &["c1".into(), asst.into(), "user".into(), "hi".into(), "2026-01-01 10:00:00+00".into()]);
            assert_eq!(out["applied"], true);
        }
        assert_eq!((lines_of(&org_a), lines_of(&org_b)), (1, 1));
    }

    #[pg_test]
    fn sql_injection_text_is_stored_verbatim() {
        let org = org_with_agent("asst_t");
        let evil = "'); DROP TABLE voxanne.calls; --";
        json_of(LINE, &["c1'--".into(), "asst_t".into(), "user".into(), evil.into(), "2026-01-01 10:00:00+00".into()]);
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
