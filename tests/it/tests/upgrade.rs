//! Upgrades and backups: a 0.1.0 or 0.2.0 database with data upgraded by `ALTER EXTENSION …
//! UPDATE` keeps its data, gains the new API and ends with exactly the schema of a fresh install
//! of the new version; and pg_dump / pg_restore of a database using the extension keeps every row.

use std::process::Command;

use tokio_postgres::Client;
use voxanne_it::*;

/// Everything the extension defines, one sorted line per detail: columns, defaults, indexes,
/// constraints, function definitions and privileges, table privileges and RLS, policies,
/// composite types, dumped configuration tables and publication membership.
const FINGERPRINT: &str = r#"
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
    SELECT format('column %s.%s %s notnull=%s default=%s #%s', c.relname, a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attnum)
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
    WHERE c.relnamespace = 'voxanne'::regnamespace
  UNION ALL
    SELECT format('relation %s kind=%s rls=%s acl=%s options=%s', c.relname, c.relkind, c.relrowsecurity, c.relacl, c.reloptions)
    FROM pg_class c WHERE c.relnamespace = 'voxanne'::regnamespace
  UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'voxanne'::regnamespace
  UNION ALL
    SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace = 'voxanne'::regnamespace
  UNION ALL
    SELECT format('function %s acl=%s %s', p.oid::regprocedure, p.proacl, pg_get_functiondef(p.oid))
    FROM pg_proc p WHERE p.pronamespace = 'voxanne'::regnamespace
  UNION ALL
    SELECT format('policy %s.%s %s %s %s', tablename, policyname, cmd, roles, qual) FROM pg_policies
    WHERE schemaname = 'voxanne'
  UNION ALL
    SELECT 'config ' || cfg::regclass::text
    FROM pg_extension e, unnest(e.extconfig) AS cfg WHERE e.extname = 'voxanne_ext'
  UNION ALL
    SELECT 'member ' || pg_describe_object(classid, objid, objsubid) FROM pg_depend
    WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
      AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'voxanne_ext')
) AS details(line)
"#;

async fn fingerprint(client: &Client) -> String {
    client.query_one(FINGERPRINT, &[]).await.expect("fingerprint").get(0)
}

async fn scalar(client: &Client, sql: &str) -> String {
    client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// One call through every message kind, so every table has rows.
async fn write_a_call(client: &Client, org: &Org, call: &str) {
    org.ringing(call).call(client).await.unwrap();
    org.transcript(call, "user", "hello", at(5)).call(client).await.unwrap();
    org.report(call, &Report::for_call(call)).call(client).await.unwrap();
}

/// `ALTER EXTENSION … UPDATE` from `from` to `to` on a database with a call in it keeps the call
/// row and every outbox row, and gives exactly the schema of a fresh `to` install. Returns the
/// upgraded database (and its name) for the version's own checks.
async fn upgrade_keeps_data_and_equals_a_fresh_install(from: &str, to: &str) -> (String, Client, Org) {
    let (old_db, old) = private_db("", &format!("CREATE EXTENSION voxanne_ext VERSION '{from}'")).await;
    assert_eq!(scalar(&old, "SELECT extversion FROM pg_extension WHERE extname = 'voxanne_ext'").await, from);
    let org = Org::create(&old).await;
    write_a_call(&old, &org, "before-upgrade").await;
    // a sender's retries of a refused body (one row each before 0.3.0), and another body; as
    // the old version's rows (record_rejected_event is the new library's: OPERATIONS.md)
    for (body, sqlstate) in [("retried", "22023"), ("retried", "42704"), ("once", "22023")] {
        old.execute("INSERT INTO voxanne.rejected_events (body, sqlstate) VALUES ($1, $2)", &[&body, &sqlstate])
            .await
            .unwrap();
    }
    let before = scalar(&old, "SELECT row(c.*)::text FROM voxanne.calls c").await;

    old.batch_execute(&format!("ALTER EXTENSION voxanne_ext UPDATE TO '{to}'")).await.expect("upgrade");
    assert_eq!(scalar(&old, "SELECT extversion FROM pg_extension WHERE extname = 'voxanne_ext'").await, to);
    assert_eq!(scalar(&old, "SELECT row(c.*)::text FROM voxanne.calls c").await, before, "the call row is untouched");
    assert_eq!(scalar(&old, "SELECT count(*)::text FROM voxanne.outbox").await, "3");

    let (new_db, fresh) = private_db("", &format!("CREATE EXTENSION voxanne_ext VERSION '{to}'")).await;
    let (upgraded, installed) = (fingerprint(&old).await, fingerprint(&fresh).await);
    if upgraded != installed {
        let a: Vec<&str> = upgraded.lines().collect();
        let b: Vec<&str> = installed.lines().collect();
        let only_upgraded: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).collect();
        let only_fresh: Vec<&&str> = b.iter().filter(|l| !a.contains(l)).collect();
        panic!("schemas differ\nonly after upgrade: {only_upgraded:#?}\nonly in a fresh install: {only_fresh:#?}");
    }
    drop_db(&new_db).await;
    (old_db, old, org)
}

