//! Create/complete/transcript races in random order, compared with serial delivery.
//!
//! tests/concurrent_lifecycle.rs fires the five messages of one call at once from fixed
//! clients. Here every call has its whole script (ringing, in-progress, an ignored
//! speech-update, two transcript lines, status ended, end-of-call report), each message is
//! delivered one to three times, and the slots of the k-th call of each of three orgs are
//! shuffled together (seeded) over 16 concurrent senders, so the messages of a call race each
//! other, and other orgs' calls, in a different order every time — straight to
//! `handle_vapi_message`, and through the relay. The same messages are then delivered once each,
//! in order, to a twin of each org: every org and its twin must end in exactly the same
//! state (every column of every call, lines, ledger, call.ended / call.transcript payloads),
//! and no sender may see an error: a deadlock or serialization failure reaching a SQL client,
//! or a 5xx from the relay, fails the test (the relay's own retries are counted).
//!
//! The final state is also compared with the independent model (voxanne_it::model), and the
//! senders' answers with the tables both ways.
//!
//! CI: 3 x 50 calls per transport; VOXANNE_LONG=1: 3 x 700.

use voxanne_it::figures::{scale, seed, Figures, Rng};
use voxanne_it::model;
use voxanne_it::relay::{Relay, SECRET};
use voxanne_it::vapi::{self, Senders, Transport};
use voxanne_it::*;

const SENDERS: usize = 16;
/// Orgs racing at once, so a message routed to the wrong org shows as a leak.
const ORGS: usize = 3;

enum Via {
    Sql,
    Relay,
}

async fn race_against_serial(via: Via, name: &'static str, seed_default: u64) {
    let calls_per_org = scale(50, 700);
    let mut figures = Figures::new(name);
    let mut rng = Rng::new(seed(seed_default));
    let db = connect().await;
    let mut raced = Vec::new();
    for _ in 0..ORGS {
        raced.push(Org::create(&db).await);
    }

    let messages = vapi::workload(ORGS, calls_per_org, "race");
    // slots: each message 1-3 times; the k-th call of every org shuffled together, so calls of
    // different orgs race each other as well as their own messages
    let per_call = messages.len() / (ORGS * calls_per_org);
    let mut slots = Vec::new();
    for k in 0..calls_per_org {
        let mut w = Vec::new();
        for o in 0..ORGS {
            let first = (o * calls_per_org + k) * per_call;
            for i in first..first + per_call {
                w.push(i);
                if rng.chance(0.5) {
                    w.push(i);
                    if rng.chance(0.5) {
                        w.push(i);
                    }
                }
            }
        }
        rng.shuffle(&mut w);
        slots.extend(w);
    }
    figures.delivered = slots.len() as u64;
    figures.duplicates = (slots.len() - messages.len()) as u64;

    let bodies: Vec<String> = messages.iter().map(|m| m.body(&raced[m.org].assistant_id)).collect();
    let senders = Senders::new(bodies, slots);
    let url = std::env::var("VOXANNE_DATABASE_URL").expect("VOXANNE_DATABASE_URL");
    let relay = match via {
        Via::Relay => Some(Relay::start(&url, &["--pool-size", "16"]).await),
        Via::Sql => None,
    };
    let http = voxanne_it::relay::http_client(SENDERS);
    let transports: Vec<Transport> = (0..SENDERS)
        .map(|_| match &relay {
            Some(r) => Transport::http(http.clone(), r.webhook_url(), SECRET),
            None => Transport::sql(config()),
        })
        .collect();
    for task in senders.spawn(transports) {
        task.await.expect("sender");
    }
    // Valid messages on a healthy database: every attempt must be acknowledged at once.
    let retries = senders.retries.load(std::sync::atomic::Ordering::Relaxed);
    if retries > 0 {
        figures.violation("errors", format!("{retries} deliveries were answered 503 / a transient SQLSTATE"));
    }
    for r in senders.refused.lock().unwrap().iter() {
        figures.violation("errors", r.clone());
    }
    let answers = senders.acked.lock().unwrap().clone();
    let tally = vapi::outcomes(&answers);
    figures.applied = tally.get("applied").copied().unwrap_or(0);
    for (k, n) in &tally {
        figures.note(&format!("answers {k}"), *n);
    }
    if let Some(r) = &relay {
        // the relay retries a deadlock or serialization failure silently: on a healthy
        // database that is the error a SQL sender would have seen, so it counts as one
        let retried = r.db_retries().await;
        figures.note("relay retries of transient database errors", retried);
        if retried > 0 {
            figures.violation("errors", format!("the relay retried {retried} statements on a healthy database"));
        }
    }

    let (doubled, _) = vapi::sender_ledger(&senders, &messages);
    for d in doubled {
        figures.violation("doubled", d);
    }
    // exactly once, no partial rows, no org holding another's call
    let verdicts = vapi::verify(&db, &raced, &messages, &|_| true).await;
    verdicts.record(&mut figures);
    // what the documented rules say, field by field, and the answers against the tables both
    // ways: no crash here, so every message was answered applied or stale exactly once
    for d in model::compare(&db, &raced, &messages, 10).await {
        figures.violation("errors", d);
    }
    for (o, org) in raced.iter().enumerate() {
        model::two_way(&db, o, org.id, &messages, &senders, true).await.record(&mut figures);
    }

    // the same state as serial delivery, org by org
    for (o, org) in raced.iter().enumerate() {
        let serial = Org::create(&db).await;
        let ordered: Vec<&vapi::Message> = messages.iter().filter(|m| m.org == o).collect();
        vapi::deliver_serially(&db, &serial.assistant_id, &ordered).await;
        let got = vapi::org_state(&db, org.id).await;
        let want = vapi::org_state(&db, serial.id).await;
        assert_eq!(want.len(), calls_per_org, "the serial reference has every call");
        figures.checks += calls_per_org as u64;
        for d in vapi::state_diff(&got, &want, 10) {
            figures.violation("errors", format!("org {o} differs from serial delivery: {d}"));
        }
    }
    figures.note("calls", (ORGS * calls_per_org) as u64);
    figures.note("orgs", ORGS as u64);
    figures.note("senders", SENDERS as u64);
    if let Some(r) = relay {
        r.stop().await;
    }
    figures.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_order_races_through_sql_end_like_serial_delivery() {
    race_against_serial(Via::Sql, "races/sql: random order vs serial", 0x5eed_0001).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_order_races_through_the_relay_end_like_serial_delivery() {
    race_against_serial(Via::Relay, "races/relay: random order vs serial", 0x5eed_0002).await;
}
