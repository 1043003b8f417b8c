//! The outbox consumer API: commit-ordered reads that never skip a late-committing producer,
//! acknowledgements that only move forward, retention that keeps unacknowledged rows, and the
//! Supabase Realtime publication. Each test owns a private database: cursors are global to it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;
use voxanne_it::*;

const CREATE: &str = "CREATE EXTENSION voxanne_ext";

/// One outbox message as `outbox_read` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Read {
    xid: u64,
    id: i64,
}

async fn read(client: &Client, consumer: &str, limit: i32) -> Vec<Read> {
    client
        .query("SELECT xid::text::bigint, id FROM voxanne.outbox_read($1, $2)", &[&consumer, &limit])
        .await
        .expect("outbox_read")
        .iter()
        .map(|r| Read { xid: r.get::<_, i64>(0) as u64, id: r.get(1) })
        .collect()
}

/// Rows become readable once every older transaction in the cluster has finished, other
/// databases' included (xids are cluster-wide): wait, within a bound, for `n` of them.
async fn read_at_least(client: &Client, consumer: &str, n: usize) -> Vec<Read> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = read(client, consumer, 100).await;
        if rows.len() >= n {
            return rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {} of {n} messages became readable", rows.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ack(client: &Client, consumer: &str, last: &Read) {
    client
        .execute("SELECT voxanne.outbox_ack($1, $2::text::xid8, $3)", &[&consumer, &last.xid.to_string(), &last.id])
        .await
        .expect("outbox_ack");
}

