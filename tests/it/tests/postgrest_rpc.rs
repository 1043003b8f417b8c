//! The SQL API as a Supabase client meets it: through PostgREST (`POST /rest/v1/rpc/<fn>` with
//! a JSON body, `GET /rest/v1/<table>`), emulated request by request in
//! `voxanne_it::postgrest` — logged in as `authenticator`, one transaction per request, the
//! JWT's role and claims set locally, JSON keys as named arguments — and every error answered
//! with the HTTP status PostgREST would give it (docs/SUPABASE.md has the table).

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};
use uuid::Uuid;
use voxanne_it::postgrest::{http_status, Auth, PostgRest, Response};
use voxanne_it::*;

/// The functions PostgREST would let the service role call but not a signed-in user: the write
/// API. Read from the catalog, so a function added later must be added to these tests too.
async fn write_functions() -> BTreeSet<String> {
    let db = connect().await;
    db.query(
        "SELECT p.proname::text FROM pg_catalog.pg_proc p
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'voxanne'
           AND pg_catalog.has_function_privilege('service_role', p.oid, 'EXECUTE')
           AND NOT pg_catalog.has_function_privilege('authenticated', p.oid, 'EXECUTE')",
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("write functions: {}", describe(&e)))
    .into_iter()
    .map(|r| r.get(0))
    .collect()
}

/// A well-formed JSON body for each write function, aimed at `org`: a denied call must fail
/// on privileges, not on its arguments.
fn body_for(function: &str, org: &Org, call: &str) -> Value {
    match function {
        "upsert_agent" => json!({"p_org_id": org.id.to_string(), "p_vapi_assistant_id": unique("asst")}),
        "create_inbound_call" => json!({"p_vapi_call_id": call, "p_assistant_id": org.assistant_id}),
        "complete_call" => json!({"p_vapi_call_id": call, "p_assistant_id": org.assistant_id, "p_cost": 0.5}),
        "record_transcript" => json!({
            "p_vapi_call_id": call, "p_assistant_id": org.assistant_id, "p_role": "user",
            "p_text": "hello", "p_spoken_at": "2026-01-01T10:00:00Z"
        }),
        "handle_vapi_message" => json!({"p_body": status_message(org, call, "ringing")}),
        "record_rejected_event" => json!({"p_body": "{\"message\":", "p_sqlstate": "22P02"}),
        "purge_processed_events" | "purge_outbox" => json!({"p_older_than": "30 days"}),
        "outbox_read" => json!({"p_consumer": unique("consumer"), "p_limit": 10}),
        "outbox_ack" => json!({"p_consumer": unique("consumer"), "p_xid": "1", "p_id": 1}),
        "outbox_drop_consumer" => json!({"p_consumer": unique("consumer")}),
        "upsert_phone_number" => json!({"p_org_id": org.id.to_string(), "p_vapi_phone_number_id": unique("pn")}),
        "upsert_vapi_org" => json!({"p_org_id": org.id.to_string(), "p_vapi_org_id": unique("vorg")}),
        "upsert_squad" => json!({"p_org_id": org.id.to_string(), "p_vapi_squad_id": unique("squad")}),
        "upsert_workflow" => json!({"p_org_id": org.id.to_string(), "p_vapi_workflow_id": unique("wf")}),
        "tenant_token" | "rotate_tenant_key" => json!({"p_org_id": org.id.to_string()}),
        "add_webhook_credential" => {
            json!({"p_org_id": org.id.to_string(), "p_token": unique("token-of-32-bytes-at-least")})
        }
        "revoke_webhook_credential" => json!({"p_org_id": org.id.to_string(), "p_id": Uuid::new_v4().to_string()}),
        other => panic!("write function voxanne.{other} has no JSON body in tests/it/tests/postgrest_rpc.rs: add one"),
    }
}

