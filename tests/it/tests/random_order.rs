//! Create/complete/transcript races in random order, compared with serial delivery.
//!
//! tests/concurrent_lifecycle.rs fires the five messages of one call at once from fixed
//! clients. Here every call has its whole script (ringing, in-progress, an ignored
//! speech-update, two transcript lines, status ended, end-of-call report), each message is
//! delivered one to three times, and the slots of the k-th call of each of three orgs form a
//! window, shuffled (seeded) over 16 concurrent senders. The senders start each window together
//! (a barrier: every sender waits for all the others before the window starts, so nothing of
//! two windows is in flight at once), so the messages of a call race each other, and the other
//! orgs' calls, in a different order every time — straight to `handle_vapi_message`, and
//! through the relay. The same messages are then delivered once each, in order, to a twin of
//! each org: every org and its twin must end in exactly the same state (every column of every
//! call, lines, ledger, call.ended / call.transcript payloads), and no sender may see an error:
//! a deadlock or serialization failure reaching a SQL client, a 5xx from the relay, or a
//! transient SQLSTATE the relay retried on the sender's behalf fails the test.
//!
//! The final state is also compared with the independent model (voxanne_it::model), and the
//! senders' answers with the tables both ways (an answer naming another org is a leak; no org
//! may hold a call id only another org was sent).
//!
//! The overlap of every window is measured, and the test fails when nothing overlapped:
//! - SQL: the server's window of every statement (`statement_timestamp()` ..
//!   `clock_timestamp()` in its own target list); it fails unless some applied statement had
//!   another statement of its window in flight with it. `figures.overlap`: statements that
//!   overlapped another of their window.
//! - relay: the senders' request windows (send .. answer received), every attempt; it fails
//!   unless some applied request had another of its window in flight with it. And the server's
//!   windows of the relay's statements, read from `pg_stat_activity` between two windows (the
//!   last statement of each of the relay's sessions: a lower bound, about half of them); it
//!   fails unless two of them overlapped. `figures.overlap`: those server windows that
//!   overlapped another of their window.
//!
//! `figures.reached` counts the attempts the database answered, `figures.retries` the
//! redeliveries after a failed attempt plus the relay's own retries (both must be 0 here).
//!
//! CI: 3 x 50 calls per transport; VOXANNE_LONG=1: 3 x 700.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use voxanne_it::figures::{scale, seed, Figures, Rng};
use voxanne_it::model;
use voxanne_it::relay::{Relay, SECRET};
use voxanne_it::vapi::{self, Clock, Senders, Transport, WindowHook};
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
    let mut windows = Vec::new();
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
        windows.push(w.len());
        slots.extend(w);
    }
    figures.duplicates = (slots.len() - messages.len()) as u64;

    let bodies: Vec<String> = messages.iter().map(|m| m.body(&raced[m.org].assistant_id)).collect();
    // one window per k: the senders start each window together (a barrier), so the k-th calls
    // of the three orgs race each other and nothing of another window
    let windows_count = windows.len();
    let senders = Senders::in_windows(bodies, slots, windows);
    let url = std::env::var("VOXANNE_DATABASE_URL").expect("VOXANNE_DATABASE_URL");
    // the relay's sessions by a name of their own, to find their statements in pg_stat_activity
    let application_name = format!("races-relay-{}", uuid::Uuid::new_v4().simple());
    let relay = match via {
        Via::Relay => {
            Some(Relay::start(&url, &["--pool-size", "16", "--db-application-name", &application_name]).await)
        }
        Via::Sql => None,
    };
    let http = voxanne_it::relay::http_client(SENDERS);
    let transports: Vec<Transport> = (0..SENDERS)
        .map(|_| match &relay {
            Some(r) => Transport::http(http.clone(), r.webhook_url(), SECRET),
            None => Transport::sql_timed(config()),
        })
        .collect();
    // Through the relay, the statements cannot time themselves: between two windows (nothing
    // in flight) the relay's sessions' last statements are read from pg_stat_activity.
    type Windows = Vec<(SystemTime, SystemTime)>;
    let relay_windows: Arc<Mutex<Vec<(Windows, u64)>>> = Arc::default();
    let hook: Option<WindowHook> = match via {
        Via::Sql => None,
        Via::Relay => {
            let probe = Arc::new(tokio::sync::Mutex::new((
                connect().await,
                StatementWindows::new(&application_name, vapi::HANDLE_VAPI_MESSAGE),
            )));
            let out = Arc::clone(&relay_windows);
            Some(Arc::new(move |_window| {
                let (probe, out) = (Arc::clone(&probe), Arc::clone(&out));
                Box::pin(async move {
                    let mut probe = probe.lock().await;
                    let (db, windows) = &mut *probe;
                    let read = windows.read_new(db).await;
                    out.lock().unwrap().push(read);
                })
            }))
        }
    };
    for task in senders.spawn_with(transports, hook) {
        task.await.expect("sender");
    }
    // the barrier: every window starts after the one before it ended
    let spans = senders.window_spans();
    assert!(spans.iter().all(Option::is_some), "every window was delivered");
    for (w, pair) in spans.windows(2).enumerate() {
        let (before, after) = (pair[0].unwrap(), pair[1].unwrap());
        assert!(before.1 <= after.0, "window {} started before window {w} ended", w + 1);
    }
    figures.delivered = senders.attempts.load(Ordering::Relaxed);
    figures.reached = senders.reached();
    // How the windows raced. SQL: the statements' windows on the server, every attempt. Relay:
    // the requests' windows as the senders saw them, every attempt, and the statements'
    // windows on the server, the last of each session per window (a lower bound).
    match via {
        Via::Sql => {
            let stats = senders.race_stats(Clock::Server);
            stats.assert_raced(&format!("{name} (server clock)"));
            figures.overlap = stats.overlapped as u64;
            figures.note(
                "windows whose applied deliveries had another in flight (server clock)",
                stats.contended_rounds as u64,
            );
            figures.note("deliveries in flight with an applied one (server clock)", stats.overlapping as u64);
            figures.note("deliveries measured (server clock)", stats.windows as u64);
        }
        Via::Relay => {
            let stats = senders.race_stats(Clock::Client);
            stats.assert_raced(&format!("{name} (client clock)"));
            figures.note(
                "windows whose applied requests had another in flight (client clock)",
                stats.contended_rounds as u64,
            );
            figures.note("requests in flight with an applied one (client clock)", stats.overlapping as u64);
            figures.note("requests that overlapped another of their window (client clock)", stats.overlapped as u64);
            let mut server = RaceStats::default();
            let mut active = 0;
            for (windows, running) in relay_windows.lock().unwrap().iter() {
                server.record_spans(windows, &[]);
                active += running;
            }
            eprintln!(
                "{name}: {} of {} statement windows seen on the server overlapped another of their window ({} windows)",
                server.overlapped, server.windows, server.rounds
            );
            assert_eq!(server.rounds, windows_count, "one read of the relay's sessions per window");
            assert!(
                server.overlapped > 0,
                "{name}: no two of the relay's statements of a window ran at once: {server:?}"
            );
            figures.overlap = server.overlapped as u64;
            figures
                .note("statement windows seen (each session's last of a window, server clock)", server.windows as u64);
            figures.note("sessions still running when a window's statements were read", active);
        }
    }
    // Valid messages on a healthy database: every attempt must be acknowledged at once.
    let retries = senders.retries.load(Ordering::Relaxed);
    figures.retries += retries;
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
        figures.retries += retried;
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
