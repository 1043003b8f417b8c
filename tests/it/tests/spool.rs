//! Nothing lost at the edge: the relay's spool (`--spool-dir`) under load while the database is
//! down, and while the relay itself is killed. The senders redeliver whatever was not answered
//! 2xx, as Vapi's retry plan would, but the ledger's point is the other way round: a 200 is a
//! promise. Every message answered 200 (`applied`, `duplicate`, … or `spooled`) must be in the
//! database exactly once when the run is over, and nothing is doubled, whatever was spooled,
//! drained, killed and replayed on the way (vapi::verify, model::two_way, vapi::sender_ledger).
//!
//! 1. `pg_ctl stop` under load, alternately `-m immediate` (a crash) and `-m fast` (a clean
//!    stop), the senders going on for a while before the restart: what they send meanwhile is
//!    spooled, then drained — in-process relay, private cluster.
//! 2. The relay as a process (tests/it/src/bin/voxanne-it-relay.rs), the database down:
//!    SIGKILL while it is spooling (requests in flight), a restart that must spool on from what
//!    it kept on disk, the database back, SIGKILL while it drains (the spool partly drained), and
//!    `pg_ctl stop -m immediate` while the next relay drains.
//!
//! CI: 2 stops, 1 round of kills; VOXANNE_LONG=1: 8 stops, 5 rounds.

use std::sync::atomic::Ordering;
use std::time::Duration;

use voxanne_it::cluster::PrivateCluster;
use voxanne_it::figures::{scale, seed, Figures, Rng};
use voxanne_it::model;
use voxanne_it::relay::{http_client, metric_sum, ChildRelay, Relay, SECRET};
use voxanne_it::vapi::{self, Message, Senders, Transport};
use voxanne_it::*;

const ORGS: usize = 3;
const SENDERS: usize = 12;

fn bodies(messages: &[Message], orgs: &[Org]) -> Vec<String> {
    messages.iter().map(|m| m.body(&orgs[m.org].assistant_id)).collect()
}

