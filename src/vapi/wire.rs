//! The parts of Vapi's server messages that several message kinds share: serde only, no SPI.
//! Strings are `Cow`: borrowed from a jsonb datum, owned when decoded from escaped JSON text.

use std::borrow::Cow;

use pgrx::datum::TimestampWithTimeZone;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::domain::{Role, TranscriptType, LINE_MAX};
use crate::error::{Field, VoxError};
use crate::routing::{Kind, Routes};
use crate::transcript::Line;

/// Postgres timestamps count from 2000-01-01; Vapi's from 1970-01-01.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Call<'a> {
    #[serde(borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub assistant_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub squad_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub workflow_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub phone_number_id: Option<Cow<'a, str>>,
    /// The Vapi org (required in every SDK `Call`).
    #[serde(borrow)]
    pub org_id: Option<Cow<'a, str>>,
    /// A transient assistant: its config inline, with no id.
    #[serde(borrow)]
    pub assistant: Option<Assistant<'a>>,
    /// What the call changes of its saved assistant or squad (the SDK's `AssistantOverrides`):
    /// one assistant shared by many tenants gets the tenant here, per call.
    #[serde(borrow)]
    pub assistant_overrides: Option<Assistant<'a>>,
    #[serde(borrow)]
    pub squad_overrides: Option<Assistant<'a>>,
    /// Not in any SDK's `Call`; read because the issue that defined the token names "the
    /// metadata of the call" as a place for it (README "Routing").
    #[serde(borrow)]
    pub metadata: Option<Metadata<'a>>,
    #[serde(borrow, rename = "type")]
    pub call_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub customer: Option<Customer<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Customer<'a> {
    #[serde(borrow)]
    pub number: Option<Cow<'a, str>>,
}

/// An assistant's config (the SDK's `CreateAssistantDto`, which has no id, or its
/// `AssistantOverrides`): only its metadata is read.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Assistant<'a> {
    #[serde(borrow)]
    pub metadata: Option<Metadata<'a>>,
}

/// The platform's own keys in `metadata`: the signed tenant token.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Metadata<'a> {
    #[serde(borrow)]
    pub voxanne_tenant: Option<Cow<'a, str>>,
}

