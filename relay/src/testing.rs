//! The relay served in the test's own process, on an ephemeral port, with an HTTP client for
//! it: the one harness of this crate's integration tests (`relay/tests`) and of the
//! reliability suite (`tests/it`). Behind the `testing` feature, which both enable. It runs on a
//! thread of its own with the runtime the product ships with (`crate::runtime`: one thread by
//! default), not on the test's runtime, so the tests race the relay as it is deployed.

use std::time::Duration;

use clap::Parser;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::{AppState, Config};

/// The shared secret of every test relay.
pub const SECRET: &str = "test-secret-current";
/// An HMAC key, for the tests that add `--hmac-secrets`.
pub const HMAC_KEY: &str = "test-hmac-key";

/// Names the `--pooler-mode` of every test relay that does not set its own, so a suite can run
/// again through a pooler (bin/test runs the relay's through PgBouncer in transaction mode).
pub const POOLER_ENV: &str = "VOXANNE_RELAY_TEST_POOLER";

/// A relay configuration for tests: `db_url`, the shared secret, a small pool, an ephemeral
/// port, answers that keep their org (the suites check every answer names its own; the default
/// is tested in relay/tests/credentials.rs), the pooler mode [`POOLER_ENV`] names. `extra`
/// flags are added, and replace the defaults they name.
pub fn config(db_url: &str, extra: &[&str]) -> Config {
    let pooler_mode = std::env::var(POOLER_ENV).unwrap_or_else(|_| "session".into());
    let defaults = [
        ("--database-url", db_url),
        ("--webhook-secrets", SECRET),
        ("--listen", "127.0.0.1:0"),
        ("--pool-size", "4"),
        ("--answer-tenant-ids", "true"),
        ("--pooler-mode", &pooler_mode),
    ];
    let mut argv = vec!["voxanne-relay"];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            argv.extend([flag, value]);
        }
    }
    argv.extend_from_slice(extra);
    let config = Config::try_parse_from(argv).expect("test flags parse");
    config.validate().expect("test config is valid");
    config
}

/// An HTTP client that keeps up to `connections` connections to one host.
pub fn http_client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// A relay running in this process; dropping it signals shutdown.
pub struct Relay {
    pub base: String,
    /// The admin listener's, with `--admin-listen` (`127.0.0.1:0` for an ephemeral port).
    pub admin_base: Option<String>,
    pub http: reqwest::Client,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    finished: Option<oneshot::Receiver<std::io::Result<()>>>,
}

impl Relay {
    /// A relay on `db_url` with [`config`]'s defaults and `extra` flags.
    pub async fn start(db_url: &str, extra: &[&str]) -> Relay {
        Relay::start_with(config(db_url, extra)).await
    }

