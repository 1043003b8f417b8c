//! Every input is checked once, here, into a typed event; the write paths only see valid data.
//!
//! Limits are in bytes (Postgres text is UTF-8). The README's "Input limits" table mirrors the
//! constants below.

use pgrx::datum::{AnyNumeric, TimestampWithTimeZone};
use sha2::{Digest, Sha256};

use crate::error::VoxError;

pub const ID_MAX: usize = 255;
pub const SHORT_TEXT_MAX: usize = 255;
pub const PHONE_MAX: usize = 64;
pub const LINE_MAX: usize = 32 * 1024;
pub const SUMMARY_MAX: usize = 64 * 1024;
pub const TRANSCRIPT_MAX: usize = 1024 * 1024;
pub const URL_MAX: usize = 2048;
pub const DURATION_MAX_SECONDS: i64 = 7 * 24 * 3600;
pub const COST_MAX: i64 = 1_000_000;

/// A required text argument: present, non-empty, within `max` bytes.
pub fn required<'a>(field: &'static str, value: Option<&'a str>, max: usize) -> Result<&'a str, VoxError> {
    match optional(field, value, max)? {
        Some(v) => Ok(v),
        None if value.is_some() => Err(VoxError::Empty { field }),
        None => Err(VoxError::Missing { field }),
    }
}

/// An optional text argument: NULL and '' both mean "not given".
pub fn optional<'a>(field: &'static str, value: Option<&'a str>, max: usize) -> Result<Option<&'a str>, VoxError> {
    match value {
        None | Some("") => Ok(None),
        Some(v) if v.len() > max => Err(VoxError::TooLong { field, len: v.len(), max }),
        Some(v) => Ok(Some(v)),
    }
}

/// An argument whose SQL DEFAULT is not NULL: an explicit NULL is a caller bug, not "absent".
pub fn defaulted<T>(field: &'static str, value: Option<T>) -> Result<T, VoxError> {
    value.ok_or(VoxError::Missing { field })
}

pub fn finite(field: &'static str, ts: TimestampWithTimeZone) -> Result<TimestampWithTimeZone, VoxError> {
    if ts.is_finite() {
        Ok(ts)
    } else {
        Err(VoxError::invalid(field, ts.to_string(), "must be a finite timestamp"))
    }
}

fn bounded(field: &'static str, value: Option<AnyNumeric>, max: i64) -> Result<Option<AnyNumeric>, VoxError> {
    let Some(v) = value else { return Ok(None) };
    let ok = !v.is_nan() && v >= AnyNumeric::from(0) && v <= AnyNumeric::from(max);
    if ok {
        Ok(Some(v))
    } else {
        Err(VoxError::out_of_range(field, &v, 0, max))
    }
}

fn url<'a>(field: &'static str, value: Option<&'a str>) -> Result<Option<&'a str>, VoxError> {
    let value = optional(field, value, URL_MAX)?;
    match value {
        Some(v) if !(v.starts_with("https://") || v.starts_with("http://")) => {
            Err(VoxError::invalid(field, v, "must be an http(s) URL"))
        }
        v => Ok(v),
    }
}

/// Call statuses in the only order they may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CallStatus {
    Scheduled,
    Queued,
    Ringing,
    InProgress,
    Forwarding,
    Ended,
}

