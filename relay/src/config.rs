//! Command-line flags, each with an environment variable fallback. `Debug` is safe to log: the
//! secrets are `Secret`s and `tokio_postgres::Config` omits the password.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderName;
use clap::error::ErrorKind;
use clap::{ArgAction, CommandFactory, Parser, ValueEnum};

use crate::json_scan::JsonLimits;

use crate::tls::{CaFile, DatabaseUrl, SslMode};
use crate::upstream::UpstreamUrl;
use crate::verify::{
    Algorithm, Encoding, PlanError, PlanOptions, Secret, TenantCredentials, TimestampUnit, TokenScheme, Verifier,
    SECRET_HEADER,
};

/// Default `--body-limit`: a long call's end-of-call report (its messages, twice over, plus the
/// transcript) passes 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Default `--max-in-flight` per `--pool-size`.
pub const IN_FLIGHT_PER_POOLED_CONNECTION: usize = 8;

/// How the relay's sessions reach PostgreSQL (`--pooler-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PoolerMode {
    /// Cached prepared statements; `statement_timeout` sent once, at connection.
    Session,
    /// Unnamed statements, each in a transaction that sets `statement_timeout` locally: a
    /// pooler in transaction mode hands each transaction to any server connection, and refuses
    /// startup `options`.
    Transaction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line, span fields flattened in.
    Json,
}

/// Receives Vapi webhooks and hands each raw body to `voxanne.handle_vapi_message` in PostgreSQL.
#[derive(Debug, Clone, Parser)]
#[command(name = "voxanne-relay", version, about, max_term_width = 100)]
pub struct Config {
    /// PostgreSQL connection string (libpq `key=value` form or `postgres://` URL). `sslmode`
    /// (disable, prefer, require, verify-ca, verify-full; default prefer) and `sslrootcert` (a
    /// PEM file of CA certificates) as in libpq.
    #[arg(long, env = "VOXANNE_DATABASE_URL", value_parser = DatabaseUrl::parse, hide_env_values = true)]
    pub database_url: DatabaseUrl,

    /// CA certificates (PEM) the database server's certificate must chain to: the connection
    /// string's `sslrootcert`, as a flag (give one or the other).
    #[arg(long, env = "VOXANNE_DB_CA_FILE", value_name = "PATH", value_parser = CaFile::parse_flag)]
    pub db_ca_file: Option<CaFile>,

    /// `session`: the relay's sessions are its own (direct, or a pooler in session mode).
    /// `transaction`: behind a pooler in transaction mode (PgBouncer, Supavisor on port 6543),
    /// with no prepared statement and no session setting.
    #[arg(long, env = "VOXANNE_POOLER_MODE", value_enum, default_value_t = PoolerMode::Session)]
    pub pooler_mode: PoolerMode,

    /// Address to listen on.
    #[arg(long, env = "VOXANNE_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,

    /// Path that receives the webhooks.
    #[arg(long, env = "VOXANNE_WEBHOOK_PATH", default_value = "/vapi/webhook")]
    pub webhook_path: String,

