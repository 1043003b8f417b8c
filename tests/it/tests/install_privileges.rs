//! Privileges as installed by `CREATE EXTENSION` on a cluster whose Supabase roles already
//! existed: `anon` cannot read the tables and `authenticated` cannot write them, `service_role`
//! can call every write function, and `authenticated` reads only its own org's rows (RLS on the
//! JWT's app_metadata.org_id: the home of that behaviour, tests/README.md). That `anon` and
//! `authenticated` cannot call the write functions is proven in one place:
//! attacks.rs `anon_and_authenticated_cannot_execute_any_write_function`.
//!
//! Everything runs as PostgREST does it: logged in as `authenticator`, one transaction per
//! request with `SET LOCAL ROLE` and `request.jwt.claims` set locally.

use std::collections::HashMap;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use uuid::Uuid;
use voxanne_it::*;

fn claims_for(org: Uuid) -> String {
    serde_json::json!({"sub": Uuid::new_v4().to_string(), "role": "authenticated", "app_metadata": {"org_id": org.to_string()}}).to_string()
}

#[tokio::test]
async fn anon_cannot_read_and_authenticated_cannot_write_tables() {
    let api = connect_as("authenticator").await;
    for table in ["agents", "calls", "call_transcripts", "outbox", "processed_webhook_events"] {
        begin_as(&api, "anon", None).await;
        let e = api.query(&format!("SELECT 1 FROM voxanne.{table} LIMIT 1"), &[]).await.expect_err(table);
        rollback(&api).await;
        assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "anon reading {table}: {}", describe(&e));
    }
    let org = Uuid::new_v4();
    let claims = claims_for(org);
    let attempts = [
        ("INSERT INTO voxanne.outbox (org_id, topic, payload) VALUES ($1, 'x', '{}')", "insert outbox"),
        ("UPDATE voxanne.calls SET status = 'ended' WHERE org_id = $1", "update calls"),
        ("DELETE FROM voxanne.call_transcripts WHERE org_id = $1", "delete call_transcripts"),
        ("SELECT 1 FROM voxanne.processed_webhook_events WHERE org_id = $1", "read the ledger"),
    ];
    for (sql, what) in attempts {
        begin_as(&api, "authenticated", Some(&claims)).await;
        let e = api.execute(sql, &[&org]).await.expect_err(what);
        rollback(&api).await;
        assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "authenticated: {what}: {}", describe(&e));
    }
}

