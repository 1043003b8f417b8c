//! A backend terminated between the call and COMMIT (`pg_terminate_backend`: SIGTERM, so its
//! transaction aborts) leaves nothing behind: not the call, not the outbox row, not the
//! idempotency mark. So the sender's redelivery is not mistaken for a duplicate: it applies,
//! exactly once. A real crash of a backend mid-transaction (SIGKILL, which makes the postmaster
//! reset every session) is tests/crashes.rs, in a private cluster.

use std::time::{Duration, Instant};

use voxanne_it::*;

/// Terminate `pid` from `killer` and wait (bounded) until the backend is gone.
async fn kill(killer: &tokio_postgres::Client, pid: i32) {
    let terminated: bool = killer
        .query_one("SELECT pg_catalog.pg_terminate_backend($1, 10000)", &[&pid])
        .await
        .unwrap_or_else(|e| panic!("pg_terminate_backend: {}", describe(&e)))
        .get(0);
    assert!(terminated, "backend {pid} did not terminate within 10 s");
    let alive = count(killer, "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE pid = $1", &[&pid]).await;
    assert_eq!(alive, 0, "backend {pid} still listed");
}

/// Apply `msg` in a transaction, check its rows exist inside it, kill the backend before
/// COMMIT, then check nothing is left and that redelivery applies once.
async fn killed_before_commit(make: impl Fn(&Org, &str) -> Msg, inside: CallRows) {
    let mut listener = Listener::start().await;
    let db = connect().await;
    let org = Org::create(&db).await;
    let call = unique("call");
    let msg = make(&org, &call);

    let victim = connect().await;
    let pid = backend_pid(&victim).await;
    victim.batch_execute("BEGIN").await.unwrap();
    let first = msg.outcome(&victim).await.unwrap_or_else(|e| panic!("first delivery: {}", describe(&e)));
    assert!(first.applied, "first delivery: {:?}", first.raw);
    assert_eq!(call_rows(&victim, &org, &call).await, inside, "rows inside the doomed transaction");

    kill(&db, pid).await;
    let after = victim.query("SELECT 1", &[]).await;
    assert!(after.is_err(), "the killed connection still answers");

    assert_eq!(call_rows(&db, &org, &call).await, CallRows::default(), "rows left by the killed transaction");
    for table in ["calls", "outbox", "processed_webhook_events", "call_transcripts"] {
        assert_eq!(count_org_rows(&db, table, &org).await, 0, "{table} rows of the org after the crash");
    }
    let notes = listener.drain(&db, &org).await;
    assert!(notes.is_empty(), "the killed transaction notified: {notes:?}");

    let redelivered = msg.outcome(&db).await.unwrap_or_else(|e| panic!("redelivery: {}", describe(&e)));
    assert!(redelivered.applied, "redelivery after the crash: {:?}", redelivered.raw);
    assert_eq!(redelivered.event_id, first.event_id);
    let again = msg.outcome(&db).await.unwrap_or_else(|e| panic!("second redelivery: {}", describe(&e)));
    assert!(again.is_duplicate(), "second redelivery: {:?}", again.raw);
    assert_eq!(again.call_id, redelivered.call_id);
    assert_eq!(call_rows(&db, &org, &call).await, inside, "rows after the redeliveries");
    let notes = listener.drain(&db, &org).await;
    let outbox_id: i64 = db
        .query_one("SELECT id FROM voxanne.outbox WHERE org_id = $1", &[&org.id])
        .await
        .expect("one outbox row")
        .get(0);
    assert_eq!(notes.len(), 1, "notifications of the redeliveries: {notes:?}");
    assert_eq!(notes[0]["id"].as_i64(), Some(outbox_id), "{notes:?}");
}

#[tokio::test]
async fn create_inbound_call_killed_before_commit_leaves_nothing_and_redelivery_applies_once() {
    killed_before_commit(|org, call| org.ringing(call), CallRows { calls: 1, outbox: 1, ledger: 1, transcripts: 0 })
        .await;
}

#[tokio::test]
async fn record_transcript_killed_before_commit_leaves_nothing_and_redelivery_applies_once() {
    killed_before_commit(
        |org, call| org.transcript(call, "user", "are you there?", at(3)),
        CallRows { calls: 1, outbox: 1, ledger: 0, transcripts: 1 },
    )
    .await;
}

#[tokio::test]
async fn complete_call_killed_before_commit_leaves_nothing_and_redelivery_applies_once() {
    killed_before_commit(
        |org, call| org.report(call, &Report::for_call(call)),
        CallRows { calls: 1, outbox: 1, ledger: 1, transcripts: 0 },
    )
    .await;
}

/// A redelivery that arrived while the first delivery was still open waits on its mark; when
/// that backend dies, the waiting one applies the message itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_waiting_on_a_killed_transaction_applies_the_message() {
    let db = connect().await;
    let org = Org::create(&db).await;
    let call = unique("call");
    let msg = org.ringing(&call);

    let victim = connect().await;
    let victim_pid = backend_pid(&victim).await;
    victim.batch_execute("BEGIN").await.unwrap();
    assert!(msg.outcome(&victim).await.unwrap().applied);

    let waiter = connect().await;
    let waiter_pid = backend_pid(&waiter).await;
    let waiting = tokio::spawn({
        let msg = msg.clone();
        async move { msg.outcome(&waiter).await }
    });
    // Bounded poll (no sleep) until the waiter is blocked by the victim.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let blocked: bool = db
            .query_one("SELECT $2::int = ANY (pg_catalog.pg_blocking_pids($1))", &[&waiter_pid, &victim_pid])
            .await
            .unwrap()
            .get(0);
        if blocked {
            break;
        }
        assert!(!waiting.is_finished(), "the redelivery did not wait for the open first delivery");
        assert!(Instant::now() < deadline, "the redelivery never blocked on the first delivery");
        tokio::task::yield_now().await;
    }

    kill(&db, victim_pid).await;
    let outcome = waiting.await.unwrap().unwrap_or_else(|e| panic!("waiting redelivery: {}", describe(&e)));
    assert!(outcome.applied, "the waiting redelivery after the crash: {:?}", outcome.raw);
    assert_eq!(call_rows(&db, &org, &call).await, CallRows { calls: 1, outbox: 1, ledger: 1, transcripts: 0 });
    assert!(msg.outcome(&db).await.unwrap().is_duplicate());
}