impl CallStatus {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, VoxError> {
        Ok(match value {
            "scheduled" => Self::Scheduled,
            "queued" => Self::Queued,
            "ringing" => Self::Ringing,
            "in-progress" => Self::InProgress,
            "forwarding" => Self::Forwarding,
            "ended" => Self::Ended,
            _ => {
                return Err(VoxError::invalid(
                    field,
                    value,
                    "expected scheduled, queued, ringing, in-progress, forwarding or ended",
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Forwarding => "forwarding",
            Self::Ended => "ended",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, VoxError> {
        match value {
            "user" => Ok(Self::User),
            "assistant" => Ok(Self::Assistant),
            _ => Err(VoxError::invalid(field, value, "expected user or assistant")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscriptType {
    Partial,
    Final,
}

impl TranscriptType {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, VoxError> {
        match value {
            "partial" => Ok(Self::Partial),
            "final" => Ok(Self::Final),
            _ => Err(VoxError::invalid(field, value, "expected final or partial")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Partial => "partial",
            Self::Final => "final",
        }
    }
}

/// Which message ended the call. The report is authoritative: its fields overwrite, a status
/// `ended` only fills gaps, so the final row is the same in either arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionSource {
    Report,
    StatusUpdate,
}

impl CompletionSource {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, VoxError> {
        match value {
            "end-of-call-report" => Ok(Self::Report),
            "status-update" => Ok(Self::StatusUpdate),
            _ => Err(VoxError::invalid(field, value, "expected end-of-call-report or status-update")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "end-of-call-report",
            Self::StatusUpdate => "status-update",
        }
    }
}

/// The two ids every call message carries: whose call (via the assistant) and which call.
#[derive(Debug, Clone, Copy)]
pub struct CallRef<'a> {
    pub vapi_call_id: &'a str,
    pub assistant_id: &'a str,
}

impl<'a> CallRef<'a> {
    pub fn new(vapi_call_id: Option<&'a str>, assistant_id: Option<&'a str>) -> Result<Self, VoxError> {
        Ok(Self {
            vapi_call_id: required("p_vapi_call_id", vapi_call_id, ID_MAX)?,
            assistant_id: required("p_assistant_id", assistant_id, ID_MAX)?,
        })
    }
}

/// A status message before the end: creates the call or moves it forward.
#[derive(Debug)]
pub struct CallStarted<'a> {
    pub call: CallRef<'a>,
    pub customer_number: Option<&'a str>,
    pub phone_number_id: Option<&'a str>,
    pub call_type: &'a str,
    pub status: CallStatus,
    pub occurred_at: TimestampWithTimeZone,
}

impl<'a> CallStarted<'a> {
    pub fn new(
        call: CallRef<'a>,
        customer_number: Option<&'a str>,
        phone_number_id: Option<&'a str>,
        call_type: Option<&'a str>,
        status: Option<&'a str>,
        occurred_at: Option<TimestampWithTimeZone>,
    ) -> Result<Self, VoxError> {
        let status = CallStatus::parse("p_status", required("p_status", status, SHORT_TEXT_MAX)?)?;
        if status == CallStatus::Ended {
            return Err(VoxError::invalid("p_status", "ended", "an ended call goes through complete_call"));
        }
        Ok(Self {
            call,
            customer_number: optional("p_customer_number", customer_number, PHONE_MAX)?,
            phone_number_id: optional("p_phone_number_id", phone_number_id, ID_MAX)?,
            call_type: required("p_call_type", call_type, SHORT_TEXT_MAX)?,
            status,
            occurred_at: finite("p_occurred_at", defaulted("p_occurred_at", occurred_at)?)?,
        })
    }

    pub fn event_id(&self) -> String {
        format!("status:{}:{}", self.call.vapi_call_id, self.status.as_str())
    }
}

/// The end of a call, from the end-of-call report or from a status `ended`.
#[derive(Debug)]
pub struct CallCompleted<'a> {
    pub call: CallRef<'a>,
    pub ended_reason: Option<&'a str>,
    pub started_at: Option<TimestampWithTimeZone>,
    pub ended_at: Option<TimestampWithTimeZone>,
    pub duration_seconds: Option<AnyNumeric>,
    pub cost: Option<AnyNumeric>,
    pub summary: Option<&'a str>,
    pub transcript: Option<&'a str>,
    pub recording_url: Option<&'a str>,
    pub source: CompletionSource,
}

impl<'a> CallCompleted<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        call: CallRef<'a>,
        ended_reason: Option<&'a str>,
        started_at: Option<TimestampWithTimeZone>,
        ended_at: Option<TimestampWithTimeZone>,
        duration_seconds: Option<AnyNumeric>,
        cost: Option<AnyNumeric>,
        summary: Option<&'a str>,
        transcript: Option<&'a str>,
        recording_url: Option<&'a str>,
        source: Option<&'a str>,
    ) -> Result<Self, VoxError> {
        let started_at = started_at.map(|t| finite("p_started_at", t)).transpose()?;
        let ended_at = ended_at.map(|t| finite("p_ended_at", t)).transpose()?;
        if let (Some(s), Some(e)) = (started_at, ended_at) {
            if e < s {
                return Err(VoxError::invalid("p_ended_at", e.to_string(), "is before p_started_at"));
            }
        }
        let source = required("p_source", source, SHORT_TEXT_MAX)?;
        Ok(Self {
            call,
            ended_reason: optional("p_ended_reason", ended_reason, SHORT_TEXT_MAX)?,
            started_at,
            ended_at,
            duration_seconds: bounded("p_duration_seconds", duration_seconds, DURATION_MAX_SECONDS)?,
            cost: bounded("p_cost", cost, COST_MAX)?,
            summary: optional("p_summary", summary, SUMMARY_MAX)?,
            transcript: optional("p_transcript", transcript, TRANSCRIPT_MAX)?,
            recording_url: url("p_recording_url", recording_url)?,
            source: CompletionSource::parse("p_source", source)?,
        })
    }

    pub fn event_id(&self) -> String {
        match self.source {
            CompletionSource::Report => format!("report:{}", self.call.vapi_call_id),
            CompletionSource::StatusUpdate => format!("status:{}:ended", self.call.vapi_call_id),
        }
    }
}

/// One line of what was said.
#[derive(Debug)]
pub struct TranscriptLine<'a> {
    pub call: CallRef<'a>,
    pub role: Role,
    pub text: &'a str,
    pub spoken_at: TimestampWithTimeZone,
    pub transcript_type: TranscriptType,
}

impl<'a> TranscriptLine<'a> {
    pub fn new(
        call: CallRef<'a>,
        role: Option<&'a str>,
        text: Option<&'a str>,
        spoken_at: Option<TimestampWithTimeZone>,
        transcript_type: Option<&'a str>,
    ) -> Result<Self, VoxError> {
        let role = required("p_role", role, SHORT_TEXT_MAX)?;
        let transcript_type = required("p_transcript_type", transcript_type, SHORT_TEXT_MAX)?;
        let spoken_at = spoken_at.ok_or(VoxError::Missing { field: "p_spoken_at" })?;
        Ok(Self {
            call,
            role: Role::parse("p_role", role)?,
            text: required("p_text", text, LINE_MAX)?,
            spoken_at: finite("p_spoken_at", spoken_at)?,
            transcript_type: TranscriptType::parse("p_transcript_type", transcript_type)?,
        })
    }

    /// sha256 over length-prefixed fields, so no two different lines frame to the same bytes
    /// (seed #5: a prefix or a one-second bucket dropped genuine repeats).
    pub fn content_hash(&self) -> [u8; 32] {
        let micros = self.spoken_at.into_inner().to_be_bytes();
        let fields: [&[u8]; 5] = [
            self.call.vapi_call_id.as_bytes(),
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
