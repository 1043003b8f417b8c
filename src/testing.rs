//! Helpers for the #[pg_test]s. Everything goes through real SQL inside the test's transaction
//! (rolled back afterwards), the way a client calls the extension.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::JsonB;

/// A fresh org with one active agent for `assistant`; returns the org id as text.
pub fn org_with_agent(assistant: &str) -> String {
    let org: String = Spi::get_one("SELECT pg_catalog.gen_random_uuid()::text").unwrap().unwrap();
    Spi::run_with_args("SELECT voxanne.upsert_agent($1::uuid, $2)", &[org.as_str().into(), assistant.into()]).unwrap();
    org
}

/// Run a statement returning one jsonb (an entry point's answer) and return it.
pub fn json_of(sql: &str, args: &[DatumWithOid<'_>]) -> serde_json::Value {
    Spi::get_one_with_args::<JsonB>(sql, args).unwrap().expect("function returned NULL").0
}

pub fn count(sql: &str, args: &[DatumWithOid<'_>]) -> i64 {
    Spi::get_one_with_args::<i64>(sql, args).unwrap().unwrap()
}

pub fn calls_of(org: &str) -> i64 {
    count("SELECT count(*) FROM voxanne.calls WHERE org_id = $1::uuid", &[org.into()])
}

pub fn outbox_of(org: &str) -> i64 {
    count("SELECT count(*) FROM voxanne.outbox WHERE org_id = $1::uuid", &[org.into()])
}

/// Rows of every voxanne table for one org: the "nothing written" check.
pub fn rows_of_org(org: &str) -> i64 {
    count(
        "SELECT (SELECT count(*) FROM voxanne.calls WHERE org_id = $1::uuid)
              + (SELECT count(*) FROM voxanne.call_transcripts WHERE org_id = $1::uuid)
              + (SELECT count(*) FROM voxanne.processed_webhook_events WHERE org_id = $1::uuid)
              + (SELECT count(*) FROM voxanne.outbox WHERE org_id = $1::uuid)",
        &[org.into()],
    )
}

/// Run `sql` in a subtransaction and return "SQLSTATE message", or "ok". The subtransaction
/// (a plpgsql exception block) is what a client's failed statement looks like: rolled back.
pub fn error_of(sql: &str) -> String {
    Spi::run(
        "CREATE OR REPLACE FUNCTION pg_temp.error_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
         BEGIN
             EXECUTE sql;
             RETURN 'ok';
         EXCEPTION WHEN OTHERS THEN
             RETURN SQLSTATE || ' ' || SQLERRM;
         END $$",
    )
    .unwrap();
    Spi::get_one_with_args::<String>("SELECT pg_temp.error_of($1)", &[sql.into()]).unwrap().unwrap()
}

/// Each (sql, SQLSTATE, text) fails with that SQLSTATE and a message containing the text.
pub fn assert_refused<S: AsRef<str>>(cases: &[(S, &str, &str)]) {
    for (sql, code, names) in cases {
        let sql = sql.as_ref();
        let err = error_of(sql);
        assert!(err.starts_with(code), "{sql}\n  expected {code}, got: {err}");
        assert!(err.contains(names), "{sql}\n  message must name {names}: {err}");
    }
}

/// A Vapi message from tests/fixtures/vapi/.
macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vapi/", $name, ".json"))
    };
}
pub(crate) use fixture;

/// The call id of the fixtures.
pub const FIXTURE_CALL_ID: &str = "2f6d4c1e-0b8a-4d51-9a57-0f3c9e1b7a10";

/// `handle_vapi_message(body)`'s answer.
pub fn handle(body: &str) -> serde_json::Value {
    json_of("SELECT voxanne.handle_vapi_message($1::jsonb)", &[body.into()])
}

/// The fixtures' assistant and phone number, registered to a fresh org.
pub fn fixture_org() -> String {
    let org: String = Spi::get_one("SELECT gen_random_uuid()::text").unwrap().unwrap();
    Spi::run_with_args(
        "SELECT voxanne.upsert_agent($1::uuid, 'asst_fixture', p_vapi_phone_number_id => 'pn_fixture')",
        &[org.as_str().into()],
    )
    .unwrap();
    org
}

/// A call's row, the columns a message can set, '|'-separated (NULLs skipped).
pub fn call_row(org: &str, vapi_call_id: &str) -> String {
    Spi::get_one_with_args(
        "SELECT concat_ws('|', status, call_type, customer_number, phone_number_id, ended_reason,
                          started_at, ended_at, duration_seconds, cost, summary, recording_url,
                          length(transcript))
         FROM voxanne.calls WHERE org_id = $1::uuid AND vapi_call_id = $2",
        &[org.into(), vapi_call_id.into()],
    )
    .unwrap()
    .unwrap()
}