async fn ringing(client: &Client, org: &Org) -> i64 {
    let out = org.ringing(&unique("call")).call(client).await.expect("create_inbound_call");
    assert_eq!(out["applied"], true);
    client.query_one("SELECT max(id) FROM voxanne.outbox WHERE org_id = $1", &[&org.id]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_late_committing_transaction_is_never_skipped() {
    let (db, owner) = private_db("", CREATE).await;
    let org = Org::create(&owner).await;
    let slow = connect_db(&db).await;
    let fast = connect_db(&db).await;

    // the slow producer takes the lower id first and commits last
    slow.batch_execute("BEGIN").await.unwrap();
    let early_id = ringing(&slow, &org).await;
    let late_id = ringing(&fast, &org).await;
    assert!(early_id < late_id);

    let seen = read(&owner, "it-consumer", 100).await;
    assert!(
        seen.iter().all(|m| m.id != late_id),
        "the committed row behind an open transaction must wait: a cursor past it would skip {early_id}"
    );
    slow.batch_execute("COMMIT").await.unwrap();

    let seen = read_at_least(&owner, "it-consumer", 2).await;
    let ids: Vec<i64> = seen.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![early_id, late_id], "both, in commit order");
    ack(&owner, "it-consumer", seen.last().unwrap()).await;
    assert!(read(&owner, "it-consumer", 100).await.is_empty());
    drop_db(&db).await;
}

/// 8 producers (half of them holding their transaction open for a random moment) and one
/// consumer reading and acknowledging at the same time: every message is read exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_producers_are_read_exactly_once_in_commit_order() {
    const PRODUCERS: usize = 8;
    const EACH: usize = 40;
    let (db, owner) = private_db("", CREATE).await;
    let org = Arc::new(Org::create(&owner).await);

    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let (db, org) = (db.clone(), Arc::clone(&org));
        tasks.push(tokio::spawn(async move {
            let client = connect_db(&db).await;
            for i in 0..EACH {
                let hold = p % 2 == 0;
                if hold {
                    client.batch_execute("BEGIN").await.unwrap();
                }
                org.ringing(&format!("p{p}-{i}")).call(&client).await.expect("produce");
                if hold {
                    tokio::time::sleep(Duration::from_millis((i as u64 * 7 + p as u64 * 3) % 11)).await;
                    client.batch_execute("COMMIT").await.unwrap();
                }
            }
        }));
    }

    let mut seen: Vec<Read> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < PRODUCERS * EACH {
        assert!(tokio::time::Instant::now() < deadline, "consumer saw only {} messages", seen.len());
        let batch = read(&owner, "it-consumer", 17).await;
        if let Some(last) = batch.last() {
            ack(&owner, "it-consumer", last).await;
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen.extend(batch);
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(read(&owner, "it-consumer", 100).await.is_empty(), "nothing left after all were acknowledged");

    let unique: HashSet<&Read> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no message read twice");
    let all: i64 = owner.query_one("SELECT count(*) FROM voxanne.outbox", &[]).await.unwrap().get(0);
    assert_eq!(seen.len() as i64, all, "no message skipped");
    assert!(seen.windows(2).all(|w| (w[0].xid, w[0].id) < (w[1].xid, w[1].id)), "commit order");
    drop_db(&db).await;
}

#[tokio::test]
async fn acknowledgements_only_move_forward_and_must_name_a_message() {
    let (db, owner) = private_db("", CREATE).await;
    let org = Org::create(&owner).await;
    for _ in 0..3 {
        ringing(&owner, &org).await;
    }
    let all = read_at_least(&owner, "c", 3).await;
    ack(&owner, "c", &all[2]).await;
    ack(&owner, "c", &all[0]).await; // late, repeated: harmless
    assert!(read(&owner, "c", 100).await.is_empty());

    let err = owner
        .execute("SELECT voxanne.outbox_ack('c', '1'::xid8, -5)", &[])
        .await
        .expect_err("an unknown position is refused");
    assert_eq!(err.code().unwrap().code(), "22023", "{err}");
    for (sql, code) in [
        ("SELECT * FROM voxanne.outbox_read(NULL)", "22004"),
        ("SELECT * FROM voxanne.outbox_read('')", "22023"),
        ("SELECT * FROM voxanne.outbox_read('c', 0)", "22003"),
        ("SELECT voxanne.outbox_ack('c', NULL, 1)", "22004"),
    ] {
        let err = owner.execute(sql, &[]).await.expect_err(sql);
        assert_eq!(err.code().unwrap().code(), code, "{sql}: {err}");
    }
    drop_db(&db).await;
}

#[tokio::test]
async fn purge_outbox_keeps_what_a_consumer_has_not_acknowledged() {
    let (db, owner) = private_db("", CREATE).await;
    let org = Org::create(&owner).await;
    for _ in 0..4 {
        ringing(&owner, &org).await;
    }
    let all = read_at_least(&owner, "slow-reader", 4).await;
    ack(&owner, "slow-reader", &all[1]).await;
    owner.execute("UPDATE voxanne.outbox SET created_at = now() - interval '8 days'", &[]).await.unwrap();

    let purged: i64 = owner.query_one("SELECT voxanne.purge_outbox()", &[]).await.unwrap().get(0);
    assert_eq!(purged, 2, "only the two acknowledged rows");
    let left: Vec<i64> =
        owner.query("SELECT id FROM voxanne.outbox ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(left, vec![all[2].id, all[3].id]);
    let err = owner.execute("SELECT voxanne.purge_outbox('10 minutes')", &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22023");

    // once the slow reader is dropped, its unacknowledged rows go too
    let dropped: bool =
        owner.query_one("SELECT voxanne.outbox_drop_consumer('slow-reader')", &[]).await.unwrap().get(0);
    assert!(dropped);
    let purged: i64 = owner.query_one("SELECT voxanne.purge_outbox()", &[]).await.unwrap().get(0);
    assert_eq!(purged, 2);
    drop_db(&db).await;
}

#[tokio::test]
async fn the_outbox_joins_an_existing_supabase_realtime_publication() {
    let (db, owner) = private_db("CREATE PUBLICATION supabase_realtime", CREATE).await;
    let published: i64 = owner
        .query_one(
            "SELECT count(*) FROM pg_publication_tables
             WHERE pubname = 'supabase_realtime' AND schemaname = 'voxanne' AND tablename = 'outbox'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, 1);
    drop_db(&db).await;

    // a FOR ALL TABLES publication already covers it, and no publication is fine too
    for before in ["CREATE PUBLICATION supabase_realtime FOR ALL TABLES", ""] {
        let (db, _) = private_db(before, CREATE).await;
        drop_db(&db).await;
    }
}
