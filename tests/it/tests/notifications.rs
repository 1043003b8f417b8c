//! `pg_notify('voxanne_outbox', …)`: one notification per applied effect, carrying ids only,
//! none for a duplicate, and only when (and if) the transaction commits.
//!
//! "No notification" is proven without sleeping: after the message under test, a marker is
//! published on the same channel, and notifications arrive in commit order, so everything the
//! message could have notified arrives before the marker.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use voxanne_it::*;

/// The payload is exactly {org_id, id, topic}, and it names an outbox row of `org` with that
/// topic. Returns the outbox id.
async fn assert_ids_only(db: &tokio_postgres::Client, org: &Org, payload: &Value) -> i64 {
    let obj = payload.as_object().unwrap_or_else(|| panic!("payload is not an object: {payload}"));
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["org_id", "id", "topic"]), "payload keys of {payload}");
    assert_eq!(obj["org_id"].as_str(), Some(org.id.to_string().as_str()));
    let id = obj["id"].as_i64().unwrap_or_else(|| panic!("id is not an integer: {payload}"));
    let topic = obj["topic"].as_str().unwrap_or_else(|| panic!("topic is not a string: {payload}"));
    let row = db
        .query_one("SELECT topic FROM voxanne.outbox WHERE org_id = $1 AND id = $2", &[&org.id, &id])
        .await
        .unwrap_or_else(|e| panic!("no outbox row for notification {payload}: {}", describe(&e)));
    assert_eq!(row.get::<_, String>(0), topic, "topic of {payload}");
    id
}

/// The rows of a call and the version (xmin) of its calls row.
async fn call_state(db: &tokio_postgres::Client, org: &Org, call: &str) -> (CallRows, Option<String>) {
    let version = db
        .query_opt("SELECT xmin::text FROM voxanne.calls WHERE org_id = $1 AND vapi_call_id = $2", &[&org.id, &call])
        .await
        .unwrap()
        .map(|r| r.get(0));
    (call_rows(db, org, call).await, version)
}

