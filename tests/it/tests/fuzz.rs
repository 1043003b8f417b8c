//! Fuzzing the webhook entry point with hostile payloads (tests/it/src/fuzz.rs): proptest
//! strategies for whole messages, and mutations of the fixture payloads — straight to
//! `handle_vapi_message` (as the relay calls it, `$1::text::jsonb`) and through the relay.
//!
//! Every case must end in a documented answer: a result, or a documented SQLSTATE (the README's
//! "Errors" table, or a code the relay README maps to 422 — which covers the `::jsonb` cast's
//! own 22P02 / 22P05; both read from the READMEs at run time), or through the relay a
//! documented HTTP status (200, 400 for a body that is not JSON, 413 above the body limit, 422
//! with a documented code). Counted as failures:
//! `panics` (XX000 — a Rust panic surfaces as XX000 with its message), `crashes` (a backend died:
//! the connection closed, or a sentinel session of the same cluster did not survive), `errors`
//! (any other answer), `partial` (rows written by a failed case: the org's row counts must equal
//! what the successful answers account for, and vapi::partial_rows must find nothing), `leaks`
//! (an answer naming another org).
//!
//! CI: 3,000 + 2,000 + 2,000 cases (seeded); VOXANNE_LONG=1: 50,000 + 30,000 + 25,000.
//! VOXANNE_SEED replays another seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;
use tokio_postgres::Client;
use voxanne_it::figures::{scale, seed, Figures, Rng};
use voxanne_it::fuzz::{self, Ctx};
use voxanne_it::relay::Relay;
use voxanne_it::vapi;
use voxanne_it::*;

const CONNECTIONS: usize = 4;

/// What the successful answers imply the org's tables hold.
#[derive(Default)]
struct Expect {
    calls: BTreeSet<String>,
    ledger: i64,
    lines: i64,
    outbox: i64,
}

struct Checker {
    org: Org,
    /// Bodies that are valid as sent (the unmutated fixtures): refusing one is a violation.
    valid: BTreeSet<String>,
    expect: Expect,
    codes: BTreeMap<String, u64>,
    outcomes: BTreeMap<String, u64>,
    figures: Figures,
}

impl Checker {
    fn new(org: Org, name: &'static str) -> Self {
        Self {
            org,
            valid: BTreeSet::new(),
            expect: Expect::default(),
            codes: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            figures: Figures::new(name),
        }
    }

    fn answer(&mut self, v: &Value, body: &str) {
        if let Some(kind) = v.get("ignored") {
            if v.get("applied") != Some(&Value::Bool(false)) {
                self.figures.violation("errors", format!("ignored {kind} but applied: {v}"));
            }
            *self.outcomes.entry("ignored".into()).or_default() += 1;
            return;
        }
        let outcome = v.get("outcome").and_then(Value::as_str).unwrap_or("?").to_string();
        let applied = v.get("applied").and_then(Value::as_bool);
        let org = v.get("org_id").and_then(Value::as_str).unwrap_or("?");
        let kind = v.get("message_type").and_then(Value::as_str).unwrap_or("?");
        let call = v.get("vapi_call_id").and_then(Value::as_str);
        *self.outcomes.entry(outcome.clone()).or_default() += 1;
        if org != self.org.id.to_string() {
            self.figures.violation("leaks", format!("answer names org {org}: {v}"));
            return;
        }
        let (Some(applied), Some(call)) = (applied, call) else {
            self.figures.violation("errors", format!("malformed answer {v} to {body}"));
            return;
        };
        if !matches!(outcome.as_str(), "applied" | "duplicate" | "stale") || applied != (outcome == "applied") {
            self.figures.violation("errors", format!("answer {v}"));
            return;
        }
        self.expect.calls.insert(call.to_string());
        self.expect.outbox += i64::from(applied);
        if kind.starts_with("transcript") {
            self.expect.lines += i64::from(applied);
        } else if outcome != "duplicate" {
            self.expect.ledger += 1;
        }
    }