/// How many slots were answered `{"spooled": true}`.
fn spooled_answers(senders: &Senders) -> u64 {
    senders.acked.lock().unwrap().iter().flatten().filter(|a| a["spooled"] == true).count() as u64
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "no progress: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The ledger at the end of a run: every acknowledged message once, nothing doubled, each org
/// as the model computes it from what it was sent.
async fn check_ledger(
    db: &tokio_postgres::Client,
    orgs: &[Org],
    messages: &[Message],
    senders: &Senders,
    figures: &mut Figures,
) {
    for r in senders.refused.lock().unwrap().iter() {
        figures.violation("errors", r.clone());
    }
    let verdicts = vapi::verify(db, orgs, messages, &|_| true).await;
    verdicts.record(figures);
    figures.checks += messages.len() as u64;
    for d in model::compare(db, orgs, messages, 5).await {
        figures.violation("errors", d);
    }
    let (doubled, _) = vapi::sender_ledger(senders, messages);
    for d in doubled {
        figures.violation("doubled", d);
    }
    for (o, org) in orgs.iter().enumerate() {
        model::two_way(db, o, org.id, messages, senders, false).await.record(figures);
    }
    figures.delivered = senders.attempts.load(Ordering::Relaxed);
    figures.duplicates = (senders.slot_message.len() - messages.len()) as u64;
    figures.retries = senders.retries.load(Ordering::Relaxed);
    figures.reached = senders.reached();
    let tally = vapi::outcomes(&senders.acked.lock().unwrap());
    figures.applied = tally.get("applied").copied().unwrap_or(0);
    for (k, n) in tally {
        figures.note(&format!("answers {k}"), n);
    }
}

async fn orgs_of(db: &tokio_postgres::Client) -> Vec<Org> {
    let mut orgs = Vec::new();
    for _ in 0..ORGS {
        orgs.push(Org::create(db).await);
    }
    orgs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_stopped_under_load_loses_no_message_answered_200_and_doubles_none() {
    let stops = scale(2, 8);
    let mut figures = Figures::new("spool/database stopped under load");
    let mut rng = Rng::new(seed(0x5b00_0001));
    let mut cluster = PrivateCluster::create("spool-stop").await;
    let db = cluster.connect().await;
    let orgs = orgs_of(&db).await;
    drop(db);
    let messages = vapi::workload(ORGS, scale(60, 300), "sp");
    let slots = vapi::slots(&mut rng, messages.len(), 0.3);
    let total = slots.len();
    let senders = Senders::new(bodies(&messages, &orgs), slots);
    let spool_dir = cluster.dir.join("spool");
    let relay = Relay::start(
        &cluster.url(),
        &["--pool-size", "8", "--pool-timeout", "1s", "--spool-dir", spool_dir.to_str().unwrap()],
    )
    .await;
    let spool = relay.state.spool.clone().expect("a spool");
    wait_for("the relay learns the reply-expecting types", || spool.knows_reply_types()).await;
    let http = http_client(SENDERS);
    let transports = (0..SENDERS).map(|_| Transport::http(http.clone(), relay.webhook_url(), SECRET)).collect();
    let tasks = senders.spawn(transports);

    for k in 0..stops {
        wait_for("acknowledgements", || senders.acked_count() >= total * (k + 1) / (stops + 2)).await;
        let immediate = k % 2 == 0;
        if immediate {
            cluster.stop_immediate();
        } else {
            cluster.stop_fast();
        }
        figures.fault(if immediate { "pg_ctl stop -m immediate" } else { "pg_ctl stop -m fast" }, 1);
        // the senders go on: what they send now is spooled
        let before = spooled_answers(&senders);
        wait_for("messages spooled while the database is down", || {
            spooled_answers(&senders) >= before + 20 || senders.acked_count() == total
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.below(200) as u64)).await;
        figures.note(&format!("stop {k}: spooled while down"), spooled_answers(&senders) - before);
        cluster.start();
    }
    for t in tasks {
        t.await.expect("sender");
    }
    wait_for("the spool is drained", || spool.depth().entries == 0).await;
    let db = cluster.connect_when_up().await;
    check_ledger(&db, &orgs, &messages, &senders, &mut figures).await;
    let metrics = relay.metrics().await;
    let spooled = spooled_answers(&senders);
    assert!(spooled > 0, "nothing was spooled: the test proved nothing");
    figures.note("spooled", spooled);
    figures.note("drained", metric_sum(&metrics, "voxanne_relay_spool_drained_total"));
    for line in cluster.unexpected_crashes() {
        figures.violation("crashes", line);
    }
    relay.stop().await;
    drop(db);
    cluster.stop_immediate();
    figures.finish();
}

/// The child relay's unsettled spool entries, from its /metrics (updated on every append and
/// settle; /readyz is cached).
async fn spool_entries(http: &reqwest::Client, relay: &ChildRelay) -> Option<u64> {
    let text = http.get(format!("{}/metrics", relay.base)).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("voxanne_relay_spool_entries ")?.parse::<f64>().ok()).map(|v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_sigkill_while_spooling_and_while_draining_and_a_database_crash_mid_drain_lose_nothing_acknowledged() {
    let rounds = scale(1, 5);
    let mut figures = Figures::new("spool/relay SIGKILL spooling and draining");
    let mut rng = Rng::new(seed(0x5b00_0002));
    let mut cluster = PrivateCluster::create("spool-kill").await;
    let db = cluster.connect().await;
    let orgs = orgs_of(&db).await;
    drop(db);
    let messages = vapi::workload(ORGS, scale(100, 300), "sk");
    let slots = vapi::slots(&mut rng, messages.len(), 0.3);
    let total = slots.len();
    let senders = Senders::new(bodies(&messages, &orgs), slots);
    let spool_dir = cluster.dir.join("spool");
    let http = http_client(SENDERS);
    let mut relay = ChildRelay::spawn(
        env!("CARGO_BIN_EXE_voxanne-it-relay"),
        &cluster.url(),
        &["--pool-size", "8", "--pool-timeout", "1s", "--spool-dir", spool_dir.to_str().unwrap()],
    );
    relay.wait_ready(&http).await;
    // the reply-expecting types, learnt while the database is up, are what a restart spools by
    wait_for("the relay keeps the reply-expecting types", || spool_dir.join("reply-types.json").exists()).await;
    let transports = (0..SENDERS).map(|_| Transport::http(http.clone(), relay.webhook_url(), SECRET)).collect();
    let tasks = senders.spawn(transports);

    for k in 0..rounds {
        wait_for("acknowledgements", || senders.acked_count() >= total * (k + 1) / (rounds + 3)).await;
        cluster.stop_immediate();
        figures.fault("pg_ctl stop -m immediate", 1);
        let before = spooled_answers(&senders);
        wait_for("messages spooled", || spooled_answers(&senders) >= before + 50 || senders.acked_count() == total)
            .await;
        // SIGKILL while spooling: requests in flight
        wait_for("a request in flight", || {
            senders.in_flight.load(Ordering::SeqCst) > 0 || senders.acked_count() == total
        })
        .await;
        relay.kill9();
        figures.fault("relay SIGKILL while spooling", 1);
        relay.start();
        relay.wait_ready(&http).await;
        // the new process spools on, the database still down
        let before = spooled_answers(&senders);
        wait_for("messages spooled after the restart", || {
            spooled_answers(&senders) >= before + 50 || senders.acked_count() == total
        })
        .await;
        figures.note(&format!("round {k}: spooled"), spooled_answers(&senders));

        // the database back: SIGKILL once the drain is under way, not finished
        senders.close_gate();
        senders.quiesce().await;
        let queued = spool_entries(&http, &relay).await.expect("the relay's metrics");
        assert!(queued > 0, "round {k}: nothing spooled to drain");
        cluster.start();
        loop {
            let left = spool_entries(&http, &relay).await.expect("the relay's metrics");
            assert!(left > 0, "round {k}: the drain finished before the kill ({queued} entries)");
            if left < queued {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        relay.kill9();
        figures.fault("relay SIGKILL while draining", 1);
        relay.start();
        relay.wait_ready(&http).await;
        // and the database crashed while the next relay drains what is left
        let mut crashed = false;
        for _ in 0..2000 {
            match spool_entries(&http, &relay).await {
                Some(left) if left > 0 && left < queued => {
                    cluster.stop_immediate();
                    figures.fault("pg_ctl stop -m immediate while draining", 1);
                    crashed = true;
                    break;
                }
                Some(0) => break,
                _ => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
        figures.note(&format!("round {k}: database crashed mid-drain"), u64::from(crashed));
        if crashed {
            tokio::time::sleep(Duration::from_millis(rng.below(200) as u64)).await;
            cluster.start();
        }
        senders.open_gate();
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while spool_entries(&http, &relay).await != Some(0) {
        assert!(tokio::time::Instant::now() < deadline, "the spool did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = cluster.connect_when_up().await;
    check_ledger(&db, &orgs, &messages, &senders, &mut figures).await;
    let spooled = spooled_answers(&senders);
    assert!(spooled > 0, "nothing was spooled: the test proved nothing");
    figures.note("spooled", spooled);
    figures.note("relay starts", relay.starts as u64);
    for line in cluster.unexpected_crashes() {
        figures.violation("crashes", line);
    }
    drop(relay);
    drop(db);
    cluster.stop_immediate();
    figures.finish();
}
