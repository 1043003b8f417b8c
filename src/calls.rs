//! The call lifecycle: `create_inbound_call` (status before the end) and `complete_call`.
//! Each is one kept statement that marks, writes and notifies in the caller's transaction.

use pgrx::datum::{AnyNumeric, TimestampWithTimeZone, Uuid};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;

use crate::error::VoxError;
use crate::events::{CallCompleted, CallRef, CallStarted, CompletionSource};
use crate::plans::{Statement, BOOL, NUMERIC, TEXT, TIMESTAMPTZ, UUID};

static CREATE: Statement = Statement {
    sql: include_str!("../sql/queries/create_inbound_call.sql"),
    arg_types: &[TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TIMESTAMPTZ, TEXT, BOOL],
};

static COMPLETE: Statement = Statement {
    sql: include_str!("../sql/queries/complete_call.sql"),
    arg_types: &[
        TEXT,
        TEXT,
        TEXT,
        TIMESTAMPTZ,
        TIMESTAMPTZ,
        NUMERIC,
        NUMERIC,
        TEXT,
        TEXT,
        TEXT,
        BOOL,
        TEXT,
        TEXT,
        TEXT,
        BOOL,
    ],
};

/// A duplicate's statement wrote nothing and may not see the call (it can have been committed
/// after the statement's snapshot); a fresh statement does.
static CALL_ID: Statement = Statement {
    sql: "SELECT c.id, c.status FROM voxanne.calls AS c WHERE c.org_id = $1 AND c.vapi_call_id = $2",
    arg_types: &[UUID, TEXT],
};

/// What a call message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Applied,
    /// Seen before: nothing written.
    Duplicate,
    /// New, but older than what the call already shows (a late `ringing`): merged, not announced.
    Stale,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub effect: Effect,
    pub org_id: Uuid,
    pub call_id: Option<i64>,
    pub vapi_call_id: String,
    pub event_id: String,
    pub status: Option<String>,
}

impl Outcome {
    pub fn to_json(&self) -> JsonB {
        JsonB(serde_json::json!({
            "applied": self.effect == Effect::Applied,
            "outcome": self.effect.as_str(),
            "org_id": self.org_id.to_string(),
            "call_id": self.call_id,
            "vapi_call_id": self.vapi_call_id,
            "event_id": self.event_id,
            "status": self.status,
        }))
    }
}

/// The columns both call statements return: org_id, marked, call_id, status, outbox_id.
fn read_outcome(
    client: &mut SpiClient<'_>,
    table: pgrx::spi::SpiTupleTable<'_>,
    call: CallRef<'_>,
    event_id: String,
) -> Result<Outcome, VoxError> {
    let Some(row) = table.into_iter().next() else {
        return Err(VoxError::unknown_agent("p_assistant_id", call.assistant_id));
    };
    let org_id: Uuid = row.get(1)?.ok_or(VoxError::unknown_agent("p_assistant_id", call.assistant_id))?;
    let marked: bool = row.get(2)?.unwrap_or(false);
    let mut call_id: Option<i64> = row.get(3)?;
    let mut status: Option<String> = row.get(4)?;
    let outbox_id: Option<i64> = row.get(5)?;
    let effect = match (marked, outbox_id) {
        (false, _) => Effect::Duplicate,
        (true, Some(_)) => Effect::Applied,
        (true, None) => Effect::Stale,
    };
    if effect == Effect::Duplicate {
        if let Some(row) = CALL_ID.run(client, &[org_id.into(), call.vapi_call_id.into()])?.next() {
            (call_id, status) = (row.get(1)?, row.get(2)?);
        }
    }
    Ok(Outcome { effect, org_id, call_id, vapi_call_id: call.vapi_call_id.to_string(), event_id, status })
}

pub fn start_call(event: &CallStarted<'_>) -> Result<Outcome, VoxError> {
    let event_id = event.event_id();
    Spi::connect_mut(|client| {
        let table = CREATE.run(
            client,
            &[
                event.call.assistant_id.into(),
                event.call.vapi_call_id.into(),
                event.customer_number.into(),
                event.phone_number_id.into(),
                event.call_type.into(),
                event.status.as_str().into(),
                event.occurred_at.into(),
                event_id.as_str().into(),
                crate::outbox::notify().into(),
            ],
        )?;
        read_outcome(client, table, event.call, event_id.clone())
    })
}