/// A Vapi `status-update`, the way Vapi posts it (wrapped as `p_body` for PostgREST).
fn status_message(org: &Org, call: &str, status: &str) -> Value {
    json!({"message": {
        "type": "status-update", "status": status, "timestamp": 1_767_261_600_000_i64,
        "call": {"id": call, "assistantId": org.assistant_id, "type": "inboundPhoneCall",
                 "customer": {"number": "+15551230001"}, "phoneNumberId": "pn_it"}
    }})
}

/// Call and require 200.
async fn ok(api: &PostgRest, auth: &Auth, function: &str, body: Value) -> Value {
    let r = api.rpc(auth, function, &body).await;
    assert_eq!(r.status, 200, "POST /rpc/{function} {body}: {r:?}");
    r.body
}

fn assert_error(r: &Response, status: u16, code: &str, what: &str) {
    assert_eq!((r.status, r.code()), (status, Some(code)), "{what}: {r:?}");
}

#[tokio::test]
async fn service_role_calls_every_write_function_with_json_bodies() {
    let db = connect().await;
    let api = PostgRest::connect().await;
    let service = Auth::service_role();
    let mut called = BTreeSet::new();

    // upsert_agent: p_name given, p_active and p_vapi_phone_number_id left to their defaults
    let org_id = Uuid::new_v4();
    let assistant_id = unique("asst");
    let agent = ok(
        &api,
        &service,
        "upsert_agent",
        json!({"p_org_id": org_id.to_string(), "p_vapi_assistant_id": assistant_id, "p_name": "Front desk"}),
    )
    .await;
    called.insert("upsert_agent");
    let agent_id = Uuid::parse_str(agent.as_str().expect("upsert_agent answers the agent id")).unwrap();
    let org = Org { id: org_id, assistant_id: assistant_id.clone(), agent_id };
    let call = unique("call");

    // create_inbound_call with only the two required keys: status 'ringing', type inboundPhoneCall
    let started =
        ok(&api, &service, "create_inbound_call", json!({"p_vapi_call_id": call, "p_assistant_id": assistant_id}))
            .await;
    called.insert("create_inbound_call");
    assert_eq!(
        (&started["applied"], &started["outcome"], &started["status"], &started["org_id"]),
        (&json!(true), &json!("applied"), &json!("ringing"), &json!(org_id.to_string())),
        "{started}"
    );

    // record_transcript: an ISO-8601 string becomes timestamptz in json_to_record
    let line = ok(
        &api,
        &service,
        "record_transcript",
        json!({"p_vapi_call_id": call, "p_assistant_id": assistant_id, "p_role": "user",
               "p_text": "I'd like to book a cleaning", "p_spoken_at": "2026-01-01T10:00:06.250Z"}),
    )
    .await;
    called.insert("record_transcript");
    assert_eq!(line["applied"], true, "{line}");

    // complete_call: JSON numbers become numeric
    let ended = ok(
        &api,
        &service,
        "complete_call",
        json!({"p_vapi_call_id": call, "p_assistant_id": assistant_id, "p_ended_reason": "customer-ended-call",
               "p_started_at": "2026-01-01T10:00:00Z", "p_ended_at": "2026-01-01T10:01:05.5Z",
               "p_duration_seconds": 65.5, "p_cost": 0.1234, "p_summary": "booked a cleaning",
               "p_recording_url": format!("https://recordings.example.com/{call}.wav")}),
    )
    .await;
    called.insert("complete_call");
    assert_eq!((&ended["applied"], &ended["status"]), (&json!(true), &json!("ended")), "{ended}");

    // handle_vapi_message: the Vapi message itself, as the one jsonb argument
    let webhook = json!({"p_body": {"message": {
        "type": "transcript", "transcriptType": "final", "role": "assistant", "transcript": "See you Monday.",
        "timestamp": 1_767_261_670_000_i64, "call": {"id": call, "assistantId": assistant_id}
    }}});
    let handled = ok(&api, &service, "handle_vapi_message", webhook).await;
    called.insert("handle_vapi_message");
    assert_eq!((&handled["applied"], &handled["message_type"]), (&json!(true), &json!("transcript")), "{handled}");

    // the directory's verbs (0.3.0): void functions answer null, and what they register routes
    let squad = unique("squad");
    let registered = [
        (
            "upsert_phone_number",
            json!({"p_org_id": org_id.to_string(), "p_vapi_phone_number_id": unique("pn"),
                                       "p_vapi_assistant_id": assistant_id}),
        ),
        ("upsert_vapi_org", json!({"p_org_id": org_id.to_string(), "p_vapi_org_id": unique("vorg")})),
        ("upsert_squad", json!({"p_org_id": org_id.to_string(), "p_vapi_squad_id": squad})),
        (
            "upsert_workflow",
            json!({"p_org_id": org_id.to_string(), "p_vapi_workflow_id": unique("wf"),
                                   "p_active": false}),
        ),
    ];
    for (verb, body) in registered {
        assert_eq!(ok(&api, &service, verb, body).await, Value::Null, "{verb}");
        called.insert(verb);
    }
    let by_squad = json!({"p_body": {"message": {"type": "status-update", "status": "queued",
        "call": {"id": unique("squad-call"), "orgId": "vapi-shared", "squadId": squad}}}});
    let routed = ok(&api, &service, "handle_vapi_message", by_squad).await;
    assert_eq!(routed["org_id"], json!(org_id.to_string()), "{routed}");
    // tenant tokens: the same until rotated
    let token = ok(&api, &service, "tenant_token", json!({"p_org_id": org_id.to_string()})).await;
    called.insert("tenant_token");
    assert!(token.as_str().is_some_and(|t| t.starts_with(&format!("vxt1.{org_id}."))), "{token}");
    assert_eq!(ok(&api, &service, "tenant_token", json!({"p_org_id": org_id.to_string()})).await, token);
    let rotated = ok(&api, &service, "rotate_tenant_key", json!({"p_org_id": org_id.to_string()})).await;
    called.insert("rotate_tenant_key");
    assert_ne!(rotated, token);

    // record_rejected_event: p_message left out; the body parses, so it is labelled with its org
    let junk = status_message(&org, &call, "dialing").to_string();
    let rejected = ok(&api, &service, "record_rejected_event", json!({"p_body": junk, "p_sqlstate": "22P02"})).await;
    called.insert("record_rejected_event");
    let rejected_id = rejected.as_i64().expect("record_rejected_event answers the row id");

    // purge_processed_events with an empty body: every argument defaulted (30 days). The ledger
    // it meets holds nothing older than that but this org's 3 rows of 31 days (and a 29-day row
    // it must keep): aged rows of earlier tests are purged first, no other test here writes any.
    plant_aged_ledger_rows(&db, org.id).await;
    let purged = ok(&api, &service, "purge_processed_events", json!({})).await;
    called.insert("purge_processed_events");
    assert_eq!(purged, json!(3), "the three 31-day ledger rows, nothing else");
    assert_only_the_young_aged_row_is_left(&db, org.id).await;

    // webhook credentials (0.3.0): the id comes back as a JSON string, revoking answers a boolean
    let installed = write_functions().await;
    if installed.contains("add_webhook_credential") {
        let token = unique("vxk-postgrest-token-0123456789abcdef");
        let id =
            ok(&api, &service, "add_webhook_credential", json!({"p_org_id": org.id.to_string(), "p_token": token}))
                .await;
        called.insert("add_webhook_credential");
        let id = id.as_str().expect("the credential's id").to_string();
        let revoked =
            ok(&api, &service, "revoke_webhook_credential", json!({"p_org_id": org.id.to_string(), "p_id": id})).await;
        called.insert("revoke_webhook_credential");
        assert_eq!(revoked, Value::Bool(true));
    }

    // The 0.2.0 outbox consumer API and outbox retention, when installed.
    if installed.contains("outbox_read") {
        let consumer = unique("it-postgrest");
        let batch = ok(&api, &service, "outbox_read", json!({"p_consumer": consumer, "p_limit": 1000})).await;
        called.insert("outbox_read");
        assert!(batch.is_array(), "SETOF outbox_message is a JSON array: {batch}");
        // acknowledge this org's newest message; xid8 travels as a JSON string
        let row = db
            .query_one(
                "SELECT xid::text, id FROM voxanne.outbox WHERE org_id = $1 ORDER BY xid DESC, id DESC LIMIT 1",
                &[&org.id],
            )
            .await
            .expect("newest outbox row");
        let (xid, id): (String, i64) = (row.get(0), row.get(1));
        let acked = ok(&api, &service, "outbox_ack", json!({"p_consumer": consumer, "p_xid": xid, "p_id": id})).await;
        called.insert("outbox_ack");
        assert_eq!(acked, Value::Null, "a void function answers null");
        let cursor: String = db
            .query_one(
                "SELECT last_xid::text || ':' || last_id FROM voxanne.outbox_consumers WHERE consumer = $1",
                &[&consumer],
            )
            .await
            .expect("consumer cursor")
            .get(0);
        assert_eq!(cursor, format!("{xid}:{id}"));
        // a registered consumer holds back purge_outbox for everyone: unregister it
        let dropped = ok(&api, &service, "outbox_drop_consumer", json!({"p_consumer": consumer})).await;
        called.insert("outbox_drop_consumer");
        assert_eq!(dropped, Value::Bool(true));
    }
    if installed.contains("purge_outbox") {
        // The outbox it meets (default 7 days, rows every consumer has acknowledged): nothing
        // purgeable but this org's 3 rows of 8 days (and a 6-day row it must keep), written with
        // xid 1, a transaction older than any consumer's cursor, so consumers registered by other
        // tests do not hold them back. Purgeable rows of earlier tests are purged first.
        db.query_one("SELECT voxanne.purge_outbox()", &[]).await.unwrap();
        let newest: i64 = db
            .query_one(
                "WITH aged AS (
                     INSERT INTO voxanne.outbox (org_id, topic, payload, created_at, xid)
                     SELECT $1, 'aged', pg_catalog.jsonb_build_object('days', d), now() - make_interval(days => d), '1'
                     FROM unnest(ARRAY[8, 8, 8, 6]) d
                     RETURNING id)
                 SELECT max(id) FROM aged",
                &[&org.id],
            )
            .await
            .unwrap()
            .get(0);
        let holding_back = count(
            &db,
            "SELECT count(*) FROM voxanne.outbox_consumers WHERE (last_xid, last_id) < ('1'::xid8, $1)",
            &[&newest],
        )
        .await;
        assert_eq!(holding_back, 0, "no consumer's cursor is below the aged rows");
        let purged = ok(&api, &service, "purge_outbox", json!({})).await;
        called.insert("purge_outbox");
        assert_eq!(purged, json!(3), "the three 8-day outbox rows, nothing else");
        let kept = grouped(
            &db,
            "SELECT payload->>'days', count(*) FROM voxanne.outbox WHERE org_id = $1 AND topic = 'aged' GROUP BY 1",
            &[&org.id],
        )
        .await;
        assert_eq!(kept, HashMap::from([("6".to_string(), 1)]), "the 6-day row is kept");
        // no consumer of a later test should meet it
        db.execute("DELETE FROM voxanne.outbox WHERE org_id = $1 AND topic = 'aged'", &[&org.id]).await.unwrap();
    }

    let called: BTreeSet<String> = called.into_iter().map(str::to_string).collect();
    assert_eq!(called, installed, "every write function the service role may call, called over RPC");

    // What the calls wrote, read back as the owner.
    let row = db
        .query_one(
            "SELECT call_type, status, cost::text, duration_seconds::text,
                    (SELECT count(*) FROM voxanne.call_transcripts t WHERE t.org_id = c.org_id AND t.call_id = c.id)
             FROM voxanne.calls c WHERE org_id = $1 AND vapi_call_id = $2",
            &[&org.id, &call],
        )
        .await
        .expect("the call row");
    let got: (String, String, String, String, i64) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(got, ("inboundPhoneCall".into(), "ended".into(), "0.1234".into(), "65.5".into(), 2));
    let kept: String = db
        .query_one("SELECT body FROM voxanne.rejected_events WHERE id = $1 AND org_id = $2", &[&rejected_id, &org.id])
        .await
        .expect("rejected event, labelled with the org of its assistant")
        .get(0);
    assert_eq!(kept, junk);
}

