//! `handle_vapi_message`: one Vapi server message in, one effect out.
//!
//! The envelope is read twice at most: once for `message.type`, then, only for the types we
//! act on, once into that type's struct. A type we ignore never fails on fields we don't read,
//! so Vapi can add message types and fields without making its retries loop on errors.

use std::ffi::CStr;

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::datum::{AnyNumeric, FromDatum, TimestampWithTimeZone, Uuid};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::calls::{end_call, start_call};
use crate::error::VoxError;
use crate::events::{CallCompleted, CallRef, CallStarted, TranscriptLine, TRANSCRIPT_MAX};
use crate::plans::{Statement, TEXT};
use crate::transcripts::record;

/// Postgres timestamps count from 2000-01-01; Vapi's from 1970-01-01.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

#[derive(Deserialize)]
struct Envelope<T> {
    message: T,
}

#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: String,
}

/// Fields shared by every message we act on. Parsed on its own rather than `flatten`ed into
/// each type, because flatten loses the JSON path an error message names.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Common {
    timestamp: Option<Timestamp>,
    call: Option<Call>,
    assistant: Option<Assistant>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Call {
    id: Option<String>,
    assistant_id: Option<String>,
    #[serde(rename = "type")]
    call_type: Option<String>,
    customer: Option<Customer>,
    phone_number_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Customer {
    number: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Assistant {
    id: Option<String>,
}

/// Milliseconds since the epoch (current payloads; may be fractional or in exponent notation)
/// or an ISO-8601 string (older payloads).
#[derive(Deserialize)]
#[serde(untagged)]
enum Timestamp {
    Millis(f64),
    Iso(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusUpdate {
    status: Option<String>,
    ended_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndOfCallReport {
    ended_reason: Option<String>,
    started_at: Option<String>,
    ended_at: Option<String>,
    cost: Option<f64>,
    duration_seconds: Option<f64>,
    analysis: Option<Analysis>,
    artifact: Option<Artifact>,
    // older payloads carry these at the top level
    transcript: Option<String>,
    summary: Option<String>,
    recording_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Analysis {
    summary: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Artifact {
    transcript: Option<String>,
    recording_url: Option<String>,
    recording: Option<Recording>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Recording {
    mono: Option<Mono>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Mono {
    combined_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Transcript {
    role: Option<String>,
    transcript_type: Option<String>,
    transcript: Option<String>,
}

/// A `jsonb` argument as its text. pgrx's `JsonB` converts through `serde_json::Value` and
/// panics on valid jsonb that `Value` cannot hold (numbers beyond f64, nesting deeper than
/// 128), which any sender can post; parsed from text into our structs, such a body is a 22023
/// naming the field, and the fields we ignore are skipped without being converted.
pub struct JsonbText(String);

impl FromDatum for JsonbText {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: the datum is a jsonb (the function's declared argument type); jsonb_out
        // returns a palloc'd C string in the current memory context.
        let text = unsafe { pgrx::fcinfo::direct_function_call::<&CStr>(pg_sys::jsonb_out, &[Some(datum)]) }?;
        Some(Self(text.to_string_lossy().into_owned()))
    }
}

// SAFETY: unboxed through FromDatum, like pgrx's own JsonB.
unsafe impl<'fcx> ArgAbi<'fcx> for JsonbText {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

// SAFETY: the SQL type is jsonb, which is what FromDatum above reads.
unsafe impl SqlTranslatable for JsonbText {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::JsonbText");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

/// Deserialize the envelope as `T`; a wrong type names its JSON path (`message.call.id`).
fn parse<T: DeserializeOwned>(body: &str) -> Result<T, VoxError> {
    let mut de = serde_json::Deserializer::from_str(body);
    serde_path_to_error::deserialize::<_, Envelope<T>>(&mut de).map(|e| e.message).map_err(|e| {
        let path = e.path().to_string();
        // "… at line 1 column 412" points into jsonb's normalized text, not what was sent
        let detail = e.inner().to_string();
        let detail = detail.split(" at line ").next().unwrap_or_default().to_string();
        // serde reports a missing field at its parent's path
        match detail.strip_prefix("missing field `").and_then(|rest| rest.strip_suffix('`')) {
            Some(name) if path == "." => VoxError::Missing { field: path_field(name) },
            Some(name) => VoxError::Missing { field: path_field(&format!("{path}.{name}")) },
            None => VoxError::wrong_shape(path_field(&path), &detail),
        }
    })
}

/// The JSON paths error messages can name. Static, because VoxError fields are.
fn path_field(path: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "message",
        "message.type",
        "message.timestamp",
        "message.call",
        "message.call.id",
        "message.call.assistantId",
        "message.call.type",
        "message.call.customer",
        "message.call.customer.number",
        "message.call.phoneNumberId",
        "message.assistant",
        "message.assistant.id",
        "message.status",
        "message.endedReason",
        "message.startedAt",
        "message.endedAt",
        "message.cost",
        "message.durationSeconds",
        "message.analysis",
        "message.analysis.summary",
        "message.artifact",
        "message.artifact.transcript",
        "message.artifact.recordingUrl",
        "message.artifact.recording",
        "message.artifact.recording.mono",
        "message.artifact.recording.mono.combinedUrl",
        "message.transcript",
        "message.summary",
        "message.recordingUrl",
        "message.role",
        "message.transcriptType",
    ];
    KNOWN.iter().find(|k| **k == path).copied().unwrap_or("message")
}

/// Argument names of the SQL API, as the webhook's JSON paths, for error messages.
fn json_path(field: &'static str) -> &'static str {
    match field {
        "p_vapi_call_id" => "message.call.id",
        "p_assistant_id" => "message.call.assistantId",
        "p_customer_number" => "message.call.customer.number",
        "p_phone_number_id" => "message.call.phoneNumberId",
        "p_call_type" => "message.call.type",
        "p_status" => "message.status",
        "p_occurred_at" | "p_spoken_at" => "message.timestamp",
        "p_ended_reason" => "message.endedReason",
        "p_started_at" => "message.startedAt",
        "p_ended_at" => "message.endedAt",
        "p_duration_seconds" => "message.durationSeconds",
        "p_cost" => "message.cost",
        "p_summary" => "message.analysis.summary",
        "p_transcript" => "message.artifact.transcript",
        "p_recording_url" => "message.artifact.recordingUrl",
        "p_role" => "message.role",
        "p_text" => "message.transcript",
        "p_transcript_type" => "message.transcriptType",
        other => other,
    }
}

fn micros_to_timestamp(field: &'static str, shown: &str, unix_micros: i64) -> Result<TimestampWithTimeZone, VoxError> {
    let pg_micros =
        unix_micros.checked_sub(PG_EPOCH_OFFSET_MICROS).ok_or_else(|| VoxError::bad_timestamp(field, shown))?;
    TimestampWithTimeZone::try_from(pg_micros).map_err(|_| VoxError::bad_timestamp(field, shown))
}

fn iso_timestamp(field: &'static str, s: &str) -> Result<TimestampWithTimeZone, VoxError> {
    let parsed = chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc().timestamp_micros())
        })
        .map_err(|_| VoxError::bad_timestamp(field, s))?;
    micros_to_timestamp(field, s, parsed)
}

impl Timestamp {
    fn resolve(&self) -> Result<TimestampWithTimeZone, VoxError> {
        const FIELD: &str = "message.timestamp";
        match self {
            Self::Millis(ms) => {
                let micros = (ms * 1000.0).round();
                // the i64 range check also rejects NaN and infinities
                if !(micros >= i64::MIN as f64 && micros <= i64::MAX as f64) {
                    return Err(VoxError::bad_timestamp(FIELD, ms.to_string()));
                }
                micros_to_timestamp(FIELD, &ms.to_string(), micros as i64)
            }
            Self::Iso(s) => iso_timestamp(FIELD, s),
        }
    }
}

/// The agent registered for a phone number: the last resort for squads and transient
/// assistants, whose messages carry no assistant id.
static ASSISTANT_BY_PHONE: Statement = Statement {
    sql: "SELECT a.vapi_assistant_id FROM voxanne.agents AS a
          WHERE a.vapi_phone_number_id = $1 AND a.active",
    arg_types: &[TEXT],
};

/// The call's ids, with the assistant resolved in the documented order:
/// `call.assistantId`, then `assistant.id`, then the agent of `call.phoneNumberId`.
fn call_ids(common: &Common) -> Result<(String, String), VoxError> {
    let call = common.call.as_ref().ok_or(VoxError::Missing { field: "message.call" })?;
    let id = call.id.clone().ok_or(VoxError::Missing { field: "message.call.id" })?;
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let assistant =
        match non_empty(&call.assistant_id).or_else(|| common.assistant.as_ref().and_then(|a| non_empty(&a.id))) {
            Some(a) => a,
            None => {
                // no assistant anywhere and no phone number to find one by
                let phone =
                    non_empty(&call.phone_number_id).ok_or(VoxError::Missing { field: "message.call.assistantId" })?;
                let found: Option<String> =
                    Spi::connect_mut(|client| ASSISTANT_BY_PHONE.first_value(client, &[phone.as_str().into()]))?;
                found.ok_or_else(|| VoxError::unknown_agent("message.call.phoneNumberId", &phone))?
            }
        };
    Ok((id, assistant))
}

fn acknowledge(kind: &str) -> serde_json::Value {
    serde_json::json!({ "applied": false, "ignored": kind, "message_type": kind })
}

fn with_type(mut outcome: serde_json::Value, kind: &str) -> serde_json::Value {
    outcome["message_type"] = kind.into();
    outcome
}

fn numeric(field: &'static str, v: Option<f64>) -> Result<Option<AnyNumeric>, VoxError> {
    v.map(|x| AnyNumeric::try_from(x).map_err(|_| VoxError::out_of_range(field, x, 0, i64::MAX))).transpose()
}

fn status_update(body: &str) -> Result<serde_json::Value, VoxError> {
    let (common, msg): (Common, StatusUpdate) = (parse(body)?, parse(body)?);
    let (id, assistant) = call_ids(&common)?;
    let call = CallRef::new(Some(&id), Some(&assistant))?;
    let at = common.timestamp.as_ref().map(Timestamp::resolve).transpose()?;
    let status = msg.status.as_deref().ok_or(VoxError::Missing { field: "p_status" })?;
    if status == "ended" {
        let event = CallCompleted::new(
            call,
            msg.ended_reason.as_deref(),
            None,
            at,
            None,
            None,
            None,
            None,
            None,
            Some("status-update"),
        )?;
        return Ok(end_call(event)?.to_json().0);
    }
    let wire = common.call.as_ref();
    let event = CallStarted::new(
        call,
        wire.and_then(|c| c.customer.as_ref()).and_then(|c| c.number.as_deref()),
        wire.and_then(|c| c.phone_number_id.as_deref()),
        Some(wire.and_then(|c| c.call_type.as_deref()).unwrap_or("inboundPhoneCall")),
        Some(status),
        Some(at.unwrap_or_else(now)),
    )?;
    Ok(start_call(&event)?.to_json().0)
}

fn end_of_call_report(body: &str) -> Result<serde_json::Value, VoxError> {
    let (common, msg): (Common, EndOfCallReport) = (parse(body)?, parse(body)?);
    let (id, assistant) = call_ids(&common)?;
    let call = CallRef::new(Some(&id), Some(&assistant))?;
    let started_at = msg.started_at.as_deref().map(|s| iso_timestamp("message.startedAt", s)).transpose()?;
    let ended_at = msg.ended_at.as_deref().map(|s| iso_timestamp("message.endedAt", s)).transpose()?;
    // `duration`'s unit changed over time; trust durationSeconds, else the two timestamps
    let duration = match (msg.duration_seconds, started_at, ended_at) {
        (Some(d), _, _) => Some(d),
        (None, Some(s), Some(e)) if e >= s => Some((e.into_inner() - s.into_inner()) as f64 / 1e6),
        _ => None,
    };
    let artifact = msg.artifact.unwrap_or_default();
    let transcript = artifact.transcript.or(msg.transcript);
    let summary = msg.analysis.and_then(|a| a.summary).or(msg.summary);
    let recording_url = artifact
        .recording_url
        .or_else(|| artifact.recording.and_then(|r| r.mono).and_then(|m| m.combined_url))
        .or(msg.recording_url);
    let event = CallCompleted::new(
        call,
        msg.ended_reason.as_deref(),
        started_at,
        ended_at,
        numeric("message.durationSeconds", duration)?,
        numeric("message.cost", msg.cost)?,
        summary.as_deref(),
        transcript.as_deref(),
        recording_url.as_deref(),
        Some("end-of-call-report"),
    )?;
    Ok(end_call(event)?.to_json().0)
}

fn transcript(body: &str, kind: &str) -> Result<serde_json::Value, VoxError> {
    let (common, msg): (Common, Transcript) = (parse(body)?, parse(body)?);
    // `transcript[transcriptType="final"]` carries the type in its name
    let transcript_type =
        msg.transcript_type.as_deref().unwrap_or(if kind.contains("final") { "final" } else { "partial" });
    if transcript_type == "partial" {
        return Ok(acknowledge("transcript[partial]"));
    }
    let (id, assistant) = call_ids(&common)?;
    let call = CallRef::new(Some(&id), Some(&assistant))?;
    let spoken_at = common.timestamp.as_ref().ok_or(VoxError::Missing { field: "message.timestamp" })?.resolve()?;
    let line = TranscriptLine::new(
        call,
        msg.role.as_deref(),
        msg.transcript.as_deref(),
        Some(spoken_at),
        Some(transcript_type),
    )?;
    Ok(record(&line)?.to_json(&line).0)
}

fn now() -> TimestampWithTimeZone {
    // SAFETY: GetCurrentTransactionStartTimestamp has no preconditions inside a transaction.
    let ts = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    TimestampWithTimeZone::try_from(ts).unwrap_or_else(|_| TimestampWithTimeZone::positive_infinity())
}

pub fn dispatch(body: &str) -> Result<serde_json::Value, VoxError> {
    let kind = parse::<Kind>(body)?.kind;
    let outcome = match kind.as_str() {
        "status-update" => status_update(body),
        "end-of-call-report" => end_of_call_report(body),
        k if k == "transcript" || k.starts_with("transcript[") => transcript(body, k),
        // assistant-request and tool-calls expect a reply this product does not own: route
        // them to your own handler (README, "Messages this does not answer")
        other => return Ok(acknowledge(other)),
    };
    outcome.map(|o| with_type(o, &kind)).map_err(|e| e.renamed(json_path))
}

/// Handle one Vapi server message (`{"message": {...}}`) in the caller's transaction.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn handle_vapi_message(p_body: Option<JsonbText>) -> Result<JsonB, ErrorReport> {
    let body = p_body.ok_or(VoxError::Missing { field: "p_body" })?;
    Ok(JsonB(dispatch(&body.0)?))
}

/// The org a (possibly broken) body belongs to, if its assistant can be found: best effort,
/// never an error, because it only labels a rejected event.
static ORG_OF_ASSISTANT: Statement = Statement {
    sql: "SELECT a.org_id FROM voxanne.agents AS a
          WHERE a.active AND (a.vapi_assistant_id = $1 OR a.vapi_phone_number_id = $2)
          ORDER BY a.vapi_assistant_id = $1 DESC LIMIT 1",
    arg_types: &[TEXT, TEXT],
};

static INSERT_REJECTED: Statement = Statement {
    sql: "INSERT INTO voxanne.rejected_events (org_id, body, sqlstate, message, message_type, vapi_call_id)
          VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    arg_types: &[crate::plans::UUID, TEXT, TEXT, TEXT, TEXT, TEXT],
};

/// Store a webhook that `handle_vapi_message` rejected, raw, so nothing a sender posted is
/// lost. The relay calls this after the failed statement (whose transaction rolled back).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn record_rejected_event(
    p_body: Option<&str>,
    p_sqlstate: Option<&str>,
    p_message: default!(Option<&str>, "NULL"),
) -> Result<i64, ErrorReport> {
    let body = crate::events::required("p_body", p_body, TRANSCRIPT_MAX)?;
    let sqlstate = crate::events::required("p_sqlstate", p_sqlstate, 5)?;
    let message = crate::events::optional("p_message", p_message, crate::events::SUMMARY_MAX)?;
    let parsed: Option<Envelope<Common>> = serde_json::from_str(body).ok();
    let kind = serde_json::from_str::<Envelope<Kind>>(body).ok().map(|e| e.message.kind);
    let call = parsed.as_ref().and_then(|e| e.message.call.as_ref());
    let vapi_call_id = call.and_then(|c| c.id.clone());
    let assistant = call
        .and_then(|c| c.assistant_id.clone())
        .or_else(|| parsed.as_ref().and_then(|e| e.message.assistant.as_ref()).and_then(|a| a.id.clone()));
    let phone = call.and_then(|c| c.phone_number_id.clone());
    let id: Option<i64> = Spi::connect_mut(|client| {
        let org: Option<Uuid> = match (&assistant, &phone) {
            (None, None) => None,
            _ => ORG_OF_ASSISTANT.first_value(client, &[assistant.as_deref().into(), phone.as_deref().into()])?,
        };
        INSERT_REJECTED.first_value(
            client,
            &[
                org.into(),
                body.into(),
                sqlstate.into(),
                message.into(),
                kind.as_deref().into(),
                vapi_call_id.as_deref().into(),
            ],
        )
    })
    .map_err(VoxError::from)?;
    Ok(id.ok_or(VoxError::Spi(pgrx::spi::Error::NoTupleTable))?)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{call, count, error_of, rows_of_org};

    const CALL_ID: &str = "2f6d4c1e-0b8a-4d51-9a57-0f3c9e1b7a10";

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../tests/fixtures/vapi/", $name, ".json"))
        };
    }

    fn handle(body: &str) -> serde_json::Value {
        call("SELECT voxanne.handle_vapi_message($1::jsonb)", &[body.into()])
    }

    /// The fixtures' assistant and phone number, registered to a fresh org.
    fn fixture_org() -> String {
        let org: String = Spi::get_one("SELECT gen_random_uuid()::text").unwrap().unwrap();
        Spi::run_with_args(
            "SELECT voxanne.upsert_agent($1::uuid, 'asst_fixture', p_vapi_phone_number_id => 'pn_fixture')",
            &[org.as_str().into()],
        )
        .unwrap();
        org
    }

    fn call_row(org: &str, vapi_call_id: &str) -> String {
        Spi::get_one_with_args(
            "SELECT concat_ws('|', status, call_type, customer_number, phone_number_id, ended_reason,
                              started_at, ended_at, duration_seconds, cost, summary, recording_url,
                              length(transcript))
             FROM voxanne.calls WHERE org_id = $1::uuid AND vapi_call_id = $2",
            &[org.into(), vapi_call_id.into()],
        )
        .unwrap()
        .unwrap()
    }

    #[pg_test]
    fn status_update_with_millisecond_timestamp_creates_the_call() {
        let org = fixture_org();
        let out = handle(fixture!("status-update-ringing"));
        assert_eq!(out["applied"], true);
        assert_eq!(out["message_type"], "status-update");
        assert_eq!(out["org_id"], org.as_str());
        assert_eq!(call_row(&org, CALL_ID), "ringing|inboundPhoneCall|+15551230001|pn_fixture");
        let at: String = Spi::get_one("SELECT payload->>'occurred_at' FROM voxanne.outbox ORDER BY id DESC LIMIT 1")
            .unwrap()
            .unwrap();
        assert_eq!(at, "2026-11-25T10:00:00+00:00");
    }

    #[pg_test]
    fn status_update_with_iso_timestamp_sets_started_at() {
        let org = fixture_org();
        handle(fixture!("status-update-in-progress-iso-timestamp"));
        assert_eq!(
            call_row(&org, CALL_ID),
            "in-progress|inboundPhoneCall|+15551230001|pn_fixture|2026-11-25 10:00:05.25+00"
        );
    }

    #[pg_test]
    fn status_ended_in_exponent_notation_completes_the_call() {
        let org = fixture_org();
        let out = handle(fixture!("status-update-ended"));
        assert_eq!(out["applied"], true);
        assert_eq!(out["event_id"], format!("status:{CALL_ID}:ended"));
        assert_eq!(call_row(&org, CALL_ID), "ended|customer-ended-call|2026-11-25 10:01:01.5+00");
    }

    #[pg_test]
    fn end_of_call_report_prefers_artifact_and_analysis_and_derives_duration() {
        let org = fixture_org();
        let out = handle(fixture!("end-of-call-report"));
        assert_eq!(out["applied"], true);
        assert_eq!(out["event_id"], format!("report:{CALL_ID}"));
        assert_eq!(
            call_row(&org, CALL_ID),
            "ended|customer-ended-call|2026-11-25 10:00:05+00|2026-11-25 10:01:01.5+00|56.5|0.1234|\
             Caller booked a cleaning for Tuesday 3pm.|https://storage.vapi.ai/rec-2f6d4c1e.wav|85"
        );
    }

    #[pg_test]
    fn legacy_end_of_call_report_uses_top_level_fields_and_duration_seconds() {
        let org = fixture_org();
        handle(fixture!("end-of-call-report-legacy"));
        assert_eq!(
            call_row(&org, CALL_ID),
            "ended|assistant-ended-call|2026-11-25 10:00:05+00|2026-11-25 10:01:05+00|58.5|0.2|\
             Legacy summary|https://storage.vapi.ai/legacy.wav|9"
        );
    }

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

    #[pg_test]
    fn squad_call_without_assistant_id_resolves_by_phone_number() {
        let org = fixture_org();
        let out = handle(fixture!("status-update-squad-no-assistant"));
        assert_eq!(out["applied"], true);
        assert_eq!(out["org_id"], org.as_str());
    }

    #[pg_test]
    fn other_message_types_are_acknowledged_not_errors() {
        let org = fixture_org();
        for (body, kind) in [
            (fixture!("speech-update"), "speech-update"),
            (fixture!("conversation-update"), "conversation-update"),
            (fixture!("assistant-request"), "assistant-request"),
            (fixture!("tool-calls"), "tool-calls"),
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
                "message.call.id has the wrong JSON shape",
            ),
            (
                r#"{"message":{"type":"status-update","status":"dialing","call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "22023",
                "message.status has invalid value 'dialing'",
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
                r#"{"message":{"type":"transcript","transcriptType":"final","role":"user","transcript":"hi","call":{"id":"c","assistantId":"asst_fixture"}}}"#,
                "22004",
                "message.timestamp",
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

    #[pg_test]
    fn rejected_events_keep_the_raw_body_with_its_org_when_known() {
        let org = fixture_org();
        let body = r#"{"message":{"type":"status-update","status":"dialing","call":{"id":"c9","assistantId":"asst_fixture"}}}"#;
        let id: i64 = Spi::get_one_with_args(
            "SELECT voxanne.record_rejected_event($1, '22023', 'message.status has invalid value')",
            &[body.into()],
        )
        .unwrap()
        .unwrap();
        let row: String = Spi::get_one_with_args(
            "SELECT concat_ws('|', org_id, sqlstate, message_type, vapi_call_id, body = $2)
             FROM voxanne.rejected_events WHERE id = $1",
            &[id.into(), body.into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(row, format!("{org}|22023|status-update|c9|t"));
        // a body that is not even JSON (or holds \u0000, which jsonb refuses) is kept too, with no org
        let junk = r#"{"message": "\u0000 not json"#;
        Spi::run_with_args("SELECT voxanne.record_rejected_event($1, '22P02')", &[junk.into()]).unwrap();
        assert_eq!(
            count("SELECT count(*) FROM voxanne.rejected_events WHERE org_id IS NULL AND body = $1", &[junk.into()]),
            1
        );
    }
}
