//! The one answer every entry point returns (README "Answers"), as jsonb. The relay reads it
//! with its own typed view and sends it to Vapi as it is.

use serde::Serialize;

use crate::jsonb::JsonbOut;

/// What a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Applied,
    /// Seen before: nothing written.
    Duplicate,
    /// New, but older than what the call already shows (a late `ringing`): merged, not announced.
    Stale,
}

/// The answer for a message that reached its statement.
#[derive(Debug, Serialize)]
pub struct Answer<'a> {
    pub applied: bool,
    pub outcome: Effect,
    pub org_id: String,
    pub call_id: Option<i64>,
    pub vapi_call_id: &'a str,
    pub event_id: String,
    #[serde(flatten)]
    pub detail: Detail,
    /// The webhook's `message.type`; absent for the SQL functions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_type: Option<&'a str>,
}

/// What only some messages report.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Detail {
    /// Call messages: the call's status after the message.
    Status { status: Option<String> },
    /// One transcript line: its key.
    Line { content_hash: String },
    /// Many lines (a conversation-update, a report's messages): how many, how many were new.
    Lines { lines: usize, stored: i64 },
}

impl<'a> Answer<'a> {
    pub fn new(
        effect: Effect,
        org_id: String,
        call_id: Option<i64>,
        vapi_call_id: &'a str,
        event_id: String,
        detail: Detail,
    ) -> Self {
        Self {
            applied: effect == Effect::Applied,
            outcome: effect,
            org_id,
            call_id,
            vapi_call_id,
            event_id,
            detail,
            message_type: None,
        }
    }

    pub fn of_message(self, message_type: &'a str) -> Self {
        Self { message_type: Some(message_type), ..self }
    }

    pub fn jsonb(&self) -> JsonbOut {
        JsonbOut::of(self)
    }
}

/// The answer for a message type this product does not act on (or a partial transcript).
#[derive(Debug, Serialize)]
pub struct Ignored<'a> {
    applied: bool,
    ignored: &'a str,
    message_type: &'a str,
}

impl<'a> Ignored<'a> {
    pub fn new(ignored: &'a str, message_type: &'a str) -> Self {
        Self { applied: false, ignored, message_type }
    }
}
