//! The routers: request id and tracing outermost, then the `observe` middleware (metrics, error
//! logging, JSON bodies for errors produced by layers) and the request timeout. The webhook
//! handler, which also enforces the body limit, is in webhook.rs, behind the cap on webhooks
//! in flight (`shed`); the probes and /metrics are here. They are one router ([`app`]), or two
//! with `--admin-listen` ([`webhook_app`] and [`admin_app`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::{field::Empty, Level, Span};

use crate::config::Config;
use crate::db::{self, Db};
use crate::error::{RelayError, RETRY_MESSAGE};
use crate::json_scan::JsonLimits;
use crate::limits::ConnectionLimits;
use crate::metrics;
use crate::spool::Spool;
use crate::upstream::Upstream;
use crate::verify::Verifier;
use crate::webhook::{self, Labels};

pub const REQUEST_ID: &str = "x-request-id";

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub verifier: Arc<Verifier>,
    /// The app asked for replies (`--upstream-url`), with the process's one client.
    pub upstream: Option<Arc<Upstream>>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub webhook_path: Arc<str>,
    pub expected_extension_version: Arc<str>,
    pub body_limit: usize,
    pub request_timeout: Duration,
    /// Answers keep `org_id` and `call_id` (`--answer-tenant-ids`).
    pub answer_tenant_ids: bool,
    pub json_limits: JsonLimits,
    pub connection_limits: ConnectionLimits,
    /// One permit per webhook in flight (`--max-in-flight`).
    pub in_flight: Arc<Semaphore>,
    pub ready: Arc<ReadyCache>,
    /// Where messages go while the database cannot take them (`--spool-dir`).
    pub spool: Option<Arc<Spool>>,
}

/// Why the state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("could not create the database pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
    #[error("could not create the upstream client: {0}")]
    Upstream(#[from] reqwest::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("could not open the spool: {0}")]
    Spool(#[from] crate::spool::SpoolError),
}

impl AppState {
    /// Builds the pool (no connection is opened until the first request), the verifier and the
    /// upstream client.
    pub fn from_config(config: &Config) -> Result<Self, StateError> {
        let verifier = config.verifier()?;
        let upstream = match &config.upstream_url {
            Some(url) => Some(Arc::new(Upstream::new(
                url,
                config.upstream_timeout,
                config.body_limit,
                verifier.credential_headers(),
            )?)),
            None => None,
        };
        Ok(Self {
            db: Db::new(db::build_pool(config)?),
            verifier: Arc::new(verifier),
            upstream,
            metrics: metrics::handle(),
            webhook_path: config.webhook_path.as_str().into(),
            expected_extension_version: config.expected_extension_version.as_str().into(),
            body_limit: config.body_limit,
            request_timeout: config.request_timeout,
            answer_tenant_ids: config.answer_tenant_ids,
            json_limits: config.json_limits(),
            connection_limits: ConnectionLimits {
                header_read_timeout: config.header_read_timeout,
                idle_timeout: config.idle_timeout,
                max_connections: config.max_connections,
            },
            in_flight: Arc::new(Semaphore::new(config.max_in_flight())),
            ready: Arc::default(),
            spool: match &config.spool_dir {
                Some(dir) => Some(Arc::new(Spool::open(dir, config.spool_max_bytes)?)),
                None => None,
            },
        })
    }
}

/// The webhook and the admin endpoints on one listener.
pub fn app(state: AppState) -> Router {
    layered(webhook_routes(&state).merge(admin_routes()), state)
}

/// The webhook alone, for the public listener when the admin endpoints have their own.
pub fn webhook_app(state: AppState) -> Router {
    layered(webhook_routes(&state), state)
}

/// /healthz, /readyz and /metrics, for `--admin-listen`.
pub fn admin_app(state: AppState) -> Router {
    layered(admin_routes(), state)
}

fn webhook_routes(state: &AppState) -> Router<AppState> {
    let shed = middleware::from_fn_with_state(state.clone(), shed);
    Router::new().route(&state.webhook_path, post(webhook::webhook).layer(shed))
}

fn admin_routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(render_metrics))
}

fn layered(routes: Router<AppState>, state: AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID);
    routes
        .layer(
            ServiceBuilder::new()
                .map_request(drop_unfit_request_id)
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(make_span)
                        .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Millis)),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(middleware::from_fn_with_state(state.clone(), observe))
                // the body limit is the webhook handler's: it reads the body itself
                // (webhook.rs), after the headers' credential
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, state.request_timeout)),
        )
        .with_state(state)
}

/// Longest client `x-request-id` kept.
const REQUEST_ID_MAX: usize = 64;

