//! Duplicate storms across three tenants: 64 concurrent connections deliver the SAME Vapi
//! message at the same moment (a barrier releases them together), ≥ 200 rounds of each
//! message kind (status-update, transcript, end-of-call-report), once straight to
//! `handle_vapi_message` over 64 database connections and once over 64 HTTP connections to
//! the relay (pool of 64). The 64 clients are split across three orgs (22 / 21 / 21): each
//! org's clients send that org's copy of the message, for its own assistant, and the three
//! copies carry the SAME Vapi call id, so a write routed to the wrong org would land on a call
//! that exists there too.
//!
//! Each round, per org: exactly one delivery applies and the others are duplicates of it (same
//! event, call and Vapi call id), no error, no 5xx; every answer names its own org (an answer
//! naming another org, or two orgs' answers naming the same call row, is a `leaks`
//! violation). Afterwards each org holds exactly its own rows: one call row per call, one
//! ledger row and one outbox row per event, one line and one outbox row per transcript line,
//! nothing nobody sent it (vapi::verify), its calls as the independent model computes them
//! (voxanne_it::model), and as many outbox rows as it was sent distinct messages; a row key
//! (ledger event, call, outbox event, line) one org holds twice while another lacks it is a
//! `leaks` violation.
//!
//! Every round's overlap is measured and `figures.overlap` counts the deliveries whose window
//! overlapped another delivery of the same round:
//! - SQL: the server's statement windows (`statement_timestamp()` .. `clock_timestamp()` in the
//!   statement's own target list), every delivery;
//! - relay: the server's statement windows of the relay's sessions, read from
//!   `pg_stat_activity` after each round (`query_start` .. `state_change` of each session's
//!   last statement, so a lower bound when a session served two deliveries of a round), the
//!   applied statement of each org found by its outbox row's `created_at` (the transaction's
//!   start); and, as a note, the clients' request windows (send .. answer received).
//!
//! A kind fails when no round raced: the SQL storm when no applied statement had another
//! statement of its own org in flight with it (server clock), or no two orgs' applied
//! statements ran at once; the relay storm when no applied statement had another statement in
//! flight with it (server clock) or no applied request had another request of its own org in
//! flight with it (client clock). `figures.reached` counts the deliveries the database
//! answered, `figures.retries` the relay's own retries of transient SQLSTATEs: on a healthy
//! database each is the error a SQL client would have seen, so, like any error of the SQL
//! storm (whose clients never retry), it is a violation.
//!
//! (tests/concurrent_duplicates.rs races the typed SQL functions from 16 connections; this is
//! the webhook entry point, 4x the fan-in, both transports.)
//!
//! CI: 200 rounds per kind and transport; VOXANNE_LONG=1: 1000.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio::sync::Barrier;
use voxanne_it::figures::{scale, Figures};
use voxanne_it::relay::{Relay, SECRET};
use voxanne_it::vapi::{self, Kind, Message, T0_MS};
use voxanne_it::*;

const CLIENTS: usize = 64;
/// Tenants stormed at once, each with its own copy of the round's message.
const ORGS: usize = 3;

/// The org whose copy client `c` sends: 22 / 21 / 21 clients.
fn org_of_client(c: usize) -> usize {
    c % ORGS
}

/// The three Vapi message kinds that have an effect.
#[derive(Clone, Copy, Debug)]
enum Storm {
    StatusUpdate,
    Transcript,
    EndOfCallReport,
}

const STORMS: [Storm; 3] = [Storm::StatusUpdate, Storm::Transcript, Storm::EndOfCallReport];

