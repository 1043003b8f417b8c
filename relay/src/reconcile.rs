//! `voxanne-relay reconcile`: the end of every call whose end-of-call report never arrived,
//! fetched from Vapi's API. It asks the database which calls miss their end
//! (`voxanne.calls_missing_end`), fetches each with `GET /call/{id}` (Bearer API key, paced to
//! `--rate` requests a second, backing off on 429 and 5xx as `Retry-After` says or doubling),
//! and hands the call object to `voxanne.reconcile_call`, which applies it through the same
//! path as the report (or the status update) it stands for. No rule is here: which calls are
//! missing their end, and what a call object means, are the database's. Run it from cron or a
//! systemd timer; running it again changes nothing already reconciled.

use std::time::Duration;

use clap::Parser;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::config::LogFormat;
use crate::db::Answer;
use crate::tls::{self, CaFile, DatabaseUrl};

/// Lists the calls whose end never came and applies their end from Vapi's API.
#[derive(Clone, Parser)]
#[command(name = "voxanne-relay reconcile", version, max_term_width = 100)]
pub struct ReconcileConfig {
    /// PostgreSQL connection string, as the relay's (`sslmode`, `sslrootcert` as in libpq).
    #[arg(long, env = "VOXANNE_DATABASE_URL", value_parser = DatabaseUrl::parse, hide_env_values = true)]
    pub database_url: DatabaseUrl,

    /// CA certificates (PEM) the database server's certificate must chain to.
    #[arg(long, env = "VOXANNE_DB_CA_FILE", value_name = "PATH", value_parser = CaFile::parse_flag)]
    pub db_ca_file: Option<CaFile>,

    /// Vapi's API.
    #[arg(long, env = "VOXANNE_VAPI_API_URL", default_value = "https://api.vapi.ai")]
    pub vapi_api_url: String,

    /// A Vapi private API key (sent as `Authorization: Bearer`).
    #[arg(long, env = "VOXANNE_VAPI_API_KEY", hide_env_values = true)]
    pub vapi_api_key: String,

    /// A call is missing its end once it has been this quiet without a report...
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub quiet: Duration,

    /// ...or was created this long ago without one (a call that kept talking).
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    pub longest: Duration,

    /// Calls older than this are not looked at.
    #[arg(long, default_value = "7days", value_parser = humantime::parse_duration)]
    pub horizon: Duration,

    /// Most calls per run.
    #[arg(long, default_value_t = 100)]
    pub limit: i32,

    /// Requests a second to Vapi's API, at most.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,

    /// Tries per call before it is left for the next run.
    #[arg(long, default_value_t = 5)]
    pub attempts: u32,

    /// Timeout of one request to Vapi's API.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// `human` or `json` log lines.
    #[arg(long, env = "VOXANNE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

impl std::fmt::Debug for ReconcileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconcileConfig")
            .field("vapi_api_url", &self.vapi_api_url)
            .field("vapi_api_key", &"<redacted>")
            .field("quiet", &self.quiet)
            .field("longest", &self.longest)
            .field("limit", &self.limit)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Calls the database listed.
    pub listed: u64,
    /// Applied through `reconcile_call`, by the answer's outcome label.
    pub outcomes: std::collections::BTreeMap<&'static str, u64>,
    /// Vapi's API does not know the call (404).
    pub not_found: u64,
    /// Left for the next run: the API kept failing, or the database refused the call object.
    pub failed: u64,
    /// Requests made to Vapi's API, retries included.
    pub requests: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("Vapi's API refused the API key ({0}): check --vapi-api-key")]
    Credentials(StatusCode),
    #[error("{0}")]
    Setup(String),
}

/// The calls missing their end: `$1..$3` intervals as text, `$4` the limit.
const LIST: &str = "SELECT org_id::text, vapi_call_id FROM voxanne.calls_missing_end(
    $1::text::interval, $2::text::interval, $3::text::interval, $4)";
