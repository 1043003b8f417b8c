//! `end-of-call-report`: the authoritative end of a call. Current payloads carry the recording,
//! transcript and summary under `artifact` and `analysis`; older ones at the top level. Each
//! value is checked under the path it came from. The report itself is kept whole
//! (`voxanne.call_reports`), and its `artifact.messages` are the call's lines.

use std::borrow::Cow;

use serde::Deserialize;

use super::wire::{call_and_routes, iso, message, spoken_lines, ListMessage};
use crate::domain::{in_order, json_amount, url, EndSource, COST_MAX, DURATION_MAX_SECONDS};
use crate::ending::{ended_reason, summary, transcript, EndEvent};
use crate::error::VoxError;
use crate::jsonb::{JsonbBind, JsonbOut, Node};
use crate::transcript::{Heard, LineEvent};

message! {
    struct EndOfCallReport {
        #[serde(borrow)]
        ended_reason: Option<Cow<'a, str>>,
        #[serde(borrow)]
        started_at: Option<Cow<'a, str>>,
        #[serde(borrow)]
        ended_at: Option<Cow<'a, str>>,
        cost: Option<f64>,
        duration_seconds: Option<f64>,
        #[serde(borrow)]
        analysis: Option<Analysis<'a>>,
        #[serde(borrow)]
        artifact: Option<Artifact<'a>>,
        // older payloads carry these at the top level
        #[serde(borrow)]
        transcript: Option<Cow<'a, str>>,
        #[serde(borrow)]
        summary: Option<Cow<'a, str>>,
        #[serde(borrow)]
        recording_url: Option<Cow<'a, str>>,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Analysis<'a> {
    #[serde(borrow)]
    summary: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Artifact<'a> {
    #[serde(borrow)]
    transcript: Option<Cow<'a, str>>,
    #[serde(borrow)]
    recording_url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stereo_recording_url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    recording: Option<Recording<'a>>,
    #[serde(borrow)]
    messages: Option<Vec<ListMessage<'a>>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Recording<'a> {
    #[serde(borrow)]
    stereo_url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    mono: Option<Mono<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Mono<'a> {
    #[serde(borrow)]
    combined_url: Option<Cow<'a, str>>,
}

/// The first value given, with the path it was given at.
fn first<'a>(candidates: &[(&'static str, Option<&'a Cow<'a, str>>)]) -> (&'static str, Option<&'a str>) {
    let given = candidates.iter().find(|(_, v)| v.is_some()).unwrap_or(&candidates[0]);
    (given.0, given.1.map(|v| v.as_ref()))
}

