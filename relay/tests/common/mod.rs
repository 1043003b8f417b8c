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
