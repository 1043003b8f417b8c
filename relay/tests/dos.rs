//! Denial-of-service attacks on the relay's edge, each against the real relay over real TCP
//! and the real database, each failing without the limit it proves: slow headers, idle and
//! surplus connections, webhooks in flight, numbers PostgreSQL prints in full, deep nesting, a
//! readiness probe flood, and the admin endpoints on the public listener.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use voxanne_relay::testing::metric_sum;

/// A raw TCP connection to the relay's webhook listener.
async fn connect(relay: &Relay) -> TcpStream {
    TcpStream::connect(relay.base.trim_start_matches("http://")).await.expect("connect to the relay")
}

/// Waits (at most `within`) for the relay to close `stream`, reading and discarding what it
/// sends; how long that took, or `None` if it stayed open.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.ok().map(|()| started.elapsed())
}

/// A fresh client, so a request opens a connection of its own.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().unwrap()
}

#[tokio::test]
async fn slow_headers_are_cut_off_at_the_header_read_timeout_while_a_webhook_gets_through() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&["--header-read-timeout", "1s"]).await;
    let mut slow = connect(&relay).await;
    let (mut reader, mut writer) = slow.split();
    let head = b"POST /vapi/webhook HTTP/1.1\r\nhost: relay\r\nx-vapi-secret: ".repeat(4);
    let dribble = async {
        // one byte every 200 ms: the head would take 40 s to arrive
        for byte in head {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        std::future::pending::<()>().await
    };
    let started = Instant::now();
    let watch = async {
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(3), reader.read(&mut buf)).await;
        (closed.is_ok(), started.elapsed())
    };
    let genuine = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        relay.deliver_json(&status_update(&t.assistant, &new_call_id(), "ringing")).await
    };
    let ((closed, after), (status, json)) = tokio::select! {
        both = async { tokio::join!(watch, genuine) } => both,
        () = dribble => unreachable!(),
    };
    assert!(closed, "the slow connection is closed within 3x the 1 s header-read timeout");
    assert!(after >= Duration::from_millis(900), "not before the timeout: {after:?}");
    assert_eq!((status, &json["outcome"]), (StatusCode::OK, &Value::from("applied")), "{json}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    // the header-read deadline is far: only the idle one can close the connection in time
    let relay = start_relay(&["--idle-timeout", "1s", "--header-read-timeout", "30s"]).await;
    let mut conn = connect(&relay).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("connection: close"), "a keep-alive answer: {answer}");

    let closed = closed_within(&mut conn, Duration::from_secs(3)).await;
    let closed = closed.expect("the idle connection is closed within 3x the 1 s idle timeout");
    assert!(closed >= Duration::from_millis(900), "not before the timeout: {closed:?}");
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let relay = start_relay(&["--max-connections", "2", "--header-read-timeout", "30s"]).await;
    let mut silent = vec![connect(&relay).await, connect(&relay).await];
    // both are accepted and hold the two permits
    tokio::time::sleep(Duration::from_millis(300)).await;

    let client = fresh_client();
    let request = client.get(relay.url("/healthz")).send();
    tokio::pin!(request);
    let early = tokio::time::timeout(Duration::from_secs(1), &mut request).await;
    assert!(early.is_err(), "a third connection is not served while two are open: {early:?}");

    drop(silent.pop());
    let response = tokio::time::timeout(Duration::from_secs(3), request).await;
    let response = response.expect("served once a connection closed").expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn silent_connections_past_the_cap_are_closed_in_turn_and_a_client_gets_in() {
    let relay = start_relay(&["--max-connections", "2", "--header-read-timeout", "1s"]).await;
    // twice the cap, none sending a byte, all queued before the genuine client
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(connect(&relay).await);
    }
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(6), fresh_client().get(relay.url("/healthz")).send()).await;
    let response = response.expect("served after the silent connections ahead of it were closed").unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // two rounds of silent connections (2 + 2) were closed by the 1 s deadline ahead of it
    assert!(started.elapsed() >= Duration::from_millis(1800), "{:?}", started.elapsed());
    for conn in &mut silent {
        assert!(closed_within(conn, Duration::from_secs(3)).await.is_some(), "every silent connection is closed");
    }
}

/// Holds a row lock on the tenant's agent, which the first insert of a call waits for (its
/// foreign key check takes a KEY SHARE lock), so a delivery for a new call stays in flight.
async fn block_calls_of<'a>(db: &'a mut tokio_postgres::Client, t: &Tenant) -> tokio_postgres::Transaction<'a> {
    let tx = db.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM voxanne.agents WHERE org_id = $1::text::uuid FOR UPDATE", &[&t.org]).await.unwrap();
    tx
}

