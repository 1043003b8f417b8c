//! The pool and the relay's statements. A webhook is one statement,
//! `voxanne.handle_vapi_message`; a body the database refuses as bad input is stored with
//! `voxanne.record_rejected_event`. Errors are classified by SQLSTATE into permanent (bad input),
//! transient (retried once here on a fresh connection, then 503) and internal.

use std::error::Error as StdError;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::types::{FromSqlOwned, ToSql};
use tokio_postgres::NoTls;

use crate::config::Config;

pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// One statement per webhook; the raw body goes in as text and the database parses it.
pub const HANDLE_VAPI_MESSAGE: &str = "SELECT voxanne.handle_vapi_message($1::text::jsonb)";

/// Keeps a body the database refused (permanent bad input) for later inspection.
pub const RECORD_REJECTED_EVENT: &str =
    "SELECT voxanne.record_rejected_event(p_body => $1::text, p_sqlstate => $2, p_message => $3)";

pub const EXTENSION_VERSION: &str = "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'voxanne_ext'";

/// Code reported for a connection that broke mid-statement (SQLSTATE connection_failure).
pub const CONNECTION_LOST: &str = "08006";
/// Code reported when no connection could be opened (SQLSTATE
/// sqlclient_unable_to_establish_sqlconnection).
pub const CANNOT_CONNECT: &str = "08001";
/// Code reported when no pooled connection became free in time.
pub const POOL_TIMEOUT: &str = "pool_timeout";
/// Code reported while the relay shuts down.
pub const POOL_CLOSED: &str = "pool_closed";

/// How a failed statement should be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The body itself is bad: store it, answer 422, the sender must not retry.
    Permanent,
    /// Worth another try: retried once here, then 503 so the sender redelivers.
    Transient,
    /// Ours to fix: logged, bare 500.
    Internal,
}

/// The classification table (README "Outcome mapping" mirrors it).
pub fn classify_sqlstate(code: &str) -> Class {
    match code {
        // data exception (class 22), no agent for the assistant, check / not-null violations
        c if c.starts_with("22") => Class::Permanent,
        // 54001: the body is nested too deeply for the jsonb parser (stack depth): the same
        // body always fails, so it is bad input, stored like any other
        "42704" | "23514" | "23502" | "54001" => Class::Permanent,
        // serialization failure, deadlock, lock or statement timeout (a slow moment, not bad
        // input), too many connections, admin / crash shutdown, server starting or stopping,
        // and connection exceptions (class 08)
        "40001" | "40P01" | "55P03" | "57014" | "53300" | "57P01" | "57P02" | "57P03" => Class::Transient,
        c if c.starts_with("08") => Class::Transient,
        _ => Class::Internal,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database refused the input; `message` is the database's own text.
    #[error("{code}: {message}")]
    Permanent { code: String, message: String },

    #[error("transient database failure ({code}): {source}")]
    Transient { code: String, source: BoxError },

    #[error("database error: {0}")]
    Internal(BoxError),
}

impl DbError {
    pub fn class(&self) -> Class {
        match self {
            Self::Permanent { .. } => Class::Permanent,
            Self::Transient { .. } => Class::Transient,
            Self::Internal(_) => Class::Internal,
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            let code = db.code().code().to_string();
            return match classify_sqlstate(&code) {
                Class::Permanent => Self::Permanent { code, message: db.message().to_string() },
                Class::Transient => Self::Transient { code, source: Box::new(err) },
                Class::Internal => Self::Internal(Box::new(err)),
            };
        }
        if is_connection_failure(&err) {
            return Self::Transient { code: CONNECTION_LOST.into(), source: Box::new(err) };
        }
        Self::Internal(Box::new(err))
    }
}

impl From<PoolError> for DbError {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::Timeout(_) => Self::Transient { code: POOL_TIMEOUT.into(), source: Box::new(err) },
            PoolError::Closed => Self::Transient { code: POOL_CLOSED.into(), source: Box::new(err) },
            // Opening a connection failed: refused, reset, server starting up, too many
            // connections... all of which pass, so the sender should come back.
            PoolError::Backend(e) => {
                let code = e
                    .as_db_error()
                    .map(|db| db.code().code().to_string())
                    .unwrap_or_else(|| CANNOT_CONNECT.to_string());
                Self::Transient { code, source: Box::new(e) }
            }
            other => Self::Internal(Box::new(other)),
        }
    }
}