pub fn end_call(event: CallCompleted<'_>) -> Result<Outcome, VoxError> {
    let event_id = event.event_id();
    let is_report = event.source == CompletionSource::Report;
    let topic = if is_report { "call.ended" } else { "call.status" };
    Spi::connect_mut(|client| {
        let table = COMPLETE.run(
            client,
            &[
                event.call.assistant_id.into(),
                event.call.vapi_call_id.into(),
                event.ended_reason.into(),
                event.started_at.into(),
                event.ended_at.into(),
                event.duration_seconds.into(),
                event.cost.into(),
                event.summary.into(),
                event.transcript.into(),
                event.recording_url.into(),
                is_report.into(),
                event_id.as_str().into(),
                event.source.as_str().into(),
                topic.into(),
                crate::outbox::notify().into(),
            ],
        )?;
        read_outcome(client, table, event.call, event_id.clone())
    })
}

/// A status message before the end (queued, ringing, in-progress, forwarding). Creates the call
/// if this is its first message; a status older than the call's is merged but not applied.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn create_inbound_call(
    p_vapi_call_id: Option<&str>,
    p_assistant_id: Option<&str>,
    p_customer_number: default!(Option<&str>, "NULL"),
    p_phone_number_id: default!(Option<&str>, "NULL"),
    p_call_type: default!(Option<&str>, "'inboundPhoneCall'"),
    p_status: default!(Option<&str>, "'ringing'"),
    p_occurred_at: default!(Option<TimestampWithTimeZone>, "now()"),
) -> Result<JsonB, ErrorReport> {
    let call = CallRef::new(p_vapi_call_id, p_assistant_id)?;
    let event = CallStarted::new(call, p_customer_number, p_phone_number_id, p_call_type, p_status, p_occurred_at)?;
    Ok(start_call(&event)?.to_json())
}