    /// Platform-wide tokens of Vapi's Bearer credential (`Authorization: Bearer <token>`, its
    /// recommended type), comma-separated (list several to rotate). They may write any org.
    #[arg(
        long = "bearer-tokens",
        visible_alias = "bearer-token",
        env = "VOXANNE_BEARER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true,
        value_name = "TOKEN[,TOKEN..]"
    )]
    pub bearer_tokens: Vec<Secret>,

    /// The Bearer credential's header (its `headerName` in Vapi).
    #[arg(long, env = "VOXANNE_BEARER_HEADER", default_value = "authorization", value_name = "HEADER")]
    pub bearer_header: HeaderName,

    /// Whether the header's value starts with "Bearer " (its `bearerPrefixEnabled` in Vapi).
    #[arg(long, env = "VOXANNE_BEARER_PREFIX", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub bearer_prefix: bool,

    /// Legacy shared secrets accepted in the `x-vapi-secret` header (Vapi's inline
    /// `server.secret`), comma-separated (list several to rotate).
    #[arg(
        long = "webhook-secrets",
        visible_alias = "webhook-secret",
        env = "VOXANNE_WEBHOOK_SECRETS",
        value_delimiter = ',',
        hide_env_values = true,
        value_name = "SECRET[,SECRET..]"
    )]
    pub webhook_secrets: Vec<Secret>,

    /// Tenants' own tokens are accepted too, in either token header: each may write only its
    /// org (`voxanne.add_webhook_credential`; the relay reads their digests from the database).
    #[arg(long, env = "VOXANNE_TENANT_CREDENTIALS", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub tenant_credentials: bool,

    /// Keys of Vapi's HMAC credential (its `secretKey`), comma-separated (list several to rotate).
    #[arg(
        long = "hmac-secrets",
        visible_alias = "hmac-secret",
        env = "VOXANNE_HMAC_SECRET",
        value_delimiter = ',',
        hide_env_values = true,
        value_name = "KEY[,KEY..]"
    )]
    pub hmac_secrets: Vec<Secret>,

    /// Refuse every request without a valid HMAC signature, even with a valid token.
    #[arg(long, env = "VOXANNE_REQUIRE_HMAC")]
    pub require_hmac: bool,

    /// The HMAC plan's `algorithm`.
    #[arg(long, env = "VOXANNE_HMAC_ALGORITHM", value_enum, default_value_t = Algorithm::Sha256)]
    pub hmac_algorithm: Algorithm,

    /// The HMAC plan's `signatureHeader`.
    #[arg(long, env = "VOXANNE_HMAC_SIGNATURE_HEADER", default_value = "x-signature", value_name = "HEADER")]
    pub hmac_signature_header: HeaderName,

    /// The HMAC plan's `timestampHeader`.
    #[arg(long, env = "VOXANNE_HMAC_TIMESTAMP_HEADER", default_value = "x-timestamp", value_name = "HEADER")]
    pub hmac_timestamp_header: HeaderName,

    /// The HMAC plan's `signaturePrefix` (e.g. "sha256=").
    #[arg(long, env = "VOXANNE_HMAC_SIGNATURE_PREFIX", default_value = "", value_name = "PREFIX")]
    pub hmac_signature_prefix: String,

    /// The HMAC plan's `includeTimestamp`.
    #[arg(long, env = "VOXANNE_HMAC_INCLUDE_TIMESTAMP", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub hmac_include_timestamp: bool,

    /// The HMAC plan's `payloadFormat`: {body}, {timestamp}, {method}, {url}, {svix-id}
    /// [default: "{timestamp}.{body}", or "{body}" without a timestamp].
    #[arg(long, env = "VOXANNE_HMAC_PAYLOAD_FORMAT", value_name = "TEMPLATE")]
    pub hmac_payload_format: Option<String>,

    /// The HMAC plan's `messageIdHeader`, whose value is {svix-id}.
    #[arg(long, env = "VOXANNE_HMAC_MESSAGE_ID_HEADER", value_name = "HEADER")]
    pub hmac_message_id_header: Option<HeaderName>,

    /// The HMAC plan's `signatureEncoding`.
    #[arg(long, env = "VOXANNE_HMAC_SIGNATURE_ENCODING", value_enum, default_value_t = Encoding::Hex)]
    pub hmac_signature_encoding: Encoding,

    /// The HMAC plan's `secretIsBase64`: the keys are decoded from base64.
    #[arg(long, env = "VOXANNE_HMAC_SECRET_IS_BASE64", default_value_t = false, action = ArgAction::Set, value_name = "BOOL")]
    pub hmac_secret_is_base64: bool,

    /// The server URL as configured in Vapi, which {url} stands for.
    #[arg(long, env = "VOXANNE_HMAC_URL", value_name = "URL")]
    pub hmac_url: Option<String>,

    /// Unit of the timestamp header (Vapi does not document it): auto reads both.
    #[arg(long, env = "VOXANNE_HMAC_TIMESTAMP_UNIT", value_enum, default_value_t = TimestampUnit::Auto)]
    pub hmac_timestamp_unit: TimestampUnit,

    /// How far the signed timestamp may be from the relay's clock, either way (1s to 15m).
    #[arg(long, env = "VOXANNE_HMAC_TOLERANCE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub hmac_tolerance: Duration,

    /// Answers keep the database's `org_id` and `call_id`. Off: a sender learns no internal id.
    #[arg(long, env = "VOXANNE_ANSWER_TENANT_IDS", default_value_t = false, action = ArgAction::Set, value_name = "BOOL")]
    pub answer_tenant_ids: bool,

    /// Largest accepted request body, in bytes; also caps an upstream's answer.
    #[arg(long, env = "VOXANNE_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,

    /// The app asked for the reply of a message the database answers with `"upstream": true`
    /// (http or https). Unset: the database's reply is sent.
    #[arg(long, env = "VOXANNE_UPSTREAM_URL", value_name = "URL")]
    pub upstream_url: Option<UpstreamUrl>,

    /// Deadline of the upstream's answer, after which the database's reply is sent. Vapi waits
    /// 7.5 s in all for an assistant-request's answer; 5 s leaves the rest for the database
    /// statement and the network.
    #[arg(long, env = "VOXANNE_UPSTREAM_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,

    /// Whole-request deadline; answered 503 when exceeded (Vapi waits 20 s).
    #[arg(long, env = "VOXANNE_REQUEST_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// `statement_timeout` of the relay's database sessions.
    #[arg(long, env = "VOXANNE_STATEMENT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub statement_timeout: Duration,

    /// Maximum number of pooled database connections.
    #[arg(long, env = "VOXANNE_POOL_SIZE", default_value_t = 8)]
    pub pool_size: usize,

    /// How long a request waits for a pooled connection (also bounds connecting and recycling).
    #[arg(long, env = "VOXANNE_POOL_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub pool_timeout: Duration,

    /// TCP connect timeout, used when the connection string sets none.
    #[arg(long, env = "VOXANNE_CONNECT_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// `application_name` of the relay's database sessions (overrides the connection string).
    #[arg(long, env = "VOXANNE_DB_APPLICATION_NAME", default_value = "voxanne-relay")]
    pub db_application_name: String,

    /// `voxanne_ext` version that /readyz requires.
    #[arg(long, env = "VOXANNE_EXPECTED_EXTENSION_VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    pub expected_extension_version: String,

    /// Threads of the async runtime. 1 (a current-thread runtime) is cheapest when the relay
    /// shares its machine with PostgreSQL: no cross-thread wake-ups per request (measured in
    /// bench/README.md). Raise it on a host of its own.
    #[arg(long, env = "VOXANNE_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,

    /// Log output format; the level filter comes from RUST_LOG (default "info").
    #[arg(long, env = "VOXANNE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    // Limits at the edge against denial of service (relay/README.md, "Limits").
    /// Address of a second listener for /metrics, /healthz and /readyz, which the webhook
    /// listener then answers 404. Unset: all on `--listen`.
    #[arg(long, env = "VOXANNE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Time a connection has to send a request's line and headers, counted from its accept or
    /// from the first byte after a pause between requests; then it is closed (slow headers).
    #[arg(long, env = "VOXANNE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Time a keep-alive connection may wait, no request in flight, for its next request.
    #[arg(long, env = "VOXANNE_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Open connections per listener. Past it, new connections wait in the kernel's accept
    /// queue until one closes (each is closed within the timeouts above when it sends nothing).
    #[arg(long, env = "VOXANNE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Webhooks in flight; past it, 503 with Retry-After at once. Default: 8 per pooled
    /// connection (64 with the default pool), beyond which a webhook would mostly wait for
    /// `--pool-timeout` to be answered the same 503.
    #[arg(long, env = "VOXANNE_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,

    /// Deepest nesting of arrays and objects in a body (the top-level value is 1). Vapi's
    /// deepest messages (tool schemas in an assistant in a call) stay under 20.
    #[arg(long, env = "VOXANNE_JSON_MAX_DEPTH", default_value_t = 64)]
    pub json_max_depth: usize,

    /// Longest number literal in a body, in characters. A JavaScript double prints in at most
    /// 24 (`-1.7976931348623157e+308`); Vapi's numbers are ids, timestamps, costs, seconds.
    #[arg(long, env = "VOXANNE_JSON_MAX_NUMBER_LENGTH", default_value_t = 100)]
    pub json_max_number_length: usize,

    /// Largest exponent (either sign) of a number literal: every double (5e-324 to 1.8e308)
    /// fits. PostgreSQL prints numbers in full, so `1e131071` becomes 131,072 digits.
    #[arg(long, env = "VOXANNE_JSON_MAX_EXPONENT", default_value_t = 400)]
    pub json_max_exponent: u64,

    /// Largest sum of the exponents' magnitudes over a body's numbers: what the exponents add,
    /// at most, to the text PostgreSQL prints for the body (without it, 16 MiB of `1e400`
    /// prints as 1.1 GB).
    #[arg(long, env = "VOXANNE_JSON_MAX_NUMBER_EXPANSION", default_value_t = 1024 * 1024)]
    pub json_max_number_expansion: u64,

    /// A directory for the durable spool: a verified message the database cannot take
    /// (unreachable, restarting, out of connections, timing out) is fsynced there, answered 200,
    /// and replayed once the database answers again. Unset: such messages are answered 503.
    #[arg(long, env = "VOXANNE_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<std::path::PathBuf>,

    /// The most the spool holds on disk, in bytes; past it a message is answered 503.
    #[arg(long, env = "VOXANNE_SPOOL_MAX_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub spool_max_bytes: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("no webhook authentication configured: set --bearer-tokens (VOXANNE_BEARER_TOKENS), --hmac-secrets (VOXANNE_HMAC_SECRET) or --webhook-secrets (VOXANNE_WEBHOOK_SECRETS)")]
    NoAuth,
    #[error(transparent)]
    Hmac(#[from] PlanError),
    #[error("--require-hmac needs --hmac-secrets")]
    RequireHmacWithoutKeys,
    #[error("header {0} is configured for two credential schemes: each header belongs to one")]
    SharedHeader(HeaderName),
    #[error("--webhook-path must start with '/': {0:?}")]
    WebhookPath(String),
    #[error("--webhook-path must not be one of the relay's own endpoints: {0:?}")]
    ReservedPath(String),
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    #[error("with --upstream-url, --upstream-timeout must be shorter than --request-timeout, or the request times out (503) before the reply is sent")]
    UpstreamTimeout,
    #[error(
        "the CA file is given twice: set sslrootcert in --database-url or --db-ca-file (VOXANNE_DB_CA_FILE), not both"
    )]
    CaFileTwice,
    #[error("sslmode={0} checks the server's certificate against a CA: set sslrootcert in --database-url or --db-ca-file (VOXANNE_DB_CA_FILE)")]
    NoCaFile(&'static str),
}

