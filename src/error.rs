//! One error type for everything a caller can get wrong, each variant with a stable SQLSTATE.
//!
//! A field is named the way its caller sent it: the SQL argument (`p_status`) for a SQL call, the
//! JSON path (`message.status`) for a webhook. Each decoder passes its own names, so nothing is
//! renamed afterwards. Echoed values are clipped, so a megabyte of junk is not reflected back
//! into logs. README "Errors" lists the SQLSTATEs of `sqlstate()`.

use std::borrow::Cow;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

/// How much of an offending value an error message echoes.
const ECHO_LIMIT: usize = 80;

/// A field as the caller names it: a literal, or a JSON path found while decoding.
pub type Field = Cow<'static, str>;

#[derive(Debug, thiserror::Error)]
pub enum VoxError {
    #[error("{field} must not be null")]
    Missing { field: Field },

    #[error("{field} must not be empty")]
    Empty { field: Field },

    #[error("{field} is {len} bytes long; the limit is {max}")]
    TooLong { field: Field, len: usize, max: usize },

    #[error("{field} has invalid value '{value}': {reason}")]
    Invalid { field: Field, value: String, reason: Cow<'static, str> },

    #[error("{field} is out of range: {value} (allowed: {min} to {max})")]
    OutOfRange { field: Field, value: String, min: i64, max: i64 },

    #[error("{field} has the wrong JSON shape: {detail}")]
    WrongShape { field: Field, detail: String },

    #[error("{field} is not a valid timestamp: '{value}'")]
    BadTimestamp { field: Field, value: String },

    /// `given`: each id as the sender named it (`p_assistant_id 'asst_x'`), comma-separated.
    #[error("no active agent for {given}")]
    UnknownAgent { given: String },

    /// Malformed, forged, or of an org without a key: one answer for all, so the error is no
    /// oracle, and the token (a credential) is never echoed.
    #[error("{field} is not a valid voxanne tenant token")]
    BadToken { field: Field },

    /// Never registered, or revoked: one answer for both, and the credential is never echoed.
    #[error("p_credential is not an active webhook credential")]
    UnknownCredential,

    /// A tenant's credential sent a message of another org; which org is not said.
    #[error("this webhook credential may not write the tenant of this message")]
    Forbidden,

    #[error("request.jwt.claims is not valid: {reason}")]
    BadClaims { reason: String },

    /// The call row kept appearing after this statement's snapshot: transient, retry.
    #[error("call '{vapi_call_id}' was being created concurrently; retry the transaction")]
    Contended { vapi_call_id: String },

    #[error("internal SPI error: {0}")]
    Spi(#[from] pgrx::spi::Error),

    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl VoxError {
    pub fn missing(field: impl Into<Field>) -> Self {
        Self::Missing { field: field.into() }
    }

    pub fn invalid(field: impl Into<Field>, value: impl AsRef<str>, reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Invalid { field: field.into(), value: clip(value.as_ref()), reason: reason.into() }
    }

    pub fn out_of_range(field: impl Into<Field>, value: impl ToString, min: i64, max: i64) -> Self {
        Self::OutOfRange { field: field.into(), value: clip(&value.to_string()), min, max }
    }

    /// serde's message can quote the whole offending value: clipped like any echo.
    pub fn wrong_shape(field: impl Into<Field>, detail: &str) -> Self {
        Self::WrongShape { field: field.into(), detail: clip(detail) }
    }

    pub fn bad_timestamp(field: impl Into<Field>, value: impl AsRef<str>) -> Self {
        Self::BadTimestamp { field: field.into(), value: clip(value.as_ref()) }
    }

    pub fn unknown_agent(given: &[(&str, &str)]) -> Self {
        let given: Vec<String> = given.iter().map(|(field, id)| format!("{field} '{}'", clip(id))).collect();
        Self::UnknownAgent { given: given.join(", ") }
    }

    /// The SQLSTATE a client sees. Class 22 and 42704 are permanent (the relay answers 422 and
    /// the sender must not retry); only XX000 is ours to fix.
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::Missing { .. } => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Self::Empty { .. } | Self::Invalid { .. } | Self::WrongShape { .. } | Self::BadToken { .. } => {
                ERRCODE_INVALID_PARAMETER_VALUE
            }
            Self::TooLong { .. } => ERRCODE_STRING_DATA_RIGHT_TRUNCATION,
            Self::OutOfRange { .. } => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            Self::BadTimestamp { .. } => ERRCODE_INVALID_DATETIME_FORMAT,
            // 42704, not P0002: PostgREST answers P0* with 500 but 42704 with 400, and an
            // unregistered assistant is the caller's problem, not a server fault.
            Self::UnknownAgent { .. } => ERRCODE_UNDEFINED_OBJECT,
            Self::BadClaims { .. } | Self::UnknownCredential => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            Self::Forbidden => ERRCODE_INSUFFICIENT_PRIVILEGE,
            Self::Contended { .. } => ERRCODE_T_R_SERIALIZATION_FAILURE,
            Self::Spi(_) | Self::Internal(_) => ERRCODE_INTERNAL_ERROR,
        }
    }
}

impl From<VoxError> for ErrorReport {
    #[track_caller]
    fn from(e: VoxError) -> Self {
        ErrorReport::new(e.sqlstate(), e.to_string(), "voxanne_ext")
    }
}

/// `value` cut to at most `max` bytes at a char boundary.
pub fn clip_to(value: &str, max: usize) -> &str {
    &value[..value.floor_char_boundary(max)]
}

/// Clip an echoed value so messages stay readable and bounded.
fn clip(value: &str) -> String {
    if value.len() <= ECHO_LIMIT {
        return value.to_string();
    }
    format!("{}…", clip_to(value, ECHO_LIMIT))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn long_values_are_clipped_at_a_char_boundary() {
        let s = "é".repeat(100);
        let clipped = clip(&s);
        assert!(clipped.len() <= ECHO_LIMIT + "…".len());
        assert!(clipped.ends_with('…'));
    }
}