/// The end of a call, from the end-of-call report (authoritative) or a status `ended`.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn complete_call(
    p_vapi_call_id: Option<&str>,
    p_assistant_id: Option<&str>,
    p_ended_reason: default!(Option<&str>, "NULL"),
    p_started_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    p_ended_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    p_duration_seconds: default!(Option<AnyNumeric>, "NULL"),
    p_cost: default!(Option<AnyNumeric>, "NULL"),
    p_summary: default!(Option<&str>, "NULL"),
    p_transcript: default!(Option<&str>, "NULL"),
    p_recording_url: default!(Option<&str>, "NULL"),
    p_source: default!(Option<&str>, "'end-of-call-report'"),
) -> Result<JsonB, ErrorReport> {
    let call = CallRef::new(p_vapi_call_id, p_assistant_id)?;
    let event = CallCompleted::new(
        call,
        p_ended_reason,
        p_started_at,
        p_ended_at,
        p_duration_seconds,
        p_cost,
        p_summary,
        p_transcript,
        p_recording_url,
        p_source,
    )?;
    Ok(end_call(event)?.to_json())
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{call, count, error_of, org_with_agent, rows_of_org};

    const RINGING: &str = "SELECT voxanne.create_inbound_call(p_vapi_call_id => $1, p_assistant_id => $2,
                              p_customer_number => '+15550001111', p_phone_number_id => 'pn_1')";

    fn calls_of(org: &str) -> i64 {
        count("SELECT count(*) FROM voxanne.calls WHERE org_id = $1::uuid", &[org.into()])
    }

    fn outbox_of(org: &str) -> i64 {
        count("SELECT count(*) FROM voxanne.outbox WHERE org_id = $1::uuid", &[org.into()])
    }

    #[pg_test]
    fn first_status_creates_one_call_one_ledger_row_and_one_outbox_row() {
        let org = org_with_agent("asst_first");
        let out = call(RINGING, &["call-1".into(), "asst_first".into()]);
        assert_eq!(out["applied"], true);
        assert_eq!(out["outcome"], "applied");
        assert_eq!(out["org_id"], org.as_str());
        assert_eq!(out["status"], "ringing");
        assert!(out["call_id"].as_i64().is_some());
        assert_eq!(calls_of(&org), 1);
        assert_eq!(outbox_of(&org), 1);
        let topic: String = Spi::get_one_with_args(
            "SELECT topic || ':' || (payload->>'status') FROM voxanne.outbox WHERE org_id = $1::uuid",
            &[org.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(topic, "call.status:ringing");
        let ledger = count(
            "SELECT count(*) FROM voxanne.processed_webhook_events
             WHERE org_id = $1::uuid AND event_id = 'status:call-1:ringing'",
            &[org.as_str().into()],
        );
        assert_eq!(ledger, 1);
    }

    #[pg_test]
    fn duplicate_status_is_not_applied_and_writes_nothing() {
        let org = org_with_agent("asst_dup");
        let first = call(RINGING, &["call-1".into(), "asst_dup".into()]);
        let before = rows_of_org(&org);
        let again = call(RINGING, &["call-1".into(), "asst_dup".into()]);
        assert_eq!(again["applied"], false);
        assert_eq!(again["outcome"], "duplicate");
        assert_eq!(again["call_id"], first["call_id"]);
        assert_eq!(rows_of_org(&org), before);
    }

    #[pg_test]
    fn status_moves_forward_and_a_late_ringing_is_stale() {
        let org = org_with_agent("asst_fwd");
        let args = || vec!["call-1".into(), "asst_fwd".into()];
        call("SELECT voxanne.create_inbound_call($1, $2, p_status => 'in-progress')", &args());
        let late = call("SELECT voxanne.create_inbound_call($1, $2, p_status => 'ringing')", &args());
        assert_eq!(late["applied"], false);
        assert_eq!(late["outcome"], "stale");
        assert_eq!(late["status"], "in-progress");
        call("SELECT voxanne.complete_call($1, $2)", &args());
        let reopen = call("SELECT voxanne.create_inbound_call($1, $2, p_status => 'forwarding')", &args());
        assert_eq!(reopen["outcome"], "stale");
        assert_eq!(reopen["status"], "ended");
        // stale messages announce nothing: in-progress and the report only
        assert_eq!(outbox_of(&org), 2);
    }

    #[pg_test]
    fn status_ended_after_the_report_is_stale_and_fills_only_gaps() {
        let org = org_with_agent("asst_end");
        let report = call(
            "SELECT voxanne.complete_call($1, $2, p_ended_reason => 'customer-ended-call', p_cost => 0.5)",
            &["call-1".into(), "asst_end".into()],
        );
        assert_eq!(report["applied"], true);
        let status = call(
            "SELECT voxanne.complete_call($1, $2, p_ended_reason => 'hangup',
                 p_ended_at => '2026-01-01 10:00:00+00', p_source => 'status-update')",
            &["call-1".into(), "asst_end".into()],
        );
        assert_eq!(status["outcome"], "stale");
        let row: String = Spi::get_one_with_args(
            "SELECT ended_reason || '|' || cost || '|' || ended_at FROM voxanne.calls WHERE org_id = $1::uuid",
            &[org.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(row, "customer-ended-call|0.5|2026-01-01 10:00:00+00");
    }

    #[pg_test]
    fn same_vapi_call_id_in_two_orgs_stays_two_calls() {
        let org_a = org_with_agent("asst_a");
        let org_b = org_with_agent("asst_b");
        let a = call(RINGING, &["shared-call".into(), "asst_a".into()]);
        let b = call(RINGING, &["shared-call".into(), "asst_b".into()]);
        assert_eq!(a["applied"], true);
        assert_eq!(b["applied"], true, "org B's first status is not a duplicate of org A's");
        assert_ne!(a["call_id"], b["call_id"]);
        assert_eq!((calls_of(&org_a), calls_of(&org_b)), (1, 1));
    }

    #[pg_test]
    fn org_a_assistant_cannot_touch_org_b_call() {
        let org_a = org_with_agent("asst_a");
        let org_b = org_with_agent("asst_b");
        call(RINGING, &["b-call".into(), "asst_b".into()]);
        // org A's assistant "completes" org B's call id: it can only create its own row
        call("SELECT voxanne.complete_call($1, $2, p_ended_reason => 'hijack')", &["b-call".into(), "asst_a".into()]);
        let b_row: String = Spi::get_one_with_args(
            "SELECT status || '|' || coalesce(ended_reason, '-') FROM voxanne.calls WHERE org_id = $1::uuid",
            &[org_b.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(b_row, "ringing|-");
        assert_eq!(calls_of(&org_a), 1);
        assert_eq!(outbox_of(&org_b), 1);
    }

    #[pg_test]
    fn unknown_or_inactive_assistant_is_rejected_and_writes_nothing() {
        let org = org_with_agent("asst_gone");
        let err = error_of("SELECT voxanne.create_inbound_call('call-1', 'asst_nobody')");
        assert_eq!(err, "42704 no active agent for p_assistant_id 'asst_nobody'");
        Spi::run("SELECT voxanne.upsert_agent(org_id, 'asst_gone', p_active => false) FROM voxanne.agents WHERE vapi_assistant_id = 'asst_gone'").unwrap();
        let err = error_of("SELECT voxanne.complete_call('call-1', 'asst_gone')");
        assert!(err.starts_with("42704"), "{err}");
        assert_eq!(rows_of_org(&org), 0);
    }

    #[pg_test]
    fn lead_is_linked_by_org_and_customer_number() {
        let org_a = org_with_agent("asst_a");
        let org_b = org_with_agent("asst_b");
        Spi::run_with_args(
            "INSERT INTO voxanne.leads (org_id, phone, name) VALUES ($1::uuid, '+15550001111', 'B lead')",
            &[org_b.as_str().into()],
        )
        .unwrap();
        call(RINGING, &["call-a".into(), "asst_a".into()]);
        call(RINGING, &["call-b".into(), "asst_b".into()]);
        let linked = |org: &str| {
            count(
                "SELECT count(*) FROM voxanne.calls c JOIN voxanne.leads l ON l.org_id = c.org_id AND l.id = c.lead_id
                 WHERE c.org_id = $1::uuid",
                &[org.into()],
            )
        };
        assert_eq!(linked(&org_a), 0, "org B's lead must not attach to org A's call");
        assert_eq!(linked(&org_b), 1);
    }

    /// Every order of a call's messages gives the same final row and transcript set.
    #[pg_test]
    fn every_permutation_of_a_calls_messages_gives_the_same_final_row() {
        let org = org_with_agent("asst_perm");
        let messages = [
            "SELECT voxanne.create_inbound_call($1, $2, p_customer_number => '+15550001111',
                 p_phone_number_id => 'pn_1', p_status => 'ringing', p_occurred_at => '2026-01-01 10:00:00+00')",
            "SELECT voxanne.create_inbound_call($1, $2, p_customer_number => '+15550001111',
                 p_phone_number_id => 'pn_1', p_status => 'in-progress', p_occurred_at => '2026-01-01 10:00:05+00')",
            "SELECT voxanne.record_transcript($1, $2, 'user', 'hello', '2026-01-01 10:00:06+00')",
            "SELECT voxanne.record_transcript($1, $2, 'assistant', 'hello', '2026-01-01 10:00:07+00')",
            "SELECT voxanne.complete_call($1, $2, p_ended_reason => 'customer-ended-call',
                 p_started_at => '2026-01-01 10:00:04+00', p_ended_at => '2026-01-01 10:01:00+00',
                 p_duration_seconds => 56, p_cost => 0.2, p_summary => 'booked', p_transcript => 'full',
                 p_recording_url => 'https://example.com/r.wav')",
            "SELECT voxanne.complete_call($1, $2, p_ended_reason => 'hangup',
                 p_ended_at => '2026-01-01 10:01:01+00', p_source => 'status-update')",
        ];
        let final_state = |vapi_call_id: &str| -> String {
            Spi::get_one_with_args(
                "SELECT row(c.agent_id, c.lead_id, c.call_type, c.customer_number, c.phone_number_id,
                            c.status, c.status_event_id, c.ended_reason, c.started_at, c.ended_at,
                            c.duration_seconds, c.cost, c.summary, c.transcript, c.recording_url)::text
                        || (SELECT string_agg(t.role || '@' || t.spoken_at || ':' || t.text, ',' ORDER BY t.spoken_at)
                            FROM voxanne.call_transcripts t WHERE t.org_id = c.org_id AND t.call_id = c.id)
                 FROM voxanne.calls c WHERE c.org_id = $1::uuid AND c.vapi_call_id = $2",
                &[org.as_str().into(), vapi_call_id.into()],
            )
            .unwrap()
            .unwrap()
        };
        // replace each call id in the row text so rows of different calls compare
        let mut expected: Option<String> = None;
        let mut order: Vec<usize> = (0..messages.len()).collect();
        let mut n = 0;
        permute(&mut order, 0, &mut |order| {
            n += 1;
            let id = format!("perm-{n}");
            for &m in order.iter() {
                call(messages[m], &[id.as_str().into(), "asst_perm".into()]);
            }
            let state = final_state(&id).replace(&id, "ID");
            match &expected {
                None => expected = Some(state),
                Some(e) => assert_eq!(&state, e, "order {order:?} diverged"),
            }
        });
        assert_eq!(n, 720);
        let e = expected.unwrap();
        assert!(e.contains("ended,report:ID,customer-ended-call,\"2026-01-01 10:00:04+00\""), "{e}");
    }

    fn permute(v: &mut Vec<usize>, k: usize, f: &mut dyn FnMut(&[usize])) {
        if k == v.len() {
            f(v);
            return;
        }
        for i in k..v.len() {
            v.swap(k, i);
            permute(v, k + 1, f);
            v.swap(k, i);
        }
    }

    #[pg_test]
    fn bad_input_gets_its_sqlstate_names_the_field_and_writes_nothing() {
        let org = org_with_agent("asst_bad");
        let long_id = "x".repeat(300);
        let cases: Vec<(String, &str, &str)> = vec![
            ("SELECT voxanne.create_inbound_call(NULL, 'asst_bad')".into(), "22004", "p_vapi_call_id"),
            ("SELECT voxanne.create_inbound_call('c', NULL)".into(), "22004", "p_assistant_id"),
            ("SELECT voxanne.create_inbound_call('', 'asst_bad')".into(), "22023", "p_vapi_call_id"),
            (format!("SELECT voxanne.create_inbound_call('{long_id}', 'asst_bad')"), "22001", "p_vapi_call_id"),
            ("SELECT voxanne.create_inbound_call('c', 'asst_bad', p_status => 'dialing')".into(), "22023", "'dialing'"),
            ("SELECT voxanne.create_inbound_call('c', 'asst_bad', p_status => 'ended')".into(), "22023", "complete_call"),
            ("SELECT voxanne.create_inbound_call('c', 'asst_bad', p_status => NULL)".into(), "22004", "p_status"),
            ("SELECT voxanne.create_inbound_call('c', 'asst_bad', p_occurred_at => NULL)".into(), "22004", "p_occurred_at"),
            ("SELECT voxanne.create_inbound_call('c', 'asst_bad', p_occurred_at => 'infinity')".into(), "22023", "p_occurred_at"),
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_duration_seconds => -1)".into(), "22003", "p_duration_seconds"),
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_duration_seconds => 'NaN')".into(), "22003", "p_duration_seconds"),
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_cost => -0.01)".into(), "22003", "p_cost"),
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_started_at => '2026-01-02', p_ended_at => '2026-01-01')".into(), "22023", "p_ended_at"),
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_recording_url => 'javascript:alert(1)')".into(), "22023", "p_recording_url"),
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_source => 'fax')".into(), "22023", "p_source"),
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_summary => repeat('s', 70000))".into(), "22001", "p_summary"),
            ("SELECT voxanne.record_transcript('c', 'asst_bad', 'robot', 'hi', now())".into(), "22023", "p_role"),
            ("SELECT voxanne.record_transcript('c', 'asst_bad', 'user', '', now())".into(), "22023", "p_text"),
            ("SELECT voxanne.record_transcript('c', 'asst_bad', 'user', 'hi', NULL)".into(), "22004", "p_spoken_at"),
            ("SELECT voxanne.record_transcript('c', 'asst_bad', 'user', repeat('w', 40000), now())".into(), "22001", "p_text"),
            ("SELECT voxanne.record_transcript('c', 'asst_bad', 'user', 'hi', now(), 'draft')".into(), "22023", "p_transcript_type"),
            ("SELECT voxanne.upsert_agent(NULL, 'x')".into(), "22004", "p_org_id"),
            ("SELECT voxanne.upsert_agent(gen_random_uuid(), 'x', p_active => NULL)".into(), "22004", "p_active"),
            ("SELECT voxanne.purge_processed_events(NULL)".into(), "22004", "p_older_than"),
        ];
        for (sql, code, names) in &cases {
            let err = error_of(sql);
            assert!(err.starts_with(code), "{sql}\n  expected {code}, got: {err}");
            assert!(err.contains(names), "{sql}\n  message must name {names}: {err}");
        }
        assert_eq!(rows_of_org(&org), 0);
    }
}
