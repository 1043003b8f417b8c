//! The durable spool (`--spool-dir`) against a cluster of the test's own, which the tests stop
//! (a crash: `-m immediate`, and a clean stop) while webhooks keep coming: every message answered
//! 200 is in the database exactly once after it is back, whatever was spooled and drained; what
//! cannot be spooled (a reply Vapi waits for, a full spool) is answered 503 and kept nowhere.
//! The kills of the relay itself (mid-append, mid-drain) are in tests/it (a relay process).
//!
//! Needs the system PostgreSQL 15 with voxanne_ext installed (bin/lib.sh), root (the server
//! runs as `postgres`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::Mutex;

/// The relay's metrics are process-wide: the tests of this file take turns, and read each
/// counter's change over their own run.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// The value of one series (name and labels, as rendered) in a Prometheus text, 0 when absent.
fn series(metrics: &str, series: &str) -> u64 {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok()).map_or(0, |v| v as u64)
}

/// How much each of `names` grew between two renderings.
fn grew(before: &str, after: &str, names: &[&str]) -> Vec<u64> {
    names.iter().map(|n| series(after, n) - series(before, n)).collect()
}

/// A cluster with the extension and one tenant, and a spool directory.
struct World {
    cluster: Cluster,
    spool_dir: String,
    t: Tenant,
}

impl World {
    async fn new(name: &str) -> World {
        let cluster = Cluster::init(Scratch::new(&format!("spool-{name}")), free_port(), "", None);
        cluster.start();
        let admin = cluster.admin("postgres").await;
        admin.batch_execute(ROLES_AND_EXTENSION).await.unwrap();
        let t = tenant(&admin).await;
        let spool_dir = cluster.dir.file("spool");
        World { cluster, spool_dir, t }
    }

    fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.cluster.port)
    }

    /// A relay spooling into the world's directory; returns once it knows the reply-expecting
    /// types (or at once, `wait_for_types` false: the database may be down).
    async fn relay(&self, extra: &[&str], wait_for_types: bool) -> Relay {
        let mut flags = vec!["--spool-dir", &self.spool_dir, "--pool-timeout", "1s", "--connect-timeout", "1s"];
        flags.extend_from_slice(extra);
        let relay = Relay::start(&self.url(), &flags).await;
        if wait_for_types {
            let spool = relay.state.spool.clone().expect("a spool");
            wait_until("the relay learns the reply-expecting types", || {
                let spool = spool.clone();
                async move { spool.knows_reply_types() }
            })
            .await;
        }
        relay
    }

    async fn admin(&self) -> tokio_postgres::Client {
        self.cluster.admin("postgres").await
    }
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the relay's spool is empty (drained into the database).
async fn drained(relay: &Relay) {
    let spool = relay.state.spool.clone().expect("a spool");
    wait_until("the spool is drained", || {
        let spool = spool.clone();
        async move { spool.depth().entries == 0 }
    })
    .await;
}

/// An assistant-request: Vapi waits for its answer, so it is never spooled.
fn assistant_request(call_id: &str) -> String {
    json!({ "message": { "type": "assistant-request", "call": { "id": call_id, "phoneNumberId": "pn_1" } } })
        .to_string()
}

/// The spool's segment files.
fn segments(dir: &str) -> usize {
    std::fs::read_dir(dir)
        .map_or(0, |d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".spool")).count())
}

#[tokio::test]
async fn messages_sent_while_the_database_is_down_are_spooled_answered_200_and_stored_once_when_it_is_back() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let world = World::new("crash").await;
    let relay = world.relay(&[], true).await;
    let metrics_before = relay.metrics().await;
    let t = &world.t;

    // before the crash: applied directly, nothing spooled
    let before: Vec<String> = (0..5).map(|_| new_call_id()).collect();
    for call in &before {
        let (status, json) = relay.deliver_json(&status_update(&t.assistant, call, "ringing")).await;
        assert_eq!((status, json["outcome"].as_str()), (StatusCode::OK, Some("applied")), "{json}");
    }
    assert_eq!(segments(&world.spool_dir), 0);

    world.cluster.stop("immediate");
    // while it is down: new calls, redeliveries of calls applied before, a message the database
    // will refuse (no agent has the assistant), and an assistant-request
    let during: Vec<String> = (0..20).map(|_| new_call_id()).collect();
    let mut bodies: Vec<String> = during.iter().map(|c| status_update(&t.assistant, c, "in-progress")).collect();
    bodies.extend(before.iter().map(|c| status_update(&t.assistant, c, "ringing")));
    let orphan = new_call_id();
    bodies.push(status_update("asst_nobody_has", &orphan, "ringing"));
    for body in &bodies {
        let (status, json) = relay.deliver_json(body).await;
        assert_eq!((status, &json), (StatusCode::OK, &json!({ "spooled": true })));
    }
    let (status, json) = relay.deliver_json(&assistant_request(&new_call_id())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "a reply Vapi waits for is not spooled: {json}");

    let (status, ready) = answer(relay.get("/readyz").await).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["status"], "spooling");
    assert_eq!(ready["spool"]["entries"], bodies.len() as u64, "{ready}");

    world.cluster.start();
    drained(&relay).await;
    let db = world.admin().await;
    for call in &during {
        let row = db
            .query_one("SELECT count(*), max(status) FROM voxanne.calls WHERE vapi_call_id = $1", &[call])
            .await
            .unwrap();
        assert_eq!((row.get::<_, i64>(0), row.get::<_, Option<String>>(1)), (1, Some("in-progress".into())), "{call}");
    }
    for call in &before {
        assert_eq!(calls(&db, call).await, 1, "a redelivery spooled is a duplicate: {call}");
    }
    let refused: Vec<String> = db
        .query("SELECT sqlstate FROM voxanne.rejected_events WHERE vapi_call_id = $1", &[&orphan])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(refused, vec!["42704".to_string()], "refused by the database on drain: in the dead letter once");
    assert_eq!(calls(&db, &orphan).await, 0);

    let counted = grew(
        &metrics_before,
        &relay.metrics().await,
        &[
            "voxanne_relay_spool_appended_total",
            r#"voxanne_relay_spool_drained_total{outcome="applied"}"#,
            r#"voxanne_relay_spool_drained_total{outcome="duplicate"}"#,
            r#"voxanne_relay_spool_drained_total{outcome="dead_lettered"}"#,
            r#"voxanne_relay_spool_refused_total{reason="reply_expected"}"#,
        ],
    );
    assert_eq!(counted, [bodies.len() as u64, 20, 5, 1, 1], "appended, applied, duplicate, dead-lettered, refused");
    assert_eq!(segments(&world.spool_dir), 0, "drained segments are deleted");

    // healthy again: straight to the database
    let (status, json) = relay.deliver_json(&status_update(&t.assistant, &new_call_id(), "ringing")).await;
    assert_eq!((status, json["outcome"].as_str()), (StatusCode::OK, Some("applied")), "{json}");
}