/// Every write function, as the anonymous role (no JWT, or Supabase's anon key) and as a
/// signed-in user of the org, over PostgREST's RPC path: 42501, which PostgREST answers 401 for
/// anon and 403 otherwise. (The refusal itself, in SQL: attacks.rs
/// `anon_and_authenticated_cannot_execute_any_write_function`; this test proves the HTTP path.)
#[tokio::test]
async fn anon_gets_401_and_authenticated_403_on_every_write_function_through_postgrest() {
    let db = connect().await;
    let org = Org::create(&db).await;
    let api = PostgRest::connect().await;
    let functions = write_functions().await;
    assert!(functions.len() >= 7, "{functions:?}");
    for function in &functions {
        let call = unique("call");
        let body = body_for(function, &org, &call);
        for (auth, status, who) in [
            (Auth::Anonymous, 401, "no JWT"),
            (Auth::anon_key(), 401, "the anon key"),
            (Auth::user_of(org.id), 403, "a user of the org"),
        ] {
            let r = api.rpc(&auth, function, &body).await;
            assert_error(&r, status, "42501", &format!("{who} calling {function}"));
        }
    }
    // Re-granting is for the extension's owner only; the service role is refused with 403.
    for (auth, status) in [(Auth::Anonymous, 401), (Auth::user_of(org.id), 403), (Auth::service_role(), 403)] {
        let r = api.rpc(&auth, "grant_api_roles", &json!({})).await;
        assert_error(&r, status, "42501", &format!("{} calling grant_api_roles", auth.role()));
    }
    for table in ["calls", "call_transcripts", "processed_webhook_events", "outbox"] {
        assert_eq!(count_org_rows(&db, table, &org).await, 0, "{table}: the refused calls wrote nothing");
    }
    assert_eq!(count_org_rows(&db, "agents", &org).await, 1, "agents: no upsert_agent got through");
}

