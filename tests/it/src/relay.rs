//! voxanne-relay for the suite, two ways:
//!
//! - [`Relay`]: served in this process on an ephemeral port — the relay's own harness
//!   (`voxanne_relay::testing`, as the relay's integration tests use it) — for storms, races,
//!   fuzzing, attacks and the postmaster crash test;
//! - [`ChildRelay`]: a separate process that can be SIGKILLed. It runs the binary
//!   `voxanne-it-relay` (tests/it/src/bin/voxanne-it-relay.rs: the relay binary's own startup,
//!   `voxanne_relay::run`, minus log setup), which cargo builds with this package's tests and
//!   hands to them as `CARGO_BIN_EXE_voxanne-it-relay`, so no nested `cargo build` is needed.
//!   `VOXANNE_RELAY_BIN=target/debug/voxanne-relay` runs the real binary instead.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use voxanne_relay::testing::{http_client, metric_sum, Relay, HMAC_KEY, SECRET};

pub use voxanne_relay::testing::free_port;

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
            // the suites check that every answer names its own org
            .args(["--answer-tenant-ids", "true"])
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

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL the process and reap it: it must have died of that signal.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill sends SIGKILL on Unix
            child.kill().expect("SIGKILL the relay");
            let status = child.wait().expect("reap the relay");
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "the relay did not die of SIGKILL: {status}");
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