#[tokio::test]
async fn each_applied_effect_notifies_once_with_ids_only_and_duplicates_not_at_all() {
    let mut listener = Listener::start().await;
    let db = connect().await;
    let org = Org::create(&db).await;
    let call = unique("call");
    let report = Report::for_call(&call);

    let steps: Vec<(&str, Msg, &str)> = vec![
        ("ringing", org.ringing(&call), "applied"),
        ("ringing again", org.ringing(&call), "duplicate"),
        ("in-progress", org.status(&call, "in-progress", at(5)), "applied"),
        ("transcript line", org.transcript(&call, "assistant", "How can I help?", at(6)), "applied"),
        ("same line again", org.transcript(&call, "assistant", "How can I help?", at(6)), "duplicate"),
        ("report", org.report(&call, &report), "applied"),
        ("report again", org.report(&call, &report), "duplicate"),
        ("status ended after the report", org.status_ended(&call, "x"), "stale"),
        ("status ended again", org.status_ended(&call, "x"), "duplicate"),
    ];
    let mut seen_ids = BTreeSet::new();
    for (what, msg, expected) in steps {
        let before = call_state(&db, &org, &call).await;
        let outcome = msg.outcome(&db).await.unwrap_or_else(|e| panic!("{what}: {}", describe(&e)));
        assert_eq!(outcome.outcome, expected, "{what}: {:?}", outcome.raw);
        if outcome.is_duplicate() {
            // Not one row written or updated: same counts, same version of the call row.
            assert_eq!(call_state(&db, &org, &call).await, before, "{what} wrote something");
        }
        let notes = listener.drain(&db, &org).await;
        let want = usize::from(outcome.applied);
        assert_eq!(notes.len(), want, "{what}: notifications {notes:?}");
        for note in &notes {
            let id = assert_ids_only(&db, &org, note).await;
            assert!(seen_ids.insert(id), "{what}: outbox id {id} notified twice");
        }
    }
    // One notification for every outbox row of the org, and nothing else.
    let outbox: BTreeSet<i64> = db
        .query("SELECT id FROM voxanne.outbox WHERE org_id = $1", &[&org.id])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(outbox.len(), 4, "outbox rows: ringing, in-progress, line, report");
    assert_eq!(seen_ids, outbox, "notified ids vs outbox ids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_16_way_race_notifies_once_per_round() {
    const ROUNDS: usize = 20;
    let mut listener = Listener::start().await;
    let db = connect().await;
    let org = Org::create(&db).await;
    let clients: Vec<Arc<tokio_postgres::Client>> = connect_many(16).await;
    for round in 0..ROUNDS {
        let call = unique("call");
        let msg = if round % 2 == 0 { org.ringing(&call) } else { org.transcript(&call, "user", "hi", at(1)) };
        let outcomes = all_ok(race_same(&clients, &msg).await, &format!("round {round}"));
        assert_one_applied_rest_duplicate(&outcomes, &org, &call, &format!("round {round}"));
    }
    let notes = listener.drain(&db, &org).await;
    let mut ids = BTreeSet::new();
    for note in &notes {
        ids.insert(assert_ids_only(&db, &org, note).await);
    }
    assert_eq!(notes.len(), ROUNDS, "notifications: {notes:?}");
    assert_eq!(ids.len(), ROUNDS, "distinct notified ids");
    assert_eq!(count_org_rows(&db, "outbox", &org).await, ROUNDS as i64);
}

#[tokio::test]
async fn a_rolled_back_call_notifies_nothing() {
    let mut listener = Listener::start().await;
    let db = connect().await;
    let org = Org::create(&db).await;
    let call = unique("call");

    db.batch_execute("BEGIN").await.unwrap();
    let outcome = org.ringing(&call).outcome(&db).await.expect("ringing");
    assert!(outcome.applied, "{:?}", outcome.raw);
    assert_eq!(count_org_rows(&db, "outbox", &org).await, 1, "the outbox row exists inside the transaction");
    db.batch_execute("ROLLBACK").await.unwrap();

    let notes = listener.drain(&db, &org).await;
    assert!(notes.is_empty(), "notifications after ROLLBACK: {notes:?}");
    assert_eq!(call_rows(&db, &org, &call).await, CallRows::default());

    // The same message later applies and notifies normally.
    assert!(org.ringing(&call).outcome(&db).await.unwrap().applied);
    assert_eq!(listener.drain(&db, &org).await.len(), 1);
}

#[tokio::test]
async fn the_notification_is_delivered_at_commit_not_before() {
    let mut listener = Listener::start().await;
    let db = connect().await;
    let other = connect().await;
    let org = Org::create(&db).await;
    let call = unique("call");

    db.batch_execute("BEGIN").await.unwrap();
    assert!(org.ringing(&call).outcome(&db).await.unwrap().applied);
    // The marker comes from another connection and commits first: nothing of the open
    // transaction may precede it.
    let before = listener.drain(&other, &org).await;
    assert!(before.is_empty(), "notified before COMMIT: {before:?}");
    db.batch_execute("COMMIT").await.unwrap();

    let after = listener.drain(&other, &org).await;
    assert_eq!(after.len(), 1, "after COMMIT: {after:?}");
    let id = assert_ids_only(&db, &org, &after[0]).await;
    assert_eq!(after[0]["topic"], "call.status");
    let payload_call: String = db
        .query_one("SELECT payload->>'vapi_call_id' FROM voxanne.outbox WHERE org_id = $1 AND id = $2", &[&org.id, &id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(payload_call, call);
}

/// `voxanne.notify = off` (for throughput: notifying commits are serialized by PostgreSQL)
/// still writes every outbox row, and sends nothing.
#[tokio::test]
async fn with_voxanne_notify_off_the_outbox_row_is_written_and_nothing_is_sent() {
    let mut listener = Listener::start().await;
    let db = connect().await;
    let org = Org::create(&db).await;
    db.batch_execute("SET voxanne.notify = off").await.unwrap();
    let call = unique("call");
    for msg in
        [org.ringing(&call), org.transcript(&call, "user", "hi", at(3)), org.report(&call, &Report::for_call(&call))]
    {
        assert!(msg.outcome(&db).await.unwrap().applied);
    }
    let marker = Listener::send_marker(&db).await;
    assert!(listener.org_notifications_until(&org, &marker).await.is_empty());
    assert_eq!(count_org_rows(&db, "outbox", &org).await, 3);

    db.batch_execute("RESET voxanne.notify").await.unwrap();
    let shown: String = db.query_one("SHOW voxanne.notify", &[]).await.unwrap().get(0);
    assert_eq!(shown, "on", "notifying is the default");
}