/// A Vapi message kind's struct: the fields every kind carries (`call`, `assistant`,
/// `assistantId`, `timestamp`) and its own, decoded together in one pass.
macro_rules! message {
    ($(#[$meta:meta])* struct $name:ident { $($(#[$attr:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct $name<'a> {
            #[serde(borrow)]
            call: Option<$crate::vapi::wire::Call<'a>>,
            #[serde(borrow)]
            assistant: Option<$crate::vapi::wire::Assistant<'a>>,
            /// the squad member speaking (transcripts)
            #[serde(borrow)]
            assistant_id: Option<std::borrow::Cow<'a, str>>,
            // checked for every kind, as before; the report does not use it
            #[allow(dead_code)]
            #[serde(borrow)]
            timestamp: Option<$crate::vapi::wire::Timestamp<'a>>,
            $($(#[$attr])* $field: $ty,)*
        }
    };
}
pub(crate) use message;

/// The call a message is about (`message.call.id`) and the ids it can be routed by.
pub fn call_and_routes<'c, 'a>(
    call: &'c Option<Call<'a>>,
    assistant_id: Option<&'c str>,
    assistant: &'c Option<Assistant<'a>>,
) -> Result<(&'c Call<'a>, &'c str, Routes<'c>), VoxError> {
    let call = call.as_ref().ok_or_else(|| VoxError::missing("message.call"))?;
    let id = crate::domain::required("message.call.id", call.id.as_deref(), crate::domain::ID_MAX)?;
    Ok((call, id, routes(Some(call), assistant_id, assistant.as_ref())?))
}

/// The ids a message can be routed by, in the order of src/routing.rs.
pub fn routes<'c>(
    call: Option<&'c Call<'_>>,
    assistant_id: Option<&'c str>,
    assistant: Option<&'c Assistant<'_>>,
) -> Result<Routes<'c>, VoxError> {
    let of_call = |f: fn(&'c Call<'_>) -> Option<&'c str>| call.and_then(f);
    let token =
        |a: Option<&'c Assistant<'_>>| a.and_then(|a| a.metadata.as_ref()).and_then(|m| m.voxanne_tenant.as_deref());
    let call_assistant = of_call(|c| c.assistant_id.as_deref());
    // the call's own assistant is tried once, as the call's
    let member = assistant_id.filter(|id| Some(*id) != call_assistant);
    Ok(Routes::new("message.call.assistantId")
        .assistant("message.call.assistantId", call_assistant, false)?
        .assistant("message.assistantId", member, true)?
        .directory("message.call.squadId", Kind::Squad, of_call(|c| c.squad_id.as_deref()))?
        .directory("message.call.workflowId", Kind::Workflow, of_call(|c| c.workflow_id.as_deref()))?
        .directory("message.call.phoneNumberId", Kind::PhoneNumber, of_call(|c| c.phone_number_id.as_deref()))?
        .directory("message.call.orgId", Kind::VapiOrg, of_call(|c| c.org_id.as_deref()))?
        .token("message.call.assistant.metadata.voxanne_tenant", token(call.and_then(|c| c.assistant.as_ref())))
        .token(
            "message.call.assistantOverrides.metadata.voxanne_tenant",
            token(call.and_then(|c| c.assistant_overrides.as_ref())),
        )
        .token(
            "message.call.squadOverrides.metadata.voxanne_tenant",
            token(call.and_then(|c| c.squad_overrides.as_ref())),
        )
        .token("message.assistant.metadata.voxanne_tenant", token(assistant))
        .token(
            "message.call.metadata.voxanne_tenant",
            call.and_then(|c| c.metadata.as_ref()).and_then(|m| m.voxanne_tenant.as_deref()),
        ))
}

/// `message.timestamp`: milliseconds since the epoch (current payloads; may be fractional or
/// in exponent notation) or an ISO-8601 string (older payloads).
pub enum Timestamp<'a> {
    Millis(f64),
    Iso(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Timestamp<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = Timestamp<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("milliseconds since the epoch or an ISO-8601 string")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Timestamp::Millis(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Timestamp::Millis(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Timestamp::Millis(v as f64))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Timestamp::Iso(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Timestamp::Iso(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_any(Either)
    }
}

impl Timestamp<'_> {
    pub fn resolve(&self, field: impl Into<Field>) -> Result<TimestampWithTimeZone, VoxError> {
        let field = field.into();
        match self {
            Self::Millis(ms) => {
                let micros = (ms * 1000.0).round();
                // the i64 range check also rejects NaN and infinities
                if !(micros >= i64::MIN as f64 && micros <= i64::MAX as f64) {
                    return Err(VoxError::bad_timestamp(field, ms.to_string()));
                }
                from_unix_micros(field, &ms.to_string(), micros as i64)
            }
            Self::Iso(s) => iso(field, s),
        }
    }
}

/// An ISO-8601 moment as RFC 3339 writes it, with or without its offset (without: UTC).
pub fn iso(field: impl Into<Field>, s: &str) -> Result<TimestampWithTimeZone, VoxError> {
    let field = field.into();
    // the offset-less form (with its `T`) through the same strict parser: chrono's
    // strftime-style parsing would take one-digit fields ("2026-11-25T1:00:00")
    let parsed = chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|e| match s.as_bytes().get(10) {
            Some(b'T') => chrono::DateTime::parse_from_rfc3339(&format!("{s}Z")),
            _ => Err(e),
        })
        .map_err(|_| VoxError::bad_timestamp(field.clone(), s))?;
    from_unix_micros(field, s, parsed.timestamp_micros())
}