/// Waits until `n` sessions named `app_name` wait for a lock.
async fn lock_waiters(db: &tokio_postgres::Client, app_name: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'";
    while count(db, sql, &[&app_name]).await < n {
        assert!(Instant::now() < deadline, "{n} deliveries of {app_name} never waited for the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn app_name() -> String {
    format!("voxanne-relay-dos-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn past_max_in_flight_a_webhook_is_503_at_once_and_probes_still_answer() {
    let db = db().await;
    let t = tenant(&db).await;
    let app_name = app_name();
    let relay = start_relay(&["--max-in-flight", "2", "--db-application-name", &app_name]).await;
    let mut locker = common::db().await;
    let tx = block_calls_of(&mut locker, &t).await;

    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let (http, url) = (relay.http.clone(), relay.webhook_url());
            let body = status_update(&t.assistant, &new_call_id(), "ringing");
            tokio::spawn(async move {
                answer(http.post(url).header("x-vapi-secret", SECRET).body(body).send().await.unwrap()).await
            })
        })
        .collect();
    lock_waiters(&db, &app_name, 2).await;

    let third = relay.post(status_update(&t.assistant, &new_call_id(), "ringing"), &[("x-vapi-secret", SECRET)]);
    let third = tokio::time::timeout(Duration::from_secs(2), third).await.expect("the third is answered at once");
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third.headers()["retry-after"], "1");
    let (_, json) = answer(third).await;
    assert_eq!(json, serde_json::json!({ "code": "overloaded", "message": "temporarily unavailable, retry" }));
    let healthz = tokio::time::timeout(Duration::from_secs(2), relay.get("/healthz")).await.expect("healthz answers");
    assert_eq!(healthz.status(), StatusCode::OK);
    let metrics = relay.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l
                .starts_with(r#"voxanne_relay_webhook_requests_total{message_type="unknown",outcome="overloaded"}"#)),
        "{metrics}"
    );

    tx.commit().await.unwrap();
    for delivery in in_flight {
        let (status, json) = delivery.await.unwrap();
        assert_eq!((status, &json["outcome"]), (StatusCode::OK, &Value::from("applied")), "{json}");
    }
}