/// A closed client or an I/O failure underneath: the session is gone.
fn is_connection_failure(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    let mut source = err.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// True when the session that produced `err` cannot be used again.
fn breaks_session(err: &tokio_postgres::Error) -> bool {
    is_connection_failure(err)
        || err.as_db_error().is_some_and(|db| {
            matches!(db.code().code(), "57P01" | "57P02" | "57P03") || db.code().code().starts_with("08")
        })
}

pub fn build_pool(config: &Config) -> Result<Pool, deadpool_postgres::BuildError> {
    let manager =
        Manager::from_config(config.pg_config(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.pool_timeout))
        .create_timeout(Some(config.pool_timeout))
        .recycle_timeout(Some(config.pool_timeout))
        .build()
}

/// The relay's view of the database. Cloning shares the pool.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl Db {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Applies one webhook body; returns the function's jsonb verbatim.
    pub async fn handle_vapi_message(&self, body: &str) -> Result<serde_json::Value, DbError> {
        let value: Option<serde_json::Value> = self.query_retrying(HANDLE_VAPI_MESSAGE, &[&body]).await?;
        value.ok_or_else(|| DbError::Internal("voxanne.handle_vapi_message returned NULL".into()))
    }

    /// Stores a refused body; returns the new row's id.
    pub async fn record_rejected_event(&self, body: &str, sqlstate: &str, message: &str) -> Result<i64, DbError> {
        let id: Option<i64> = self.query_retrying(RECORD_REJECTED_EVENT, &[&body, &sqlstate, &message]).await?;
        id.ok_or_else(|| DbError::Internal("voxanne.record_rejected_event returned NULL".into()))
    }

    /// The installed `voxanne_ext` version, `None` when the extension is missing. Not retried:
    /// readiness should report what it sees.
    pub async fn extension_version(&self) -> Result<Option<String>, DbError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(EXTENSION_VERSION).await?;
        let row = client.query_opt(&stmt, &[]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Closes the pool: waiting requests fail, idle connections are dropped.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Runs a one-row, one-column statement; a transient failure is retried once on another
    /// connection. The statements are idempotent in the database (duplicates are recognised), so
    /// a retry after a lost commit acknowledgement is harmless.
    async fn query_retrying<T: FromSqlOwned>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<T, DbError> {
        match self.query_once(sql, params).await {
            Err(DbError::Transient { code, source }) => {
                tracing::warn!(sqlstate = %code, error = %source, "transient database failure; retrying once");
                metrics::counter!(crate::metrics::DB_RETRIES, "code" => retry_label(&code)).increment(1);
                // Drop idle connections whose session has already gone, so the retry gets a
                // live one rather than another casualty of the same restart or kill.
                self.pool.retain(|client, _| !client.is_closed());
                self.query_once(sql, params).await
            }
            other => other,
        }
    }

    async fn query_once<T: FromSqlOwned>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<T, DbError> {
        let client = self.pool.get().await?;
        let result = async {
            let stmt = client.prepare_cached(sql).await?;
            let row = client.query_one(&stmt, params).await?;
            row.try_get::<_, T>(0)
        }
        .await;
        match result {
            Ok(value) => Ok(value),
            Err(err) => {
                if breaks_session(&err) {
                    // never hand this session out again
                    drop(Object::take(client));
                }
                Err(err.into())
            }
        }
    }
}

/// Bounded label values for the retry counter.
fn retry_label(code: &str) -> &'static str {
    match code {
        "40001" => "40001",
        "40P01" => "40P01",
        "57P01" => "57P01",
        CONNECTION_LOST => CONNECTION_LOST,
        CANNOT_CONNECT => CANNOT_CONNECT,
        POOL_TIMEOUT => POOL_TIMEOUT,
        _ => "other",
    }
}

/// How long /readyz and startup wait at most for the extension check.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_as_the_contract_says() {
        for code in
            ["22004", "22023", "22001", "22003", "22007", "22P02", "22P05", "22000", "42704", "23514", "23502", "54001"]
        {
            assert_eq!(classify_sqlstate(code), Class::Permanent, "{code}");
        }
        for code in ["40001", "40P01", "55P03", "57014", "53300", "57P01", "57P02", "57P03", "08006", "08003", "08001"]
        {
            assert_eq!(classify_sqlstate(code), Class::Transient, "{code}");
        }
        // unique violations, permission problems, missing functions, XX000
        for code in ["23505", "23503", "42501", "42883", "XX000", "P0001", "28000"] {
            assert_eq!(classify_sqlstate(code), Class::Internal, "{code}");
        }
    }
}