#[tokio::test]
async fn a_relay_restarted_while_the_database_is_down_keeps_spooling_and_drains_what_its_predecessor_spooled() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let world = World::new("restart").await;
    let t = &world.t;
    let first = world.relay(&[], true).await;
    world.cluster.stop("fast");
    let calls_sent: Vec<String> = (0..10).map(|_| new_call_id()).collect();
    for call in &calls_sent[..5] {
        let (status, json) = first.deliver_json(&status_update(&t.assistant, call, "ringing")).await;
        assert_eq!((status, &json), (StatusCode::OK, &json!({ "spooled": true })));
    }
    first.stop().await;

    // the database is still down: the new relay knows the reply-expecting types from the spool
    // directory, so it spools at once
    let second = world.relay(&[], false).await;
    for call in &calls_sent[5..] {
        let (status, json) = second.deliver_json(&status_update(&t.assistant, call, "ringing")).await;
        assert_eq!((status, &json), (StatusCode::OK, &json!({ "spooled": true })));
    }
    assert_eq!(second.state.spool.as_ref().unwrap().depth().entries, 10);

    world.cluster.start();
    drained(&second).await;
    let db = world.admin().await;
    for call in &calls_sent {
        assert_eq!(calls(&db, call).await, 1, "{call}");
    }
}

#[tokio::test]
async fn past_the_spools_cap_a_message_is_answered_503_and_kept_nowhere() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let world = World::new("full").await;
    let t = &world.t;
    // room for two status updates
    let one = status_update(&t.assistant, &new_call_id(), "ringing").len() + 64;
    let cap = (8 + 2 * one).to_string();
    let relay = world.relay(&["--spool-max-bytes", &cap], true).await;
    let metrics_before = relay.metrics().await;
    world.cluster.stop("immediate");

    let calls_sent: Vec<String> = (0..3).map(|_| new_call_id()).collect();
    let mut answers = Vec::new();
    for call in &calls_sent {
        answers.push(relay.deliver_json(&status_update(&t.assistant, call, "ringing")).await);
    }
    let statuses: Vec<StatusCode> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE], "{answers:?}");
    let (status, ready) = answer(relay.get("/readyz").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "full and the database down: not ready {ready}");
    let refused =
        grew(&metrics_before, &relay.metrics().await, &[r#"voxanne_relay_spool_refused_total{reason="full"}"#]);
    assert_eq!(refused, [1]);

    world.cluster.start();
    drained(&relay).await;
    let db = world.admin().await;
    let stored: Vec<i64> = futures_util::future::join_all(calls_sent.iter().map(|c| calls(&db, c))).await;
    assert_eq!(stored, [1, 1, 0], "the 503 was kept nowhere");
}

#[tokio::test]
async fn while_the_database_is_down_messages_are_spooled_without_trying_it_each_time() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let world = World::new("breaker").await;
    let relay = world.relay(&[], true).await;
    world.cluster.stop("immediate");
    let retries_before = relay.db_retries().await;
    let started = Instant::now();
    let calls_sent: Vec<String> = (0..300).map(|_| new_call_id()).collect();
    for call in &calls_sent {
        let (status, json) = relay.deliver_json(&status_update(&world.t.assistant, call, "ringing")).await;
        assert_eq!((status, &json), (StatusCode::OK, &json!({ "spooled": true })));
    }
    let elapsed = started.elapsed().as_secs() + 1;
    // a failed try is retried once (voxanne_relay_db_retries_total): without the pause every
    // message would try, and count one; with it, a try a second (the first on a pooled session
    // the crash broke, and its retries)
    let tried = relay.db_retries().await - retries_before;
    assert!(tried <= 2 * elapsed + 2, "{tried} tries of the database for 300 messages in {elapsed} s");
    world.cluster.start();
    drained(&relay).await;
    let db = world.admin().await;
    let stored = count(&db, "SELECT count(*) FROM voxanne.calls WHERE vapi_call_id = ANY($1)", &[&calls_sent]).await;
    assert_eq!(stored, 300);
}
