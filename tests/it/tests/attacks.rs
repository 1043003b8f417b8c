//! The cross-tenant attack matrix (docs/SECURITY.md lists every row with the test here that
//! shows it fails). Each test counts the attacks it tried and every leak it found: a row of
//! another org seen, changed or created, a function that ran for a role that must not run it,
//! a hijacked object that got executed, an injection string not stored verbatim, a stale or
//! forged signature accepted.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use uuid::Uuid;
use voxanne_it::figures::Figures;
use voxanne_it::fuzz::SQL_INJECTIONS;
use voxanne_it::relay::{Relay, HMAC_KEY, SECRET};
use voxanne_it::vapi::{self, Kind, Message, T0_MS};
use voxanne_it::*;

fn db_url() -> String {
    std::env::var("VOXANNE_DATABASE_URL").expect("VOXANNE_DATABASE_URL")
}

async fn deliver(db: &Client, body: &str) -> Result<Value, tokio_postgres::Error> {
    Ok(db.query_one(vapi::HANDLE_VAPI_MESSAGE, &[&body, &vapi::PLATFORM]).await?.get(0))
}

/// A whole call of `org`, delivered serially.
async fn full_call(db: &Client, org: &Org, call: &str, start: i64) -> Vec<Message> {
    let script = vapi::call_script(0, call, start);
    for m in &script {
        deliver(db, &m.body(&org.assistant_id)).await.unwrap_or_else(|e| panic!("{}: {}", m.label(), describe(&e)));
    }
    script
}

/// Row counts of every tenant table for `org`.
async fn footprint(db: &Client, org: Uuid) -> BTreeMap<&'static str, i64> {
    let mut out = BTreeMap::new();
    for t in ["agents", "calls", "call_transcripts", "processed_webhook_events", "outbox", "rejected_events", "leads"] {
        let n = count(db, &format!("SELECT count(*) FROM voxanne.{t} WHERE org_id = $1"), &[&org]).await;
        out.insert(t, n);
    }
    out
}