fn org_ids(body: &Value) -> BTreeSet<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("a JSON array: {body}"))
        .iter()
        .map(|row| row["org_id"].as_str().expect("org_id").to_string())
        .collect()
}

fn column(body: &Value, name: &str) -> BTreeSet<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("a JSON array: {body}"))
        .iter()
        .map(|row| row[name].as_str().unwrap_or_else(|| panic!("{name} in {row}")).to_string())
        .collect()
}

/// `GET /rest/v1/<table>` with a user's JWT: RLS on app_metadata.org_id, nothing of another org
/// even when asked for by id. (RLS itself, in SQL: install_privileges.rs
/// `authenticated_sees_only_the_org_in_its_jwt_claims`; this test proves the HTTP path.)
#[tokio::test]
async fn authenticated_reads_only_its_own_orgs_rows_through_postgrest() {
    let db = connect().await;
    let (a, b) = (Org::create(&db).await, Org::create(&db).await);
    let calls_a = [unique("call"), unique("call")];
    let call_b = unique("call");
    for call in &calls_a {
        assert!(a.ringing(call).outcome(&db).await.unwrap().applied);
        assert!(a.transcript(call, "user", "hello from A", at(1)).outcome(&db).await.unwrap().applied);
    }
    assert!(b.ringing(&call_b).outcome(&db).await.unwrap().applied);
    assert!(b.transcript(&call_b, "user", "secret of B", at(1)).outcome(&db).await.unwrap().applied);

    let api = PostgRest::connect().await;
    let user_a = Auth::user_of(a.id);
    let only_a: BTreeSet<String> = [a.id.to_string()].into();
    for (table, rows) in [("agents", 1), ("calls", 2), ("call_transcripts", 2), ("outbox", 4)] {
        let r = api.get(&user_a, table, &[]).await;
        assert_eq!(r.status, 200, "GET /{table}: {r:?}");
        assert_eq!(org_ids(&r.body), only_a, "GET /{table} as a user of A");
        assert_eq!(r.body.as_array().unwrap().len(), rows, "GET /{table}: {}", r.body);
        // asking for B's rows by their org id finds nothing
        let r = api.get(&user_a, table, &[("org_id", &format!("eq.{}", b.id))]).await;
        assert_eq!((r.status, &r.body), (200, &json!([])), "GET /{table}?org_id=eq.<B>");
    }
    let r = api.get(&user_a, "calls", &[]).await;
    assert_eq!(column(&r.body, "vapi_call_id"), calls_a.iter().cloned().collect());
    let r = api.get(&user_a, "calls", &[("vapi_call_id", &format!("eq.{call_b}"))]).await;
    assert_eq!((r.status, &r.body), (200, &json!([])), "B's call by its Vapi id");
    let r = api.get(&user_a, "call_transcripts", &[]).await;
    assert_eq!(column(&r.body, "text"), ["hello from A".to_string()].into());

    // the same request with B's JWT sees B, and current_org_id() reads the claim
    let user_b = Auth::user_of(b.id);
    let r = api.get(&user_b, "calls", &[]).await;
    assert_eq!(column(&r.body, "vapi_call_id"), [call_b.clone()].into());
    let r = api.rpc_get(&user_a, "current_org_id", &[]).await;
    assert_eq!((r.status, &r.body), (200, &json!(a.id.to_string())), "GET /rpc/current_org_id");

    // a user without an org in app_metadata sees nothing; anon may not read at all; the ledger,
    // the dead letters and the consumer cursors are not for API users
    let no_org = Auth::Jwt(json!({"role": "authenticated", "sub": Uuid::new_v4().to_string(), "app_metadata": {}}));
    assert_eq!(api.get(&no_org, "calls", &[]).await.body, json!([]));
    assert_error(&api.get(&Auth::anon_key(), "calls", &[]).await, 401, "42501", "anon GET /calls");
    for table in ["processed_webhook_events", "rejected_events"] {
        assert_error(&api.get(&user_a, table, &[]).await, 403, "42501", &format!("GET /{table} as a user"));
    }
    let consumers = api.get(&user_a, "outbox_consumers", &[]).await;
    if consumers.code() != Some("PGRST205") {
        assert_error(&consumers, 403, "42501", "GET /outbox_consumers as a user");
    }
}

