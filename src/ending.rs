//! The end of a call: `complete_call`, and the event the webhook's `end-of-call-report` and
//! `status-update` `ended` decode into. The report's values overwrite, a status `ended` only
//! fills gaps (one merge rule file each), so the final row is the same in either order.

use pgrx::datum::{AnyNumeric, TimestampWithTimeZone};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::calls::CallMessage;
use crate::domain::{
    amount, in_order, moment, optional, required, url, EndSource, COST_MAX, DURATION_MAX_SECONDS, ID_MAX,
    SHORT_TEXT_MAX, SUMMARY_MAX, TRANSCRIPT_MAX,
};
use crate::error::VoxError;
use crate::jsonb::{JsonbBind, JsonbOut};
use crate::outcome::Answer;
use crate::routing::{routed, Routed, Routes};

static BY_REPORT: Routed =
    routed!("call_mark.sql", "end_insert.sql", "end_by_report.sql", "end_returning.sql", "call_announce.sql");
/// The webhook's report, also kept whole. Its own statement, so `complete_call` keeps working
/// on a 0.2.0 schema until `ALTER EXTENSION … UPDATE` adds call_reports.
static BY_REPORT_KEPT: Routed = routed!(
    "call_mark.sql",
    "end_insert.sql",
    "end_by_report.sql",
    "end_returning.sql",
    "report.sql",
    "call_announce.sql"
);
static BY_STATUS: Routed =
    routed!("call_mark.sql", "end_insert.sql", "end_by_status.sql", "end_returning.sql", "call_announce.sql");

pub struct EndEvent<'a> {
    pub vapi_call_id: &'a str,
    pub routes: Routes<'a>,
    pub source: EndSource,
    pub ended_reason: Option<&'a str>,
    pub started_at: Option<TimestampWithTimeZone>,
    pub ended_at: Option<TimestampWithTimeZone>,
    pub duration_seconds: Option<AnyNumeric>,
    pub cost: Option<AnyNumeric>,
    pub summary: Option<&'a str>,
    pub transcript: Option<&'a str>,
    pub recording_url: Option<&'a str>,
    /// The webhook's body, for a report.
    pub body: Option<JsonbBind<'a>>,
}

impl<'a> EndEvent<'a> {
    /// An end that carries only why and when: a status `ended`.
    pub fn by_status(
        vapi_call_id: &'a str,
        routes: Routes<'a>,
        ended_reason: Option<&'a str>,
        ended_at: Option<TimestampWithTimeZone>,
    ) -> Self {
        Self {
            vapi_call_id,
            routes,
            source: EndSource::StatusUpdate,
            ended_reason,
            started_at: None,
            ended_at,
            duration_seconds: None,
            cost: None,
            summary: None,
            transcript: None,
            recording_url: None,
            body: None,
        }
    }

    pub fn apply(self) -> Result<Answer<'a>, VoxError> {
        let (statement, event_id, topic) = match self.source {
            EndSource::Report if self.body.is_some() => {
                (&BY_REPORT_KEPT, format!("report:{}", self.vapi_call_id), "call.ended")
            }
            EndSource::Report => (&BY_REPORT, format!("report:{}", self.vapi_call_id), "call.ended"),
            EndSource::StatusUpdate => (&BY_STATUS, format!("status:{}:ended", self.vapi_call_id), "call.status"),
        };
        let message = CallMessage {
            routes: self.routes,
            vapi_call_id: self.vapi_call_id,
            event_id,
            event_type: self.source.as_str(),
            topic,
        };
        message.apply(
            statement,
            [
                self.ended_reason.into(),
                self.started_at.into(),
                self.ended_at.into(),
                self.duration_seconds.into(),
                self.cost.into(),
                self.summary.into(),
                self.transcript.into(),
                self.recording_url.into(),
                self.body.into(),
            ],
        )
    }
}

/// The limits of an end's texts, for both ways in.
pub fn ended_reason<'a>(field: &'static str, value: Option<&'a str>) -> Result<Option<&'a str>, VoxError> {
    optional(field, value, SHORT_TEXT_MAX)
}

pub fn summary<'a>(field: &'static str, value: Option<&'a str>) -> Result<Option<&'a str>, VoxError> {
    optional(field, value, SUMMARY_MAX)
}

pub fn transcript<'a>(field: &'static str, value: Option<&'a str>) -> Result<Option<&'a str>, VoxError> {
    optional(field, value, TRANSCRIPT_MAX)
}

/// The end of a call, from the end-of-call report (authoritative) or a status `ended`.
#[allow(clippy::too_many_arguments)] // the SQL API's signature
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
) -> Result<JsonbOut, ErrorReport> {
    let event = EndEvent {
        vapi_call_id: required("p_vapi_call_id", p_vapi_call_id, ID_MAX)?,
        routes: Routes::by_assistant("p_assistant_id", p_assistant_id)?,
        source: EndSource::parse("p_source", required("p_source", p_source, SHORT_TEXT_MAX)?)?,
        ended_reason: ended_reason("p_ended_reason", p_ended_reason)?,
        started_at: p_started_at.map(|t| moment("p_started_at", t)).transpose()?,
        ended_at: p_ended_at.map(|t| moment("p_ended_at", t)).transpose()?,
        duration_seconds: amount("p_duration_seconds", p_duration_seconds, DURATION_MAX_SECONDS)?,
        cost: amount("p_cost", p_cost, COST_MAX)?,
        summary: summary("p_summary", p_summary)?,
        transcript: transcript("p_transcript", p_transcript)?,
        recording_url: url("p_recording_url", p_recording_url)?,
        body: None,
    };
    in_order(("p_started_at", event.started_at), ("p_ended_at", event.ended_at))?;
    Ok(event.apply()?.jsonb())
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{assert_refused, json_of, org_with_agent, rows_of_org};

    #[pg_test]
    fn status_ended_after_the_report_is_stale_and_fills_only_gaps() {
        let org = org_with_agent("asst_end");
        let report = json_of(
            "SELECT voxanne.complete_call($1, $2, p_ended_reason => 'customer-ended-call', p_cost => 0.5)",
            &["call-1".into(), "asst_end".into()],
        );
        assert_eq!(report["applied"], true);
        let status = json_of(
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
    fn bad_complete_call_input_gets_its_sqlstate_names_the_argument_and_writes_nothing() {
        let org = org_with_agent("asst_bad");
        assert_refused(&[
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_duration_seconds => -1)", "22003", "p_duration_seconds"),
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_duration_seconds => 'NaN')", "22003", "p_duration_seconds"),
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_cost => -0.01)", "22003", "p_cost"),
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_started_at => '2026-01-02', p_ended_at => '2026-01-01')", "22023", "p_ended_at"),
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_recording_url => 'javascript:alert(1)')", "22023", "p_recording_url"),
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_source => 'fax')", "22023", "p_source"),
            ("SELECT voxanne.complete_call('c', 'asst_bad', p_summary => repeat('s', 70000))", "22001", "p_summary"),
        ]);
        assert_eq!(rows_of_org(&org), 0);
    }
}