/// The stormed message of a round, and the message delivered before it when the round storms
/// a call that already exists, for org 0. Rounds rotate through the variants of a kind:
/// status-update `ringing` of an unseen call, `in-progress` of a ringing call, `ended` of an
/// unseen call, `ended` of a ringing call; transcript lines and reports of unseen and of
/// ringing calls.
fn round_messages(kind: Storm, round: usize) -> (Option<Message>, Message) {
    let call = format!("storm_{}", uuid::Uuid::new_v4().simple());
    let start = T0_MS + round as i64 * 100_000;
    let script = vapi::call_script(0, &call, start);
    let pick = |k: fn(&Kind) -> bool| script.iter().find(|m| k(&m.kind)).unwrap().clone();
    let ringing = pick(|k| matches!(k, Kind::Status("ringing")));
    match (kind, round % 4) {
        (Storm::StatusUpdate, 0) => (None, ringing),
        (Storm::StatusUpdate, 1) => (Some(ringing), pick(|k| matches!(k, Kind::Status("in-progress")))),
        (Storm::StatusUpdate, 2) => (None, pick(|k| matches!(k, Kind::StatusEnded))),
        (Storm::StatusUpdate, _) => (Some(ringing), pick(|k| matches!(k, Kind::StatusEnded))),
        (Storm::Transcript, r) => {
            let line = pick(|k| matches!(k, Kind::Transcript { .. }));
            (if r % 2 == 1 { Some(ringing) } else { None }, line)
        }
        (Storm::EndOfCallReport, r) => {
            let report = pick(|k| matches!(k, Kind::Report));
            (if r % 2 == 1 { Some(ringing) } else { None }, report)
        }
    }
}

/// The same message for org `o`: same call id, same content, that org's assistant.
fn for_org(m: &Message, o: usize) -> Message {
    Message { org: o, ..m.clone() }
}

/// Check one round's answers, `(org index, answer)`: per org all acknowledged, one applied,
/// the rest duplicates of it, every answer naming its own org and the stormed call; no two
/// orgs' answers naming the same call row. Returns, per org, the index in `answers` of the
/// applied one.
fn check_round(
    answers: &[(usize, Value)],
    orgs: &[Org],
    stormed: &Message,
    what: &str,
    figures: &mut Figures,
) -> Vec<Option<usize>> {
    let mut winners = Vec::new();
    let mut call_rows: BTreeMap<String, usize> = BTreeMap::new();
    for (o, org) in orgs.iter().enumerate() {
        let what = format!("{what}, org {o}");
        let mine: Vec<(usize, &Value)> =
            answers.iter().enumerate().filter(|(_, (ao, _))| *ao == o).map(|(i, (_, a))| (i, a)).collect();
        for (_, a) in &mine {
            if a["org_id"] != org.id.to_string() {
                figures
                    .violation("leaks", format!("{what}: answered for org {} instead of {}: {a}", a["org_id"], org.id));
            }
            if a["vapi_call_id"] != stormed.call {
                figures.violation(
                    "errors",
                    format!("{what}: answer names call {} instead of {}", a["vapi_call_id"], stormed.call),
                );
            }
        }
        let applied: Vec<&(usize, &Value)> = mine.iter().filter(|(_, a)| a["applied"] == true).collect();
        figures.applied += applied.len() as u64;
        let duplicates = mine.iter().filter(|(_, a)| a["applied"] == false && a["outcome"] == "duplicate").count();
        if applied.len() != 1 {
            figures.violation(
                if applied.len() > 1 { "doubled" } else { "lost" },
                format!("{what}: {} applied answers of {}", applied.len(), mine.len()),
            );
            winners.push(applied.first().map(|(i, _)| *i));
            continue;
        }
        let (winner, applied) = *applied[0];
        winners.push(Some(winner));
        if duplicates != mine.len() - 1 {
            figures.violation("errors", format!("{what}: {duplicates} duplicates of {}", mine.len()));
        }
        for (_, a) in &mine {
            for key in ["org_id", "event_id", "call_id", "vapi_call_id"] {
                if a[key] != applied[key] {
                    figures.violation("errors", format!("{what}: {key} differs: {a} vs {applied}"));
                }
            }
        }
        // the orgs' calls share their Vapi call id, never their row
        if let Some(other) = call_rows.insert(applied["call_id"].to_string(), o) {
            figures.violation(
                "leaks",
                format!("{what}: the same call row {} as org {other}: {applied}", applied["call_id"]),
            );
        }
    }
    winners
}

/// Whether the applied statements of at least two orgs ran at the same time.
fn orgs_overlapped<T: PartialOrd + Copy>(spans: &[(T, T)], winners: &[Option<usize>]) -> bool {
    let w: Vec<(T, T)> = winners.iter().flatten().map(|i| spans[*i]).collect();
    (0..w.len()).any(|i| (i + 1..w.len()).any(|j| spans_overlap(&w[i], &w[j])))
}