    pub async fn start_with(config: Config) -> Relay {
        let state = AppState::from_config(&config).expect("the state builds");
        let listener = std::net::TcpListener::bind(config.listen).expect("bind");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let addr = listener.local_addr().unwrap();
        let admin = config.admin_listen.map(|admin| {
            let listener = std::net::TcpListener::bind(admin).expect("bind the admin listener");
            listener.set_nonblocking(true).expect("a non-blocking listener");
            listener
        });
        let admin_base = admin.as_ref().map(|l| format!("http://{}", l.local_addr().unwrap()));
        let (tx, rx) = oneshot::channel::<()>();
        let (done, finished) = oneshot::channel();
        let runtime = crate::runtime(&config).expect("the relay's runtime");
        let serving = state.clone();
        let thread = std::thread::spawn(move || {
            let result = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let admin = admin.map(tokio::net::TcpListener::from_std).transpose()?;
                crate::serve(listener, admin, serving, async {
                    let _ = rx.await;
                })
                .await
            });
            let _ = done.send(result);
        });
        Relay {
            base: format!("http://{addr}"),
            admin_base,
            http: http_client(128),
            state,
            shutdown: Some(tx),
            thread: Some(thread),
            finished: Some(finished),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `path` on the listener of the admin endpoints: the admin one when there is one.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{}", self.admin_base.as_deref().unwrap_or(&self.base), path)
    }

    pub fn webhook_url(&self) -> String {
        self.url(&self.state.webhook_path)
    }

    /// POSTs `body` to the webhook path with the given headers.
    pub async fn post(&self, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.post(self.webhook_url()).header("content-type", "application/json").body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send().await.expect("the relay answers")
    }

    /// [`post`](Self::post); the status and the body text.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> (StatusCode, String) {
        let response = self.post(body, headers).await;
        let status = response.status();
        (status, response.text().await.expect("a response body"))
    }

    /// Delivers `body` with the shared secret; the status and the body text.
    pub async fn deliver(&self, body: &str) -> (StatusCode, String) {
        self.post_raw(body.to_string(), &[("x-vapi-secret", SECRET)]).await
    }

    /// Delivers `body` with the shared secret; the status and the JSON answer.
    pub async fn deliver_json(&self, body: &str) -> (StatusCode, Value) {
        json_answer(self.post(body.to_string(), &[("x-vapi-secret", SECRET)]).await).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("the relay answers")
    }

    /// The Prometheus text of /metrics.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(self.admin_url("/metrics")).send().await.expect("the relay answers");
        response.text().await.expect("metrics body")
    }

    /// Sum of `voxanne_relay_db_retries_total` over its labels: the transient failures the
    /// relay retried on the sender's behalf.
    pub async fn db_retries(&self) -> u64 {
        metric_sum(&self.metrics().await, crate::metrics::DB_RETRIES)
    }

    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the server to finish (after [`signal_shutdown`](Self::signal_shutdown)).
    pub async fn join(&mut self) -> std::io::Result<()> {
        let Some(finished) = self.finished.take() else { return Ok(()) };
        let result = finished.await.expect("the relay's thread did not panic");
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the relay's thread did not panic");
        }
        result
    }

    /// Signals shutdown and waits (at most 30 s) for the server to finish.
    pub async fn stop(mut self) {
        self.signal_shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.join()).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.signal_shutdown();
    }
}

/// The status and the JSON body of `response`; panics when the body is not JSON.
pub async fn json_answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON answer, got {status} {text:?}"));
    (status, json)
}

/// Sum of every sample of `name` in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A stand-in for the app behind the relay: an HTTP server on 127.0.0.1 that records every
/// request it gets and answers each as told. It runs on the test's runtime.
pub struct FakeUpstream {
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

/// One request the fake upstream got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: axum::http::HeaderMap,
    pub body: axum::body::Bytes,
}

/// How the fake upstream answers.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// This status, content type (none: no header) and body, at once.
    Answer { status: u16, content_type: Option<&'static str>, body: Vec<u8> },
    /// A 200 `{}` after this long.
    Sleep(Duration),
}

