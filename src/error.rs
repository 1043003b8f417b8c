//! One error type for everything a caller can get wrong, each variant with a stable SQLSTATE.
//!
//! Messages name the offending field and echo its value (clipped, so a megabyte of junk is not
//! reflected back into logs). The SQLSTATE table in the README is generated from `sqlstate()`.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

/// How much of an offending value an error message echoes.
const ECHO_LIMIT: usize = 80;

#[derive(Debug, thiserror::Error)]
pub enum VoxError {
    #[error("{field} must not be null")]
    Missing { field: &'static str },

    #[error("{field} must not be empty")]
    Empty { field: &'static str },

    #[error("{field} is {len} bytes long; the limit is {max}")]
    TooLong { field: &'static str, len: usize, max: usize },

    #[error("{field} has invalid value '{value}': {reason}")]
    Invalid { field: &'static str, value: String, reason: &'static str },

    #[error("{field} is out of range: {value} (allowed: {min} to {max})")]
    OutOfRange { field: &'static str, value: String, min: i64, max: i64 },

    #[error("{field} has the wrong JSON shape: {detail}")]
    WrongShape { field: &'static str, detail: String },

    #[error("{field} is not a valid timestamp: '{value}'")]
    BadTimestamp { field: &'static str, value: String },

    #[error("no active agent for {field} '{value}'")]
    UnknownAgent { field: &'static str, value: String },

    #[error("request.jwt.claims is not valid: {reason}")]
    BadClaims { reason: String },

    /// The call row kept appearing after this statement's snapshot: transient, retry.
    #[error("call '{vapi_call_id}' was being created concurrently; retry the transaction")]
    Contended { vapi_call_id: String },

    #[error("internal SPI error: {0}")]
    Spi(#[from] pgrx::spi::Error),
}

impl VoxError {
    pub fn invalid(field: &'static str, value: impl AsRef<str>, reason: &'static str) -> Self {
        Self::Invalid { field, value: clip(value.as_ref()), reason }
    }

    pub fn out_of_range(field: &'static str, value: impl ToString, min: i64, max: i64) -> Self {
        Self::OutOfRange { field, value: clip(&value.to_string()), min, max }
    }

    /// serde's message can quote the whole offending value: clipped like any echo.
    pub fn wrong_shape(field: &'static str, detail: &str) -> Self {
        Self::WrongShape { field, detail: clip(detail) }
    }

    pub fn bad_timestamp(field: &'static str, value: impl AsRef<str>) -> Self {
        Self::BadTimestamp { field, value: clip(value.as_ref()) }
    }

    pub fn unknown_agent(field: &'static str, value: impl AsRef<str>) -> Self {
        Self::UnknownAgent { field, value: clip(value.as_ref()) }
    }

    /// The same error with its field renamed, e.g. from an SQL argument to a webhook JSON path.
    pub fn renamed(mut self, rename: fn(&'static str) -> &'static str) -> Self {
        match &mut self {
            Self::Missing { field }
            | Self::Empty { field }
            | Self::TooLong { field, .. }
            | Self::Invalid { field, .. }
            | Self::OutOfRange { field, .. }
            | Self::WrongShape { field, .. }
            | Self::BadTimestamp { field, .. }
            | Self::UnknownAgent { field, .. } => *field = rename(field),
            Self::BadClaims { .. } | Self::Contended { .. } | Self::Spi(_) => {}
        }
        self
    }

    /// The SQLSTATE a client sees. Class 22 and 42704 are permanent (the relay answers 422 and
    /// the sender must not retry); only XX000 is ours to fix.
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::Missing { .. } => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            Self::Empty { .. } | Self::Invalid { .. } | Self::WrongShape { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::TooLong { .. } => ERRCODE_STRING_DATA_RIGHT_TRUNCATION,
            Self::OutOfRange { .. } => ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            Self::BadTimestamp { .. } => ERRCODE_INVALID_DATETIME_FORMAT,
            // 42704, not P0002: PostgREST answers P0* with 500 but 42704 with 400, and an
            // unregistered assistant is the caller's problem, not a server fault.
            Self::UnknownAgent { .. } => ERRCODE_UNDEFINED_OBJECT,
            Self::BadClaims { .. } => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            Self::Contended { .. } => ERRCODE_T_R_SERIALIZATION_FAILURE,
            Self::Spi(_) => ERRCODE_INTERNAL_ERROR,
        }
    }
}

impl From<VoxError> for ErrorReport {
    #[track_caller]
    fn from(e: VoxError) -> Self {
        ErrorReport::new(e.sqlstate(), e.to_string(), "voxanne_ext")
    }
}

/// Clip an echoed value at a char boundary so messages stay readable and bounded.
fn clip(value: &str) -> String {
    if value.len() <= ECHO_LIMIT {
        return value.to_string();
    }
    let mut end = ECHO_LIMIT;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
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
