//! The pool and the relay's statements. A webhook is one statement,
//! `voxanne.handle_vapi_message`; a body the database refuses as bad input is stored with
//! `voxanne.record_rejected_event`. Errors are classified by SQLSTATE into permanent (bad input),
//! transient (retried once here on a fresh connection, then 503) and internal. How a statement
//! is sent depends on `--pooler-mode` ([`Statements`]); what its failure means does not.

use std::error::Error as StdError;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use serde::Deserialize;
use tokio_postgres::types::{FromSqlOwned, ToSql, Type};
use tokio_postgres::Row;

use crate::config::{Config, PoolerMode};
use crate::tls;

pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// One statement per webhook; the raw body goes in as text and the database parses it. `$2`: the
/// SHA-256 of the tenant's token that authenticated it, NULL for a platform credential.
pub const HANDLE_VAPI_MESSAGE: &str = "SELECT voxanne.handle_vapi_message($1::text::jsonb, $2::bytea)";

/// The digests of every active tenant credential (verify/tenants.rs).
/// One row either way, as every statement of the relay (`query_row`).
pub const WEBHOOK_CREDENTIAL_DIGESTS: &str =
    "SELECT coalesce(pg_catalog.array_agg(d), '{}') FROM voxanne.webhook_credential_digests() AS d";

/// Keeps a body the database refused (permanent bad input) for later inspection.
pub const RECORD_REJECTED_EVENT: &str =
    "SELECT voxanne.record_rejected_event(p_body => $1::text, p_sqlstate => $2, p_message => $3)";

/// The message types whose HTTP answer Vapi takes as its reply: never spooled (spool/).
pub const REPLY_MESSAGE_TYPES: &str = "SELECT voxanne.reply_message_types()";

/// One row, NULL when the extension is missing.
pub const EXTENSION_VERSION: &str =
    "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'voxanne_ext')";

/// What `voxanne.handle_vapi_message` answers, as the relay reads it (built by the extension's
/// `src/calls.rs`, `src/transcripts.rs` and `src/webhook.rs`): a handled message has
/// `applied`, `outcome`, `org_id`, `call_id`, `vapi_call_id`, `event_id` and `status` (a
/// transcript line `content_hash` instead of `status`), plus `message_type`; a message the
/// extension does not act on is `{"applied":false,"ignored":kind,"message_type":type}`
/// (`ignored` is `"transcript[partial]"` for a partial transcript, else the type). The relay
/// takes its metric labels and span fields from here and sends the JSON itself on unchanged.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Answer<'a> {
    pub applied: bool,
    pub outcome: Option<Outcome>,
    pub ignored: Option<&'a str>,
    pub message_type: Option<&'a str>,
    pub org_id: Option<&'a str>,
    pub call_id: Option<i64>,
    pub vapi_call_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub content_hash: Option<&'a str>,
    /// The relay's own answer for a message it spooled (spool/): `{"spooled": true}`.
    pub spooled: bool,
}

/// `outcome` of a handled message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Applied,
    Duplicate,
    Stale,
    /// A value this relay does not know (a newer extension's).
    #[serde(other)]
    Other,
}

impl<'a> Answer<'a> {
    /// Reads `json` leniently: the database has committed whatever it answered, so an answer of
    /// another shape is still a success, with no fields (its outcome label is "other").
    pub fn of(json: &'a serde_json::Value) -> Self {
        Self::deserialize(json).unwrap_or_default()
    }

    /// The `outcome` metric label: the extension's outcome, "ignored" for a type it does not
    /// handle.
    pub fn outcome_label(&self) -> &'static str {
        if self.spooled {
            return "spooled";
        }
        match (self.outcome, self.ignored) {
            (Some(Outcome::Applied), _) => "applied",
            (Some(Outcome::Duplicate), _) => "duplicate",
            (Some(Outcome::Stale), _) => "stale",
            (Some(Outcome::Other), _) => "other",
            (None, Some(_)) => "ignored",
            (None, None) if self.applied => "applied",
            (None, None) => "other",
        }
    }
}

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
    /// The tenant credential is not (or no longer) registered: 401, nothing stored.
    Unauthorized,
    /// A tenant credential sent another org's message: stored like bad input, answered 403.
    Forbidden,
}