impl Config {
    /// This process's flags, validated; exits with clap's usage error when they are not valid.
    pub fn from_command_line() -> Self {
        let config = Self::parse();
        if let Err(e) = config.validate() {
            Self::command().error(ErrorKind::ValueValidation, e).exit();
        }
        config
    }

    /// Checks what clap cannot express: at least one auth mode, sane sizes and paths.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.verifier()?;
        if !self.webhook_path.starts_with('/') {
            return Err(ConfigError::WebhookPath(self.webhook_path.clone()));
        }
        if ["/healthz", "/readyz", "/metrics"].contains(&self.webhook_path.as_str()) {
            return Err(ConfigError::ReservedPath(self.webhook_path.clone()));
        }
        for (name, zero) in [
            ("body-limit", self.body_limit == 0),
            ("pool-size", self.pool_size == 0),
            ("request-timeout", self.request_timeout.is_zero()),
            ("statement-timeout", self.statement_timeout.as_millis() == 0),
            ("pool-timeout", self.pool_timeout.is_zero()),
            ("worker-threads", self.worker_threads == 0),
            ("upstream-timeout", self.upstream_timeout.is_zero()),
            ("header-read-timeout", self.header_read_timeout.is_zero()),
            ("idle-timeout", self.idle_timeout.is_zero()),
            ("max-connections", self.max_connections == 0),
            ("max-in-flight", self.max_in_flight == Some(0)),
            ("json-max-depth", self.json_max_depth == 0),
            ("json-max-number-length", self.json_max_number_length == 0),
            ("spool-max-bytes", self.spool_max_bytes == 0),
        ] {
            if zero {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.upstream_url.is_some() && self.upstream_timeout >= self.request_timeout {
            return Err(ConfigError::UpstreamTimeout);
        }
        if self.database_url.ca.is_some() && self.db_ca_file.is_some() {
            return Err(ConfigError::CaFileTwice);
        }
        let mode = self.database_url.ssl_mode;
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && self.db_ca().is_none() {
            return Err(ConfigError::NoCaFile(mode.as_str()));
        }
        Ok(())
    }

    /// The credential schemes these flags configure; the error says which flags do not fit.
    pub fn verifier(&self) -> Result<Verifier, ConfigError> {
        let hmac = match self.hmac_secrets.is_empty() {
            true => None,
            false => Some(
                PlanOptions {
                    keys: self.hmac_secrets.clone(),
                    algorithm: self.hmac_algorithm,
                    signature_header: self.hmac_signature_header.clone(),
                    timestamp_header: self.hmac_timestamp_header.clone(),
                    signature_prefix: self.hmac_signature_prefix.clone(),
                    include_timestamp: self.hmac_include_timestamp,
                    payload_format: self.hmac_payload_format.clone(),
                    message_id_header: self.hmac_message_id_header.clone(),
                    encoding: self.hmac_signature_encoding,
                    key_is_base64: self.hmac_secret_is_base64,
                    url: self.hmac_url.clone(),
                    tolerance: self.hmac_tolerance,
                    timestamp_unit: self.hmac_timestamp_unit,
                }
                .build()?,
            ),
        };
        if self.require_hmac && hmac.is_none() {
            return Err(ConfigError::RequireHmacWithoutKeys);
        }
        // the platform's own credential is always needed: tenants' alone would leave a relay
        // that an operator forgot to configure running and refusing everything
        if hmac.is_none() && self.bearer_tokens.is_empty() && self.webhook_secrets.is_empty() {
            return Err(ConfigError::NoAuth);
        }
        let bearer = TokenScheme::bearer(&self.bearer_tokens, self.bearer_header.clone(), self.bearer_prefix);
        let legacy = TokenScheme::legacy(&self.webhook_secrets);
        let mut headers = vec![bearer.header().clone()];
        if bearer.header() == SECRET_HEADER {
            return Err(ConfigError::SharedHeader(bearer.header().clone()));
        }
        headers.push(legacy.header().clone());
        if let Some(plan) = &hmac {
            for name in plan.headers() {
                if headers.contains(&name) {
                    return Err(ConfigError::SharedHeader(name));
                }
            }
        }
        let tenants = self.tenant_credentials.then(|| Arc::new(TenantCredentials::new()));
        Ok(Verifier::new(bearer, legacy, hmac, self.require_hmac, tenants))
    }

    /// `--max-in-flight`, or its default from the pool size.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.unwrap_or(IN_FLIGHT_PER_POOLED_CONNECTION * self.pool_size)
    }

