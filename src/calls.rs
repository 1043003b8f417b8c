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
    arg_types: &[TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, TIMESTAMPTZ, TEXT],
};

static COMPLETE: Statement = Statement {
    sql: include_str!("../sql/queries/complete_call.sql"),
    arg_types: &[TEXT, TEXT, TEXT, TIMESTAMPTZ, TIMESTAMPTZ, NUMERIC, NUMERIC, TEXT, TEXT, TEXT, BOOL, TEXT, TEXT, TEXT],
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
        (call_id, status) = CALL_ID.run(client, &[org_id.into(), call.vapi_call_id.into()])?.first().get_two()?;
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
