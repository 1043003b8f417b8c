//! Values that validate themselves once, wherever they come from. Every constructor takes the
//! field name its caller uses, so the SQL functions and the webhook share the rules and keep
//! their own names in errors.
//!
//! Limits are in bytes (PostgreSQL text is UTF-8); README "Input limits" lists them.

use pgrx::datum::{AnyNumeric, TimestampWithTimeZone};

use crate::error::{Field, VoxError};

pub const ID_MAX: usize = 255;
pub const SHORT_TEXT_MAX: usize = 255;
pub const PHONE_MAX: usize = 64;
pub const LINE_MAX: usize = 32 * 1024;
pub const SUMMARY_MAX: usize = 64 * 1024;
pub const TRANSCRIPT_MAX: usize = 1024 * 1024;
pub const URL_MAX: usize = 2048;
pub const DURATION_MAX_SECONDS: i64 = 7 * 24 * 3600;
pub const COST_MAX: i64 = 1_000_000;

/// A required text: present, non-empty, within `max` bytes.
pub fn required<'a>(field: &'static str, value: Option<&'a str>, max: usize) -> Result<&'a str, VoxError> {
    match optional(field, value, max)? {
        Some(v) => Ok(v),
        None if value.is_some() => Err(VoxError::Empty { field: field.into() }),
        None => Err(VoxError::missing(field)),
    }
}

/// An optional text: NULL and '' both mean "not given".
pub fn optional<'a>(field: &'static str, value: Option<&'a str>, max: usize) -> Result<Option<&'a str>, VoxError> {
    match value {
        None | Some("") => Ok(None),
        Some(v) if v.len() > max => Err(VoxError::TooLong { field: field.into(), len: v.len(), max }),
        Some(v) => Ok(Some(v)),
    }
}

/// An SQL argument whose DEFAULT is not NULL: an explicit NULL is a caller bug, not "absent".
pub fn defaulted<T>(field: &'static str, value: Option<T>) -> Result<T, VoxError> {
    value.ok_or_else(|| VoxError::missing(field))
}

/// A finite point in time.
pub fn moment(field: impl Into<Field>, ts: TimestampWithTimeZone) -> Result<TimestampWithTimeZone, VoxError> {
    if ts.is_finite() {
        Ok(ts)
    } else {
        Err(VoxError::invalid(field, ts.to_string(), "must be a finite timestamp"))
    }
}

/// `ended` may not come before `started`; each is (field, value).
pub fn in_order(
    started: (&'static str, Option<TimestampWithTimeZone>),
    ended: (&'static str, Option<TimestampWithTimeZone>),
) -> Result<(), VoxError> {
    match (started.1, ended.1) {
        (Some(s), Some(e)) if e < s => {
            Err(VoxError::invalid(ended.0, e.to_string(), format!("is before {}", started.0)))
        }
        _ => Ok(()),
    }
}

/// A number from 0 to `max`: a duration in seconds or a cost.
pub fn amount(field: &'static str, value: Option<AnyNumeric>, max: i64) -> Result<Option<AnyNumeric>, VoxError> {
    let Some(v) = value else { return Ok(None) };
    if !v.is_nan() && v >= AnyNumeric::from(0) && v <= AnyNumeric::from(max) {
        Ok(Some(v))
    } else {
        Err(VoxError::out_of_range(field, &v, 0, max))
    }
}

/// A number the webhook sent as JSON, as an `amount`.
pub fn json_amount(field: &'static str, value: Option<f64>, max: i64) -> Result<Option<AnyNumeric>, VoxError> {
    let value = value.map(|x| AnyNumeric::try_from(x).map_err(|_| VoxError::out_of_range(field, x, 0, max)));
    amount(field, value.transpose()?, max)
}

/// An http(s) URL.
pub fn url<'a>(field: &'static str, value: Option<&'a str>) -> Result<Option<&'a str>, VoxError> {
    match optional(field, value, URL_MAX)? {
        Some(v) if !(v.starts_with("https://") || v.starts_with("http://")) => {
            Err(VoxError::invalid(field, v, "must be an http(s) URL"))
        }
        v => Ok(v),
    }
}

/// Each enum below is spelled once: its wire names, in a table its parser and printer share.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            const ALL: &'static [($name, &'static str)] = &[$(($name::$variant, $text)),+];

            pub fn parse(field: impl Into<Field>, value: &str) -> Result<Self, VoxError> {
                match Self::ALL.iter().find(|(_, text)| *text == value) {
                    Some((v, _)) => Ok(*v),
                    None => {
                        let known: Vec<&str> = Self::ALL.iter().map(|(_, text)| *text).collect();
                        Err(VoxError::invalid(field, value, format!("expected one of {}", known.join(", "))))
                    }
                }
            }

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
    };
}

wire_enum! {
    /// A call's status. The order it may move in is `voxanne._status_rank` (sql/schema.sql).
    CallStatus {
        Scheduled = "scheduled",
        Queued = "queued",
        Ringing = "ringing",
        InProgress = "in-progress",
        Forwarding = "forwarding",
        Ended = "ended",
    }
}

wire_enum! {
    Role { User = "user", Assistant = "assistant" }
}

wire_enum! {
    TranscriptType { Partial = "partial", Final = "final" }
}

wire_enum! {
    /// Which message ended the call (`complete_call`'s `p_source`).
    EndSource { Report = "end-of-call-report", StatusUpdate = "status-update" }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_unknown_ones_list_the_known() {
        for (status, text) in CallStatus::ALL {
            assert_eq!(CallStatus::parse("s", text).unwrap(), *status);
            assert_eq!(status.as_str(), *text);
        }
        let err = CallStatus::parse("p_status", "dialing").unwrap_err().to_string();
        assert_eq!(
            err,
            "p_status has invalid value 'dialing': expected one of scheduled, queued, ringing, in-progress, \
             forwarding, ended"
        );
    }
}
