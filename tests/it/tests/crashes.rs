//! Crashes with redelivery. The sender redelivers whatever it did not get an acknowledgement
//! for (a 2xx, or a committed transaction), as Vapi's retry plan does; a ledger of what every
//! delivery slot was told is compared with the tables:
//!
//! - `lost`: a message acknowledged before a crash whose effect is missing after it (durability),
//!   or any message missing once everything was redelivered;
//! - `doubled`: an effect present twice (outbox rows per event, lines, calls);
//! - `partial`: rows of a transaction that did not commit as a whole, or rows breaking the
//!   one-statement invariants (vapi::partial_rows).
//!
//! Three faults:
//! 1. `kill -9` of a backend in the middle of a multi-message transaction (the postmaster then
//!    reinitialises every session) — in a private throwaway cluster;
//! 2. SIGKILL of the relay process under load, restart on the same port — against the test
//!    database (the relay runs as a child process: tests/it/src/bin/voxanne-it-relay.rs);
//! 3. `pg_ctl stop -m immediate` of the postmaster under load (relay and direct SQL senders),
//!    restart with crash recovery — in a private throwaway cluster.
//!
//! CI: 3 backend kills, 3 relay kills, 2 immediate shutdowns; VOXANNE_LONG=1: 20, 15, 10.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::NoTls;
use voxanne_it::cluster::PrivateCluster;
use voxanne_it::figures::{scale, seed, Figures, Rng};
use voxanne_it::model;
use voxanne_it::relay::{ChildRelay, Relay, SECRET};
use voxanne_it::vapi::{self, Kind, Message, Senders, Transport};
use voxanne_it::*;
use voxanne_relay::db::{classify_sqlstate, Class};

const ORGS: usize = 3;

/// Bodies of the workload, each message for its own org's assistant.
fn bodies(messages: &[Message], orgs: &[Org]) -> Vec<String> {
    messages.iter().map(|m| m.body(&orgs[m.org].assistant_id)).collect()
}

/// Compare every org's final state with the independent model (voxanne_it::model) and with
/// the same workload delivered serially to fresh twin orgs.
async fn compare_with_serial(db: &tokio_postgres::Client, orgs: &[Org], messages: &[Message], figures: &mut Figures) {
    figures.checks += messages.len() as u64;
    for d in model::compare(db, orgs, messages, 5).await {
        figures.violation("errors", d);
    }
    for (o, org) in orgs.iter().enumerate() {
        let twin = Org::create(db).await;
        let mine: Vec<&Message> = messages.iter().filter(|m| m.org == o).collect();
        vapi::deliver_serially(db, &twin.assistant_id, &mine).await;
        let got = vapi::org_state(db, org.id).await;
        let want = vapi::org_state(db, twin.id).await;
        figures.checks += want.len() as u64;
        for d in vapi::state_diff(&got, &want, 5) {
            figures.violation("errors", format!("org {o} differs from serial delivery: {d}"));
        }
    }
}