fn from_unix_micros(field: Field, shown: &str, unix_micros: i64) -> Result<TimestampWithTimeZone, VoxError> {
    let pg_micros =
        unix_micros.checked_sub(PG_EPOCH_OFFSET_MICROS).ok_or_else(|| VoxError::bad_timestamp(field.clone(), shown))?;
    let ts = TimestampWithTimeZone::try_from(pg_micros).map_err(|_| VoxError::bad_timestamp(field.clone(), shown))?;
    crate::domain::moment(field, ts)
}

/// One entry of a call's message list (`conversation-update.messages`, the report's
/// `artifact.messages`): the SDK's UserMessage, BotMessage, SystemMessage, ToolCallMessage or
/// ToolCallResultMessage. Only what a spoken line needs is read.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListMessage<'a> {
    #[serde(borrow)]
    pub role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub message: Option<Cow<'a, str>>,
    /// When the utterance began and ended, in epoch milliseconds.
    pub time: Option<f64>,
    #[serde(rename = "endTime")]
    pub end_time: Option<f64>,
}

impl ListMessage<'_> {
    /// When the entry's utterance began and ended (`endTime`, else its `time`); `at` is the
    /// entry's path as sent.
    fn span(&self, at: &str, time: f64) -> Result<(TimestampWithTimeZone, TimestampWithTimeZone), VoxError> {
        let began = Timestamp::Millis(time).resolve(format!("{at}.time"))?;
        let Some(end) = self.end_time else { return Ok((began, began)) };
        let field = format!("{at}.endTime");
        let ended = Timestamp::Millis(end).resolve(field.clone())?;
        if ended < began {
            return Err(VoxError::invalid(field, ended.to_string(), format!("is before {at}.time")));
        }
        Ok((began, ended))
    }
}

/// The spoken lines of a message list, in its order: the user's and the bot's (the
/// assistant's) entries with words and a `time`. System prompts and tool calls are no speech;
/// an entry without a `time` has no moment to key it by (Vapi's lists always carry one).
/// `list` is the path of the list as sent (`message.messages`).
pub fn spoken_lines<'m>(list: &str, entries: &'m [ListMessage<'_>]) -> Result<Vec<Line<'m>>, VoxError> {
    let mut lines = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some(role) = speaker(entry.role.as_deref()) else { continue };
        let (Some(text), Some(time)) = (entry.message.as_deref(), entry.time) else { continue };
        if text.is_empty() {
            continue;
        }
        if text.len() > LINE_MAX {
            return Err(VoxError::TooLong {
                field: format!("{list}[{i}].message").into(),
                len: text.len(),
                max: LINE_MAX,
            });
        }
        let (spoken_at, ended_at) = entry.span(&format!("{list}[{i}]"), time)?;
        lines.push(Line { role, text, spoken_at, ended_at: Some(ended_at), transcript_type: TranscriptType::Final });
    }
    Ok(lines)
}

/// Who speaks in a list entry: the user, or the bot (the assistant); other roles are no speech.
fn speaker(role: Option<&str>) -> Option<Role> {
    match role {
        Some("user") => Some(Role::User),
        Some("bot" | "assistant") => Some(Role::Assistant),
        _ => None,
    }
}

/// When `role` began and ended saying `text`, if `entries` list it: the span of the last such
/// entry that has a `time`. Only that entry is read; `list` is the list's path as sent.
pub fn listed_span(
    list: &str,
    entries: &[ListMessage<'_>],
    role: Role,
    text: &str,
) -> Result<Option<(TimestampWithTimeZone, TimestampWithTimeZone)>, VoxError> {
    let entry = entries.iter().enumerate().rev().find_map(|(i, e)| {
        let same = speaker(e.role.as_deref()) == Some(role) && e.message.as_deref() == Some(text);
        e.time.filter(|_| same).map(|time| (i, time))
    });
    entry.map(|(i, time)| entries[i].span(&format!("{list}[{i}]"), time)).transpose()
}