impl FakeUpstream {
    pub async fn start(behaviour: Behaviour) -> FakeUpstream {
        use axum::http::{header, HeaderMap, StatusCode};
        use axum::response::IntoResponse;

        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = received.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (log, behaviour) = (log.clone(), behaviour.clone());
            async move {
                log.lock().unwrap().push(Received { headers, body });
                match behaviour {
                    Behaviour::Answer { status, content_type, body } => {
                        let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
                        response.headers_mut().remove(header::CONTENT_TYPE);
                        if let Some(content_type) = content_type {
                            response.headers_mut().insert(header::CONTENT_TYPE, content_type.parse().unwrap());
                        }
                        response
                    }
                    Behaviour::Sleep(pause) => {
                        tokio::time::sleep(pause).await;
                        "{}".into_response()
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake upstream");
        let url = format!("http://{}/vapi", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeUpstream { url, received, server }
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A stand-in for Vapi's API as `voxanne-relay reconcile` uses it: `GET /call/{id}` answers the
/// call object it holds (built by the test from the SDK's `Call` type), 404 for another id, and
/// 401 without `Authorization: Bearer <key>`. Each id can first fail with the statuses of its
/// script (429 with `Retry-After: 0`, or any 5xx), one per request. It runs on the test's runtime.
pub struct FakeVapiApi {
    pub url: String,
    state: std::sync::Arc<std::sync::Mutex<FakeVapiState>>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct FakeVapiState {
    calls: std::collections::HashMap<String, Value>,
    failures: std::collections::HashMap<String, std::collections::VecDeque<u16>>,
    requests: Vec<String>,
}

impl FakeVapiApi {
    pub async fn start(key: &str) -> FakeVapiApi {
        use axum::extract::Path;
        use axum::http::{header, HeaderMap, StatusCode};
        use axum::response::IntoResponse;

        let state = std::sync::Arc::new(std::sync::Mutex::new(FakeVapiState::default()));
        let shared = state.clone();
        let expected = format!("Bearer {key}");
        let app = axum::Router::new().route(
            "/call/{id}",
            axum::routing::get(move |Path(id): Path<String>, headers: HeaderMap| {
                let (state, expected) = (shared.clone(), expected.clone());
                async move {
                    let mut state = state.lock().unwrap();
                    state.requests.push(id.clone());
                    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
                        return (StatusCode::UNAUTHORIZED, r#"{"message":"Invalid API key"}"#).into_response();
                    }
                    if let Some(status) = state.failures.get_mut(&id).and_then(|script| script.pop_front()) {
                        let mut response = (StatusCode::from_u16(status).unwrap(), "{}").into_response();
                        response.headers_mut().insert(header::RETRY_AFTER, "0".parse().unwrap());
                        return response;
                    }
                    match state.calls.get(&id) {
                        Some(call) => axum::Json(call.clone()).into_response(),
                        None => (StatusCode::NOT_FOUND, r#"{"message":"Not Found"}"#).into_response(),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake Vapi API");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeVapiApi { url, state, server }
    }

    /// Serves `call` (its `id`) from now on, after failing with `failures` first.
    pub fn serve(&self, call: Value, failures: &[u16]) {
        let id = call["id"].as_str().expect("a call object has an id").to_string();
        let mut state = self.state.lock().unwrap();
        state.failures.insert(id.clone(), failures.iter().copied().collect());
        state.calls.insert(id, call);
    }

    /// The ids asked for so far, a request each.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeVapiApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A free port on 127.0.0.1 for a server a test starts (and may stop and start again): one
/// below the kernel's usual ephemeral range (32768-60999), so that no outgoing connection can
/// hold it as its source port while the server is down. Probed from a place that differs per
/// process and call, so parallel tests rarely try the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(61) % SPAN;
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = (LOW + (start + step * 7) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN)
}

/// A URL on 127.0.0.1 where nothing listens: connecting is refused.
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/vapi")
}

/// A request body of `len` bytes of `fill`, handed out in chunks of `chunk` bytes, that counts
/// how many bytes its reader pulled. With [`stall_after`](Self::stall_after), it stops handing
/// out bytes after that many (and never ends): a reader that needs the whole body waits forever.
/// Its size hint is exact, so a client declares `Content-Length: len`, unless
/// [`without_length`](Self::without_length).
pub struct CountingBody {
    left: usize,
    chunk: usize,
    fill: u8,
    stall_after: Option<usize>,
    no_length: bool,
    pulled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingBody {
    pub fn new(len: usize, chunk: usize, fill: u8) -> Self {
        Self { left: len, chunk, fill, stall_after: None, no_length: false, pulled: Default::default() }
    }

    /// No size hint: a client sends it chunked, without `Content-Length`.
    pub fn without_length(mut self) -> Self {
        self.no_length = true;
        self
    }

    pub fn stall_after(mut self, bytes: usize) -> Self {
        self.stall_after = Some(bytes);
        self
    }

    /// Reads the count of bytes pulled, after the body has been handed away.
    pub fn counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        self.pulled.clone()
    }
}

impl http_body::Body for CountingBody {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::sync::atomic::Ordering;
        use std::task::Poll;

        let pulled = self.pulled.load(Ordering::SeqCst);
        if self.stall_after.is_some_and(|at| pulled >= at) {
            // never woken: the reader waits for ever
            return Poll::Pending;
        }
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.chunk.min(self.left);
        self.left -= n;
        self.pulled.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Some(Ok(http_body::Frame::data(vec![self.fill; n].into()))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.no_length {
            http_body::SizeHint::default()
        } else {
            http_body::SizeHint::with_exact(self.left as u64)
        }
    }
}