/// One row of [`CODES`]: a SQLSTATE (five characters), a SQLSTATE class (two), or one of the
/// relay's own codes.
struct Code {
    code: &'static str,
    class: Class,
    /// The session that raised it cannot be used again.
    breaks_session: bool,
    /// The retry counter labels it by its code; every other code counts as "other", so the
    /// label set stays bounded (docs/OPERATIONS.md lists it).
    named: bool,
}

impl Code {
    const fn new(code: &'static str, class: Class) -> Self {
        Self { code, class, breaks_session: false, named: false }
    }
    const fn breaks_session(self) -> Self {
        Self { breaks_session: true, ..self }
    }
    const fn named(self) -> Self {
        Self { named: true, ..self }
    }
    fn matches(&self, code: &str) -> bool {
        match self.code.len() {
            2 => code.starts_with(self.code),
            _ => code == self.code,
        }
    }
}

/// Every code the relay treats specially, each listed once; the first matching row wins, and a
/// code without one is [`Class::Internal`]. README "Outcome mapping" mirrors this table.
const CODES: &[Code] = &[
    // a tenant's credential unknown or revoked, or writing another org (src/credentials.rs)
    Code::new("28000", Class::Unauthorized),
    Code::new("42501", Class::Forbidden),
    // data exception (class 22), no agent for the assistant, check / not-null violations
    Code::new("22", Class::Permanent),
    Code::new("42704", Class::Permanent),
    Code::new("23514", Class::Permanent),
    Code::new("23502", Class::Permanent),
    // the body is nested too deeply for the jsonb parser (stack depth): the same body always
    // fails, so it is bad input, stored like any other
    Code::new("54001", Class::Permanent),
    // serialization failure, deadlock, lock or statement timeout (a slow moment, not bad
    // input), too many connections
    Code::new("40001", Class::Transient).named(),
    Code::new("40P01", Class::Transient).named(),
    Code::new("55P03", Class::Transient),
    Code::new("57014", Class::Transient),
    Code::new("53300", Class::Transient),
    // admin / crash shutdown, server starting or stopping, and connection exceptions (class
    // 08): the session is gone
    Code::new("57P01", Class::Transient).breaks_session().named(),
    Code::new("57P02", Class::Transient).breaks_session(),
    Code::new("57P03", Class::Transient).breaks_session(),
    Code::new(CONNECTION_LOST, Class::Transient).breaks_session().named(),
    Code::new(CANNOT_CONNECT, Class::Transient).breaks_session().named(),
    Code::new("08", Class::Transient).breaks_session(),
    // not a SQLSTATE: no pooled connection became free in time
    Code::new(POOL_TIMEOUT, Class::Transient).named(),
];

fn lookup(code: &str) -> Option<&'static Code> {
    CODES.iter().find(|row| row.matches(code))
}

/// How a failed statement with SQLSTATE `code` is answered.
pub fn classify_sqlstate(code: &str) -> Class {
    lookup(code).map_or(Class::Internal, |row| row.class)
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

    #[error("the credential is not an active webhook credential")]
    Unauthorized,

    #[error("{code}: {message}")]
    Forbidden { code: String, message: String },
}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            let code = db.code().code().to_string();
            return match classify_sqlstate(&code) {
                Class::Permanent => Self::Permanent { code, message: db.message().to_string() },
                Class::Transient => Self::Transient { code, source: Box::new(err) },
                Class::Internal => Self::Internal(Box::new(err)),
                Class::Unauthorized => Self::Unauthorized,
                Class::Forbidden => Self::Forbidden { code, message: db.message().to_string() },
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
        || err.as_db_error().and_then(|db| lookup(db.code().code())).is_some_and(|row| row.breaks_session)
}

/// How the relay's statements are sent (`--pooler-mode`).
#[derive(Debug, Clone)]
enum Statements {
    /// Prepared once per session and cached; the session's `statement_timeout` came with the
    /// connection's startup `options`.
    Cached,
    /// Unnamed statements, each wrapped in a transaction that opens with `begin`: its `SET LOCAL
    /// statement_timeout` lasts only as long as the transaction, so a pooler that hands the
    /// server connection to another client afterwards leaks no setting.
    Unnamed { begin: String },
}

/// The pool and how its statements are sent: what [`build_pool`] makes and [`Db::new`] takes.
pub struct DbPool {
    pool: Pool,
    statements: Statements,
}