/// Wait until `senders` have acknowledged at least `n` slots (bounded).
async fn wait_acked(senders: &Senders, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while senders.acked_count() < n {
        assert!(tokio::time::Instant::now() < deadline, "no progress: {} of {n} acknowledged", senders.acked_count());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. kill -9 of a backend in the middle of a transaction

/// A transaction of 1-4 messages; the group may be sent twice (a redelivered batch).
struct Group {
    messages: Vec<usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backend_sigkill_mid_transaction_leaves_no_partial_rows_and_redelivery_applies_once() {
    const WORKERS: usize = 8;
    let kills = scale(3, 20);
    let calls_per_org = scale(40, 250);
    let mut figures = Figures::new("crashes/backend kill -9 mid-transaction");
    let mut rng = Rng::new(seed(0xc4a5_0001));
    let mut cluster = PrivateCluster::create("backend-kill").await;
    let db = cluster.connect().await;
    let mut orgs = Vec::new();
    for _ in 0..ORGS {
        orgs.push(Org::create(&db).await);
    }
    drop(db);
    let messages = vapi::workload(ORGS, calls_per_org, "bk");
    let bodies = Arc::new(bodies(&messages, &orgs));

    // groups of 1-4 consecutive-in-shuffle messages, some sent twice
    let mut order: Vec<usize> = (0..messages.len()).collect();
    rng.shuffle(&mut order);
    let mut groups = Vec::new();
    let mut rest = &order[..];
    while !rest.is_empty() {
        let n = (1 + rng.below(4)).min(rest.len());
        groups.push(Group { messages: rest[..n].to_vec() });
        rest = &rest[n..];
    }
    let mut sends: Vec<usize> = (0..groups.len()).collect();
    for g in 0..groups.len() {
        if rng.chance(0.2) {
            sends.push(g);
        }
    }
    rng.shuffle(&mut sends);
    // planned: every message once, plus the groups sent twice (a redelivered batch)
    let planned: u64 = sends.iter().map(|g| groups[*g].messages.len() as u64).sum();
    figures.duplicates = planned - messages.len() as u64;
    let groups = Arc::new(groups);

    let queue = Arc::new(Mutex::new(sends.into_iter().collect::<VecDeque<usize>>()));
    let committed = Arc::new(Mutex::new(BTreeSet::<usize>::new())); // groups with an acknowledged COMMIT
    let in_flight = Arc::new(AtomicUsize::new(0));
    let failed_attempts = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0)); // statements sent, every attempt
    let reached = Arc::new(AtomicU64::new(0)); // statements the database answered
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let (gate, _) = watch::channel(true);
    let gate = Arc::new(gate);
    let mut config = cluster.config();
    config.application_name("vx-bk-worker");

    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (queue, committed, in_flight, failed_attempts, sent, reached, refused, gate, groups, bodies, config) = (
            queue.clone(),
            committed.clone(),
            in_flight.clone(),
            failed_attempts.clone(),
            sent.clone(),
            reached.clone(),
            refused.clone(),
            gate.clone(),
            groups.clone(),
            bodies.clone(),
            config.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut gate_rx = gate.subscribe();
            let mut client: Option<tokio_postgres::Client> = None;
            loop {
                let Some(g) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                loop {
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    if !*gate_rx.borrow_and_update() {
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        let _ = gate_rx.wait_for(|open| *open).await;
                        continue;
                    }
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        client = match config.connect(NoTls).await {
                            Ok((c, conn)) => {
                                tokio::spawn(async move {
                                    let _ = conn.await;
                                });
                                Some(c)
                            }
                            Err(_) => None,
                        };
                    }
                    let result = match &client {
                        None => Err("cannot connect".to_string()),
                        Some(c) => async {
                            c.batch_execute("BEGIN").await?;
                            for (k, m) in groups[g].messages.iter().enumerate() {
                                if k > 0 {
                                    // widen the window in which the backend is inside the transaction
                                    c.batch_execute("SELECT pg_catalog.pg_sleep(0.002)").await?;
                                }
                                sent.fetch_add(1, Ordering::Relaxed);
                                c.query_one(vapi::HANDLE_VAPI_MESSAGE, &[&bodies[*m], &vapi::PLATFORM]).await?;
                                reached.fetch_add(1, Ordering::Relaxed);
                            }
                            c.batch_execute("COMMIT").await
                        }
                        .await
                        .map_err(|e: tokio_postgres::Error| {
                            match e.code().map(|c| c.code().to_string()) {
                                Some(code) if classify_sqlstate(&code) != Class::Transient => {
                                    format!("REFUSED {}", describe(&e))
                                }
                                _ => describe(&e),
                            }
                        }),
                    };
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    match result {
                        Ok(()) => {
                            committed.lock().unwrap().insert(g);
                            break;
                        }
                        Err(e) if e.starts_with("REFUSED") => {
                            refused.lock().unwrap().push(e);
                            break;
                        }
                        Err(_) => {
                            failed_attempts.fetch_add(1, Ordering::Relaxed);
                            client = None;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        }));
    }

    let total_groups = groups.len();
    let mut victim_states = BTreeMap::<String, u64>::new();
    for k in 0..kills {
        // let the load run, then kill a backend that is inside a transaction
        let target = total_groups * (k + 1) / (kills + 2);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while committed.lock().unwrap().len() < target {
            assert!(tokio::time::Instant::now() < deadline, "no progress before kill {k}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let monitor = cluster.connect_when_up().await;
        let (pid, state) = loop {
            let rows = monitor
                .query(
                    "SELECT pid, state FROM pg_catalog.pg_stat_activity
                     WHERE application_name = 'vx-bk-worker' AND xact_start IS NOT NULL",
                    &[],
                )
                .await
                .expect("pg_stat_activity");
            if !rows.is_empty() {
                let r = &rows[rng.below(rows.len())];
                break (r.get::<_, i32>(0), r.get::<_, Option<String>>(1).unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        gate.send_replace(false);
        cluster.kill9(pid).await;
        figures.fault("backend SIGKILL mid-transaction", 1);
        *victim_states.entry(state).or_default() += 1;
        drop(monitor);
        // every worker finishes its attempt (all sessions are reset by the postmaster)
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while in_flight.load(Ordering::SeqCst) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "workers still in flight 60 s after the kill");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let db = cluster.connect_when_up().await;
        let committed_now = committed.lock().unwrap().clone();
        let acked: BTreeSet<usize> = committed_now.iter().flat_map(|g| groups[*g].messages.iter().copied()).collect();
        let verdicts = vapi::verify(&db, &orgs, &messages, &|i| acked.contains(&i)).await;
        verdicts.record(&mut figures);
        // checks: the durability of what was acknowledged before this kill, and the atomicity of
        // the transactions not acknowledged (a committed one cannot have been cut by the kill)
        figures.checks += acked.len() as u64;
        let present = present_effects(&db, &orgs, &messages).await;
        for (g, group) in groups.iter().enumerate().filter(|(g, _)| !committed_now.contains(g)) {
            let effects: Vec<usize> =
                group.messages.iter().copied().filter(|m| messages[*m].kind != Kind::Ignored).collect();
            let n = effects.iter().filter(|m| present.contains(m)).count();
            if n != 0 && n != effects.len() {
                figures.violation(
                    "partial",
                    format!("after kill {k}: transaction {g}: {n} of {} messages present", effects.len()),
                );
            }
            figures.checks += 1;
        }
        gate.send_replace(true);
    }
    for w in workers {
        w.await.expect("worker");
    }
    for r in refused.lock().unwrap().iter() {
        figures.violation("errors", r.clone());
    }
    let db = cluster.connect_when_up().await;
    let verdicts = vapi::verify(&db, &orgs, &messages, &|_| true).await;
    verdicts.record(&mut figures);
    compare_with_serial(&db, &orgs, &messages, &mut figures).await;
    for line in cluster.unexpected_crashes() {
        figures.violation("crashes", line);
    }
    figures.note("victim backend states", serde_json::to_value(&victim_states).unwrap());
    figures.retries = failed_attempts.load(Ordering::Relaxed);
    figures.delivered = sent.load(Ordering::Relaxed);
    figures.reached = reached.load(Ordering::Relaxed);
    figures.note("transactions", total_groups as u64);
    // every message of a committed transaction was applied by it (a redelivered group is a duplicate)
    figures.applied = committed
        .lock()
        .unwrap()
        .iter()
        .flat_map(|g| groups[*g].messages.iter())
        .filter(|m| messages[**m].kind != Kind::Ignored)
        .count() as u64;
    drop(db);
    cluster.stop_immediate();
    figures.finish();
}

/// Indexes of the messages whose effect is in the tables (ignoring ignored types).
async fn present_effects(db: &tokio_postgres::Client, orgs: &[Org], messages: &[Message]) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for (o, org) in orgs.iter().enumerate() {
        let ledger: BTreeSet<String> = db
            .query("SELECT event_id FROM voxanne.processed_webhook_events WHERE org_id = $1", &[&org.id])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let lines: BTreeSet<String> = db
            .query(
                "SELECT c.vapi_call_id || E'\\x1f' || t.text FROM voxanne.call_transcripts t
                 JOIN voxanne.calls c ON c.org_id = t.org_id AND c.id = t.call_id WHERE t.org_id = $1",
                &[&org.id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (i, m) in messages.iter().enumerate().filter(|(_, m)| m.org == o) {
            let here = match &m.kind {
                Kind::Transcript { text, .. } => lines.contains(&format!("{}\u{1f}{text}", m.call)),
                Kind::Ignored => false,
                _ => ledger.contains(&m.ledger_event().unwrap()),
            };
            if here {
                out.insert(i);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 2. SIGKILL of the relay under load

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_sigkill_under_load_then_redelivery_applies_every_event_exactly_once() {
    const SENDERS: usize = 16;
    let kills = scale(3, 15);
    let calls_per_org = scale(50, 300);
    let mut figures = Figures::new("crashes/relay SIGKILL under load");
    let mut rng = Rng::new(seed(0xc4a5_0002));
    let url = std::env::var("VOXANNE_DATABASE_URL").expect("VOXANNE_DATABASE_URL");
    let db = connect().await;
    let mut orgs = Vec::new();
    for _ in 0..ORGS {
        orgs.push(Org::create(&db).await);
    }
    let messages = vapi::workload(ORGS, calls_per_org, "rk");
    let slots = vapi::slots(&mut rng, messages.len(), 0.3);
    let total = slots.len();
    let senders = Senders::new(bodies(&messages, &orgs), slots);

    let http = voxanne_it::relay::http_client(SENDERS);
    let mut relay = ChildRelay::spawn(env!("CARGO_BIN_EXE_voxanne-it-relay"), &url, &["--pool-size", "16"]);
    relay.wait_ready(&http).await;
    let transports = (0..SENDERS).map(|_| Transport::http(http.clone(), relay.webhook_url(), SECRET)).collect();
    let tasks = senders.spawn(transports);
    for k in 0..kills {
        wait_acked(&senders, total * (k + 1) / (kills + 2)).await;
        // kill while requests are in flight: asserted, a kill of an idle relay proves nothing
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while senders.in_flight.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "kill {k}: no request in flight within 10 s");
            tokio::task::yield_now().await;
        }
        let killed = relay.pid();
        relay.kill9();
        figures.fault("relay SIGKILL", 1);
        tokio::time::sleep(Duration::from_millis(50 + rng.below(250) as u64)).await;
        relay.start();
        relay.wait_ready(&http).await;
        assert_ne!(relay.pid(), killed, "kill {k}: the relay after the restart is a new process");
    }
    for t in tasks {
        t.await.expect("sender");
    }
    for r in senders.refused.lock().unwrap().iter() {
        figures.violation("errors", r.clone());
    }
    let verdicts = vapi::verify(&db, &orgs, &messages, &|_| true).await;
    verdicts.record(&mut figures);
    compare_with_serial(&db, &orgs, &messages, &mut figures).await;
    let (doubled, unacknowledged) = vapi::sender_ledger(&senders, &messages);
    for d in doubled {
        figures.violation("doubled", d);
    }
    // an answer may have been lost in a crash: not exact
    for (o, org) in orgs.iter().enumerate() {
        model::two_way(&db, o, org.id, &messages, &senders, false).await.record(&mut figures);
    }
    figures.note("applied but not acknowledged (answer lost in the crash; redelivery was a duplicate)", unacknowledged);
    let attempts = senders.attempts.load(Ordering::Relaxed);
    figures.delivered = attempts;
    figures.duplicates = (senders.slot_message.len() - messages.len()) as u64;
    figures.retries = senders.retries.load(Ordering::Relaxed);
    figures.reached = senders.reached();
    figures.note("relay starts", relay.starts as u64);
    let tally = vapi::outcomes(&senders.acked.lock().unwrap());
    figures.applied = tally.get("applied").copied().unwrap_or(0);
    for (k, n) in tally {
        figures.note(&format!("answers {k}"), n);
    }
    figures.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. Immediate shutdown of the postmaster under load

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postmaster_immediate_shutdown_under_load_loses_no_acknowledged_event_and_doubles_none() {
    const HTTP_SENDERS: usize = 12;
    const SQL_SENDERS: usize = 4;
    let crashes = scale(2, 10);
    let calls_per_org = scale(50, 300);
    let mut figures = Figures::new("crashes/postmaster immediate shutdown");
    let mut rng = Rng::new(seed(0xc4a5_0003));
    let mut cluster = PrivateCluster::create("immediate").await;
    let db = cluster.connect().await;
    let mut orgs = Vec::new();
    for _ in 0..ORGS {
        orgs.push(Org::create(&db).await);
    }
    drop(db);
    let messages = vapi::workload(ORGS, calls_per_org, "pm");
    let slots = vapi::slots(&mut rng, messages.len(), 0.3);
    let total = slots.len();
    let senders = Senders::new(bodies(&messages, &orgs), slots);
    let relay = Relay::start(&cluster.url(), &["--pool-size", "12", "--pool-timeout", "1s"]).await;
    let http = voxanne_it::relay::http_client(HTTP_SENDERS);
    let mut transports: Vec<Transport> =
        (0..HTTP_SENDERS).map(|_| Transport::http(http.clone(), relay.webhook_url(), SECRET)).collect();
    transports.extend((0..SQL_SENDERS).map(|_| Transport::sql(cluster.config())));
    let tasks = senders.spawn(transports);

    for k in 0..crashes {
        wait_acked(&senders, total * (k + 1) / (crashes + 2)).await;
        cluster.stop_immediate();
        figures.fault("postmaster immediate shutdown", 1);
        // senders finish their attempt in flight (it fails: 503 / connection lost) and wait
        senders.close_gate();
        senders.quiesce().await;
        let acked = senders.acked_messages();
        tokio::time::sleep(Duration::from_millis(rng.below(300) as u64)).await;
        cluster.start();
        let db = cluster.connect_when_up().await;
        assert_eq!(cluster.crash_recoveries(), k + 1, "crash {k}: the restart ran crash recovery");
        // durability: everything acknowledged before the crash survived it
        let verdicts = vapi::verify(&db, &orgs, &messages, &|i| acked.contains(&i)).await;
        figures.checks += acked.len() as u64;
        verdicts.record(&mut figures);
        figures.note(&format!("crash {k}: acknowledged before it"), acked.len() as u64);
        senders.open_gate();
    }
    for t in tasks {
        t.await.expect("sender");
    }
    for r in senders.refused.lock().unwrap().iter() {
        figures.violation("errors", r.clone());
    }
    let db = cluster.connect_when_up().await;
    let verdicts = vapi::verify(&db, &orgs, &messages, &|_| true).await;
    verdicts.record(&mut figures);
    compare_with_serial(&db, &orgs, &messages, &mut figures).await;
    for line in cluster.unexpected_crashes() {
        figures.violation("crashes", line);
    }
    let (doubled, unacknowledged) = vapi::sender_ledger(&senders, &messages);
    for d in doubled {
        figures.violation("doubled", d);
    }
    // an answer may have been lost in a crash: not exact
    for (o, org) in orgs.iter().enumerate() {
        model::two_way(&db, o, org.id, &messages, &senders, false).await.record(&mut figures);
    }
    figures.note("applied but not acknowledged (answer lost in the crash; redelivery was a duplicate)", unacknowledged);
    let attempts = senders.attempts.load(Ordering::Relaxed);
    figures.delivered = attempts;
    figures.duplicates = (senders.slot_message.len() - messages.len()) as u64;
    let relay_retries = relay.db_retries().await;
    figures.retries = senders.retries.load(Ordering::Relaxed) + relay_retries;
    figures.reached = senders.reached();
    figures.note("relay retries of transient database errors", relay_retries);
    let tally = vapi::outcomes(&senders.acked.lock().unwrap());
    figures.applied = tally.get("applied").copied().unwrap_or(0);
    for (k, n) in tally {
        figures.note(&format!("answers {k}"), n);
    }
    relay.stop().await;
    drop(db);
    cluster.stop_immediate();
    figures.finish();
}