/// Removes a client's `x-request-id` unless it is one value of 1 to [`REQUEST_ID_MAX`]
/// characters of `[A-Za-z0-9._:-]`, so a fresh UUID replaces it: the id goes into every log
/// line and the upstream's request, and a client should not choose what they hold.
fn drop_unfit_request_id(mut request: Request) -> Request {
    let mut ids = request.headers().get_all(REQUEST_ID).iter();
    let fit = match (ids.next(), ids.next()) {
        (Some(id), None) => is_fit_request_id(id.as_bytes()),
        (None, None) => true,
        _ => false,
    };
    if !fit {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

fn is_fit_request_id(id: &[u8]) -> bool {
    (1..=REQUEST_ID_MAX).contains(&id.len())
        && id.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Answers a webhook 503 at once when `--max-in-flight` are in flight, before its body is
/// read: its sender retries, and the pool and memory go to those already admitted. The body is
/// left unread, so the connection is closed after the answer.
async fn shed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(_permit) = state.in_flight.try_acquire() else {
        let error = RelayError::Overloaded;
        let outcome = error.outcome();
        let mut response = error.into_response();
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        response.extensions_mut().insert(Labels { message_type: metrics::message_type_label(None), outcome });
        return response;
    };
    next.run(request).await
}

/// The request span; the webhook handler fills in the Vapi fields as it learns them.
fn make_span(request: &Request<Body>) -> Span {
    let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id,
        message_type = Empty,
        vapi_call_id = Empty,
        org_id = Empty,
        outcome = Empty,
        upstream_status = Empty,
        upstream_latency_ms = Empty,
        upstream_error = Empty,
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// How long a readiness answer is reused.
const READY_FRESH: Duration = Duration::from_secs(1);

/// The last readiness answer and when it was made. Probes take the lock in turn: while one
/// checks the database the others wait, then reuse its answer, so a probe flood costs one
/// pooled connection per [`READY_FRESH`].
#[derive(Default)]
pub struct ReadyCache(Mutex<Option<(Instant, StatusCode, serde_json::Value)>>);

async fn readyz(State(state): State<AppState>) -> Response {
    let mut last = state.ready.0.lock().await;
    let (status, body) = match &*last {
        Some((at, status, body)) if at.elapsed() < READY_FRESH => (*status, body.clone()),
        _ => {
            let (status, body) = check_ready(&state).await;
            *last = Some((Instant::now(), status, body.clone()));
            (status, body)
        }
    };
    drop(last);
    (status, Json(body)).into_response()
}

/// The database's readiness; with a spool, its depth too, and while the database is unreachable
/// "spooling" (200) as long as the spool can take a message of `--body-limit`: the relay still
/// keeps every one.
async fn check_ready(state: &AppState) -> (StatusCode, serde_json::Value) {
    let (mut status, mut body) = check_database(state).await;
    if let Some(spool) = &state.spool {
        let depth = spool.depth();
        let unreachable = body["reason"] == "database unavailable" || body["reason"] == "database check timed out";
        if unreachable && spool.knows_reply_types() && spool.has_room_for(state.body_limit) {
            status = StatusCode::OK;
            body["status"] = "spooling".into();
        }
        body["spool"] = json!(depth);
    }
    (status, body)
}

async fn check_database(state: &AppState) -> (StatusCode, serde_json::Value) {
    metrics::record_ready_check();
    let expected = &*state.expected_extension_version;
    let checked = tokio::time::timeout(db::READY_CHECK_TIMEOUT, state.db.extension_version()).await;
    match checked {
        Ok(Ok(Some(version))) if version == expected => {
            (StatusCode::OK, json!({ "status": "ready", "extension_version": version }))
        }
        Ok(Ok(Some(version))) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "status": "not_ready",
                "reason": "extension version mismatch",
                "extension_version": version,
                "expected_extension_version": expected,
            }),
        ),
        Ok(Ok(None)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "not_ready", "reason": "extension voxanne_ext is not installed" }),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "not_ready", "reason": "database unavailable" }))
        }
        Err(_) => {
            tracing::warn!("readiness check timed out");
            (StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "not_ready", "reason": "database check timed out" }))
        }
    }
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    metrics::record_pool(state.db.pool().status());
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
        state.metrics.render(),
    )
}

/// Records webhook metrics, logs errors carried by responses, and gives errors produced by
/// layers (503 from the timeout, 404/405 from routing) a JSON body.
/// What the webhook handler answered (it carries its [`Labels`]) is left as it is: its errors
/// are JSON already, and an upstream's answer goes back verbatim.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let is_webhook = request.method() == Method::POST && request.uri().path() == &*state.webhook_path;
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();

    if let Some(err) = response.extensions().get::<Arc<RelayError>>() {
        log_error(err);
    }
    let labels = response.extensions().get::<Labels>().copied();
    let own_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|ct| ct.as_bytes().starts_with(b"application/json"));
    let status = response.status();
    let response = if labels.is_none() && !own_json && (status.is_client_error() || status.is_server_error()) {
        json_for_layer_error(response)
    } else {
        response
    };

    if is_webhook {
        let labels = labels.unwrap_or_else(|| answered_by_a_layer(status));
        metrics::record_webhook(labels.message_type, labels.outcome, elapsed);
    }
    response
}

/// The labels of a webhook that a layer answered before the handler finished.
fn answered_by_a_layer(status: StatusCode) -> Labels {
    let outcome = match status {
        StatusCode::SERVICE_UNAVAILABLE => "timeout",
        _ => "other",
    };
    Labels { message_type: metrics::message_type_label(None), outcome }
}

