//! voxanne-relay for the suite, two ways:
//!
//! - [`Relay`]: served in this process on an ephemeral port (`voxanne_relay::serve`, as the
//!   relay's own integration tests do) — for storms, races, fuzzing, attacks and the postmaster
//!   crash test;
//! - [`ChildRelay`]: a separate process that can be SIGKILLed. It runs the binary
//!   `voxanne-it-relay` (tests/it/src/bin/voxanne-it-relay.rs: `voxanne_relay::serve` with the
//!   relay's own flags, minus log setup), which cargo builds with this package's tests and
//!   hands to them as `CARGO_BIN_EXE_voxanne-it-relay`, so no nested `cargo build` is needed.
//!   `VOXANNE_RELAY_BIN=target/debug/voxanne-relay` runs the real binary instead.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use reqwest::StatusCode;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use voxanne_relay::{AppState, Config};

pub const SECRET: &str = "it-suite-secret";
pub const HMAC_KEY: &str = "it-suite-hmac-key";

/// A relay configuration: `db_url`, the suite's shared secret, an ephemeral port; `extra`
/// flags are added, and replace the defaults they name.
pub fn config(db_url: &str, extra: &[&str]) -> Config {
    let defaults =
        [("--database-url", db_url), ("--webhook-secrets", SECRET), ("--listen", "127.0.0.1:0"), ("--pool-size", "8")];
    let mut argv = vec!["voxanne-relay"];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            argv.extend([flag, value]);
        }
    }
    argv.extend_from_slice(extra);
    let config = Config::try_parse_from(argv).expect("relay flags parse");
    config.validate().expect("relay config is valid");
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

/// A relay served by this process.
pub struct Relay {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Relay {
    pub async fn start(db_url: &str, extra: &[&str]) -> Relay {
        let config = config(db_url, extra);
        let state = AppState::from_config(&config).expect("pool builds");
        let listener = tokio::net::TcpListener::bind(config.listen).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(voxanne_relay::serve(listener, state.clone(), async {
            let _ = rx.await;
        }));
        Relay { base: format!("http://{addr}"), http: http_client(128), state, shutdown: Some(tx), task: Some(task) }
    }

    pub fn webhook_url(&self) -> String {
        format!("{}/vapi/webhook", self.base)
    }

    /// POST raw bytes to the webhook with the given headers; the status and the body text.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> (StatusCode, String) {
        let mut request = self.http.post(self.webhook_url()).header("content-type", "application/json").body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("the relay answers");
        let status = response.status();
        (status, response.text().await.expect("a response body"))
    }

    /// Deliver `body` with the shared secret.
    pub async fn deliver(&self, body: &str) -> (StatusCode, String) {
        self.post_raw(body.to_string(), &[("x-vapi-secret", SECRET)]).await
    }

    /// The Prometheus text of /metrics.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Sum of `voxanne_relay_db_retries_total` over its labels: the transient failures the
    /// relay retried on the sender's behalf.
    pub async fn db_retries(&self) -> u64 {
        metric_sum(&self.metrics().await, "voxanne_relay_db_retries_total")
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Sum of every sample of `name` in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().unwrap().port()
}

/// The relay in a child process, killable with SIGKILL.
pub struct ChildRelay {
    child: Option<Child>,
    exe: String,
    db_url: String,
    extra: Vec<String>,
    pub port: u16,
    pub base: String,
    pub starts: usize,
}

impl ChildRelay {
    /// `exe` is `env!("CARGO_BIN_EXE_voxanne-it-relay")` of the calling test, unless
    /// `VOXANNE_RELAY_BIN` names another binary with the relay's flags.
    pub fn spawn(exe: &str, db_url: &str, extra: &[&str]) -> Self {
        let exe = std::env::var("VOXANNE_RELAY_BIN").unwrap_or_else(|_| exe.to_string());
        let port = free_port();
        let mut me = Self {
            child: None,
            exe,
            db_url: db_url.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            port,
            base: format!("http://127.0.0.1:{port}"),
            starts: 0,
        };
        me.start();
        me
    }

    /// (Re)start the process on the same port.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the relay is already running");
        let mut cmd = Command::new(&self.exe);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .arg("--database-url")
            .arg(&self.db_url)
            .arg("--webhook-secrets")
            .arg(SECRET)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", self.exe)));
        self.starts += 1;
    }

    /// Wait (bounded) until /healthz answers.
    pub async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the relay exited: {status}");
            }
            assert!(Instant::now() < deadline, "the relay did not start within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL the process and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill sends SIGKILL on Unix
            child.kill().expect("SIGKILL the relay");
            let status = child.wait().expect("reap the relay");
            assert!(!status.success(), "a SIGKILLed relay exited successfully");
        }
    }

    pub fn webhook_url(&self) -> String {
        format!("{}/vapi/webhook", self.base)
    }
}

impl Drop for ChildRelay {
    fn drop(&mut self) {
        self.kill9();
    }
}