    fn error(&mut self, code: &str, message: &str, body: &str) {
        *self.codes.entry(code.to_string()).or_default() += 1;
        if self.valid.contains(body) {
            self.figures
                .violation("errors", format!("a valid fixture was refused: {code} {message} — body: {}", clip(body)));
        }
        if code == "XX000" {
            self.figures.violation("panics", format!("XX000 {message} — body: {}", clip(body)));
        } else if !vapi::is_documented_data_error(code) {
            self.figures.violation("errors", format!("undocumented {code} {message} — body: {}", clip(body)));
        }
    }

    /// The org's rows are exactly what the successful answers account for, and consistent.
    async fn check_rows(&mut self, db: &Client) {
        let calls = count_org_rows(db, "calls", &self.org).await;
        let ledger = count_org_rows(db, "processed_webhook_events", &self.org).await;
        let lines = count_org_rows(db, "call_transcripts", &self.org).await;
        let outbox = count_org_rows(db, "outbox", &self.org).await;
        for (what, got, want) in [
            ("calls", calls, self.expect.calls.len() as i64),
            ("ledger", ledger, self.expect.ledger),
            ("call_transcripts", lines, self.expect.lines),
            ("outbox", outbox, self.expect.outbox),
        ] {
            if got != want {
                self.figures.violation("partial", format!("{what}: {got} rows, the answers account for {want}"));
            }
        }
        for p in vapi::partial_rows(db, self.org.id).await {
            self.figures.violation("partial", p);
        }
        self.figures.checks += 1;
    }
}