fn log_error(err: &RelayError) {
    match err {
        RelayError::Internal { source, location } => {
            tracing::error!(error = %source, error_debug = ?source, %location, "internal error");
        }
        RelayError::Unavailable { code, source } => {
            tracing::warn!(code = %code, error = %source, "database unavailable; asking the sender to retry");
        }
        // logged by the handler, with the stored row's id
        RelayError::Rejected { .. } | RelayError::Forbidden { .. } => {}
        other => tracing::info!(error = %other, "request refused"),
    }
}

fn json_for_layer_error(response: Response) -> Response {
    let status = response.status();
    let (mut parts, _) = response.into_parts();
    let body = match status {
        StatusCode::SERVICE_UNAVAILABLE => json!({ "code": "request_timeout", "message": RETRY_MESSAGE }),
        _ => json!({ "message": status.canonical_reason().unwrap_or("error") }),
    };
    let bytes = serde_json::to_vec(&body).expect("a JSON value serializes");
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::verify::SECRET_HEADER;
    use axum::http::HeaderMap;
    use clap::Parser;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// A state whose database is a closed port: a request that reaches it is answered 503
    /// (`db::CANNOT_CONNECT`). Its body limit is 1 KiB.
    pub(crate) fn state() -> AppState {
        state_with(&["--body-limit", "1024"])
    }

    /// [`state`] with the default body limit, and `extra` flags.
    pub(crate) fn state_with(extra: &[&str]) -> AppState {
        let mut argv = vec![
            "voxanne-relay",
            "--database-url",
            "host=127.0.0.1 port=1 user=nobody dbname=nothing",
            "--webhook-secrets",
            "s3cret,n3w",
            "--hmac-secrets",
            "k3y",
            "--pool-timeout",
            "1s",
        ];
        argv.extend_from_slice(extra);
        AppState::from_config(&Config::try_parse_from(argv).unwrap()).unwrap()
    }

    pub(crate) async fn send(request: Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
        send_to(state(), request).await
    }

    pub(crate) async fn send_to(state: AppState, request: Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
        let response = app(state).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, headers, body)
    }

    pub(crate) fn post(body: impl Into<Body>, headers: &[(&str, &str)]) -> Request<Body> {
        let mut builder = Request::post("/vapi/webhook").header(header::CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(body.into()).unwrap()
    }

    #[tokio::test]
    async fn healthz_answers_without_a_database() {
        let (status, headers, body) = send(Request::get("/healthz").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "ok");
        assert!(headers.contains_key(REQUEST_ID), "request id is propagated");
    }

    #[tokio::test]
    async fn a_fit_request_id_is_kept_and_any_other_replaced_by_a_uuid() {
        let with_id = |ids: &[&str]| {
            let mut request = Request::get("/healthz");
            for id in ids {
                request = request.header(REQUEST_ID, *id);
            }
            request.body(Body::empty()).unwrap()
        };
        let longest = "a".repeat(64);
        for id in ["req-42", "Req_1.2:3", longest.as_str(), "0"] {
            let (_, headers, _) = send(with_id(&[id])).await;
            assert_eq!(headers[REQUEST_ID], id);
        }
        let too_long = "a".repeat(65);
        for ids in [&["has space"][..], &["semi;colon"], &["é"], &[""], &[too_long.as_str()], &["a", "b"]] {
            let (_, headers, _) = send(with_id(ids)).await;
            let id = headers[REQUEST_ID].to_str().unwrap();
            assert!(id.len() == 36 && id.split('-').count() == 5, "{ids:?} replaced by a UUID, got {id}");
        }
    }

    #[tokio::test]
    async fn readyz_is_503_when_the_database_is_unreachable() {
        let (status, _, body) = send(Request::get("/readyz").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "not_ready");
    }

    #[tokio::test]
    async fn oversized_bodies_are_413_with_a_json_body() {
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2048));
        // declared length: refused before the body is read
        let (status, _, json) = send(post(big.clone(), &[(SECRET_HEADER, "s3cret")])).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(json["message"].is_string());
        // streamed without a length: refused while reading, at the limit
        let stream = Body::from_stream(futures_stream(big));
        let (status, _, json) = send(post(stream, &[(SECRET_HEADER, "s3cret")])).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(json["message"].is_string());
    }

    fn futures_stream(s: String) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> {
        futures_util::stream::iter(
            s.into_bytes().chunks(100).map(|c| Ok(String::from_utf8(c.to_vec()).unwrap())).collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn transient_database_failure_is_503_and_unknown_routes_are_json_404() {
        // valid credentials and JSON, but the database is a closed port: connect fails twice
        let (status, headers, json) =
            send(post("{\"message\":{\"type\":\"status-update\"}}", &[(SECRET_HEADER, "s3cret")])).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json["message"], RETRY_MESSAGE);
        assert_eq!(json["code"], db::CANNOT_CONNECT);
        assert_eq!(headers[header::RETRY_AFTER], "1");

        let (status, _, json) = send(Request::get("/nope").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json["message"], "Not Found");
    }
}