type SqlAnswer = Result<(SystemTime, Value, SystemTime), tokio_postgres::Error>;

async fn storm_sql(
    clients: &[Arc<tokio_postgres::Client>],
    statements: &[tokio_postgres::Statement],
    bodies: &[String],
) -> Vec<SqlAnswer> {
    let barrier = Arc::new(Barrier::new(clients.len()));
    let mut tasks = Vec::new();
    for (c, (client, stmt)) in clients.iter().cloned().zip(statements.iter().cloned()).enumerate() {
        let barrier = Arc::clone(&barrier);
        let body = bodies[org_of_client(c)].clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let row = client.query_one(&stmt, &[&body, &vapi::PLATFORM]).await?;
            Ok((row.get(0), row.get(1), row.get(2)))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("storm task"));
    }
    out
}

/// One client's delivery of a relay storm: its answer, and when it was sent and answered.
struct HttpAnswer {
    answer: Result<(u16, String), String>,
    sent: Instant,
    answered: Instant,
}

async fn storm_http(http: &reqwest::Client, url: &str, bodies: &[String]) -> Vec<HttpAnswer> {
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let barrier = Arc::clone(&barrier);
        let (http, url, body) = (http.clone(), url.to_string(), bodies[org_of_client(c)].clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let sent = Instant::now();
            let answer = async {
                let r = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-vapi-secret", SECRET)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("{e}"))?;
                let status = r.status().as_u16();
                Ok((status, r.text().await.map_err(|e| format!("{e}"))?))
            }
            .await;
            HttpAnswer { answer, sent, answered: Instant::now() }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("storm task"));
    }
    out
}

/// Deliver the message that precedes a round's storm to every org, serially.
async fn deliver_first_sql(db: &tokio_postgres::Client, orgs: &[Org], first: &Message, figures: &mut Figures) {
    for org in orgs {
        let a = db.query_one(vapi::HANDLE_VAPI_MESSAGE, &[&first.body(&org.assistant_id), &vapi::PLATFORM]).await;
        a.unwrap_or_else(|e| panic!("{}: {}", first.label(), describe(&e)));
        figures.delivered += 1;
        figures.reached += 1;
    }
}

/// After the storms of one transport: per org and event exactly one ledger row, one outbox
/// row, one call row per call, no partial rows, nothing anybody did not send that org, the
/// model's state.
async fn verify_storms(db: &tokio_postgres::Client, orgs: &[Org], messages: &[Message], figures: &mut Figures) {
    let verdicts = vapi::verify(db, orgs, messages, &|_| true).await;
    verdicts.record(figures);
    figures.checks += messages.len() as u64;
    for d in voxanne_it::model::compare(db, orgs, messages, 10).await {
        figures.violation("errors", d);
    }
    cross_org_rows(db, orgs, figures).await;
    for (o, org) in orgs.iter().enumerate() {
        let outbox = count_org_rows(db, "outbox", org).await;
        // every distinct message advanced its org's call once
        let applied_effects = messages.iter().filter(|m| m.org == o).count() as i64;
        if outbox != applied_effects {
            figures.violation(
                if outbox > applied_effects { "doubled" } else { "lost" },
                format!("org {o}: {outbox} outbox rows for {applied_effects} distinct messages"),
            );
        }
    }
}