#[tokio::test]
async fn upgrading_0_1_0_to_0_2_0_keeps_data_and_equals_a_fresh_0_2_0_install() {
    let (db, old, org) = upgrade_keeps_data_and_equals_a_fresh_install("0.1.0", "0.2.0").await;
    // the new API works on upgraded data, and old rows are readable in order
    let read =
        scalar(&old, "SELECT string_agg(topic, ',' ORDER BY xid, id) FROM voxanne.outbox_read('after-upgrade')").await;
    assert_eq!(read, "call.status,call.transcript,call.ended");
    write_a_call(&old, &org, "after-upgrade").await;
    assert_eq!(scalar(&old, "SELECT count(*)::text FROM voxanne.calls").await, "2");
    drop_db(&db).await;
}

#[tokio::test]
async fn upgrading_0_2_0_to_0_3_0_keeps_data_and_routes_every_call_shape() {
    let (db, old, org) = upgrade_keeps_data_and_equals_a_fresh_install("0.2.0", "0.3.0").await;
    assert_dead_letter_merged(&old).await;
    write_a_call(&old, &org, "after-upgrade").await;
    // the 0.3.0 routes on upgraded data: a squad and a tenant token
    old.execute("SELECT voxanne.upsert_squad($1::uuid, 'squad-upgraded')", &[&org.id]).await.unwrap();
    let squad = r#"{"message":{"type":"status-update","status":"ringing","call":{"id":"squad-call","orgId":"v","squadId":"squad-upgraded"}}}"#;
    let answer = scalar(&old, &format!("SELECT voxanne.handle_vapi_message('{squad}')->>'org_id'")).await;
    assert_eq!(answer, org.id.to_string());
    let token = scalar(&old, &format!("SELECT voxanne.tenant_token('{}')", org.id)).await;
    let web = format!(
        r#"{{"message":{{"type":"status-update","status":"in-progress","call":{{"id":"web-call","orgId":"v","assistant":{{"metadata":{{"voxanne_tenant":"{token}"}}}}}}}}}}"#
    );
    let answer = scalar(&old, &format!("SELECT voxanne.handle_vapi_message('{web}')->>'org_id'")).await;
    assert_eq!(answer, org.id.to_string());
    assert_eq!(
        scalar(
            &old,
            "SELECT string_agg(vapi_call_id || ':' || (agent_id IS NULL), ',' ORDER BY id) FROM voxanne.calls"
        )
        .await,
        "before-upgrade:false,after-upgrade:false,squad-call:true,web-call:true"
    );
    drop_db(&db).await;
}

/// 0.3.0 keeps one dead-letter row per distinct body: the copies merge into the oldest, counted,
/// with the latest refusal.
async fn assert_dead_letter_merged(db: &Client) {
    let rows = scalar(
        db,
        "SELECT string_agg(body || ':' || times_seen || ':' || sqlstate, ',' ORDER BY id) FROM voxanne.rejected_events",
    )
    .await;
    assert_eq!(rows, "retried:2:42704,once:1:22023");
}

#[tokio::test]
async fn upgrading_0_1_0_straight_to_0_3_0_equals_a_fresh_install() {
    let (db, old, _) = upgrade_keeps_data_and_equals_a_fresh_install("0.1.0", "0.3.0").await;
    assert_dead_letter_merged(&old).await;
    drop_db(&db).await;
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn pg_dump_and_restore_keep_every_row_and_the_sequences() {
    let (src_db, src) = private_db("", "CREATE EXTENSION voxanne_ext").await;
    let org = Org::create(&src).await;
    for i in 0..3 {
        write_a_call(&src, &org, &format!("dumped-{i}")).await;
    }
    let counts = "SELECT concat_ws(',', (SELECT count(*) FROM voxanne.agents), (SELECT count(*) FROM voxanne.calls),
                    (SELECT count(*) FROM voxanne.call_transcripts), (SELECT count(*) FROM voxanne.processed_webhook_events),
                    (SELECT count(*) FROM voxanne.outbox))";
    let before = scalar(&src, counts).await;

    let cfg = config();
    let host = match &cfg.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let port = cfg.get_ports()[0].to_string();
    let user = cfg.get_user().unwrap_or("postgres").to_string();
    let dump = std::env::temp_dir().join(format!("{src_db}.dump"));
    run(Command::new(format!("{}/pg_dump", voxanne_it::cluster::pg_bin()))
        .args(["-h", &host, "-p", &port, "-U", &user, "-Fc", "-f"])
        .arg(&dump)
        .arg(&src_db));
    let dst_db = format!("{src_db}_restored");
    connect().await.batch_execute(&format!("CREATE DATABASE {dst_db}")).await.unwrap();
    run(Command::new(format!("{}/pg_restore", voxanne_it::cluster::pg_bin()))
        .args(["-h", &host, "-p", &port, "-U", &user, "--exit-on-error", "-d", &dst_db])
        .arg(&dump));
    let _ = std::fs::remove_file(&dump);

    let dst = connect_db(&dst_db).await;
    assert_eq!(scalar(&dst, counts).await, before);
    // identity sequences came along: a new call does not collide with a restored id
    write_a_call(&dst, &org, "after-restore").await;
    assert_eq!(scalar(&dst, "SELECT count(*)::text FROM voxanne.calls").await, "4");
    drop_db(&src_db).await;
    drop_db(&dst_db).await;
}