/// Each SQLSTATE the extension documents, raised for real through the RPC path, reaches the
/// client as the status docs/SUPABASE.md promises; failed calls write nothing.
#[tokio::test]
async fn documented_sqlstates_reach_clients_as_documented_http_statuses() {
    let db = connect().await;
    let org = Org::create(&db).await;
    let api = PostgRest::connect().await;
    let service = Auth::service_role();
    let asst = org.assistant_id.clone();
    let call = unique("call");
    let long_id = "x".repeat(300);
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "create_inbound_call",
            json!({"p_vapi_call_id": null, "p_assistant_id": asst}),
            400,
            "22004",
            "p_vapi_call_id must not be null",
        ),
        (
            "create_inbound_call",
            json!({"p_vapi_call_id": "", "p_assistant_id": asst}),
            400,
            "22023",
            "p_vapi_call_id must not be empty",
        ),
        (
            "create_inbound_call",
            json!({"p_vapi_call_id": call, "p_assistant_id": asst, "p_status": "dialing"}),
            400,
            "22023",
            "'dialing'",
        ),
        (
            "create_inbound_call",
            json!({"p_vapi_call_id": long_id, "p_assistant_id": asst}),
            400,
            "22001",
            "the limit is 255",
        ),
        (
            "complete_call",
            json!({"p_vapi_call_id": call, "p_assistant_id": asst, "p_cost": -0.01}),
            400,
            "22003",
            "p_cost is out of range",
        ),
        // converted by PostgREST's json_to_record before the function runs
        (
            "create_inbound_call",
            json!({"p_vapi_call_id": call, "p_assistant_id": asst, "p_occurred_at": "half past ten"}),
            400,
            "22007",
            "half past ten",
        ),
        ("upsert_agent", json!({"p_org_id": "not-a-uuid", "p_vapi_assistant_id": asst}), 400, "22P02", "not-a-uuid"),
        // raised by the extension while reading the Vapi message
        (
            "handle_vapi_message",
            json!({"p_body": {"message": {"type": "transcript", "transcriptType": "final", "role": "user", "transcript": "hi",
                                          "timestamp": "yesterday", "call": {"id": call, "assistantId": asst}}}}),
            400,
            "22007",
            "message.timestamp",
        ),
        (
            "create_inbound_call",
            json!({"p_vapi_call_id": call, "p_assistant_id": "asst_nobody"}),
            400,
            "42704",
            "no active agent for p_assistant_id 'asst_nobody'",
        ),
        (
            "handle_vapi_message",
            json!({"p_body": status_message(&Org { assistant_id: "asst_nobody".into(), ..org.clone() }, &call, "ringing")}),
            400,
            "42704",
            "message.call.assistantId",
        ),
        (
            "upsert_agent",
            json!({"p_org_id": Uuid::new_v4().to_string(), "p_vapi_assistant_id": asst}),
            400,
            "23P01",
            "agents_one_active_per_assistant",
        ),
    ];
    for (function, body, status, code, text) in &cases {
        let r = api.rpc(&service, function, body).await;
        assert_error(&r, *status, code, &format!("POST /rpc/{function} {body}"));
        assert!(r.message().contains(text) || r.body.to_string().contains(text), "{function}: '{text}' in {r:?}");
    }

    // 42501: anonymous 401, signed in 403
    let body = json!({"p_vapi_call_id": call, "p_assistant_id": asst});
    assert_error(&api.rpc(&Auth::Anonymous, "create_inbound_call", &body).await, 401, "42501", "anon");
    assert_error(&api.rpc(&Auth::user_of(org.id), "create_inbound_call", &body).await, 403, "42501", "authenticated");
    // 28000: a JWT whose app_metadata.org_id is not a uuid fails loudly, on reads and on RPC
    let bad_claims = Auth::Jwt(json!({"role": "authenticated", "app_metadata": {"org_id": "not-a-uuid"}}));
    assert_error(&api.get(&bad_claims, "calls", &[]).await, 403, "28000", "GET /calls with a malformed org claim");
    assert_error(&api.rpc(&bad_claims, "current_org_id", &json!({})).await, 403, "28000", "POST /rpc/current_org_id");
    // 25006: a write function over GET runs in a read-only transaction
    let r = api.rpc_get(&service, "create_inbound_call", &[("p_vapi_call_id", &call), ("p_assistant_id", &asst)]).await;
    assert_error(&r, 405, "25006", "GET /rpc/create_inbound_call");
    // a JWT whose role does not exist: PostgREST's 22023 special case
    let r = api.rpc(&Auth::Jwt(json!({"role": "no_such_role_for_voxanne"})), "current_org_id", &json!({})).await;
    assert_error(&r, 401, "22023", "unknown JWT role");

    for table in ["calls", "call_transcripts", "processed_webhook_events", "outbox"] {
        assert_eq!(count_org_rows(&db, table, &org).await, 0, "{table}: failed requests wrote nothing");
    }
    // and the same call, well-formed, goes through
    let r = api.rpc(&service, "create_inbound_call", &body).await;
    assert_eq!((r.status, &r.body["outcome"]), (200, &json!("applied")), "{r:?}");
}