    /// The bounds on a body's JSON.
    pub fn json_limits(&self) -> JsonLimits {
        JsonLimits {
            max_depth: self.json_max_depth,
            max_number_length: self.json_max_number_length,
            max_exponent: self.json_max_exponent,
            max_number_expansion: self.json_max_number_expansion,
        }
    }

    /// The CA file, from the connection string or the flag.
    pub fn db_ca(&self) -> Option<&CaFile> {
        self.database_url.ca.as_ref().or(self.db_ca_file.as_ref())
    }

    /// The connection settings the pool uses: the connection string plus the relay's
    /// `application_name`, (when unset) connect timeout and, in session mode, `statement_timeout`
    /// (in transaction mode each statement sets it: db.rs).
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut pg = (*self.database_url).clone();
        pg.application_name(&self.db_application_name);
        if self.pooler_mode == PoolerMode::Session {
            let timeout = format!("-c statement_timeout={}", self.statement_timeout.as_millis());
            let options = match pg.get_options() {
                Some(existing) if !existing.trim().is_empty() => format!("{existing} {timeout}"),
                _ => timeout,
            };
            pg.options(&options);
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(self.connect_timeout);
        }
        pg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut argv = vec!["voxanne-relay", "--database-url", "host=127.0.0.1 port=1 user=x password=pw"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv)
    }

    #[test]
    fn cli_definition_is_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = parse(&["--webhook-secrets", "a"]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8787".parse().unwrap());
        assert_eq!(c.webhook_path, "/vapi/webhook");
        assert_eq!(c.body_limit, 16 * 1024 * 1024);
        assert_eq!(c.upstream_url, None);
        assert_eq!(c.upstream_timeout, Duration::from_secs(5));
        assert_eq!(c.statement_timeout, Duration::from_secs(5));
        assert_eq!(c.hmac_tolerance, Duration::from_secs(300));
        assert_eq!(c.expected_extension_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(c.db_application_name, "voxanne-relay");
        assert_eq!(c.admin_listen, None);
        assert_eq!((c.header_read_timeout, c.idle_timeout), (Duration::from_secs(10), Duration::from_secs(60)));
        assert_eq!((c.max_connections, c.max_in_flight()), (1024, 64));
        assert_eq!(
            c.json_limits(),
            JsonLimits { max_depth: 64, max_number_length: 100, max_exponent: 400, max_number_expansion: 1 << 20 }
        );
        assert_eq!(c.validate(), Ok(()));
        let c = parse(&["--webhook-secrets", "a", "--pool-size", "3"]).unwrap();
        assert_eq!(c.max_in_flight(), 24, "sized from the pool");
    }

    #[test]
    fn secret_lists_are_comma_separated() {
        let c = parse(&["--webhook-secrets", "old, new", "--hmac-secret", "k1,k2"]).unwrap();
        assert_eq!(c.webhook_secrets, vec![Secret::new("old"), Secret::new("new")]);
        assert_eq!(c.hmac_secrets.len(), 2);
        assert!(parse(&["--webhook-secrets", "a,,b"]).is_err(), "empty secret refused");
    }

    #[test]
    fn at_least_one_auth_mode_is_required() {
        assert_eq!(parse(&[]).unwrap().validate(), Err(ConfigError::NoAuth));
        assert_eq!(parse(&["--hmac-secrets", "k"]).unwrap().validate(), Ok(()));
    }

    #[test]
    fn bad_values_are_refused() {
        let c = parse(&["--webhook-secrets", "a", "--webhook-path", "vapi"]).unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::WebhookPath(_))));
        let c = parse(&["--webhook-secrets", "a", "--webhook-path", "/metrics"]).unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::ReservedPath(_))));
        let c = parse(&["--webhook-secrets", "a", "--body-limit", "0"]).unwrap();
        assert_eq!(c.validate(), Err(ConfigError::Zero("body-limit")));
        let c = parse(&["--webhook-secrets", "a", "--worker-threads", "0"]).unwrap();
        assert_eq!(c.validate(), Err(ConfigError::Zero("worker-threads")));
        assert!(parse(&["--webhook-secrets", "a", "--statement-timeout", "soon"]).is_err());
        let c = parse(&["--webhook-secrets", "a", "--max-in-flight", "0"]).unwrap();
        assert_eq!(c.validate(), Err(ConfigError::Zero("max-in-flight")));
        let c = parse(&["--webhook-secrets", "a", "--header-read-timeout", "0s"]).unwrap();
        assert_eq!(c.validate(), Err(ConfigError::Zero("header-read-timeout")));
        let c = parse(&["--webhook-secrets", "a", "--upstream-timeout", "0s"]).unwrap();
        assert_eq!(c.validate(), Err(ConfigError::Zero("upstream-timeout")));
        let upstream = ["--webhook-secrets", "a", "--upstream-url", "http://127.0.0.1:9000/vapi"];
        let c = parse(&[&upstream[..], &["--upstream-timeout", "15s"]].concat()).unwrap();
        assert_eq!(c.validate(), Err(ConfigError::UpstreamTimeout), "not shorter than the 15 s request timeout");
        let c = parse(&[&upstream[..], &["--request-timeout", "400ms"]].concat()).unwrap();
        assert_eq!(c.validate(), Err(ConfigError::UpstreamTimeout), "the default 5 s against a short request timeout");
        let c = parse(&["--webhook-secrets", "a", "--request-timeout", "400ms"]).unwrap();
        assert_eq!(c.validate(), Ok(()), "no upstream, no constraint");
        for url in ["ftp://app/", "not a url", "https://user:pw@app.example/"] {
            assert!(parse(&["--webhook-secrets", "a", "--upstream-url", url]).is_err(), "{url}");
        }
    }

    #[test]
    fn the_upstream_is_configured_by_flag_or_environment() {
        let c = parse(&["--webhook-secrets", "a", "--upstream-url", "http://127.0.0.1:9000/vapi"]).unwrap();
        assert_eq!(c.upstream_url, Some("http://127.0.0.1:9000/vapi".parse().unwrap()));
        assert_eq!(c.validate(), Ok(()));
        let help = Config::command().render_long_help().to_string();
        assert!(help.contains("VOXANNE_UPSTREAM_URL") && help.contains("VOXANNE_UPSTREAM_TIMEOUT"), "{help}");
    }

    #[test]
    fn debug_output_redacts_secrets_and_password() {
        let c = parse(&["--webhook-secrets", "hunter2", "--hmac-secrets", "swordfish"]).unwrap();
        let debug = format!("{c:?}");
        for secret in ["hunter2", "swordfish", "pw"] {
            assert!(!debug.contains(&format!("\"{secret}\"")), "{secret} leaked: {debug}");
        }
        assert!(!debug.contains("hunter2") && !debug.contains("swordfish"));
    }

    #[test]
    fn help_hides_secret_environment_values() {
        let help = Config::command().render_long_help().to_string();
        assert!(help.contains("VOXANNE_WEBHOOK_SECRETS"));
        assert!(help.contains("--statement-timeout"));
    }

    #[test]
    fn session_settings_are_added_to_the_connection_string() {
        let c = parse(&["--webhook-secrets", "a", "--statement-timeout", "2500ms"]).unwrap();
        let pg = c.pg_config();
        assert_eq!(pg.get_application_name(), Some("voxanne-relay"));
        assert_eq!(pg.get_options(), Some("-c statement_timeout=2500"));
        assert_eq!(pg.get_connect_timeout(), Some(&Duration::from_secs(3)));

        let mut c = c;
        c.database_url = DatabaseUrl::parse("host=h options='-c search_path=x' connect_timeout=7").unwrap();
        let pg = c.pg_config();
        assert_eq!(pg.get_options(), Some("-c search_path=x -c statement_timeout=2500"));
        assert_eq!(pg.get_connect_timeout(), Some(&Duration::from_secs(7)));
    }

    #[test]
    fn transaction_pooler_mode_sends_no_session_setting_at_startup() {
        let c = parse(&["--webhook-secrets", "a", "--pooler-mode", "transaction"]).unwrap();
        assert_eq!(c.pooler_mode, PoolerMode::Transaction);
        let pg = c.pg_config();
        assert_eq!(pg.get_options(), None, "a pooler refuses startup options");
        assert_eq!(pg.get_application_name(), Some("voxanne-relay"), "PgBouncer passes application_name on");
        assert_eq!(parse(&["--webhook-secrets", "a"]).unwrap().pooler_mode, PoolerMode::Session);
        assert!(parse(&["--webhook-secrets", "a", "--pooler-mode", "statement"]).is_err());
    }

    #[test]
    fn verify_modes_need_one_ca_file() {
        let ca = std::env::temp_dir().join(format!("voxanne-relay-config-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, TEST_CA).unwrap();
        let ca = ca.to_str().unwrap();
        let with_url = |url: &str, extra: &[&str]| {
            let mut argv = vec!["voxanne-relay", "--webhook-secrets", "a", "--database-url", url];
            argv.extend_from_slice(extra);
            Config::try_parse_from(argv)
        };
        for mode in ["verify-ca", "verify-full"] {
            let c = with_url(&format!("host=db sslmode={mode}"), &[]).unwrap();
            assert!(matches!(c.validate(), Err(ConfigError::NoCaFile(m)) if m == mode), "{mode}");
            let c = with_url(&format!("host=db sslmode={mode} sslrootcert={ca}"), &[]).unwrap();
            assert_eq!(c.validate(), Ok(()));
            let c = with_url(&format!("host=db sslmode={mode}"), &["--db-ca-file", ca]).unwrap();
            assert_eq!(c.validate(), Ok(()));
            assert_eq!(c.db_ca().unwrap().path, std::path::Path::new(ca));
        }
        let c = with_url(&format!("host=db sslrootcert={ca}"), &["--db-ca-file", ca]).unwrap();
        assert_eq!(c.validate(), Err(ConfigError::CaFileTwice));
        assert!(with_url("host=db", &["--db-ca-file", "/nonexistent.pem"]).is_err(), "read when parsed");
        let c = with_url("host=db sslmode=require", &[]).unwrap();
        assert_eq!(c.validate(), Ok(()), "require checks nothing without a CA file");
        std::fs::remove_file(ca).unwrap();
    }

    /// A self-signed CA certificate (`openssl req -x509 -newkey ec -pkeyopt
    /// ec_paramgen_curve:P-256 -subj /CN=test-ca -days 36500 -nodes`).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBejCCASGgAwIBAgIUBE7y5HgYKB/voc0NSfc5wy0atFQwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHdGVzdC1jYTAgFw0yNjEyMDIwODEwMDBaGA8yMTI2MTEwODA4
MTAwMFowEjEQMA4GA1UEAwwHdGVzdC1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABFEFhXMblyUUY4wfBwQ9/I1XEa2crMWm37Nu7CdYLj/cbi3u8fjJayNMEzhV
dgpjV78BGKfbGsN0/4GbnbgU0JajUzBRMB0GA1UdDgQWBBS7FVoC2NhATxHjct14
1+Us9pJPyzAfBgNVHSMEGDAWgBS7FVoC2NhATxHjct141+Us9pJPyzAPBgNVHRMB
Af8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIGxRGETYdWcqibu3jaYr79Kf1tOb
Mma/qf5cyFwwx++sAiBY+mbIOM3iqfuMQfX+fqJFArahoaVFbimuz232ZRlRDw==
-----END CERTIFICATE-----
";
}
