//! Duplicate storms: 64 concurrent connections deliver the SAME Vapi message at the same
//! moment (a barrier releases them together), ≥ 200 rounds of each message kind (status-update,
//! transcript, end-of-call-report), once straight to `handle_vapi_message` over 64 database
//! connections and once over 64 HTTP connections to the relay (pool of 64). Each round: exactly
//! one delivery applies, 63 are duplicates, no error, no 5xx; afterwards exactly one call row,
//! one outbox row and one ledger row per event (transcript lines: one line and one outbox row).
//!
//! (tests/concurrent_duplicates.rs races the typed SQL functions from 16 connections; this is
//! the webhook entry point, 4x the fan-in, both transports.)
//!
//! CI: 200 rounds per kind and transport; VOXANNE_LONG=1: 1000.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;
use tokio::sync::Barrier;
use voxanne_it::figures::{scale, Figures};
use voxanne_it::relay::{Relay, SECRET};
use voxanne_it::vapi::{self, Kind, Message, T0_MS};
use voxanne_it::*;

const CLIENTS: usize = 64;

/// The three Vapi message kinds that have an effect.
#[derive(Clone, Copy, Debug)]
enum Storm {
    StatusUpdate,
    Transcript,
    EndOfCallReport,
}

const STORMS: [Storm; 3] = [Storm::StatusUpdate, Storm::Transcript, Storm::EndOfCallReport];

/// The stormed message of a round, and the message delivered before it when the round storms
/// a call that already exists. Rounds rotate through the variants of a kind: status-update
/// `ringing` of an unseen call, `in-progress` of a ringing call, `ended` of an unseen call,
/// `ended` of a ringing call; transcript lines and reports of unseen and of ringing calls.
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

/// Check one round's answers: all acknowledged, one applied, the rest duplicates of it.
fn check_round(answers: &[Value], what: &str, figures: &mut Figures) {
    let applied: Vec<&Value> = answers.iter().filter(|a| a["applied"] == true).collect();
    figures.applied += applied.len() as u64;
    let duplicates = answers.iter().filter(|a| a["applied"] == false && a["outcome"] == "duplicate").count();
    if applied.len() != 1 {
        figures.violation(
            if applied.len() > 1 { "doubled" } else { "lost" },
            format!("{what}: {} applied answers", applied.len()),
        );
        return;
    }
    if duplicates != answers.len() - 1 {
        figures.violation("errors", format!("{what}: {duplicates} duplicates of {}", answers.len()));
    }
    for a in answers {
        for key in ["org_id", "event_id", "call_id", "vapi_call_id"] {
            if a[key] != applied[0][key] {
                figures.violation("errors", format!("{what}: {key} differs: {a} vs {}", applied[0]));
            }
        }
    }
}

async fn storm_sql(
    clients: &[Arc<tokio_postgres::Client>],
    statements: &[tokio_postgres::Statement],
    body: &str,
) -> Vec<Result<(SystemTime, Value, SystemTime), tokio_postgres::Error>> {
    let barrier = Arc::new(Barrier::new(clients.len()));
    let mut tasks = Vec::new();
    for (client, stmt) in clients.iter().cloned().zip(statements.iter().cloned()) {
        let barrier = Arc::clone(&barrier);
        let body = body.to_string();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let row = client.query_one(&stmt, &[&body]).await?;
            Ok((row.get(0), row.get(1), row.get(2)))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("storm task"));
    }
    out
}

async fn storm_http(http: &reqwest::Client, url: &str, body: &str, n: usize) -> Vec<Result<(u16, String), String>> {
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let barrier = Arc::clone(&barrier);
        let (http, url, body) = (http.clone(), url.to_string(), body.to_string());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
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
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("storm task"));
    }
    out
}