/// PostgREST resolves the function by name AND by the JSON keys: an unknown key (or a missing
/// required one) is 404 PGRST202 before any SQL runs — also for a Vapi body posted unwrapped.
#[tokio::test]
async fn unknown_argument_key_is_404_pgrst202() {
    let db = connect().await;
    let org = Org::create(&db).await;
    let api = PostgRest::connect().await;
    let service = Auth::service_role();
    let call = unique("call");
    let injection = "p_vapi_call_id\" := NULL); DROP TABLE voxanne.calls; --";
    for (function, body, names) in [
        (
            "create_inbound_call",
            json!({"p_vapi_call_id": call, "p_assistant_id": org.assistant_id, "p_bogus": 1}),
            "p_bogus",
        ),
        ("create_inbound_call", json!({"p_vapi_call_id": call}), "p_vapi_call_id"),
        (
            "create_inbound_call",
            json!({"p_vapi_call_id": call, "p_assistant_id": org.assistant_id, injection: 1}),
            "DROP TABLE",
        ),
        ("handle_vapi_message", status_message(&org, &call, "ringing"), "message"),
        (
            "create_inbound_cal",
            json!({"p_vapi_call_id": call, "p_assistant_id": org.assistant_id}),
            "create_inbound_cal(",
        ),
    ] {
        let r = api.rpc(&service, function, &body).await;
        assert_error(&r, 404, "PGRST202", &format!("POST /rpc/{function} {body}"));
        assert!(r.message().contains(names), "{r:?}");
    }
    assert_eq!(count_org_rows(&db, "calls", &org).await, 0);
    let tables: i64 = count(
        &db,
        "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'voxanne' AND tablename = 'calls'",
        &[],
    )
    .await;
    assert_eq!(tables, 1);
}