#[tokio::test]
async fn service_role_can_call_every_write_function() {
    let db = connect().await;
    let api = connect_as("authenticator").await;
    let org_id = Uuid::new_v4();
    let assistant_id = unique("asst");
    let call = unique("call");
    // The ledger the purge below meets: nothing past its 30-day default but this org's 3 rows of
    // 31 days (and a 29-day row it must keep). Aged rows of earlier tests are purged first; no
    // other test of this file writes any.
    plant_aged_ledger_rows(&db, org_id).await;

    begin_as(&api, "service_role", None).await;
    let who: String = api.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(who, "service_role");
    let agent_id: Uuid = Msg::new("upsert_agent")
        .uuid("p_org_id", org_id)
        .text("p_vapi_assistant_id", assistant_id.clone())
        .text("p_name", "via service_role")
        .call_scalar::<Uuid>(&api)
        .await
        .unwrap_or_else(|e| panic!("upsert_agent: {}", describe(&e)));
    let org = Org { id: org_id, assistant_id, agent_id };
    let r = Report::for_call(&call);
    for (what, msg) in [
        ("create_inbound_call", org.ringing(&call)),
        ("record_transcript", org.transcript(&call, "user", "hello", at(1))),
        ("complete_call", org.report(&call, &r)),
    ] {
        let o = msg.outcome(&api).await.unwrap_or_else(|e| panic!("service_role {what}: {}", describe(&e)));
        assert!(o.applied, "{what}: {:?}", o.raw);
        assert_eq!(o.org_id, org.id);
    }
    let purged: i64 = Msg::new("purge_processed_events")
        .call_scalar(&api)
        .await
        .unwrap_or_else(|e| panic!("purge_processed_events: {}", describe(&e)));
    assert_eq!(purged, 3, "purge_processed_events deletes exactly the three 31-day ledger rows");
    let own: Option<Uuid> = api.query_one("SELECT voxanne.current_org_id()", &[]).await.unwrap().get(0);
    assert_eq!(own, None, "no claims, no org");
    api.batch_execute("COMMIT").await.expect("COMMIT");

    // Re-granting is the owner's business only.
    begin_as(&api, "service_role", None).await;
    let e = api.execute("SELECT voxanne.grant_api_roles()", &[]).await.expect_err("service_role ran grant_api_roles");
    rollback(&api).await;
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{}", describe(&e));

    // Tenant keys are the owner's alone: the service role mints tokens, it never reads a key.
    begin_as(&api, "service_role", None).await;
    let token: String =
        api.query_one("SELECT voxanne.tenant_token($1)", &[&org_id]).await.expect("service_role mints a token").get(0);
    assert!(token.starts_with("vxt1."), "{token}");
    let e = api.query("SELECT key FROM voxanne.tenant_keys", &[]).await.expect_err("service_role read the tenant keys");
    rollback(&api).await;
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{}", describe(&e));

    let rows = call_rows(&db, &org, &call).await;
    assert_eq!(rows, CallRows { calls: 1, outbox: 3, ledger: 2, transcripts: 1 });
    assert_only_the_young_aged_row_is_left(&db, org_id).await;
    let (status, summary): (String, String) = {
        let row = db
            .query_one(
                "SELECT status, summary FROM voxanne.calls WHERE org_id = $1 AND vapi_call_id = $2",
                &[&org.id, &call],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((status.as_str(), summary), ("ended", r.summary));
}

/// org -> rows visible to the current role, for each table.
async fn visible(api: &Client) -> HashMap<&'static str, HashMap<String, i64>> {
    let mut out = HashMap::new();
    for table in ["agents", "calls", "call_transcripts", "outbox"] {
        let sql = format!("SELECT org_id::text, count(*) FROM voxanne.{table} GROUP BY 1");
        out.insert(table, grouped(api, &sql, &[]).await);
    }
    out
}

/// THE home of "RLS shows only your org" (tests/README.md). In the catalog: row level security
/// on every table of schema voxanne, and every policy a SELECT policy scoped by
/// `voxanne.current_org_id()`. Then as PostgREST runs it: `authenticated` with each org's claims
/// sees exactly that org's rows, and without an org claim (none, no org, user_metadata) none.
#[tokio::test]
async fn authenticated_sees_only_the_org_in_its_jwt_claims() {
    let db = connect().await;
    let offenders = |sql: &'static str| {
        let db = &db;
        async move {
            db.query(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<String>>()
        }
    };
    let no_rls = offenders(
        "SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'voxanne' AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity",
    )
    .await;
    assert_eq!(no_rls, Vec::<String>::new(), "tables without row level security");
    // Every policy of the schema, whole: table, name, command, permissive or not, roles, USING
    // (as PostgreSQL deparses it) and WITH CHECK. Compared exactly with one own-org SELECT
    // policy per table with an org_id column, so an extra policy, an extra role or a widened
    // expression (`... OR true`) fails.
    let mut policies = offenders(
        "SELECT c.relname || ': ' || p.polname || ' FOR ' || p.polcmd::text
                || CASE WHEN p.polpermissive THEN ' PERMISSIVE' ELSE ' RESTRICTIVE' END
                || ' TO ' || pg_catalog.array_to_string(ARRAY(
                       SELECT CASE WHEN r.oid = 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(r.oid)::text END
                       FROM pg_catalog.unnest(p.polroles) AS r(oid) ORDER BY 1), ',')
                || ' USING ' || coalesce(pg_catalog.pg_get_expr(p.polqual, p.polrelid), '<none>')
                || ' WITH CHECK ' || coalesce(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), '<none>')
         FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'voxanne'
         ORDER BY 1",
    )
    .await;
    let tenant_tables = offenders(
        "SELECT c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id' AND NOT a.attisdropped
         WHERE n.nspname = 'voxanne' AND c.relkind IN ('r', 'p')
         ORDER BY 1",
    )
    .await;
    for t in ["agents", "leads", "calls", "call_transcripts", "processed_webhook_events", "outbox", "rejected_events"] {
        assert!(tenant_tables.iter().any(|x| x == t), "{t} among the tables with org_id: {tenant_tables:?}");
    }
    // tenant_keys has an org_id but no reader at all: RLS on, no policy (sql/security.sql)
    let mut expected: Vec<String> = tenant_tables
        .iter()
        .filter(|t| *t != "tenant_keys")
        .map(|t| {
            format!(
                "{t}: {t}_own_org_read FOR r PERMISSIVE TO public \
                 USING (org_id = ( SELECT voxanne.current_org_id() AS current_org_id)) WITH CHECK <none>"
            )
        })
        .collect();
    policies.sort();
    expected.sort();
    assert_eq!(policies, expected, "the policies are exactly one own-org SELECT policy per table with org_id");

    let a = Org::create(&db).await;
    let b = Org::create(&db).await;
    // A: two calls with a line each; B: one call with a line and a report.
    for (org, calls) in [(&a, 2), (&b, 1)] {
        for _ in 0..calls {
            let call = unique("call");
            assert!(org.ringing(&call).outcome(&db).await.unwrap().applied);
            assert!(org.transcript(&call, "user", "hi", at(1)).outcome(&db).await.unwrap().applied);
            if calls == 1 {
                assert!(org.report(&call, &Report::for_call(&call)).outcome(&db).await.unwrap().applied);
            }
        }
    }
    let expected = |org: &Org, agents: i64, calls: i64, outbox: i64| {
        HashMap::from([
            ("agents", HashMap::from([(org.id.to_string(), agents)])),
            ("calls", HashMap::from([(org.id.to_string(), calls)])),
            ("call_transcripts", HashMap::from([(org.id.to_string(), calls)])),
            ("outbox", HashMap::from([(org.id.to_string(), outbox)])),
        ])
    };

    let api = connect_as("authenticator").await;
    for (org, want) in [(&a, expected(&a, 1, 2, 4)), (&b, expected(&b, 1, 1, 3))] {
        begin_as(&api, "authenticated", Some(&claims_for(org.id))).await;
        let own: Option<Uuid> = api.query_one("SELECT voxanne.current_org_id()", &[]).await.unwrap().get(0);
        assert_eq!(own, Some(org.id));
        let seen = visible(&api).await;
        rollback(&api).await;
        assert_eq!(seen, want, "authenticated with the claims of org {}", org.id);
    }

    // No claims at all, or claims without an org: no tenant rows whatsoever.
    for claims in [None, Some(r#"{"sub":"someone","role":"authenticated"}"#), Some(r#"{"app_metadata":{}}"#)] {
        begin_as(&api, "authenticated", claims).await;
        let seen = visible(&api).await;
        rollback(&api).await;
        for (table, rows) in seen {
            assert!(rows.is_empty(), "authenticated with claims {claims:?} sees {table} rows {rows:?}");
        }
    }

    // user_metadata is user-editable and must not grant access.
    let forged = serde_json::json!({"user_metadata": {"org_id": a.id.to_string()}}).to_string();
    begin_as(&api, "authenticated", Some(&forged)).await;
    let seen = visible(&api).await;
    rollback(&api).await;
    assert!(seen.values().all(HashMap::is_empty), "user_metadata.org_id granted {seen:?}");
}

#[tokio::test]
async fn malformed_org_claim_is_an_error_not_an_empty_result() {
    let api = connect_as("authenticator").await;
    begin_as(&api, "authenticated", Some(r#"{"app_metadata":{"org_id":"not-a-uuid"}}"#)).await;
    let e = api.query("SELECT 1 FROM voxanne.calls LIMIT 1", &[]).await.expect_err("malformed org id claim");
    rollback(&api).await;
    assert_eq!(e.code(), Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION), "{}", describe(&e));
}

/// The functions the relay calls, and nothing else (`voxanne.grant_relay_role`).
const RELAY_FUNCTIONS: [&str; 6] = [
    "voxanne.calls_missing_end(interval,interval,interval,integer)",
    "voxanne.handle_vapi_message(jsonb,bytea)",
    "voxanne.reconcile_call(uuid,jsonb)",
    "voxanne.record_rejected_event(text,text,text)",
    "voxanne.reply_message_types()",
    "voxanne.webhook_credential_digests()",
];

/// Security review #5: the relay's role was a member of `service_role`, so it could `SET ROLE`
/// to one that bypasses RLS and call every write function, the purges and the outbox API.
#[tokio::test]
async fn the_relay_role_holds_only_what_the_relay_calls() {
    let db = connect().await;
    let executable: Vec<String> = db
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc AS p
             WHERE p.pronamespace = 'voxanne'::regnamespace
               AND pg_catalog.has_function_privilege('voxanne_relay', p.oid, 'EXECUTE')
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0).replace(", ", ","))
        .collect();
    assert_eq!(executable, RELAY_FUNCTIONS.map(String::from).to_vec());
    let tables: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_class AS c
             WHERE c.relnamespace = 'voxanne'::regnamespace AND c.relkind IN ('r', 'p', 'S', 'v')
               AND pg_catalog.has_table_privilege('voxanne_relay', c.oid,
                   'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "no privilege on any table or sequence");
    let wider: Vec<String> = db
        .query(
            "SELECT r.rolname::text FROM pg_catalog.pg_roles AS r
             WHERE r.rolname <> 'voxanne_relay' AND pg_catalog.pg_has_role('voxanne_relay', r.oid, 'MEMBER')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(wider.is_empty(), "a member of {wider:?}");

    let relay = connect_as("voxanne_relay").await;
    for (sql, what) in [
        ("SET ROLE service_role", "SET ROLE into a BYPASSRLS role"),
        ("SELECT 1 FROM voxanne.calls LIMIT 1", "read calls"),
        ("SELECT voxanne.upsert_agent(gen_random_uuid(), 'asst_new')", "register an agent"),
        ("SELECT voxanne.purge_outbox()", "purge"),
        ("SELECT * FROM voxanne.outbox_read('relay', 10)", "read the outbox"),
    ] {
        let e = relay.batch_execute(sql).await.expect_err(what);
        assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{what}: {}", describe(&e));
    }
    // and what it calls works
    let org = Org::create(&db).await;
    let call = unique("call_relay_role");
    let answer: serde_json::Value = relay
        .query_one(
            voxanne_relay::db::HANDLE_VAPI_MESSAGE,
            &[&vapi::status_body(&org.assistant_id, &call, "ringing", vapi::T0_MS), &vapi::PLATFORM],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(answer["applied"], true, "{answer}");
    relay.query(voxanne_relay::db::WEBHOOK_CREDENTIAL_DIGESTS, &[]).await.unwrap();
}

#[tokio::test]
async fn a_role_that_can_bypass_rls_is_refused_as_the_relays() {
    let db = connect().await;
    let role = format!("vx_wide_{}", Uuid::new_v4().simple());
    db.batch_execute(&format!("CREATE ROLE {role} LOGIN IN ROLE service_role")).await.unwrap();
    let e = db
        .batch_execute(&format!("SELECT voxanne.grant_relay_role('{role}')"))
        .await
        .expect_err("a member of service_role");
    db.batch_execute(&format!("DROP ROLE {role}")).await.unwrap();
    assert_eq!(e.code(), Some(&SqlState::INVALID_PARAMETER_VALUE), "{}", describe(&e));
    assert!(describe(&e).contains("service_role"), "{}", describe(&e));
}
