//! Shared by the integration tests: the relay harness (`voxanne_relay::testing`) on the test
//! database, a direct database connection for setup and assertions, and Vapi message builders.
//!
//! The tests need `VOXANNE_DATABASE_URL` (libpq form) naming a database with the real
//! `voxanne_ext` installed. Every test makes its own org, assistant and call ids, so tests can
//! share the database with each other and with other suites.

// each test crate uses a part of this module
#![allow(dead_code, unused_imports)]

use serde_json::{json, Value};
use uuid::Uuid;
pub use voxanne_relay::testing::{json_answer as answer, Relay, SECRET};

pub fn database_url() -> String {
    std::env::var("VOXANNE_DATABASE_URL").expect(
        "set VOXANNE_DATABASE_URL to a libpq connection string for a database with voxanne_ext, \
         e.g. 'host=127.0.0.1 port=54330 user=postgres dbname=voxanne_test'",
    )
}

/// The database the test relays use: `VOXANNE_RELAY_TEST_DATABASE_URL` when set (bin/test
/// points it at a PgBouncer in front of the test database, with `VOXANNE_RELAY_TEST_POOLER`),
/// else the test database itself. Setup and assertions always go direct ([`db`]).
pub fn relay_database_url() -> String {
    std::env::var("VOXANNE_RELAY_TEST_DATABASE_URL").unwrap_or_else(|_| database_url())
}

/// A relay on [`relay_database_url`] (`voxanne_relay::testing::config` plus `extra` flags).
pub async fn start_relay(extra: &[&str]) -> Relay {
    Relay::start(&relay_database_url(), extra).await
}

/// A direct connection for setup and assertions.
pub async fn db() -> tokio_postgres::Client {
    db_at(&database_url()).await
}

/// A plain connection to `url` (a test's own cluster, on its Unix socket).
pub async fn db_at(url: &str) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap_or_else(|e| panic!("{url} reachable: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The system PostgreSQL's binaries (`VOXANNE_PG_BIN`, as bin/lib.sh).
pub fn pg_bin(program: &str) -> String {
    let dir = std::env::var("VOXANNE_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    format!("{dir}/{program}")
}

/// A port for a test's own server: one below the kernel's ephemeral range (32768-60999) that is
/// free when asked. A port in that range may be taken as the source port of any outgoing
/// connection of the suite while the server is down, and the server then cannot bind it again.
pub fn free_port() -> u16 {
    voxanne_relay::testing::free_port()
}

/// Runs `argv` as the `postgres` user (PostgreSQL and PgBouncer refuse root), as bin/lib.sh's
/// `as_postgres`; panics with its output when it fails.
pub fn as_postgres(argv: &[&str]) -> String {
    let output = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(argv)
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{argv:?} failed: {text}");
    text
}

/// A directory of the test's own under the temp dir, owned by `postgres` (whose servers keep
/// their files there); removed on drop.
pub struct Scratch {
    pub path: std::path::PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("voxanne-relay-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the scratch directory");
        let status = std::process::Command::new("chown").arg("postgres:").arg(&path).status();
        assert!(status.is_ok_and(|s| s.success()), "chown postgres: {}", path.display());
        Scratch { path }
    }

    /// `file` in the directory, as a string (for command lines and configuration files).
    pub fn file(&self, file: &str) -> String {
        self.path.join(file).to_str().expect("a UTF-8 temp dir").to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A PostgreSQL cluster of the test's own on `port` (what a test stops, kills or reconfigures
/// without touching the shared test database), in a [`Scratch`] directory; stopped on drop.
pub struct Cluster {
    pub dir: Scratch,
    pub port: u16,
}

/// The roles the extension grants to (bin/lib.sh `create_roles`, the ones it needs), and the
/// extension.
pub const ROLES_AND_EXTENSION: &str = "CREATE ROLE anon NOLOGIN NOINHERIT; \
    CREATE ROLE authenticated NOLOGIN NOINHERIT; CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS; \
    CREATE EXTENSION voxanne_ext";

impl Cluster {
    /// initdb in `dir` (trust auth), with `conf` added to postgresql.conf and, when given,
    /// `hba` as pg_hba.conf; not started.
    pub fn init(dir: Scratch, port: u16, conf: &str, hba: Option<&str>) -> Cluster {
        let data = dir.file("data");
        as_postgres(&[&pg_bin("initdb"), "-D", &data, "-U", "postgres", "-E", "UTF8", "--auth=trust"]);
        if let Some(hba) = hba {
            std::fs::write(dir.path.join("data/pg_hba.conf"), hba).unwrap();
        }
        let mut postgresql_conf = std::fs::read_to_string(dir.path.join("data/postgresql.conf")).unwrap();
        postgresql_conf.push_str(&format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n{conf}\n",
            dir.path.display()
        ));
        std::fs::write(dir.path.join("data/postgresql.conf"), postgresql_conf).unwrap();
        Cluster { dir, port }
    }

    pub fn start(&self) {
        let (data, log) = (self.dir.file("data"), self.dir.file("postgres.log"));
        let output = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", &pg_bin("pg_ctl"), "-D", &data, "-l", &log, "-w", "start"])
            .output()
            .expect("run pg_ctl");
        assert!(
            output.status.success(),
            "pg_ctl start on port {}: {}\nserver log:\n{}",
            self.port,
            String::from_utf8_lossy(&output.stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `pg_ctl stop -m <mode>`: `immediate` is a crash (no checkpoint), `fast` a clean stop.
    pub fn stop(&self, mode: &str) {
        as_postgres(&[&pg_bin("pg_ctl"), "-D", &self.dir.file("data"), "-m", mode, "-w", "stop"]);
    }

    /// The superuser's plain connection to `dbname`, over the Unix socket.
    pub async fn admin(&self, dbname: &str) -> tokio_postgres::Client {
        db_at(&format!("host={} port={} user=postgres dbname={dbname}", self.dir.path.display(), self.port)).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", &pg_bin("pg_ctl"), "-D", &self.dir.file("data"), "-m", "immediate", "stop"])
            .output();
    }
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

/// The `call` object of a message.
pub fn call(assistant: &str, call_id: &str) -> Value {
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

/// Holds a row lock on the tenant's agent, which the first insert of a call waits for (its
/// foreign key check takes a KEY SHARE lock), so a delivery stays in flight until released.
pub async fn block_calls_of<'a>(db: &'a mut tokio_postgres::Client, t: &Tenant) -> tokio_postgres::Transaction<'a> {
    let tx = db.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM voxanne.agents WHERE org_id = $1::text::uuid FOR UPDATE", &[&t.org]).await.unwrap();
    tx
}

/// Delivers a new call's first message while its agent is locked, on a relay whose statement
/// timeout is well under 3 s: 57014 is a slow moment, not bad input, so the relay retries once,
/// then answers 503 for the sender to redeliver, and nothing is written. Returns the call id.
pub async fn assert_a_blocked_delivery_times_out(relay: &Relay, db: &tokio_postgres::Client, t: &Tenant) -> String {
    let mut locker = self::db().await;
    let tx = block_calls_of(&mut locker, t).await;
    let call = new_call_id();
    let started = std::time::Instant::now();
    let (status, json) = relay.deliver_json(&status_update(&t.assistant, &call, "ringing")).await;
    let elapsed = started.elapsed();
    tx.rollback().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["code"], "57014", "{json}");
    assert!(elapsed < std::time::Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(calls(db, &call).await, 0);
    call
}