/// The status table itself, for the codes a test cannot raise on demand (40001 needs a lost
/// race three times over, XX000 a bug) and for PostgREST's fixed entries.
#[test]
fn http_status_is_postgrests_table() {
    // ours
    for code in ["22004", "22023", "22001", "22003", "22007", "22P02", "42704", "23P01", "23514", "23502"] {
        assert_eq!(http_status(code, false), 400, "{code}");
    }
    assert_eq!(http_status("28000", false), 403);
    assert_eq!(http_status("42501", true), 401);
    assert_eq!(http_status("42501", false), 403);
    assert_eq!(http_status("40001", false), 500);
    assert_eq!(http_status("40P01", false), 500);
    assert_eq!(http_status("XX000", false), 500);
    // why not P0002 for an unknown assistant: PostgREST answers it 500
    assert_eq!(http_status("P0002", false), 500);
    assert_eq!(http_status("P0001", false), 400);
    // PostgREST's other fixed entries
    for (code, status) in [
        ("08006", 503),
        ("09000", 500),
        ("0L000", 403),
        ("0P000", 403),
        ("23503", 409),
        ("23505", 409),
        ("25006", 405),
        ("25P02", 500),
        ("28P01", 403),
        ("2D000", 500),
        ("38000", 500),
        ("39000", 500),
        ("3B000", 500),
        ("53400", 500),
        ("53300", 503),
        ("54000", 500),
        ("55P03", 500),
        ("57014", 500),
        ("57P01", 503),
        ("58030", 500),
        ("F0000", 500),
        ("HV000", 500),
        ("42883", 404),
        ("42P01", 404),
        ("42P17", 500),
        ("42703", 400),
        ("PT402", 402),
    ] {
        assert_eq!(http_status(code, false), status, "{code}");
    }
}