/// The orgs were sent the same messages, so every row key of one org is a row key of each
/// other, once. A key that one org holds more than once while another org lacks it is a write
/// that landed in the wrong org: a `leaks` violation (vapi::verify counts it as doubled and
/// lost besides).
async fn cross_org_rows(db: &tokio_postgres::Client, orgs: &[Org], figures: &mut Figures) {
    let tables = [
        ("ledger", "SELECT event_id, count(*) FROM voxanne.processed_webhook_events WHERE org_id = $1 GROUP BY 1"),
        ("calls", "SELECT vapi_call_id, count(*) FROM voxanne.calls WHERE org_id = $1 GROUP BY 1"),
        (
            "outbox",
            "SELECT topic || ' ' || coalesce(payload->>'vapi_call_id', '?') || ' '
                    || coalesce(payload->>'status', payload->>'content_hash', ''), count(*)
             FROM voxanne.outbox WHERE org_id = $1 GROUP BY 1",
        ),
        (
            "transcript lines",
            "SELECT coalesce(c.vapi_call_id, '?') || ' ' || pg_catalog.encode(t.content_hash, 'hex'), count(*)
             FROM voxanne.call_transcripts t LEFT JOIN voxanne.calls c ON c.id = t.call_id
             WHERE t.org_id = $1 GROUP BY 1",
        ),
    ];
    for (what, sql) in tables {
        let mut per_org = Vec::new();
        for org in orgs {
            per_org.push(grouped(db, sql, &[&org.id]).await);
        }
        let keys: std::collections::BTreeSet<&String> = per_org.iter().flat_map(|m| m.keys()).collect();
        figures.checks += keys.len() as u64;
        for key in keys {
            let n: Vec<i64> = per_org.iter().map(|m| m.get(key).copied().unwrap_or(0)).collect();
            if n.iter().any(|c| *c > 1) && n.contains(&0) {
                figures.violation("leaks", format!("{what} {key:?}: rows per org {n:?}: one org's row in another"));
            }
        }
    }
}

async fn create_orgs(db: &tokio_postgres::Client) -> Vec<Org> {
    let mut orgs = Vec::new();
    for _ in 0..ORGS {
        orgs.push(Org::create(db).await);
    }
    orgs
}

/// Races of one kind: round-level (all 64 deliveries of the round), per org (the deliveries
/// of one org's copy), and the rounds in which two orgs' applied deliveries ran at once.
#[derive(Default)]
struct KindStats {
    round: RaceStats,
    per_org: RaceStats,
    orgs_at_once: usize,
}

