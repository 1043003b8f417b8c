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

/// Run a statement returning one jsonb (a call function) and return it.
pub fn call(sql: &str, args: &[DatumWithOid<'_>]) -> serde_json::Value {
    Spi::get_one_with_args::<JsonB>(sql, args).unwrap().expect("function returned NULL").0
}

pub fn count(sql: &str, args: &[DatumWithOid<'_>]) -> i64 {
    Spi::get_one_with_args::<i64>(sql, args).unwrap().unwrap()
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

/// The Supabase API roles, created inside the test transaction if the cluster lacks them, and
/// granted exactly as at install time.
pub fn api_roles() {
    Spi::run(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN; END IF;
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'service_role') THEN CREATE ROLE service_role NOLOGIN BYPASSRLS; END IF;
         END $$;
         SELECT voxanne.grant_api_roles();",
    )
    .unwrap();
}