/// Check that `org`'s state and row counts are what they were.
async fn unchanged(
    db: &Client,
    org: &Org,
    before: &(BTreeMap<String, Value>, BTreeMap<&'static str, i64>),
    what: &str,
    figures: &mut Figures,
) {
    let state = vapi::org_state(db, org.id).await;
    for d in vapi::state_diff(&state, &before.0, 5) {
        figures.violation("leaks", format!("{what}: the victim org changed: {d}"));
    }
    let now = footprint(db, org.id).await;
    if now != before.1 {
        figures.violation("leaks", format!("{what}: the victim org's rows changed: {:?} -> {now:?}", before.1));
    }
    figures.checks += 1;
}

async fn snapshot(db: &Client, org: &Org) -> (BTreeMap<String, Value>, BTreeMap<&'static str, i64>) {
    (vapi::org_state(db, org.id).await, footprint(db, org.id).await)
}

// ---------------------------------------------------------------------------------------------

/// Two orgs whose calls carry the SAME vapi call id: two independent calls, each org's messages
/// only ever touch its own row, lines, ledger and outbox.
#[tokio::test]
async fn same_vapi_call_id_in_two_orgs_stays_two_separate_calls() {
    let mut figures = Figures::new("attacks/same vapi_call_id under two orgs");
    let db = connect().await;
    let (a, b) = (Org::create(&db).await, Org::create(&db).await);
    let call = unique("shared_call");
    // B first, then A's messages one by one: after each, B must be exactly as before
    full_call(&db, &b, &call, T0_MS).await;
    let before = snapshot(&db, &b).await;
    for m in vapi::call_script(0, &call, T0_MS + 7_000) {
        let out = deliver(&db, &m.body(&a.assistant_id)).await.expect("A's message");
        figures.attacks += 1;
        if out.get("org_id").and_then(Value::as_str) != Some(a.id.to_string().as_str()) && out.get("ignored").is_none()
        {
            figures.violation("leaks", format!("{}: answered for another org: {out}", m.label()));
        }
        unchanged(&db, &b, &before, &m.label(), &mut figures).await;
    }
    // and both calls are complete and distinct
    let ids = count(
        &db,
        "SELECT count(DISTINCT id) FROM voxanne.calls WHERE vapi_call_id = $1 AND org_id IN ($2, $3)",
        &[&call, &a.id, &b.id],
    )
    .await;
    assert_eq!(ids, 2, "two call rows");
    for (org, start) in [(&a, T0_MS + 7_000), (&b, T0_MS)] {
        let v = vapi::verify(&db, std::slice::from_ref(org), &vapi::call_script(0, &call, start), &|_| true).await;
        for p in v.partial.iter().chain(v.doubled.iter()).chain(v.lost.iter()).chain(v.leaks.iter()) {
            figures.violation("leaks", format!("org {}: {p}", org.id));
        }
    }
    figures.finish();
}

/// Org A's assistant sends every kind of message for org B's call id (SQL functions and
/// webhooks, with B's ids sprinkled everywhere else in the body): A gets its own call, B's call
/// is untouched.
#[tokio::test]
async fn org_a_assistant_cannot_touch_org_b_call_whatever_ids_the_body_carries() {
    let mut figures = Figures::new("attacks/org A's assistant vs org B's call");
    let db = connect().await;
    let (a, b) = (Org::create(&db).await, Org::create(&db).await);
    let b_phone = unique("pn_b");
    db.execute(
        "SELECT voxanne.upsert_agent(p_org_id => $1, p_vapi_assistant_id => $2, p_vapi_phone_number_id => $3)",
        &[&b.id, &b.assistant_id, &b_phone],
    )
    .await
    .unwrap();
    let call = unique("victim_call");
    full_call(&db, &b, &call, T0_MS).await;
    let before = snapshot(&db, &b).await;

    // the typed SQL API: only the assistant decides the org
    let r = Report::for_call(&call);
    let sql_attacks = [
        ("create_inbound_call", a.status(&call, "forwarding", at(500))),
        ("record_transcript", a.transcript(&call, "user", "hello from A", at(501))),
        ("complete_call (report)", a.report(&call, &r)),
        ("complete_call (status ended)", a.status_ended(&call, "hijacked")),
    ];
    for (what, msg) in sql_attacks {
        figures.attacks += 1;
        match msg.outcome(&db).await {
            Ok(o) if o.org_id == a.id => {}
            Ok(o) => figures.violation("leaks", format!("{what}: answered for org {}", o.org_id)),
            Err(e) => figures.violation("errors", format!("{what}: {}", describe(&e))),
        }
        unchanged(&db, &b, &before, what, &mut figures).await;
    }

    // webhooks: A's assistant id with B's org id, B's assistant and B's phone number elsewhere
    let b_org = b.id.to_string();
    let bodies = [
        json!({"message": {"type": "status-update", "status": "forwarding", "timestamp": T0_MS + 90_000,
            "orgId": b_org, "org_id": b_org, "assistant": {"id": b.assistant_id},
            "call": {"id": call, "assistantId": a.assistant_id, "orgId": b_org, "phoneNumberId": b_phone}}}),
        json!({"message": {"type": "transcript", "role": "assistant", "transcriptType": "final", "transcript": "A speaking",
            "timestamp": T0_MS + 90_001, "org_id": b_org,
            "call": {"id": call, "assistantId": a.assistant_id, "phoneNumberId": b_phone}}}),
        json!({"message": {"type": "end-of-call-report", "endedReason": "hijacked", "summary": "overwritten by A",
            "timestamp": T0_MS + 90_002, "assistant": {"id": b.assistant_id},
            "call": {"id": call, "assistantId": a.assistant_id, "orgId": b_org}}}),
        json!({"message": {"type": "status-update", "status": "ended", "endedReason": "hijacked",
            "timestamp": T0_MS + 90_003, "call": {"id": call, "assistantId": a.assistant_id, "phoneNumberId": b_phone}}}),
    ];
    for body in bodies {
        figures.attacks += 1;
        match deliver(&db, &body.to_string()).await {
            Ok(out) if out["org_id"] == a.id.to_string().as_str() => {}
            Ok(out) => figures.violation("leaks", format!("webhook answered {out} for {body}")),
            Err(e) => figures.violation("errors", format!("{body}: {}", describe(&e))),
        }
        unchanged(&db, &b, &before, "webhook with B's ids", &mut figures).await;
    }

    // an assistant active in B cannot be activated in A (no takeover of B's future calls)
    figures.attacks += 1;
    let stolen = db
        .execute("SELECT voxanne.upsert_agent(p_org_id => $1, p_vapi_assistant_id => $2)", &[&a.id, &b.assistant_id])
        .await;
    match stolen {
        Err(e) if e.code().map(|c| c.code()) == Some("23P01") => {}
        other => figures.violation("leaks", format!("activating B's assistant in A: {other:?}")),
    }
    unchanged(&db, &b, &before, "upsert_agent with B's assistant", &mut figures).await;
    figures.finish();
}

/// `authenticated` (as PostgREST runs it: logged in as authenticator, SET LOCAL ROLE, claims in
/// request.jwt.claims) with forged, misplaced, malformed or missing org claims: never a row of
/// the victim org, never a write.
#[tokio::test]
async fn authenticated_with_forged_or_missing_org_claims_sees_and_changes_nothing_of_another_org() {
    let mut figures = Figures::new("attacks/authenticated with forged or missing claims");
    let db = connect().await;
    let (a, b) = (Org::create(&db).await, Org::create(&db).await);
    full_call(&db, &a, &unique("call_a"), T0_MS).await;
    full_call(&db, &b, &unique("call_b"), T0_MS).await;
    // no message writes a lead: plant one in each org, so reading leads has rows to leak
    for (org, phone) in [(&a, "+15550100001"), (&b, "+15550100002")] {
        db.execute("INSERT INTO voxanne.leads (org_id, phone, name) VALUES ($1, $2, 'planted')", &[&org.id, &phone])
            .await
            .unwrap();
    }
    let tables = ["agents", "leads", "calls", "call_transcripts", "outbox"];
    // every table read below holds rows of both orgs, so a leak has something to show
    let mut rows_of_a = BTreeMap::new();
    for table in tables {
        let sql = format!("SELECT count(*) FROM voxanne.{table} WHERE org_id = $1");
        let (in_a, in_b) = (count(&db, &sql, &[&a.id]).await, count(&db, &sql, &[&b.id]).await);
        assert!(in_a > 0 && in_b > 0, "{table}: {in_a} rows of A, {in_b} of B; both must have rows");
        rows_of_a.insert(table, in_a);
    }
    let before = snapshot(&db, &b).await;
    let (ai, bi) = (a.id.to_string(), b.id.to_string());
    let forged: Vec<(String, String)> = vec![
        ("no claims".into(), String::new()),
        ("empty claims".into(), "{}".into()),
        ("org in user_metadata (user-editable)".into(), json!({"user_metadata": {"org_id": bi}}).to_string()),
        ("org at the top level".into(), json!({"org_id": bi, "sub": "x"}).to_string()),
        ("org in a role claim".into(), json!({"role": "service_role", "org_id": bi}).to_string()),
        ("app_metadata as a string".into(), json!({"app_metadata": format!("{{\"org_id\":\"{bi}\"}}")}).to_string()),
        ("org_id as a number".into(), json!({"app_metadata": {"org_id": 42}}).to_string()),
        ("org_id as an array".into(), json!({"app_metadata": {"org_id": [bi]}}).to_string()),
        ("org_id as an object".into(), json!({"app_metadata": {"org_id": {"id": bi}}}).to_string()),
        ("org_id with spaces".into(), json!({"app_metadata": {"org_id": format!(" {bi} ")}}).to_string()),
        ("org_id SQL injection".into(), json!({"app_metadata": {"org_id": format!("{ai}' OR '1'='1")}}).to_string()),
        ("org_id nil uuid".into(), json!({"app_metadata": {"org_id": Uuid::nil().to_string()}}).to_string()),
        (
            "duplicate app_metadata keys".into(),
            format!(r#"{{"app_metadata":{{"org_id":"{ai}"}},"app_metadata":{{"org_id":"{bi}"}}}}"#),
        ),
        ("not JSON".into(), format!("org_id={bi}")),
        ("claims of A (legitimate, must see A only)".into(), json!({"app_metadata": {"org_id": ai}}).to_string()),
    ];
    let api = connect_as("authenticator").await;
    for (what, claims) in &forged {
        // reads: every table the role can see
        for table in tables {
            figures.attacks += 1;
            begin_as(&api, "authenticated", Some(claims)).await;
            // the legacy per-claim setting must not count either
            api.execute("SELECT pg_catalog.set_config('request.jwt.claim.org_id', $1, true)", &[&bi]).await.unwrap();
            let seen = api.query(&format!("SELECT org_id FROM voxanne.{table}"), &[]).await;
            rollback(&api).await;
            match seen {
                Ok(rows) => {
                    let foreign = rows.iter().filter(|r| r.get::<_, Uuid>(0) != a.id).count();
                    let own = rows.len() - foreign;
                    if foreign > 0 {
                        figures.violation("leaks", format!("{what}: {foreign} rows of {table} of another org"));
                    }
                    if own > 0 && !what.starts_with("claims of A") {
                        figures.violation("leaks", format!("{what}: {own} rows of {table} of org A without A's claim"));
                    }
                    if what.starts_with("claims of A") {
                        // the control: the same read with A's own claims sees all of A's rows
                        assert_eq!(own as i64, rows_of_a[table], "{what}: A's rows of {table}");
                    }
                }
                // failing closed is fine: malformed claims are 28000
                Err(e) if e.code().map(|c| c.code()) == Some("28000") => {}
                Err(e) => figures.violation("errors", format!("{what}: reading {table}: {}", describe(&e))),
            }
        }
        // writes: direct DML and the write functions
        let writes = [
            format!(
                "INSERT INTO voxanne.calls (org_id, vapi_call_id, agent_id) VALUES ('{bi}', 'x', '{}')",
                b.agent_id
            ),
            format!("UPDATE voxanne.calls SET summary = 'pwned' WHERE org_id = '{bi}'"),
            format!("DELETE FROM voxanne.call_transcripts WHERE org_id = '{bi}'"),
            format!("INSERT INTO voxanne.outbox (org_id, topic, payload) VALUES ('{bi}', 'x', '{{}}')"),
            format!("SELECT voxanne.create_inbound_call('x', '{}')", b.assistant_id),
            format!("SELECT voxanne.complete_call('x', '{}')", b.assistant_id),
            "SELECT voxanne.handle_vapi_message('{}'::jsonb)".to_string(),
            format!("SELECT voxanne.upsert_agent('{bi}', 'asst_evil')"),
            "SELECT 1 FROM voxanne.processed_webhook_events".to_string(),
            "SELECT 1 FROM voxanne.rejected_events".to_string(),
        ];
        for sql in &writes {
            figures.attacks += 1;
            begin_as(&api, "authenticated", Some(claims)).await;
            let r = api.batch_execute(sql).await;
            rollback(&api).await;
            match r {
                Err(e) if e.code().map(|c| c.code()) == Some("42501") => {}
                other => figures.violation("leaks", format!("{what}: `{sql}` was not refused with 42501: {other:?}")),
            }
        }
    }
    unchanged(&db, &b, &before, "authenticated with forged claims", &mut figures).await;
    figures.finish();
}

/// One of each write function with well-formed arguments, all aimed at `org`: a denied call must
/// fail on privileges, not on its arguments.
fn write_calls(org: &Org) -> Vec<(&'static str, Msg)> {
    let call = unique("call");
    vec![
        ("upsert_agent", Msg::new("upsert_agent").uuid("p_org_id", org.id).text("p_vapi_assistant_id", unique("asst"))),
        ("create_inbound_call", org.ringing(&call)),
        ("record_transcript", org.transcript(&call, "user", "hello", at(1))),
        ("complete_call", org.report(&call, &Report::for_call(&call))),
        ("complete_call (status-update)", org.status_ended(&call, "hangup")),
        ("purge_processed_events", Msg::new("purge_processed_events").interval("p_older_than", "30 days")),
        ("grant_api_roles", Msg::new("grant_api_roles")),
    ]
}

/// THE home of "anon and authenticated cannot execute the write functions" (tests/README.md).
/// The grants, for every routine of schema voxanne in the catalog (so a new one is covered the
/// day it is added): anon may EXECUTE none, authenticated only `current_org_id()`. Then each
/// function called for real, as PostgREST runs a request (login `authenticator`, `SET LOCAL
/// ROLE`, the victim org's claims): with NULL arguments, and once more with well-formed
/// arguments aimed at the victim org. Anon runs none, authenticated runs only
/// `current_org_id()`, every refusal is 42501, and the victim org is unchanged.
#[tokio::test]
async fn anon_and_authenticated_cannot_execute_any_write_function() {
    let mut figures = Figures::new("attacks/anon and authenticated executing functions");
    let db = connect().await;
    let b = Org::create(&db).await;
    let before = snapshot(&db, &b).await;
    let functions: Vec<(String, String)> = db
        .query(
            "SELECT p.proname::text,
                    pg_catalog.string_agg('NULL::' || pg_catalog.format_type(t.oid, NULL), ', ' ORDER BY a.ord)
             FROM pg_catalog.pg_proc p
             JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             LEFT JOIN LATERAL unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(typ, ord) ON true
             LEFT JOIN pg_catalog.pg_type t ON t.oid = a.typ
             WHERE n.nspname = 'voxanne' AND p.prokind = 'f'
             GROUP BY p.oid, p.proname",
            &[],
        )
        .await
        .expect("functions of schema voxanne")
        .iter()
        .map(|r| (r.get(0), r.get::<_, Option<String>>(1).unwrap_or_default()))
        .collect();
    assert!(functions.len() >= 8, "functions: {functions:?}");
    // the grants, every routine of any kind (function, procedure, aggregate)
    for (role, except) in [("anon", ""), ("authenticated", "current_org_id")] {
        figures.checks += 1;
        let executable = db
            .query(
                "SELECT p.oid::pg_catalog.regprocedure::text
                 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                 WHERE n.nspname = 'voxanne' AND p.proname <> $2
                   AND pg_catalog.has_function_privilege($1::pg_catalog.name, p.oid, 'EXECUTE')",
                &[&role, &except],
            )
            .await
            .expect("EXECUTE grants of schema voxanne");
        for r in executable {
            figures.violation("leaks", format!("function {role} may execute: {}", r.get::<_, String>(0)));
        }
    }
    // each function called, with NULL arguments and with well-formed ones
    let api = connect_as("authenticator").await;
    let claims = json!({"app_metadata": {"org_id": b.id.to_string()}}).to_string();
    for role in ["anon", "authenticated"] {
        for (name, args) in &functions {
            figures.attacks += 1;
            begin_as(&api, role, Some(&claims)).await;
            let r = api.batch_execute(&format!("SELECT voxanne.{name}({args})")).await;
            rollback(&api).await;
            let allowed = role == "authenticated" && name == "current_org_id";
            match r {
                Ok(()) if allowed => {}
                Err(e) if !allowed && e.code().map(|c| c.code()) == Some("42501") => {}
                other => figures.violation("leaks", format!("{role} calling voxanne.{name}({args}): {other:?}")),
            }
        }
        for (name, msg) in write_calls(&b) {
            figures.attacks += 1;
            begin_as(&api, role, Some(&claims)).await;
            let r = msg.call(&api).await;
            rollback(&api).await;
            match r {
                Err(e) if e.code().map(|c| c.code()) == Some("42501") => {}
                other => figures.violation("leaks", format!("{role} calling {name} with arguments: {other:?}")),
            }
        }
    }
    figures.note("functions", functions.len() as u64);
    unchanged(&db, &b, &before, "anon/authenticated calls", &mut figures).await;
    figures.finish();
}

/// A malicious same-named operator or function in `public` or in a schema earlier in the
/// caller's search_path, and same-named temporary tables: the SECURITY DEFINER functions pin
/// `search_path = pg_catalog, pg_temp` and qualify every object, so none of it ever runs, and
/// every answer and row is what it would be without the attack. In a private database, with a
/// fresh session (the kept plans are prepared inside the hijacked session).
#[tokio::test]
async fn search_path_hijack_cannot_redirect_the_security_definer_functions() {
    let mut figures = Figures::new("attacks/search_path hijack");
    let admin = connect().await;
    let dbname = format!("vx_attack_{}", Uuid::new_v4().simple());
    admin.batch_execute(&format!("CREATE DATABASE {dbname}")).await.expect("CREATE DATABASE");
    let mut config = config();
    config.dbname(&dbname);
    let owner = connect_to(config.clone()).await;
    owner
        .batch_execute("CREATE EXTENSION voxanne_ext; SELECT voxanne.grant_relay_role('voxanne_relay')")
        .await
        .expect("CREATE EXTENSION");
    let (a, b) = (Org::create(&owner).await, Org::create(&owner).await);
    full_call(&owner, &b, &unique("call_b"), T0_MS).await;
    let before = snapshot(&owner, &b).await;

    // The trap: anything that runs logs itself (as whoever it runs as) and lies.
    let trap = r#"
        CREATE TABLE public.hijack_log (what text, who text DEFAULT current_user, at timestamptz DEFAULT clock_timestamp());
        GRANT INSERT, SELECT ON public.hijack_log TO PUBLIC;
        CREATE SCHEMA evil;
        GRANT USAGE ON SCHEMA evil TO PUBLIC;
        DO $do$
        DECLARE s text;
        BEGIN
          FOREACH s IN ARRAY ARRAY['evil', 'public'] LOOP
            EXECUTE format($f$
              CREATE FUNCTION %1$I.evil_texteq(text, text) RETURNS boolean LANGUAGE plpgsql AS $b$
                BEGIN INSERT INTO public.hijack_log (what) VALUES ('%1$s.=(text,text)'); RETURN true; END $b$;
              CREATE OPERATOR %1$I.= (LEFTARG = text, RIGHTARG = text, FUNCTION = %1$I.evil_texteq);
              CREATE FUNCTION %1$I.evil_uuideq(uuid, uuid) RETURNS boolean LANGUAGE plpgsql AS $b$
                BEGIN INSERT INTO public.hijack_log (what) VALUES ('%1$s.=(uuid,uuid)'); RETURN true; END $b$;
              CREATE OPERATOR %1$I.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = %1$I.evil_uuideq);
              CREATE FUNCTION %1$I.evil_intgt(integer, integer) RETURNS boolean LANGUAGE plpgsql AS $b$
                BEGIN INSERT INTO public.hijack_log (what) VALUES ('%1$s.>(int,int)'); RETURN true; END $b$;
              CREATE OPERATOR %1$I.> (LEFTARG = integer, RIGHTARG = integer, FUNCTION = %1$I.evil_intgt);
              CREATE FUNCTION %1$I.evil_concat(text, text) RETURNS text LANGUAGE plpgsql AS $b$
                BEGIN INSERT INTO public.hijack_log (what) VALUES ('%1$s.||(text,text)'); RETURN 'pwned'; END $b$;
              CREATE OPERATOR %1$I.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = %1$I.evil_concat);
              CREATE FUNCTION %1$I.now() RETURNS timestamptz LANGUAGE plpgsql AS $b$
                BEGIN INSERT INTO public.hijack_log (what) VALUES ('%1$s.now()'); RETURN 'epoch'; END $b$;
              CREATE FUNCTION %1$I.pg_notify(text, text) RETURNS void LANGUAGE plpgsql AS $b$
                BEGIN INSERT INTO public.hijack_log (what) VALUES ('%1$s.pg_notify'); END $b$;
              CREATE FUNCTION %1$I.gen_random_uuid() RETURNS uuid LANGUAGE plpgsql AS $b$
                BEGIN INSERT INTO public.hijack_log (what) VALUES ('%1$s.gen_random_uuid'); RETURN '00000000-0000-0000-0000-000000000000'; END $b$;
              CREATE FUNCTION %1$I.jsonb_build_object(VARIADIC text[]) RETURNS jsonb LANGUAGE plpgsql AS $b$
                BEGIN INSERT INTO public.hijack_log (what) VALUES ('%1$s.jsonb_build_object'); RETURN '{}'; END $b$;
              CREATE FUNCTION %1$I.current_setting(text, boolean) RETURNS text LANGUAGE plpgsql AS $b$
                BEGIN INSERT INTO public.hijack_log (what) VALUES ('%1$s.current_setting'); RETURN NULL; END $b$;
              CREATE FUNCTION %1$I.array_position(text[], text) RETURNS integer LANGUAGE plpgsql AS $b$
                BEGIN INSERT INTO public.hijack_log (what) VALUES ('%1$s.array_position'); RETURN 99; END $b$;
              CREATE FUNCTION %1$I.encode(bytea, text) RETURNS text LANGUAGE plpgsql AS $b$
                BEGIN INSERT INTO public.hijack_log (what) VALUES ('%1$s.encode'); RETURN 'pwned'; END $b$;
              CREATE TABLE %1$I.agents (LIKE voxanne.agents);
              CREATE TABLE %1$I.calls (LIKE voxanne.calls);
              CREATE TABLE %1$I.outbox (LIKE voxanne.outbox);
              CREATE TABLE %1$I.processed_webhook_events (LIKE voxanne.processed_webhook_events);
              CREATE TABLE %1$I.call_transcripts (LIKE voxanne.call_transcripts);
              GRANT ALL ON ALL TABLES IN SCHEMA %1$I TO PUBLIC;
            $f$, s);
          END LOOP;
        END
        $do$;
    "#;
    owner.batch_execute(trap).await.unwrap_or_else(|e| panic!("the trap: {}", describe(&e)));
    // an assistant of A that also routes B's phone number would be caught by "= always true"
    let b_phone = unique("pn_b");
    owner
        .execute(
            "SELECT voxanne.upsert_agent(p_org_id => $1, p_vapi_assistant_id => $2, p_vapi_phone_number_id => $3)",
            &[&b.id, &b.assistant_id, &b_phone],
        )
        .await
        .unwrap();
    let before = (before.0, footprint(&owner, b.id).await);

    let paths = ["evil, public, pg_catalog, pg_temp", "public, pg_catalog", "pg_temp, evil, pg_catalog"];
    for (k, path) in paths.iter().enumerate() {
        for login in ["postgres", "voxanne_relay"] {
            // a fresh backend: no kept plan exists yet
            let mut c = config.clone();
            c.user(login);
            let attacker = connect_to(c).await;
            attacker.batch_execute(&format!("SET search_path = {path}")).await.unwrap();
            attacker
                .batch_execute(
                    // copies of the evil schema's copies: the relay's role may not read voxanne's tables
                    "CREATE TEMP TABLE agents (LIKE evil.agents); CREATE TEMP TABLE calls (LIKE evil.calls);
                     CREATE TEMP TABLE outbox (LIKE evil.outbox); CREATE TEMP TABLE call_transcripts (LIKE evil.call_transcripts);
                     CREATE TEMP TABLE processed_webhook_events (LIKE evil.processed_webhook_events);",
                )
                .await
                .unwrap_or_else(|e| panic!("temp tables: {}", describe(&e)));
            // the trap is live in this session: a plain comparison is hijacked
            let hijacked: bool = attacker.query_one("SELECT 'a'::text = 'b'::text", &[]).await.unwrap().get(0);
            assert!(hijacked, "{path}: the evil operator is not active in the attacker's session");
            owner.batch_execute("TRUNCATE public.hijack_log").await.unwrap();

            let call = format!("hijack_{k}_{login}_{}", Uuid::new_v4().simple());
            let r = Report::for_call(&call);
            // the relay's role may call only what the relay calls (grant_relay_role)
            let relay = login == "voxanne_relay";
            let typed = if relay {
                Vec::new()
            } else {
                vec![
                    ("create_inbound_call", a.ringing(&call)),
                    ("create_inbound_call (forward)", a.status(&call, "in-progress", at(3))),
                    ("record_transcript", a.transcript(&call, "user", "hello", at(4))),
                    ("complete_call", a.report(&call, &r)),
                    ("complete_call (status ended)", a.status_ended(&call, "bye")),
                ]
            };
            for (what, msg) in typed {
                figures.attacks += 1;
                match msg.outcome(&attacker).await {
                    Ok(o) if o.org_id == a.id && o.applied => {}
                    Ok(o) if o.org_id == a.id && what.contains("status ended") => {} // stale after the report
                    other => figures.violation("leaks", format!("{path} as {login}: {what}: {other:?}")),
                }
            }
            let bodies = [
                vapi::status_body(&a.assistant_id, &format!("{call}_w"), "ringing", T0_MS),
                vapi::transcript_body(&a.assistant_id, &format!("{call}_w"), "assistant", "hi", T0_MS + 1),
                vapi::report_body(&a.assistant_id, &format!("{call}_w"), T0_MS),
                // no assistant: routed by phone number, the lookup must match B's number only
                json!({"message": {"type": "status-update", "status": "ringing", "timestamp": T0_MS,
                    "call": {"id": format!("{call}_p"), "phoneNumberId": b_phone}}})
                .to_string(),
            ];
            for (i, body) in bodies.iter().enumerate() {
                figures.attacks += 1;
                let want = if i == 3 { b.id } else { a.id };
                match deliver(&attacker, body).await {
                    Ok(v) if v["org_id"] == want.to_string().as_str() && v["applied"] == true => {}
                    other => figures.violation("leaks", format!("{path} as {login}: webhook {i}: {other:?}")),
                }
            }
            figures.attacks += 1;
            if let Err(e) = attacker
                .query_one("SELECT voxanne.record_rejected_event(p_body => $1, p_sqlstate => '22023')", &[&bodies[0]])
                .await
            {
                figures.violation("errors", format!("{path} as {login}: record_rejected_event: {}", describe(&e)));
            }
            if login == "postgres" {
                figures.attacks += 1;
                if let Err(e) = attacker
                    .batch_execute(&format!("SELECT voxanne.upsert_agent('{}', '{}')", a.id, a.assistant_id))
                    .await
                {
                    figures.violation("errors", format!("{path}: upsert_agent: {}", describe(&e)));
                }
            }
            // nothing of the trap ran, nothing landed in the shadow tables
            let ran: Vec<String> = owner
                .query("SELECT what || ' as ' || who FROM public.hijack_log", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            for r in ran {
                figures.violation("leaks", format!("{path} as {login}: hijacked object ran: {r}"));
            }
            for t in ["agents", "calls", "outbox", "call_transcripts", "processed_webhook_events"] {
                let shadow = count(&attacker, &format!("SELECT (SELECT count(*) FROM pg_temp.{t}) + (SELECT count(*) FROM evil.{t}) + (SELECT count(*) FROM public.{t})"), &[]).await;
                if shadow > 0 {
                    figures.violation("leaks", format!("{path} as {login}: {shadow} rows written to a shadow {t}"));
                }
            }
            // the calls are right: the same as delivering without the trap
            let state = vapi::org_state(&owner, a.id).await;
            let row = state.get(&call).cloned().unwrap_or(Value::Null);
            if relay {
                // its webhooks were checked above, answer by answer
            } else if row["status"] != "ended"
                || row["summary"] != r.summary.as_str()
                || row["lines"].as_array().map(Vec::len) != Some(1)
            {
                figures.violation("leaks", format!("{path} as {login}: the call is not what was sent: {row}"));
            }
            figures.checks += 1;
        }
    }
    // B is untouched except for the one call routed to it by its own phone number
    let b_calls = count(&owner, "SELECT count(*) FROM voxanne.calls WHERE org_id = $1", &[&b.id]).await;
    if b_calls != before.1["calls"] + (paths.len() * 2) as i64 {
        figures.violation("leaks", format!("org B has {b_calls} calls"));
    }
    drop(owner);
    admin.batch_execute(&format!("DROP DATABASE {dbname} WITH (FORCE)")).await.expect("DROP DATABASE");
    figures.finish();
}

async fn connect_to(config: tokio_postgres::Config) -> Client {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// SQL injection strings in every text field — typed API, webhook through
/// `handle_vapi_message`, webhook through the relay — are stored byte for byte, and nothing
/// else in the database changes. Enum fields (status, role, type) refuse them with 22023.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_injection_strings_in_every_text_field_are_stored_verbatim() {
    let mut figures = Figures::new("attacks/SQL injection strings stored verbatim");
    let db = connect().await;
    let relay = Relay::start(&db_url(), &["--pool-size", "2"]).await;
    let bystander = Org::create(&db).await;
    full_call(&db, &bystander, &unique("bystander"), T0_MS).await;
    let before = snapshot(&db, &bystander).await;
    let tables_before = count(&db, "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'voxanne'", &[]).await;
    let run = Uuid::new_v4().simple().to_string();
    let fit = |s: &str, max: usize| -> String {
        let mut end = s.len().min(max);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    };
    for (i, inj) in SQL_INJECTIONS.iter().enumerate() {
        // the injection is the assistant id too (an id of 255 bytes at most)
        let assistant = fit(&format!("{inj}~{run}"), 255);
        let org_id = Uuid::new_v4();
        let phone = fit(&format!("{inj}#pn{run}"), 255);
        db.execute(
            "SELECT voxanne.upsert_agent(p_org_id => $1, p_vapi_assistant_id => $2, p_name => $3, p_vapi_phone_number_id => $4)",
            &[&org_id, &assistant, inj, &phone],
        )
        .await
        .unwrap_or_else(|e| panic!("upsert_agent({inj:?}): {}", describe(&e)));
        let org = Org { id: org_id, assistant_id: assistant.clone(), agent_id: Uuid::nil() };
        let number = fit(inj, 64);
        let url = format!("https://rec.example/{inj}");
        let ended = fit(inj, 255);
        for via in ["sql", "webhook", "relay"] {
            let call = fit(&format!("{inj}|{via}|{i}"), 255);
            figures.attacks += 1;
            let result: Result<(), String> = match via {
                "sql" => {
                    let msgs = [
                        Msg::new("create_inbound_call")
                            .text("p_vapi_call_id", call.clone())
                            .text("p_assistant_id", assistant.clone())
                            .text("p_customer_number", number.clone())
                            .text("p_phone_number_id", phone.clone())
                            .text("p_call_type", ended.clone()),
                        org.transcript(&call, "user", inj, at(i as u64)),
                        Msg::new("complete_call")
                            .text("p_vapi_call_id", call.clone())
                            .text("p_assistant_id", assistant.clone())
                            .text("p_ended_reason", ended.clone())
                            .text("p_summary", *inj)
                            .text("p_transcript", *inj)
                            .text("p_recording_url", url.clone()),
                    ];
                    let mut r = Ok(());
                    for m in msgs {
                        if let Err(e) = m.call(&db).await {
                            r = Err(describe(&e));
                        }
                    }
                    r
                }
                _ => {
                    let call_obj = json!({"id": call, "assistantId": assistant, "type": ended,
                                          "customer": {"number": number}, "phoneNumberId": phone});
                    let bodies = [
                        json!({"message": {"type": "status-update", "status": "ringing", "timestamp": T0_MS, "call": call_obj}}),
                        json!({"message": {"type": "transcript", "role": "user", "transcriptType": "final", "transcript": inj,
                                           "timestamp": at_ms(i as u64), "call": call_obj}}),
                        json!({"message": {"type": "end-of-call-report", "endedReason": ended, "analysis": {"summary": inj},
                                           "artifact": {"transcript": inj, "recordingUrl": url}, "timestamp": T0_MS + 5, "call": call_obj}}),
                    ];
                    let mut r = Ok(());
                    for body in bodies {
                        let body = body.to_string();
                        if via == "webhook" {
                            if let Err(e) = deliver(&db, &body).await {
                                r = Err(describe(&e));
                            }
                        } else {
                            let (status, text) = relay.deliver(&body).await;
                            if status != 200 {
                                r = Err(format!("HTTP {status} {text}"));
                            }
                        }
                    }
                    r
                }
            };
            if let Err(e) = result {
                figures.violation("errors", format!("{via} {inj:?}: {e}"));
                continue;
            }
            let row = db
                .query_one(
                    "SELECT c.vapi_call_id, c.customer_number, c.phone_number_id, c.call_type, c.ended_reason, c.summary,
                            c.transcript, c.recording_url, t.text, a.vapi_assistant_id, a.name
                     FROM voxanne.calls c
                     JOIN voxanne.agents a ON a.org_id = c.org_id AND a.id = c.agent_id
                     JOIN voxanne.call_transcripts t ON t.org_id = c.org_id AND t.call_id = c.id
                     WHERE c.org_id = $1 AND c.vapi_call_id = $2",
                    &[&org_id, &call],
                )
                .await;
            let row = match row {
                Ok(r) => r,
                Err(e) => {
                    figures.violation("lost", format!("{via} {inj:?}: the call is not stored: {}", describe(&e)));
                    continue;
                }
            };
            let want: [(&str, &str); 11] = [
                ("vapi_call_id", &call),
                ("customer_number", &number),
                ("phone_number_id", &phone),
                ("call_type", &ended),
                ("ended_reason", &ended),
                ("summary", inj),
                ("transcript", inj),
                ("recording_url", &url),
                ("line", inj),
                ("assistant", &assistant),
                ("agent name", inj),
            ];
            for (k, (field, value)) in want.iter().enumerate() {
                let got: Option<String> = row.get(k);
                if got.as_deref() != Some(*value) {
                    figures.violation("leaks", format!("{via}: {field} not stored verbatim: {got:?} != {value:?}"));
                }
            }
            figures.checks += 1;
        }
        // enum fields refuse the string, nothing is written
        for (what, msg) in [
            ("p_status", org.status(&format!("enum_{run}_{i}"), inj, at(1))),
            ("p_role", org.transcript(&format!("enum_{run}_{i}"), inj, "x", at(1))),
        ] {
            figures.attacks += 1;
            match msg.call(&db).await {
                Err(e) if e.code().map(|c| c.code()) == Some("22023") => {}
                other => figures.violation("errors", format!("{what} = {inj:?}: {other:?}")),
            }
        }
    }
    let tables_after = count(&db, "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'voxanne'", &[]).await;
    if tables_after != tables_before {
        figures.violation("leaks", format!("schema voxanne had {tables_before} relations, now {tables_after}"));
    }
    unchanged(&db, &bystander, &before, "injection strings", &mut figures).await;
    relay.stop().await;
    figures.finish();
}

fn at_ms(seconds: u64) -> i64 {
    T0_MS + seconds as i64 * 1000
}

fn sign(key: &str, ts: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A signed webhook replayed outside the relay's tolerance window (5 minutes either way), a
/// fresh timestamp on an old signature, a tampered body, a foreign key: all 401, nothing
/// written; a replay inside the window is a harmless duplicate.
#[tokio::test]
async fn replayed_or_forged_signed_webhooks_are_refused_and_write_nothing() {
    let mut figures = Figures::new("attacks/replayed and forged signed webhooks");
    let db = connect().await;
    let relay =
        Relay::start(&db_url(), &["--hmac-secrets", HMAC_KEY, "--hmac-tolerance", "5m", "--pool-size", "2"]).await;
    let org = Org::create(&db).await;
    let call = unique("signed");
    let body = vapi::status_body(&org.assistant_id, &call, "ringing", T0_MS);
    let other = vapi::status_body(&org.assistant_id, &call, "in-progress", T0_MS + 1);
    let rejected_before: i64 =
        db.query_one("SELECT coalesce(max(id), 0) FROM voxanne.rejected_events", &[]).await.unwrap().get(0);

    let post = |ts: String, sig: String, body: String| {
        let relay = &relay;
        async move { relay.post_raw(body, &[("x-timestamp", ts.as_str()), ("x-signature", sig.as_str())]).await }
    };
    // a legitimate delivery, then its replay inside the window: one effect
    let ts = now().to_string();
    let (s1, a1) = post(ts.clone(), sign(HMAC_KEY, &ts, &body), body.clone()).await;
    assert_eq!(s1, 200, "{a1}");
    let (s2, a2) = post(ts.clone(), sign(HMAC_KEY, &ts, &body), body.clone()).await;
    figures.attacks += 1;
    if s2 != 200 || serde_json::from_str::<Value>(&a2).unwrap()["outcome"] != "duplicate" {
        figures.violation("doubled", format!("a replay inside the window: {s2} {a2}"));
    }
    let footprint_before = footprint(&db, org.id).await;

    let old = (now() - 301).to_string();
    let older = (now() - 86_400).to_string();
    // clear of the 5 minute window by a margin, so a slow second cannot let one through
    let future = (now() + 400).to_string();
    let fresh = now().to_string();
    let attacks: Vec<(&str, String, String, String)> = vec![
        ("captured 5 min 1 s ago, replayed", old.clone(), sign(HMAC_KEY, &old, &other), other.clone()),
        ("captured a day ago, replayed", older.clone(), sign(HMAC_KEY, &older, &other), other.clone()),
        ("signed 6 min 40 s in the future", future.clone(), sign(HMAC_KEY, &future, &other), other.clone()),
        ("old signature, fresh x-timestamp", fresh.clone(), sign(HMAC_KEY, &old, &other), other.clone()),
        ("valid signature, tampered body", fresh.clone(), sign(HMAC_KEY, &fresh, &body), other.clone()),
        ("signed with another key", fresh.clone(), sign("not-the-key", &fresh, &other), other.clone()),
        ("empty signature", fresh.clone(), String::new(), other.clone()),
        ("signature of the body without the timestamp", fresh.clone(), sign(HMAC_KEY, "", &other), other.clone()),
        ("negative timestamp", "-1".into(), sign(HMAC_KEY, "-1", &other), other.clone()),
        // milliseconds are read as Vapi may send them, and bound by the same window
        (
            "captured 5 min 1 s ago, in milliseconds",
            ((now() - 301) * 1000).to_string(),
            sign(HMAC_KEY, &((now() - 301) * 1000).to_string(), &other),
            other.clone(),
        ),
        (
            "timestamp with a fraction",
            format!("{fresh}.5"),
            sign(HMAC_KEY, &format!("{fresh}.5"), &other),
            other.clone(),
        ),
    ];
    for (what, ts, sig, body) in attacks {
        figures.attacks += 1;
        let (status, answer) = post(ts, sig, body).await;
        if status != 401 {
            figures.violation("leaks", format!("{what}: answered {status} {answer}"));
        }
    }
    // no header, the wrong shared secret, the secret in the wrong header
    for (what, headers) in [
        ("no credentials", vec![]),
        ("wrong shared secret", vec![("x-vapi-secret", "guess")]),
        ("HMAC key as the shared secret", vec![("x-vapi-secret", HMAC_KEY)]),
        ("shared secret as the signature", vec![("x-timestamp", fresh.as_str()), ("x-signature", SECRET)]),
    ] {
        figures.attacks += 1;
        let (status, answer) = relay.post_raw(other.clone(), &headers).await;
        if status != 401 {
            figures.violation("leaks", format!("{what}: answered {status} {answer}"));
        }
    }
    if footprint(&db, org.id).await != footprint_before {
        figures.violation("leaks", "a refused request wrote rows");
    }
    let rejected: i64 = db
        .query_one("SELECT count(*) FROM voxanne.rejected_events WHERE id > $1", &[&rejected_before])
        .await
        .unwrap()
        .get(0);
    if rejected != 0 {
        figures.violation("leaks", format!("{rejected} refused requests reached the database"));
    }
    relay.stop().await;
    figures.finish();
}

/// Messages for an assistant that is no longer active in an org (moved, or switched off) do not
/// land in the org that had it, and never in no-one's: 42704 (docs/SECURITY.md row 3) and,
/// through the relay, a 422 with a rejected body kept byte for byte under no org.
#[tokio::test]
async fn a_deactivated_or_moved_assistant_no_longer_writes_into_its_old_org() {
    let mut figures = Figures::new("attacks/deactivated or moved assistant");
    let db = connect().await;
    let relay = Relay::start(&db_url(), &["--pool-size", "2"]).await;
    let old = Org::create(&db).await;
    let call = unique("moved");
    full_call(&db, &old, &call, T0_MS).await;
    db.execute("SELECT voxanne.upsert_agent($1, $2, p_active => false)", &[&old.id, &old.assistant_id]).await.unwrap();
    let before = snapshot(&db, &old).await;
    let late = Message {
        org: 0,
        call: call.clone(),
        kind: Kind::Transcript { role: "user", text: "late".into() },
        at_ms: T0_MS + 99_000,
        start_ms: T0_MS,
    };
    let body = late.body(&old.assistant_id);
    figures.attacks += 1;
    match deliver(&db, &body).await {
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {}
        Err(e) => figures.violation("leaks", format!("deactivated assistant: not 42704: {}", describe(&e))),
        Ok(v) => figures.violation("leaks", format!("deactivated assistant: answered {v}")),
    }
    unchanged(&db, &old, &before, "deactivated assistant", &mut figures).await;
    // the same message through the relay: 422 with 42704, and the body kept, labelled with no org
    let rejected_before: i64 =
        db.query_one("SELECT coalesce(max(id), 0) FROM voxanne.rejected_events", &[]).await.unwrap().get(0);
    let (status, answer) = relay.deliver(&body).await;
    let code = serde_json::from_str::<Value>(&answer).ok().and_then(|v| v["code"].as_str().map(str::to_string));
    if status != 422 || code.as_deref() != Some("42704") {
        figures.violation("errors", format!("deactivated assistant through the relay: {status} {answer}"));
    }
    // every rejected body since, byte for byte this one: under no org, its SQLSTATE and labels
    let kept: Vec<String> = db
        .query(
            "SELECT concat_ws(' ', coalesce(org_id::text, '<no org>'), sqlstate, message_type, vapi_call_id,
                              body = $2)
             FROM voxanne.rejected_events WHERE id > $1 AND (body = $2 OR vapi_call_id = $3)",
            &[&rejected_before, &body, &call],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    if kept != [format!("<no org> 42704 transcript {call} t")] {
        figures.violation("lost", format!("deactivated assistant: rejected bodies kept {kept:?}"));
    }
    // (the relay's delivery is in the old org's footprint compared below, after the move)
    // the assistant moves to a new org: its messages go there, the old org is untouched
    let new_org = Uuid::new_v4();
    db.execute("SELECT voxanne.upsert_agent($1, $2)", &[&new_org, &old.assistant_id]).await.unwrap();
    figures.attacks += 1;
    match deliver(&db, &late.body(&old.assistant_id)).await {
        Ok(v) if v["org_id"] == new_org.to_string().as_str() => {}
        other => figures.violation("leaks", format!("moved assistant: {other:?}")),
    }
    unchanged(&db, &old, &before, "moved assistant", &mut figures).await;
    relay.stop().await;
    figures.finish();
}

/// An error raised while the extension's Rust code runs (here: a lock timeout while a transcript
/// message waits for its call's line lock, which another session holds) reaches the client as
/// PostgreSQL's error alone: no Rust backtrace in its DETAIL, even when the server's environment
/// has RUST_BACKTRACE=1 (pgrx attaches one then). The figures say whether the server had it.
#[tokio::test]
async fn an_error_inside_the_extension_reaches_the_client_without_a_rust_backtrace() {
    use sha2::Digest;
    let db = connect().await;
    let org = Org::create(&db).await;
    let mut figures = Figures::new("attacks/errors without a Rust backtrace");
    // the postmaster's environment, which every backend inherits (a backend's own /proc entry
    // is overwritten by its process title)
    let pid: String = db
        .query_one("SELECT pg_catalog.split_part(pg_catalog.pg_read_file('postmaster.pid'), E'\\n', 1)", &[])
        .await
        .unwrap()
        .get(0);
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let with_backtrace = env.split(|b| *b == 0).any(|v| v.starts_with(b"RUST_BACKTRACE=") && v != b"RUST_BACKTRACE=0");
    figures.note("the server's environment has RUST_BACKTRACE", with_backtrace.to_string());
    // another session holds the call's line lock (src/transcript.rs: class 0x766f78, the first
    // 4 bytes of sha256(call id))
    let call = unique("bt");
    let digest = Sha256::digest(call.as_bytes());
    let key = i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let holder = connect().await;
    holder.batch_execute("BEGIN").await.unwrap();
    holder.execute("SELECT pg_catalog.pg_advisory_xact_lock(7761784, $1)", &[&key]).await.unwrap();
    db.batch_execute("SET lock_timeout = '200ms'").await.unwrap();
    let body = json!({"message": {"type": "transcript", "transcriptType": "final", "role": "user",
        "transcript": "hello", "timestamp": 1_795_600_811_700_i64,
        "call": {"id": call, "assistantId": org.assistant_id}}});
    let err = deliver(&db, &body.to_string()).await.expect_err("the line lock is held");
    holder.batch_execute("ROLLBACK").await.unwrap();
    let db_err = err.as_db_error().expect("an error from the server");
    assert_eq!(db_err.code().code(), "55P03", "{db_err:?}");
    let detail = db_err.detail().unwrap_or_default();
    assert!(!detail.contains("pgrx") && !detail.contains("panic") && !detail.contains("0: "), "{detail}");
    // and the message then goes through
    assert_eq!(deliver(&db, &body.to_string()).await.unwrap()["applied"], true);
    figures.checks += 1;
    figures.finish();
}
