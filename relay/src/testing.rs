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

/// A relay configuration for tests: `db_url`, the shared secret, a small pool, an ephemeral
/// port. `extra` flags are added, and replace the defaults they name.
pub fn config(db_url: &str, extra: &[&str]) -> Config {
    let defaults =
        [("--database-url", db_url), ("--webhook-secrets", SECRET), ("--listen", "127.0.0.1:0"), ("--pool-size", "4")];
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
        let state = AppState::from_config(&config).expect("pool builds");
        let listener = std::net::TcpListener::bind(config.listen).expect("bind");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let (done, finished) = oneshot::channel();
        let runtime = crate::runtime(&config).expect("the relay's runtime");
        let serving = state.clone();
        let thread = std::thread::spawn(move || {
            let result = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                crate::serve(listener, serving, async {
                    let _ = rx.await;
                })
                .await
            });
            let _ = done.send(result);
        });
        Relay {
            base: format!("http://{addr}"),
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
        self.get("/metrics").await.text().await.expect("metrics body")
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