fn clip(s: &str) -> String {
    if s.len() <= 400 {
        return s.to_string();
    }
    let mut end = 400;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// A fresh org with an agent for an assistant and a phone number, and a pool of call ids.
async fn context(db: &Client) -> (Org, Ctx) {
    let org = Org::create(db).await;
    let phone = unique("pn");
    db.execute(
        "SELECT voxanne.upsert_agent(p_org_id => $1, p_vapi_assistant_id => $2, p_vapi_phone_number_id => $3)",
        &[&org.id, &org.assistant_id, &phone],
    )
    .await
    .expect("register the phone number");
    let calls = (0..40).map(|i| format!("fz_{i}_{}", uuid::Uuid::new_v4().simple())).collect();
    let ctx = Ctx { assistant: org.assistant_id.clone(), phone, calls };
    (org, ctx)
}

/// A session that must survive the whole test: a backend crash anywhere in the cluster makes
/// the postmaster end every session.
struct Sentinel {
    client: Client,
    started: std::time::SystemTime,
}

impl Sentinel {
    async fn start() -> Self {
        let client = connect().await;
        let started = client.query_one("SELECT pg_catalog.pg_postmaster_start_time()", &[]).await.unwrap().get(0);
        Self { client, started }
    }

    async fn check(&self, figures: &mut Figures) {
        match self.client.query_one("SELECT pg_catalog.pg_postmaster_start_time()", &[]).await {
            Ok(row) if row.get::<_, std::time::SystemTime>(0) == self.started => {}
            Ok(_) => figures.violation("crashes", "the postmaster restarted during the test"),
            Err(e) => figures.violation("crashes", format!("the sentinel session died: {}", describe(&e))),
        }
    }
}

fn runner(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(PtConfig::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Run `bodies` through `handle_vapi_message` on `CONNECTIONS` connections.
async fn fuzz_sql(checker: Checker, bodies: Vec<String>) -> Checker {
    let checker = Arc::new(Mutex::new(checker));
    let queue = Arc::new(Mutex::new(bodies));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (checker, queue) = (checker.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = connect().await;
            loop {
                let Some(body) = queue.lock().unwrap().pop() else {
                    break;
                };
                let result = client.query_one(vapi::HANDLE_VAPI_MESSAGE, &[&body]).await;
                let lost = {
                    let mut c = checker.lock().unwrap();
                    c.figures.fuzz_cases += 1;
                    match result {
                        Ok(row) => {
                            c.answer(&row.get::<_, Value>(0), &body);
                            false
                        }
                        Err(e) => match e.as_db_error() {
                            Some(db) => {
                                c.error(db.code().code(), db.message(), &body);
                                false
                            }
                            None => {
                                c.figures.violation("crashes", format!("connection lost: {e} — body: {}", clip(&body)));
                                true
                            }
                        },
                    }
                };
                if lost {
                    client = connect().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("fuzz task");
    }
    Arc::try_unwrap(checker).ok().unwrap().into_inner().unwrap()
}

async fn finish(mut checker: Checker, db: &Client, sentinel: &Sentinel) {
    checker.check_rows(db).await;
    sentinel.check(&mut checker.figures).await;
    let codes = serde_json::to_value(&checker.codes).unwrap();
    checker.figures.applied = checker.outcomes.get("applied").copied().unwrap_or(0);
    let outcomes = serde_json::to_value(&checker.outcomes).unwrap();
    checker.figures.note("sqlstates", codes);
    checker.figures.note("answers", outcomes);
    checker.figures.delivered = checker.figures.fuzz_cases;
    checker.figures.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proptest_messages_through_handle_vapi_message() {
    let cases = scale(3_000, 50_000);
    let db = connect().await;
    let sentinel = Sentinel::start().await;
    let (org, ctx) = context(&db).await;
    let mut runner = runner(seed(0xf022_0001));
    let strategy = fuzz::message(&ctx);
    let bodies: Vec<String> = (0..cases).map(|_| strategy.new_tree(&mut runner).expect("generate").current()).collect();
    let checker = fuzz_sql(Checker::new(org, "fuzz/proptest messages -> handle_vapi_message"), bodies).await;
    finish(checker, &db, &sentinel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutated_fixtures_through_handle_vapi_message() {
    let cases = scale(2_000, 30_000);
    let db = connect().await;
    let sentinel = Sentinel::start().await;
    let (org, ctx) = context(&db).await;
    let fixtures = fuzz::fixtures(&ctx);
    let mut rng = Rng::new(seed(0xf022_0002));
    let mut bodies = Vec::with_capacity(cases);
    // the fixtures themselves first, then their mutants
    bodies.extend(fixtures.iter().map(|(_, v)| v.to_string()));
    while bodies.len() < cases {
        let (_, base) = &fixtures[rng.below(fixtures.len())];
        bodies.push(fuzz::mutate(&mut rng, &ctx, base));
    }
    bodies.reverse(); // fuzz_sql pops from the end
    let mut checker = Checker::new(org, "fuzz/mutated fixtures -> handle_vapi_message");
    checker.valid = fixtures.iter().map(|(_, v)| v.to_string()).collect();
    let checker = fuzz_sql(checker, bodies).await;
    finish(checker, &db, &sentinel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proptest_and_mutated_messages_through_the_relay() {
    let cases = scale(2_000, 25_000);
    let db = connect().await;
    let sentinel = Sentinel::start().await;
    let (org, ctx) = context(&db).await;
    let url = std::env::var("VOXANNE_DATABASE_URL").expect("VOXANNE_DATABASE_URL");
    let relay = Relay::start(&url, &["--pool-size", "4"]).await;
    let rejected_before: i64 =
        db.query_one("SELECT coalesce(max(id), 0) FROM voxanne.rejected_events", &[]).await.unwrap().get(0);

    let mut runner = runner(seed(0xf022_0003));
    let strategy = fuzz::message(&ctx);
    let fixtures = fuzz::fixtures(&ctx);
    let mut rng = Rng::new(seed(0xf022_0004));
    let mut bodies: Vec<Vec<u8>> = Vec::with_capacity(cases);
    while bodies.len() < cases {
        let body = match bodies.len() % 20 {
            // raw bytes that are not UTF-8
            19 => {
                let mut b = fixtures[rng.below(fixtures.len())].1.to_string().into_bytes();
                let i = rng.below(b.len());
                b.insert(i, 0xff);
                b
            }
            k if k % 2 == 0 => strategy.new_tree(&mut runner).expect("generate").current().into_bytes(),
            _ => {
                let base = &fixtures[rng.below(fixtures.len())].1;
                fuzz::mutate(&mut rng, &ctx, base).into_bytes()
            }
        };
        bodies.push(body);
    }

    let checker = Arc::new(Mutex::new(Checker::new(org, "fuzz/proptest + mutated messages -> relay")));
    let rejected = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let queue = Arc::new(Mutex::new(bodies));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (checker, queue, rejected) = (checker.clone(), queue.clone(), rejected.clone());
        let (http, url) = (relay.http.clone(), relay.webhook_url());
        tasks.push(tokio::spawn(async move {
            let db = connect().await;
            loop {
                let Some(body) = queue.lock().unwrap().pop() else {
                    break;
                };
                let response = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-vapi-secret", voxanne_it::relay::SECRET)
                    .body(body.clone())
                    .send()
                    .await;
                let text = String::from_utf8_lossy(&body).into_owned();
                let (status, answer) = match response {
                    Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
                    Err(e) => {
                        checker
                            .lock()
                            .unwrap()
                            .figures
                            .violation("errors", format!("no answer: {e:?} — body: {}", clip(&text)));
                        continue;
                    }
                };
                let json: Option<Value> = serde_json::from_str(&answer).ok();
                // for a 5xx, find out what the database said (in a rolled-back transaction)
                let sqlstate = if status >= 500 { replay_sqlstate(&db, &body).await } else { String::new() };
                let mut c = checker.lock().unwrap();
                c.figures.fuzz_cases += 1;
                match (status, json) {
                    (200, Some(v)) => c.answer(&v, &text),
                    (422, Some(v)) => {
                        rejected.lock().unwrap().push((text.clone(), answer.clone()));
                        let code = v.get("code").and_then(Value::as_str).unwrap_or("?").to_string();
                        let message = v.get("message").and_then(Value::as_str).unwrap_or("").to_string();
                        c.error(&code, &message, &text);
                    }
                    (400, Some(_)) => {
                        *c.codes.entry("HTTP 400".into()).or_default() += 1;
                        let parses = std::str::from_utf8(&body).is_ok_and(|t| serde_json::from_str::<Value>(t).is_ok());
                        if parses {
                            c.figures.violation(
                                "errors",
                                format!("400 for a body that is JSON: {answer} — {}", clip(&text)),
                            );
                        }
                    }
                    (413, Some(_)) if body.len() > 1024 * 1024 => {
                        *c.codes.entry("HTTP 413".into()).or_default() += 1;
                    }
                    (status, _) => {
                        *c.codes.entry(format!("HTTP {status}")).or_default() += 1;
                        let kind = if sqlstate.starts_with("XX000") { "panics" } else { "errors" };
                        c.figures.violation(
                            kind,
                            format!("HTTP {status} {answer} (database: {sqlstate}) — body: {}", clip(&text)),
                        );
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("relay fuzz task");
    }
    let mut checker = Arc::try_unwrap(checker).ok().unwrap().into_inner().unwrap();
    // every 422 stored its body, once
    let stored: Vec<String> = db
        .query("SELECT body FROM voxanne.rejected_events WHERE id > $1", &[&rejected_before])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut stored_count: BTreeMap<&str, i64> = BTreeMap::new();
    for b in &stored {
        *stored_count.entry(b.as_str()).or_default() += 1;
    }
    let answered = rejected.lock().unwrap().clone();
    for (body, answer) in &answered {
        match stored_count.get_mut(body.as_str()) {
            Some(n) if *n > 0 => *n -= 1,
            _ => checker
                .figures
                .violation("lost", format!("answered 422 {answer} but the body was not stored: {}", clip(body))),
        }
    }
    for (body, n) in stored_count {
        if n > 0 {
            checker.figures.violation("doubled", format!("stored {n} more time(s) than answered 422: {}", clip(body)));
        }
    }
    let stored = stored.len();
    checker.figures.note("rejected bodies stored", stored as u64);
    relay.stop().await;
    finish(checker, &db, &sentinel).await;
}

/// The SQLSTATE the database answers `body` with, in a transaction that is rolled back.
async fn replay_sqlstate(db: &Client, body: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(body) else {
        return "not UTF-8".into();
    };
    db.batch_execute("BEGIN").await.expect("BEGIN");
    let result = db.query_one(vapi::HANDLE_VAPI_MESSAGE, &[&text]).await;
    db.batch_execute("ROLLBACK").await.expect("ROLLBACK");
    match result {
        Ok(_) => "no error".into(),
        Err(e) => {
            e.as_db_error().map(|d| format!("{} {}", d.code().code(), d.message())).unwrap_or_else(|| e.to_string())
        }
    }
}

/// The inputs the fuzzers found panicking, as a plain regression test: numbers beyond f64
/// and nesting beyond serde_json's 128 levels are valid jsonb, so `handle_vapi_message`
/// receives them, and must answer a data error, not XX000.
#[tokio::test]
async fn numbers_beyond_f64_and_deep_nesting_are_data_errors_not_panics() {
    let mut figures = Figures::new("fuzz/regressions: big numbers, deep nesting");
    let db = connect().await;
    let (org, ctx) = context(&db).await;
    let call = &ctx.calls[0];
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let bodies = [
        r#"{"message":{"type":"hang","x":1e400}}"#.to_string(),
        format!(
            r#"{{"message":{{"type":"status-update","status":"ringing","timestamp":1e400,"call":{{"id":"{call}","assistantId":"{}"}}}}}}"#,
            org.assistant_id
        ),
        format!(
            r#"{{"message":{{"type":"end-of-call-report","cost":1{},"call":{{"id":"{call}","assistantId":"{}"}}}}}}"#,
            "0".repeat(400),
            org.assistant_id
        ),
        format!(r#"{{"message":{{"type":"speech-update","x":{}}}}}"#, deep(129)),
        format!(
            r#"{{"message":{{"type":"transcript","role":"user","transcript":"hi","timestamp":1795600800000,"x":{},"call":{{"id":"{call}","assistantId":"{}"}}}}}}"#,
            deep(1000),
            org.assistant_id
        ),
        // the same, final: stored, the deep value unread
        format!(
            r#"{{"message":{{"type":"transcript","transcriptType":"final","role":"user","transcript":"hi","timestamp":1795600800000,"x":{},"call":{{"id":"{call}","assistantId":"{}"}}}}}}"#,
            deep(1000),
            org.assistant_id
        ),
    ];
    // each body's one right answer: a value nobody reads is skipped unread (the message is
    // handled as if it were absent); a value that is read and cannot be held is the SQLSTATE
    // of its field
    let expected = [
        "ignored hang",
        "22023 message.timestamp",
        "22023 message.cost",
        "ignored speech-update",
        "ignored transcript[partial]",
        "applied transcript",
    ];
    for (body, want) in bodies.iter().zip(expected) {
        figures.fuzz_cases += 1;
        figures.checks += 1;
        let got = match db.query_one(vapi::HANDLE_VAPI_MESSAGE, &[body]).await {
            Ok(row) => {
                let v: Value = row.get(0);
                match (v.get("ignored"), v.get("outcome")) {
                    (Some(kind), _) => format!("ignored {}", kind.as_str().unwrap_or("?")),
                    (None, Some(outcome)) => {
                        format!("{} {}", outcome.as_str().unwrap_or("?"), v["message_type"].as_str().unwrap_or("?"))
                    }
                    _ => format!("answer {v}"),
                }
            }
            Err(e) => {
                let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
                if code == "XX000" {
                    figures.violation(
                        "panics",
                        format!("{} — body: {}", describe(&e).lines().next().unwrap_or(""), clip(body)),
                    );
                }
                let message = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
                // the field the message names, as "CODE path"
                let path = message.split_whitespace().next().unwrap_or("").to_string();
                format!("{code} {path}")
            }
        };
        if got != want {
            figures.violation("errors", format!("expected {want}, got {got} — body: {}", clip(body)));
        }
    }
    figures.finish();
}

/// What the relay fuzzing found, kept as a regression test: a body whose database error message
/// is longer than record_rejected_event's 64 KiB was answered 422 but not stored; a 413 left
/// the client to reuse a connection the relay was closing; a body nested too deeply for jsonb
/// (54001) was a 500 that Vapi would retry forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_stores_every_refused_body_and_closes_after_413() {
    let mut figures = Figures::new("fuzz/relay regressions: huge error message, 413, deep nesting");
    let db = connect().await;
    let url = std::env::var("VOXANNE_DATABASE_URL").expect("VOXANNE_DATABASE_URL");
    let relay = Relay::start(&url, &["--pool-size", "2"]).await;
    let rejected_before: i64 =
        db.query_one("SELECT coalesce(max(id), 0) FROM voxanne.rejected_events", &[]).await.unwrap().get(0);
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let huge_message = format!(r#"{{"message":"{marker}{}"}}"#, "é".repeat(35_000));
    let too_deep = format!(r#"{{"marker":"{marker}","message":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    for (what, body, code) in
        [("an error message over 64 KiB", &huge_message, "22023"), ("nesting beyond jsonb's stack", &too_deep, "54001")]
    {
        figures.fuzz_cases += 1;
        let (status, answer) = relay.deliver(body).await;
        let v: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
        if status != 422 || v["code"] != code {
            figures.violation("errors", format!("{what}: {status} {answer:.300}"));
        }
        let stored: i64 = db
            .query_one(
                "SELECT count(*) FROM voxanne.rejected_events WHERE id > $1 AND body = $2",
                &[&rejected_before, body],
            )
            .await
            .unwrap()
            .get(0);
        if stored != 1 {
            figures.violation("lost", format!("{what}: stored {stored} times"));
        }
    }
    // a client that keeps its connection after a 413 is told to close it, and its next request works
    let http = voxanne_it::relay::http_client(1);
    let big = format!("\"{}\"", "x".repeat(1024 * 1024 + 10));
    let small = r#"{"message":{"type":"speech-update"}}"#;
    for i in 0..40 {
        figures.fuzz_cases += 1;
        let body = if i % 2 == 0 { big.clone() } else { small.to_string() };
        let sent =
            http.post(relay.webhook_url()).header("x-vapi-secret", voxanne_it::relay::SECRET).body(body).send().await;
        match sent {
            Ok(r) if i % 2 == 0 && r.status() == 413 => {
                if r.headers().get("connection").and_then(|v| v.to_str().ok()) != Some("close") {
                    figures.violation("errors", "a 413 without Connection: close");
                }
            }
            Ok(r) if i % 2 == 1 && r.status() == 200 => {}
            Ok(r) => figures.violation("errors", format!("request {i}: {}", r.status())),
            // The relay answers 413 as soon as the declared length is over the limit and closes
            // while the client may still be writing the body: TCP then hands the client EPIPE or
            // a reset instead of the 413. That is the refusal as this client sees it; what must
            // hold is that the next request, on a fresh connection, works.
            Err(e) if i % 2 == 0 && cut_off_while_sending(&e) => {}
            Err(e) => figures.violation("errors", format!("request {i} after a 413: {e:?}")),
        }
    }
    relay.stop().await;
    figures.finish();
}

/// The request failed because the peer closed while the body was still being written: a broken
/// pipe or a reset somewhere in the error's source chain.
fn cut_off_while_sending(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) {
                return true;
            }
        }
        source = err.source();
    }
    false
}