/// Peak resident memory (`VmHWM`) of process `pid`, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the backend's /proc status (run as root)");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The pid of the relay's one pooled session, opened by a first delivery.
async fn warm_backend(relay: &Relay, db: &tokio_postgres::Client, app_name: &str) -> i32 {
    let (status, _) = relay.deliver(r#"{"message":{"type":"speech-update"}}"#).await;
    assert_eq!(status, StatusCode::OK);
    let row = db.query_one("SELECT pid FROM pg_stat_activity WHERE application_name = $1", &[&app_name]).await.unwrap();
    row.get(0)
}

/// Most a backend's peak memory may grow by while it refuses one attack body.
const BACKEND_GROWTH_MAX_KIB: u64 = 32 * 1024;

/// Delivers `body`, authenticated, through a relay with a pool of one; its answer, and how
/// much the peak memory of the relay's backend grew.
async fn attack(body: &str) -> ((StatusCode, Value), u64) {
    let db = db().await;
    let app_name = app_name();
    let relay = start_relay(&["--pool-size", "1", "--db-application-name", &app_name]).await;
    let pid = warm_backend(&relay, &db, &app_name).await;
    let before = peak_rss_kib(pid);
    let answered = relay.deliver_json(body).await;
    let growth = peak_rss_kib(pid) - before;
    eprintln!("backend {pid}: VmHWM {before} KiB -> +{growth} KiB; answer {}", answered.1);
    let stored = count(&db, "SELECT count(*) FROM voxanne.rejected_events WHERE body = $1", &[&body]).await;
    assert_eq!(stored, 1, "the refused body is kept in the dead letter");
    (answered, growth)
}

/// An end-of-call report for `call` whose `analysis.structuredData.x` is `numbers`, as written.
fn report_with_numbers(assistant: &str, call_id: &str, numbers: &str) -> String {
    let report = serde_json::json!({ "message": {
        "type": "end-of-call-report",
        "endedReason": "customer-ended-call",
        "startedAt": "2026-11-25T10:00:00Z",
        "endedAt": "2026-11-25T10:01:00Z",
        "analysis": { "summary": "booked", "structuredData": { "x": "NUMBERS" } },
        "timestamp": 1_732_540_060_000_i64,
        "call": call(assistant, call_id),
    }});
    report.to_string().replace(r#""NUMBERS""#, &format!("[{numbers}]"))
}

/// How much the peak memory of a fresh session grows while it reads `call`'s stored report as
/// text, as an app (or PostgREST) does: jsonb prints every number in full.
async fn report_read_growth(call_id: &str) -> u64 {
    let reader = db().await;
    let pid: i32 = reader.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let before = peak_rss_kib(pid);
    let sql = "SELECT r.report::text FROM voxanne.call_reports r \
               JOIN voxanne.calls c ON (c.org_id, c.id) = (r.org_id, r.call_id) WHERE c.vapi_call_id = $1";
    let rows = reader.query(sql, &[&call_id]).await.unwrap();
    let growth = peak_rss_kib(pid) - before;
    eprintln!("reader {pid}: {} report(s) read, VmHWM {before} KiB -> +{growth} KiB", rows.len());
    growth
}

#[tokio::test]
async fn numbers_postgresql_would_print_in_full_are_refused_before_they_are_stored() {
    let db = db().await;
    let t = tenant(&db).await;
    // review #3: 1,500 x 1e131071 (13.5 KB); jsonb keeps each in a few bytes and prints it as
    // 131,072 digits, here in the report kept whole for the app
    let call_id = new_call_id();
    let body = report_with_numbers(&t.assistant, &call_id, &vec!["1e131071"; 1500].join(","));
    let ((status, json), growth) = attack(&body).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert_eq!(json["code"], "22003");
    assert_eq!(
        json["message"],
        "message.analysis.structuredData.x[0]: number 1e131071 has an exponent of magnitude 131071; the limit is 400"
    );
    assert!(growth < BACKEND_GROWTH_MAX_KIB, "the relay's backend grew by {growth} KiB");
    let growth = report_read_growth(&call_id).await;
    assert!(growth < BACKEND_GROWTH_MAX_KIB, "reading the call's report grew a backend by {growth} KiB");

    // each exponent within bounds, together 50,000 x 400 digits: 20 MB printed from 300 KB
    let call_id = new_call_id();
    let body = report_with_numbers(&t.assistant, &call_id, &vec!["1e400"; 50_000].join(","));
    let ((status, json), growth) = attack(&body).await;
    assert_eq!((status, &json["code"]), (StatusCode::UNPROCESSABLE_ENTITY, &Value::from("54000")), "{json}");
    assert!(growth < BACKEND_GROWTH_MAX_KIB, "the relay's backend grew by {growth} KiB");
    let growth = report_read_growth(&call_id).await;
    assert!(growth < BACKEND_GROWTH_MAX_KIB, "reading the call's report grew a backend by {growth} KiB");
}

#[tokio::test]
async fn nesting_past_the_depth_limit_is_refused_before_the_database_parses_it() {
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let n = 100_000;
    let body = format!(r#"{{"marker":"{marker}","message":{}{}}}"#, "[".repeat(n), "]".repeat(n));
    let ((status, json), growth) = attack(&body).await;
    assert_eq!((status, &json["code"]), (StatusCode::UNPROCESSABLE_ENTITY, &Value::from("54001")), "{json}");
    assert!(json["message"].as_str().unwrap().ends_with("nested deeper than the limit of 64 levels"), "{json}");
    assert!(growth < BACKEND_GROWTH_MAX_KIB, "the backend grew by {growth} KiB");
}

/// The only test of this file that probes /readyz: the check counter is the process's.
#[tokio::test]
async fn a_readyz_flood_costs_one_database_check_per_second() {
    let relay = start_relay(&[]).await;
    let checks = || async { metric_sum(&relay.metrics().await, voxanne_relay::metrics::READY_CHECKS) };
    let before = checks().await;
    let started = Instant::now();
    let probes = (0..200).map(|_| {
        let (http, url) = (relay.http.clone(), relay.url("/readyz"));
        tokio::spawn(async move { http.get(url).send().await.unwrap().status() })
    });
    for probe in probes.collect::<Vec<_>>() {
        assert_eq!(probe.await.unwrap(), StatusCode::OK);
    }
    let seconds = started.elapsed().as_secs();
    let made = checks().await - before;
    assert!(made >= 1 && made <= 1 + seconds, "200 probes in {seconds} s made {made} database checks");
}

#[tokio::test]
async fn with_an_admin_listener_the_admin_endpoints_are_served_there_only() {
    let relay = start_relay(&["--admin-listen", "127.0.0.1:0"]).await;
    let admin = relay.admin_base.clone().expect("an admin listener");
    assert_ne!(admin, relay.base);
    for path in ["/metrics", "/healthz", "/readyz"] {
        let public = relay.get(path).await;
        assert_eq!(public.status(), StatusCode::NOT_FOUND, "{path} on the webhook listener");
        let private = relay.http.get(relay.admin_url(path)).send().await.unwrap();
        assert_eq!(private.status(), StatusCode::OK, "{path} on the admin listener");
    }
    let webhook_on_admin = relay.http.post(relay.admin_url("/vapi/webhook")).body("{}").send().await.unwrap();
    assert_eq!(webhook_on_admin.status(), StatusCode::NOT_FOUND);
    let (status, _) = relay.deliver(r#"{"message":{"type":"speech-update"}}"#).await;
    assert_eq!(status, StatusCode::OK, "the webhook stays on the public listener");
}