pub fn handle<'a>(message: Node<'a>, kind: &str, body: JsonbBind<'a>) -> Result<JsonbOut, VoxError> {
    let msg: EndOfCallReport = super::decode(message)?;
    let (_, vapi_call_id, routes) = call_and_routes(&msg.call, msg.assistant_id.as_deref(), &msg.assistant)?;
    let lines_routes = routes.clone();
    let started_at = msg.started_at.as_deref().map(|s| iso("message.startedAt", s)).transpose()?;
    let ended_at = msg.ended_at.as_deref().map(|s| iso("message.endedAt", s)).transpose()?;
    in_order(("message.startedAt", started_at), ("message.endedAt", ended_at))?;
    // `duration`'s unit changed over time; trust durationSeconds, else the two timestamps
    let duration = match (msg.duration_seconds, started_at, ended_at) {
        (Some(d), _, _) => json_amount("message.durationSeconds", Some(d), DURATION_MAX_SECONDS)?,
        (None, Some(s), Some(e)) => {
            let derived = (e.into_inner() - s.into_inner()) as f64 / 1e6;
            json_amount("message.endedAt - message.startedAt", Some(derived), DURATION_MAX_SECONDS)?
        }
        _ => None,
    };
    let artifact = msg.artifact.as_ref();
    let analysis = msg.analysis.as_ref();
    let recording = artifact.and_then(|a| a.recording.as_ref());
    let mono = recording.and_then(|r| r.mono.as_ref());
    let (transcript_field, transcript_value) = first(&[
        ("message.artifact.transcript", artifact.and_then(|a| a.transcript.as_ref())),
        ("message.transcript", msg.transcript.as_ref()),
    ]);
    let (summary_field, summary_value) = first(&[
        ("message.analysis.summary", analysis.and_then(|a| a.summary.as_ref())),
        ("message.summary", msg.summary.as_ref()),
    ]);
    // the mono mix first (what a player wants), then the stereo one (one channel per side)
    let (recording_field, recording_value) = first(&[
        ("message.artifact.recordingUrl", artifact.and_then(|a| a.recording_url.as_ref())),
        ("message.artifact.recording.mono.combinedUrl", mono.and_then(|m| m.combined_url.as_ref())),
        ("message.artifact.stereoRecordingUrl", artifact.and_then(|a| a.stereo_recording_url.as_ref())),
        ("message.artifact.recording.stereoUrl", recording.and_then(|r| r.stereo_url.as_ref())),
        ("message.recordingUrl", msg.recording_url.as_ref()),
    ]);
    let lines =
        spoken_lines("message.artifact.messages", artifact.and_then(|a| a.messages.as_deref()).unwrap_or_default())?;
    let event = EndEvent {
        vapi_call_id,
        routes,
        source: EndSource::Report,
        ended_reason: ended_reason("message.endedReason", msg.ended_reason.as_deref())?,
        started_at,
        ended_at,
        duration_seconds: duration,
        cost: json_amount("message.cost", msg.cost, COST_MAX)?,
        summary: summary(summary_field, summary_value)?,
        transcript: transcript(transcript_field, transcript_value)?,
        recording_url: url(recording_field, recording_value)?,
        body: Some(body),
    };
    let answer = event.apply()?;
    // the call's lines as the report lists them, in the same transaction: any line no
    // conversation-update or transcript message stored is stored now
    if !lines.is_empty() {
        LineEvent { vapi_call_id, routes: lines_routes, heard: Heard::Listed, lines }.apply()?;
    }
    Ok(answer.of_message(kind).jsonb())
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{call_row, fixture, fixture_org, handle, FIXTURE_CALL_ID as CALL_ID};

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
    fn the_report_is_kept_whole_and_a_stereo_only_recording_is_the_calls() {
        let org = fixture_org();
        let body = r#"{"message":{"type":"end-of-call-report","endedReason":"hangup","costs":[{"type":"model","cost":0.01}],
            "analysis":{"summary":"s","structuredData":{"booked":true},"successEvaluation":"true"},
            "artifact":{"recording":{"stereoUrl":"https://storage.vapi.ai/stereo.wav"},"pcapUrl":"https://x/p"},
            "call":{"id":"stereo-1","assistantId":"asst_fixture"}}}"#;
        handle(body);
        assert_eq!(call_row(&org, "stereo-1"), "ended|hangup|s|https://storage.vapi.ai/stereo.wav");
        let kept: String = Spi::get_one_with_args(
            "SELECT concat_ws('|', r.report->'analysis'->'structuredData', r.report->'costs'->0->>'cost',
                              r.report->'artifact'->>'pcapUrl', r.report = ($2::jsonb)->'message')
             FROM voxanne.call_reports r JOIN voxanne.calls c ON c.org_id = r.org_id AND c.id = r.call_id
             WHERE c.org_id = $1::uuid AND c.vapi_call_id = 'stereo-1'",
            &[org.as_str().into(), body.into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(kept, r#"{"booked": true}|0.01|https://x/p|t"#);
    }

    /// The report's row, its kept body and its lines are one transaction: when storing the
    /// lines fails (a fault planted on call_transcripts), nothing of the report is left.
    #[pg_test]
    fn a_report_and_its_lines_commit_together_or_not_at_all() {
        let org = fixture_org();
        Spi::run(
            "CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'planted fault' USING ERRCODE = '53100'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT ON voxanne.call_transcripts
                 FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse()",
        )
        .unwrap();
        let err = crate::testing::error_of(&format!(
            "SELECT voxanne.handle_vapi_message({})",
            pgrx::spi::quote_literal(fixture!("end-of-call-report"))
        ));
        assert!(err.starts_with("53100"), "{err}");
        assert_eq!(crate::testing::rows_of_org(&org), 0, "no call, ledger or outbox row of the report");
        let reports: i64 = Spi::get_one("SELECT count(*) FROM voxanne.call_reports").unwrap().unwrap();
        assert_eq!(reports, 0);
        Spi::run("DROP TRIGGER refuse ON voxanne.call_transcripts").unwrap();
        assert_eq!(handle(fixture!("end-of-call-report"))["applied"], true, "without the fault it applies");
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
}