/// After the storms of one transport: per event exactly one ledger row, one outbox row, one
/// call row per call, no partial rows, nothing anybody did not send.
async fn verify_storms(db: &tokio_postgres::Client, org: &Org, messages: &[Message], figures: &mut Figures) {
    let verdicts = vapi::verify(db, std::slice::from_ref(org), messages, &|_| true).await;
    verdicts.record(figures);
    figures.checks += messages.len() as u64;
    for d in voxanne_it::model::compare(db, std::slice::from_ref(org), messages, 10).await {
        figures.violation("errors", d);
    }
    let outbox = count_org_rows(db, "outbox", org).await;
    let applied_effects = messages.len() as i64; // every distinct message advanced its call once
    if outbox != applied_effects {
        figures.violation(
            if outbox > applied_effects { "doubled" } else { "lost" },
            format!("{outbox} outbox rows for {applied_effects} distinct messages"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_duplicate_storm_64_connections_each_kind_applies_once() {
    let rounds = scale(200, 1000);
    let mut figures = Figures::new("storms/sql: 64 connections x same message");
    let db = connect().await;
    let org = Org::create(&db).await;
    let clients = connect_many(CLIENTS).await;
    let sql = "SELECT pg_catalog.statement_timestamp(), voxanne.handle_vapi_message($1::text::jsonb), pg_catalog.clock_timestamp()";
    let mut statements = Vec::new();
    for c in &clients {
        statements.push(c.prepare(sql).await.expect("prepare"));
    }
    let mut messages = Vec::new();
    for kind in STORMS {
        let mut stats = RaceStats::default();
        for round in 0..rounds {
            let (first, stormed) = round_messages(kind, round);
            if let Some(first) = first {
                let a = db.query_one(vapi::HANDLE_VAPI_MESSAGE, &[&first.body(&org.assistant_id)]).await;
                a.unwrap_or_else(|e| panic!("{}: {}", first.label(), describe(&e)));
                figures.delivered += 1;
                messages.push(first);
            }
            let body = stormed.body(&org.assistant_id);
            let results = storm_sql(&clients, &statements, &body).await;
            figures.delivered += results.len() as u64;
            figures.duplicates += results.len() as u64 - 1;
            let what = format!("{kind:?} round {round}");
            let mut answers = Vec::new();
            let mut outcomes = Vec::new();
            for r in results {
                match r {
                    Ok((received, v, finished)) => {
                        let mut o = Outcome::parse(&v);
                        o.received = Some(received);
                        o.finished = Some(finished);
                        outcomes.push(o);
                        answers.push(v);
                    }
                    Err(e) => figures.violation("errors", format!("{what}: {}", describe(&e))),
                }
            }
            stats.record(&outcomes);
            check_round(&answers, &what, &mut figures);
            messages.push(stormed);
        }
        stats.assert_raced(&format!("sql storm {kind:?}"));
        figures.note(&format!("{kind:?}: contended rounds"), stats.contended_rounds as u64);
        figures.note(&format!("{kind:?}: overlapping statements"), stats.overlapping as u64);
    }
    verify_storms(&db, &org, &messages, &mut figures).await;
    figures.note("rounds per kind", rounds as u64);
    figures.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_duplicate_storm_64_connections_each_kind_applies_once() {
    let rounds = scale(200, 1000);
    let mut figures = Figures::new("storms/relay: 64 HTTP connections x same message");
    let url = std::env::var("VOXANNE_DATABASE_URL").expect("VOXANNE_DATABASE_URL");
    let relay = Relay::start(&url, &["--pool-size", "64"]).await;
    let http = voxanne_it::relay::http_client(CLIENTS);
    let db = connect().await;
    let org = Org::create(&db).await;
    let mut messages = Vec::new();
    let webhook = relay.webhook_url();
    for kind in STORMS {
        for round in 0..rounds {
            let (first, stormed) = round_messages(kind, round);
            if let Some(first) = first {
                let (status, text) = relay.deliver(&first.body(&org.assistant_id)).await;
                assert_eq!(status, 200, "{}: {text}", first.label());
                figures.delivered += 1;
                messages.push(first);
            }
            let body = stormed.body(&org.assistant_id);
            let results = storm_http(&http, &webhook, &body, CLIENTS).await;
            figures.delivered += results.len() as u64;
            figures.duplicates += results.len() as u64 - 1;
            let what = format!("{kind:?} round {round}");
            let mut answers = Vec::new();
            for r in results {
                match r {
                    Ok((200, text)) => answers.push(serde_json::from_str::<Value>(&text).expect("JSON answer")),
                    Ok((status, text)) => figures.violation("errors", format!("{what}: HTTP {status} {text}")),
                    Err(e) => figures.violation("errors", format!("{what}: {e}")),
                }
            }
            check_round(&answers, &what, &mut figures);
            messages.push(stormed);
        }
    }
    verify_storms(&db, &org, &messages, &mut figures).await;
    let retried = relay.db_retries().await;
    figures.note("relay retries of transient database errors", retried);
    figures.note("rounds per kind", rounds as u64);
    relay.stop().await;
    figures.finish();
}