impl KindStats {
    fn record<T: PartialOrd + Copy>(&mut self, spans: &[(T, T)], orgs: &[usize], winners: &[Option<usize>]) {
        self.round.record_spans(spans, &winners.iter().flatten().copied().collect::<Vec<_>>());
        for (o, winner) in winners.iter().enumerate() {
            let idx: Vec<usize> = (0..spans.len()).filter(|i| orgs[*i] == o).collect();
            let mine: Vec<(T, T)> = idx.iter().map(|i| spans[*i]).collect();
            let w: Vec<usize> = winner.iter().filter_map(|w| idx.iter().position(|i| i == w)).collect();
            self.per_org.record_spans(&mine, &w);
        }
        self.orgs_at_once += usize::from(orgs_overlapped(spans, winners));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_duplicate_storm_64_connections_each_kind_applies_once() {
    let rounds = scale(200, 1000);
    let mut figures = Figures::new("storms/sql: 64 connections x same message");
    let db = connect().await;
    let orgs = create_orgs(&db).await;
    let clients = connect_many(CLIENTS).await;
    let sql = vapi::timed_statement();
    let mut statements = Vec::new();
    for c in &clients {
        statements.push(c.prepare(&sql).await.expect("prepare"));
    }
    let mut messages = Vec::new();
    for kind in STORMS {
        let mut stats = KindStats::default();
        for round in 0..rounds {
            let (first, stormed) = round_messages(kind, round);
            if let Some(first) = first {
                deliver_first_sql(&db, &orgs, &first, &mut figures).await;
                messages.extend((0..ORGS).map(|o| for_org(&first, o)));
            }
            let bodies: Vec<String> = orgs.iter().map(|org| stormed.body(&org.assistant_id)).collect();
            let results = storm_sql(&clients, &statements, &bodies).await;
            figures.delivered += results.len() as u64;
            figures.duplicates += (results.len() - ORGS) as u64;
            let what = format!("{kind:?} round {round}");
            let mut answers = Vec::new();
            let mut spans = Vec::new();
            for (c, r) in results.into_iter().enumerate() {
                match r {
                    Ok((received, v, finished)) => {
                        figures.reached += 1;
                        answers.push((org_of_client(c), v));
                        spans.push((received, finished));
                    }
                    Err(e) => {
                        figures.reached += u64::from(e.as_db_error().is_some());
                        figures.violation("errors", format!("{what}: {}", describe(&e)))
                    }
                }
            }
            let winners = check_round(&answers, &orgs, &stormed, &what, &mut figures);
            let answer_orgs: Vec<usize> = answers.iter().map(|(o, _)| *o).collect();
            stats.record(&spans, &answer_orgs, &winners);
            messages.extend((0..ORGS).map(|o| for_org(&stormed, o)));
        }
        stats.per_org.assert_raced(&format!("sql storm {kind:?}, within an org (server clock)"));
        stats.round.assert_raced(&format!("sql storm {kind:?}, the round (server clock)"));
        assert!(stats.orgs_at_once > 0, "sql storm {kind:?}: no round ran two orgs' applied statements at once");
        figures.overlap += stats.round.overlapped as u64;
        figures.note(
            &format!("{kind:?}: org races (3 a round) whose applied statement had another of its org in flight (server clock)"),
            stats.per_org.contended_rounds as u64,
        );
        figures.note(
            &format!("{kind:?}: rounds in which two orgs' applied statements ran at once (server clock)"),
            stats.orgs_at_once as u64,
        );
        figures.note(
            &format!("{kind:?}: statements in flight with an applied one (server clock)"),
            stats.round.overlapping as u64,
        );
    }
    verify_storms(&db, &orgs, &messages, &mut figures).await;
    figures.note("rounds per kind", rounds as u64);
    figures.note("orgs", ORGS as u64);
    figures.finish();
}

/// Per org, the start of the transaction that applied the round's message: the `created_at`
/// (`now()`) of the outbox row it wrote, the org's newest (nothing else writes to the org).
async fn applied_at(db: &tokio_postgres::Client, orgs: &[Org], call: &str) -> Vec<Option<SystemTime>> {
    let mut out = Vec::new();
    for org in orgs {
        let row = db
            .query_opt(
                "SELECT created_at, payload->>'vapi_call_id' FROM voxanne.outbox WHERE org_id = $1
                 ORDER BY id DESC LIMIT 1",
                &[&org.id],
            )
            .await
            .unwrap_or_else(|e| panic!("outbox created_at: {}", describe(&e)));
        let newest = row.filter(|r| r.get::<_, Option<String>>(1).as_deref() == Some(call));
        out.push(newest.map(|r| r.get(0)));
    }
    out
}

/// Which of a round's statement windows is the one that applied a message whose transaction
/// began at `at`: the first statement the server received at or after `at`, within 2 ms. (A
/// transaction's `now()` precedes its statement's `query_start` by tens to hundreds of
/// microseconds, as observed — the transaction begins at the Bind message, the statement is
/// stamped again at Execute; the relay starts its statements about a millisecond apart, so
/// another statement received in between is rare, and would be one running with it.)
fn applied_window(windows: &[(SystemTime, SystemTime)], at: SystemTime) -> Option<usize> {
    windows
        .iter()
        .enumerate()
        .filter(|(_, (start, _))| start.duration_since(at).is_ok_and(|d| d <= Duration::from_millis(2)))
        .min_by_key(|(_, (start, _))| *start)
        .map(|(i, _)| i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_duplicate_storm_64_connections_each_kind_applies_once() {
    let rounds = scale(200, 1000);
    let mut figures = Figures::new("storms/relay: 64 HTTP connections x same message");
    let url = std::env::var("VOXANNE_DATABASE_URL").expect("VOXANNE_DATABASE_URL");
    // the relay's sessions by a name of their own, to find their statements in pg_stat_activity
    let application_name = format!("storm-relay-{}", uuid::Uuid::new_v4().simple());
    let relay = Relay::start(&url, &["--pool-size", "64", "--db-application-name", &application_name]).await;
    let http = voxanne_it::relay::http_client(CLIENTS);
    let db = connect().await;
    let orgs = create_orgs(&db).await;
    let mut messages = Vec::new();
    let webhook = relay.webhook_url();
    let (mut windows_seen, mut still_active, mut winners_found, mut in_flight_at_start) = (0u64, 0u64, 0u64, 0u64);
    let mut statements = StatementWindows::new(&application_name, vapi::HANDLE_VAPI_MESSAGE);
    for kind in STORMS {
        let mut server = RaceStats::default();
        let mut client = KindStats::default();
        for round in 0..rounds {
            let (first, stormed) = round_messages(kind, round);
            if let Some(first) = first {
                for org in &orgs {
                    let (status, text) = relay.deliver(&first.body(&org.assistant_id)).await;
                    assert_eq!(status, 200, "{}: {text}", first.label());
                    figures.delivered += 1;
                    figures.reached += 1;
                }
                messages.extend((0..ORGS).map(|o| for_org(&first, o)));
            }
            // what ran before the storm is not part of its race
            statements.read_new(&db).await;
            let bodies: Vec<String> = orgs.iter().map(|org| stormed.body(&org.assistant_id)).collect();
            let results = storm_http(&http, &webhook, &bodies).await;
            figures.delivered += results.len() as u64;
            figures.duplicates += (results.len() - ORGS) as u64;
            let what = format!("{kind:?} round {round}");
            let mut answers = Vec::new();
            let mut spans = Vec::new();
            for (c, r) in results.into_iter().enumerate() {
                match r.answer {
                    Ok((200, text)) => {
                        figures.reached += 1;
                        answers.push((org_of_client(c), serde_json::from_str::<Value>(&text).expect("JSON answer")));
                        spans.push((r.sent, r.answered));
                    }
                    Ok((status, text)) => figures.violation("errors", format!("{what}: HTTP {status} {text}")),
                    Err(e) => figures.violation("errors", format!("{what}: {e}")),
                }
            }
            let winners = check_round(&answers, &orgs, &stormed, &what, &mut figures);
            let answer_orgs: Vec<usize> = answers.iter().map(|(o, _)| *o).collect();
            client.record(&spans, &answer_orgs, &winners);

            // the server's side: the statement windows of the relay's sessions, and among them
            // the applied ones (their transaction started when their outbox row was written)
            let (windows, active) = statements.read_new(&db).await;
            windows_seen += windows.len() as u64;
            still_active += active;
            let applied = applied_at(&db, &orgs, &stormed.call).await;
            let server_winners: Vec<usize> =
                applied.iter().flatten().filter_map(|at| applied_window(&windows, *at)).collect();
            for at in applied.iter().flatten() {
                // a lower bound that needs no matching: statements already running when the
                // applied transaction began
                in_flight_at_start += windows.iter().filter(|(start, end)| start < at && at < end).count() as u64;
            }
            winners_found += server_winners.len() as u64;
            server.record_spans(&windows, &server_winners);
            messages.extend((0..ORGS).map(|o| for_org(&stormed, o)));
        }
        server.assert_raced(&format!("relay storm {kind:?}, the round (server clock)"));
        client.per_org.assert_raced(&format!("relay storm {kind:?}, within an org (client clock)"));
        figures.overlap += server.overlapped as u64;
        figures.note(
            &format!("{kind:?}: rounds whose applied statement had another in flight (server clock)"),
            server.contended_rounds as u64,
        );
        figures.note(
            &format!("{kind:?}: statements in flight with an applied one (server clock)"),
            server.overlapping as u64,
        );
        figures.note(
            &format!(
                "{kind:?}: org races (3 a round) whose applied request had another of its org in flight (client clock)"
            ),
            client.per_org.contended_rounds as u64,
        );
        figures.note(
            &format!("{kind:?}: requests that overlapped another of their round (client clock)"),
            client.round.overlapped as u64,
        );
    }
    figures.note("server statement windows seen (each session's last statement of a round)", windows_seen);
    figures.note("sessions still active when a round's windows were read", still_active);
    figures.note("applied statements found among the windows", winners_found);
    figures.note("statements already running when an applied transaction began (server clock)", in_flight_at_start);
    verify_storms(&db, &orgs, &messages, &mut figures).await;
    let retried = relay.db_retries().await;
    figures.retries += retried;
    figures.note("relay retries of transient database errors", retried);
    // the relay retries a deadlock or serialization failure silently: on a healthy database
    // that is the error a SQL client of the SQL storm would have seen, so it counts as one
    if retried > 0 {
        figures.violation("errors", format!("the relay retried {retried} statements on a healthy database"));
    }
    figures.note("rounds per kind", rounds as u64);
    figures.note("orgs", ORGS as u64);
    relay.stop().await;
    figures.finish();
}