pub fn build_pool(config: &Config) -> Result<DbPool, deadpool_postgres::BuildError> {
    let tls = tls::connector(config.database_url.ssl_mode, config.db_ca());
    let manager =
        Manager::from_config(config.pg_config(), tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.pool_timeout))
        .create_timeout(Some(config.pool_timeout))
        .recycle_timeout(Some(config.pool_timeout))
        .build()?;
    let statements = match config.pooler_mode {
        PoolerMode::Session => Statements::Cached,
        PoolerMode::Transaction => Statements::Unnamed {
            begin: format!("BEGIN; SET LOCAL statement_timeout = {}", config.statement_timeout.as_millis()),
        },
    };
    Ok(DbPool { pool, statements })
}

/// The relay's view of the database. Cloning shares the pool.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    statements: Statements,
}

impl Db {
    pub fn new(pool: DbPool) -> Self {
        Self { pool: pool.pool, statements: pool.statements }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Applies one webhook body; returns the function's jsonb verbatim (read it with
    /// [`Answer::of`]).
    pub async fn handle_vapi_message(
        &self,
        body: &str,
        credential: Option<&[u8]>,
    ) -> Result<serde_json::Value, DbError> {
        let value: Option<serde_json::Value> =
            self.query_retrying(HANDLE_VAPI_MESSAGE, &[(&body, Type::TEXT), (&credential, Type::BYTEA)]).await?;
        value.ok_or_else(|| DbError::Internal("voxanne.handle_vapi_message returned NULL".into()))
    }

    /// Stores a refused body; returns the new row's id.
    pub async fn record_rejected_event(&self, body: &str, sqlstate: &str, message: &str) -> Result<i64, DbError> {
        let params: &[(&(dyn ToSql + Sync), Type)] =
            &[(&body, Type::TEXT), (&sqlstate, Type::TEXT), (&message, Type::TEXT)];
        let id: Option<i64> = self.query_retrying(RECORD_REJECTED_EVENT, params).await?;
        id.ok_or_else(|| DbError::Internal("voxanne.record_rejected_event returned NULL".into()))
    }

    /// The digests of the active tenant credentials. Not retried: a miss asks again.
    pub async fn webhook_credential_digests(&self) -> Result<Vec<Vec<u8>>, DbError> {
        let client = self.pool.get().await?;
        Ok(self.query_row(&client, WEBHOOK_CREDENTIAL_DIGESTS, &[]).await?.try_get(0)?)
    }

    /// The message types that expect a reply. Not retried: the drain asks until it answers.
    pub async fn reply_message_types(&self) -> Result<Vec<String>, DbError> {
        let client = self.pool.get().await?;
        Ok(self.query_row(&client, REPLY_MESSAGE_TYPES, &[]).await?.try_get(0)?)
    }

    /// The installed `voxanne_ext` version, `None` when the extension is missing. Not retried:
    /// readiness should report what it sees.
    pub async fn extension_version(&self) -> Result<Option<String>, DbError> {
        let client = self.pool.get().await?;
        Ok(self.query_row(&client, EXTENSION_VERSION, &[]).await?.try_get(0)?)
    }

    /// Closes the pool: waiting requests fail, idle connections are dropped.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Runs a one-row, one-column statement; a transient failure is retried once on another
    /// connection. The statements are idempotent in the database (duplicates are recognised), so
    /// a retry after a lost commit acknowledgement is harmless.
    async fn query_retrying<T: FromSqlOwned>(&self, sql: &str, params: &[Param<'_>]) -> Result<T, DbError> {
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

    async fn query_once<T: FromSqlOwned>(&self, sql: &str, params: &[Param<'_>]) -> Result<T, DbError> {
        let client = self.pool.get().await?;
        let result = async { self.query_row(&client, sql, params).await?.try_get::<_, T>(0) }.await;
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

    /// A statement's one row, sent as `--pooler-mode` asks.
    async fn query_row(&self, client: &Object, sql: &str, params: &[Param<'_>]) -> Result<Row, tokio_postgres::Error> {
        match &self.statements {
            Statements::Cached => {
                let stmt = client.prepare_cached(sql).await?;
                let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(value, _)| *value).collect();
                client.query_one(&stmt, &values).await
            }
            // The three are sent before any answer is awaited (tokio-postgres writes a request
            // when its future is first polled, and join polls them in order), so the
            // transaction costs no round trip over a prepared statement's one: BEGIN and SET
            // LOCAL are one simple query, the statement carries its parameter types (no
            // Parse/Describe round trip first), and COMMIT follows. When the statement fails,
            // the server skips to its Sync and the pipelined COMMIT ends the failed transaction
            // as a ROLLBACK, so the session is idle again either way.
            Statements::Unnamed { begin } => {
                let (begun, row, committed) = tokio::join!(
                    client.batch_execute(begin),
                    client.query_typed_one(sql, params),
                    client.batch_execute("COMMIT")
                );
                begun?;
                let row = row?;
                committed?;
                Ok(row)
            }
        }
    }
}

/// A statement's parameter and its type (the unnamed statements of transaction mode declare
/// them instead of asking the server).
type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// The retry counter's label for `code` (see [`Code::named`]).
fn retry_label(code: &str) -> &'static str {
    lookup(code).filter(|row| row.named).map_or("other", |row| row.code)
}

/// How long /readyz and startup wait at most for the extension check.
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        // unique violations, missing functions, XX000
        for code in ["23505", "23503", "42883", "XX000", "P0001"] {
            assert_eq!(classify_sqlstate(code), Class::Internal, "{code}");
        }
        assert_eq!(classify_sqlstate("28000"), Class::Unauthorized);
        assert_eq!(classify_sqlstate("42501"), Class::Forbidden);
    }

    #[test]
    fn shutdowns_and_connection_exceptions_break_the_session() {
        let breaks = |code| lookup(code).is_some_and(|row| row.breaks_session);
        for code in ["57P01", "57P02", "57P03", "08006", "08003", "08001", "08P01"] {
            assert!(breaks(code), "{code}");
        }
        for code in ["40001", "40P01", "55P03", "57014", "53300", "22P02", "42704", "XX000", POOL_TIMEOUT] {
            assert!(!breaks(code), "{code}");
        }
    }

    #[test]
    fn retry_labels_are_the_documented_set() {
        // docs/OPERATIONS.md, voxanne_relay_db_retries_total
        for code in ["40001", "40P01", "57P01", CONNECTION_LOST, CANNOT_CONNECT, POOL_TIMEOUT] {
            assert_eq!(retry_label(code), code);
        }
        for code in ["55P03", "57014", "53300", "57P02", "57P03", "08003", POOL_CLOSED, "22P02", "XX000"] {
            assert_eq!(retry_label(code), "other", "{code}");
        }
    }

    #[test]
    fn answers_give_their_outcome_label() {
        let label = |json: serde_json::Value| Answer::of(&json).outcome_label();
        assert_eq!(label(json!({"applied": true, "outcome": "duplicate"})), "duplicate");
        assert_eq!(label(json!({"applied": false, "ignored": "speech-update"})), "ignored");
        assert_eq!(label(json!({"applied": true})), "applied");
        assert_eq!(label(json!({"outcome": "weird"})), "other");
        assert_eq!(label(json!({"applied": false, "outcome": "stale"})), "stale");
        assert_eq!(label(json!({"outcome": 3})), "other", "another shape reads as no fields");
        assert_eq!(label(json!([1])), "other");
    }

    #[test]
    fn answers_read_every_shape_the_extension_returns() {
        let call = json!({
            "applied": true, "outcome": "applied", "org_id": "5f0c7f61-6d0e-4bb6-8d7a-3c1f3a3c2b10",
            "call_id": 7, "vapi_call_id": "call-1", "event_id": "status:call-1:ringing", "status": "ringing",
            "message_type": "status-update",
        });
        assert_eq!(
            Answer::of(&call),
            Answer {
                applied: true,
                outcome: Some(Outcome::Applied),
                org_id: Some("5f0c7f61-6d0e-4bb6-8d7a-3c1f3a3c2b10"),
                call_id: Some(7),
                vapi_call_id: Some("call-1"),
                event_id: Some("status:call-1:ringing"),
                status: Some("ringing"),
                message_type: Some("status-update"),
                ..Answer::default()
            }
        );
        // call_id and status are nullable (Options in the extension)
        let duplicate = json!({"applied": false, "outcome": "duplicate", "call_id": null, "status": null});
        assert_eq!(Answer::of(&duplicate).outcome, Some(Outcome::Duplicate));
        let line = json!({"applied": true, "outcome": "applied", "content_hash": "ab12", "message_type": "transcript"});
        assert_eq!(Answer::of(&line).content_hash, Some("ab12"));
        let partial = json!({"applied": false, "ignored": "transcript[partial]", "message_type": "transcript"});
        assert_eq!(
            Answer::of(&partial),
            Answer { ignored: Some("transcript[partial]"), message_type: Some("transcript"), ..Answer::default() }
        );
    }
}
