//! Shared by the integration tests: a relay served in-process on an ephemeral port, a direct
//! database connection for setup and assertions, and Vapi message builders.
//!
//! The tests need `VOXANNE_DATABASE_URL` (libpq form) naming a database with the real
//! `voxanne_ext` installed. Every test makes its own org, assistant and call ids, so tests can
//! share the database with each other and with other suites.
#![allow(dead_code)]

use std::time::Duration;

use clap::Parser;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;
use voxanne_relay::{AppState, Config};

pub const SECRET: &str = "test-secret-current";
pub const HMAC_KEY: &str = "test-hmac-key";

pub fn database_url() -> String {
    std::env::var("VOXANNE_DATABASE_URL").expect(
        "set VOXANNE_DATABASE_URL to a libpq connection string for a database with voxanne_ext, \
         e.g. 'host=127.0.0.1 port=54330 user=postgres dbname=voxanne_test'",
    )
}

/// A relay configuration for tests: the test database, one shared secret, a small pool, an
/// ephemeral port. `extra` flags are added (a flag given in `extra` replaces the default).
pub fn config(extra: &[&str]) -> Config {
    let url = database_url();
    let defaults = [
        ("--database-url", url.as_str()),
        ("--webhook-secrets", SECRET),
        ("--listen", "127.0.0.1:0"),
        ("--pool-size", "4"),
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

/// A relay running in this process.
pub struct Relay {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Relay {
    pub async fn start(extra: &[&str]) -> Relay {
        Relay::start_with(config(extra)).await
    }

    pub async fn start_with(config: Config) -> Relay {
        let state = AppState::from_config(&config).expect("pool builds");
        let listener = tokio::net::TcpListener::bind(config.listen).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(voxanne_relay::serve(listener, state.clone(), async {
            let _ = rx.await;
        }));
        Relay {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap(),
            state,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs `body` to the webhook path with the given headers.
    pub async fn post(&self, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request =
            self.http.post(self.url("/vapi/webhook")).header("content-type", "application/json").body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send().await.expect("relay answers")
    }

    /// Delivers `body` with the shared secret; returns the status and the JSON answer.
    pub async fn deliver(&self, body: &str) -> (StatusCode, Value) {
        answer(self.post(body.to_string(), &[("x-vapi-secret", SECRET)]).await).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("relay answers")
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.signal_shutdown();
        self.join().await
    }

    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    pub async fn join(&mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(task) => task.await.expect("server task did not panic"),
            None => Ok(()),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.signal_shutdown();
    }
}

pub async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON answer, got {status} {text:?}"));
    (status, json)
}

/// A direct connection for setup and assertions.
pub async fn db() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await.expect("test database reachable");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

pub async fn count(
    db: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    db.query_one(sql, params).await.expect(sql).get(0)
}

/// Rows in voxanne.calls for a Vapi call id.
pub async fn calls(db: &tokio_postgres::Client, vapi_call_id: &str) -> i64 {
    count(db, "SELECT count(*) FROM voxanne.calls WHERE vapi_call_id = $1", &[&vapi_call_id]).await
}

/// Rows in voxanne.outbox for an org.
pub async fn outbox(db: &tokio_postgres::Client, org: &str) -> i64 {
    count(db, "SELECT count(*) FROM voxanne.outbox WHERE org_id = $1::text::uuid", &[&org]).await
}

/// Rows in voxanne.rejected_events holding exactly this body.
pub async fn rejected(db: &tokio_postgres::Client, body: &str) -> i64 {
    count(db, "SELECT count(*) FROM voxanne.rejected_events WHERE body = $1", &[&body]).await
}

/// A fresh org with one active agent.
pub struct Tenant {
    pub org: String,
    pub assistant: String,
}

pub async fn tenant(db: &tokio_postgres::Client) -> Tenant {
    let org = Uuid::new_v4().to_string();
    let assistant = format!("asst_{}", Uuid::new_v4().simple());
    db.execute(
        "SELECT voxanne.upsert_agent(p_org_id => $1::text::uuid, p_vapi_assistant_id => $2, p_name => 'relay test')",
        &[&org, &assistant],
    )
    .await
    .expect("upsert_agent");
    Tenant { org, assistant }
}

pub fn new_call_id() -> String {
    format!("call_{}", Uuid::new_v4().simple())
}

fn call(assistant: &str, call_id: &str) -> Value {
    json!({
        "id": call_id,
        "assistantId": assistant,
        "type": "inboundPhoneCall",
        "customer": { "number": "+15551234567" },
        "phoneNumberId": "pn_1",
    })
}

pub fn status_update(assistant: &str, call_id: &str, status: &str) -> String {
    json!({ "message": {
        "type": "status-update",
        "status": status,
        "timestamp": 1_732_540_000_000_i64,
        "call": call(assistant, call_id),
    }})
    .to_string()
}

pub fn transcript(assistant: &str, call_id: &str, text: &str) -> String {
    json!({ "message": {
        "type": "transcript",
        "role": "user",
        "transcriptType": "final",
        "transcript": text,
        "timestamp": 1_732_540_001_000_i64,
        "call": call(assistant, call_id),
    }})
    .to_string()
}

pub fn end_of_call_report(assistant: &str, call_id: &str) -> String {
    json!({ "message": {
        "type": "end-of-call-report",
        "endedReason": "customer-ended-call",
        "startedAt": "2026-11-25T10:00:00Z",
        "endedAt": "2026-11-25T10:01:00Z",
        "cost": 0.12,
        "analysis": { "summary": "The caller asked about opening hours." },
        "artifact": { "transcript": "AI: Hello\nUser: hello", "recordingUrl": "https://recordings.example/r.wav" },
        "timestamp": 1_732_540_060_000_i64,
        "call": call(assistant, call_id),
    }})
    .to_string()
}

pub fn message_of_type(kind: &str, assistant: &str, call_id: &str) -> String {
    json!({ "message": {
        "type": kind,
        "status": "started",
        "role": "user",
        "timestamp": 1_732_540_000_500_i64,
        "call": call(assistant, call_id),
    }})
    .to_string()
}