/// One call object (`$2`, JSON text) applied for the org it was listed under (`$1`).
const APPLY: &str = "SELECT voxanne.reconcile_call($1::text::uuid, $2::text::jsonb)";

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One run: list, fetch, apply. A call that cannot be done now is counted in `failed` and
/// listed again next time; a refused API key ends the run.
pub async fn run(config: &ReconcileConfig) -> Result<Summary, ReconcileError> {
    if config.rate.is_nan() || config.rate <= 0.0 || config.attempts == 0 {
        return Err(ReconcileError::Setup("--rate and --attempts must be greater than zero".into()));
    }
    let db = connect(config).await?;
    let http = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .map_err(|e| ReconcileError::Setup(format!("the HTTP client: {e}")))?;
    let key = HeaderValue::from_str(&format!("Bearer {}", config.vapi_api_key))
        .map_err(|_| ReconcileError::Setup("--vapi-api-key is not a valid header value".into()))?;
    // unnamed statements with their types given (query_typed): one round trip each, and they
    // work behind a pooler in transaction mode as the relay's own do
    let listed = db
        .query_typed(
            LIST,
            &[
                (&seconds(config.quiet), Type::TEXT),
                (&seconds(config.longest), Type::TEXT),
                (&seconds(config.horizon), Type::TEXT),
                (&config.limit, Type::INT4),
            ],
        )
        .await?;
    let mut summary = Summary { listed: listed.len() as u64, ..Summary::default() };
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let api = Api { http, base: config.vapi_api_url.trim_end_matches('/').to_string(), key, attempts: config.attempts };
    for row in listed {
        let (org, call): (String, String) = (row.get(0), row.get(1));
        match api.call(&call, &mut pace, &mut summary.requests).await? {
            Fetched::Call(object) => {
                let applied = db.query_typed_one(APPLY, &[(&org, Type::TEXT), (&object, Type::TEXT)]).await;
                match applied {
                    Ok(row) => {
                        let answer: Value = row.get(0);
                        let outcome = Answer::of(&answer).outcome_label();
                        tracing::info!(vapi_call_id = %call, outcome, "reconciled");
                        *summary.outcomes.entry(outcome).or_default() += 1;
                    }
                    Err(e) => {
                        let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
                        tracing::warn!(vapi_call_id = %call, sqlstate = %code, error = %e, "the database refused the call object");
                        summary.failed += 1;
                    }
                }
            }
            Fetched::NotFound => {
                tracing::warn!(vapi_call_id = %call, "Vapi's API does not know the call");
                summary.not_found += 1;
            }
            Fetched::GaveUp(why) => {
                tracing::warn!(vapi_call_id = %call, why = %why, "left for the next run");
                summary.failed += 1;
            }
        }
    }
    Ok(summary)
}

fn seconds(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
}

async fn connect(config: &ReconcileConfig) -> Result<Client, ReconcileError> {
    let ca = config.database_url.ca.as_ref().or(config.db_ca_file.as_ref());
    let connector = tls::connector(config.database_url.ssl_mode, ca);
    let mut pg = (*config.database_url).clone();
    pg.application_name("voxanne-relay-reconcile");
    let (client, connection) = pg.connect(connector).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection ended");
        }
    });
    Ok(client)
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: HeaderValue,
    attempts: u32,
}

enum Fetched {
    /// The call object, as its JSON text.
    Call(String),
    NotFound,
    GaveUp(String),
}

impl Api {
    /// `GET /call/{id}`, paced, with backoff on 429, 5xx and transport errors.
    async fn call(
        &self,
        id: &str,
        pace: &mut tokio::time::Interval,
        requests: &mut u64,
    ) -> Result<Fetched, ReconcileError> {
        let url = format!("{}/call/{}", self.base, utf8_percent_encode(id, NON_ALPHANUMERIC));
        let mut backoff = BACKOFF_FIRST;
        let mut last = String::new();
        for _ in 0..self.attempts {
            pace.tick().await;
            *requests += 1;
            let wait = match self.http.get(&url).header(reqwest::header::AUTHORIZATION, self.key.clone()).send().await {
                Ok(response) => match response.status() {
                    StatusCode::OK => match response.text().await {
                        Ok(text) => return Ok(Fetched::Call(text)),
                        Err(e) => {
                            last = format!("reading the answer: {e}");
                            backoff
                        }
                    },
                    StatusCode::NOT_FOUND => return Ok(Fetched::NotFound),
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        return Err(ReconcileError::Credentials(response.status()))
                    }
                    status if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => {
                        last = format!("HTTP {status}");
                        retry_after(response.headers().get(RETRY_AFTER)).unwrap_or(backoff)
                    }
                    status => return Ok(Fetched::GaveUp(format!("HTTP {status}"))),
                },
                Err(e) => {
                    last = e.to_string();
                    backoff
                }
            };
            tokio::time::sleep(wait.min(BACKOFF_MAX)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        Ok(Fetched::GaveUp(format!("{} attempts, the last: {last}", self.attempts)))
    }
}

/// A `Retry-After` of delay-seconds (the HTTP-date form is read as "the usual backoff").
fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    value?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds() {
        assert_eq!(retry_after(Some(&HeaderValue::from_static("3"))), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(Some(&HeaderValue::from_static(" 0 "))), Some(Duration::ZERO));
        assert_eq!(retry_after(Some(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"))), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn the_api_key_is_never_printed() {
        let config = ReconcileConfig::try_parse_from([
            "voxanne-relay reconcile",
            "--database-url",
            "host=127.0.0.1 user=x",
            "--vapi-api-key",
            "sk-very-secret",
        ])
        .unwrap();
        assert!(!format!("{config:?}").contains("sk-very-secret"));
        assert_eq!((config.quiet, config.limit), (Duration::from_secs(900), 100));
    }
}
