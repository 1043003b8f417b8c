//! Health, readiness, metrics, connection loss, timeouts and graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;

#[tokio::test]
async fn readyz_reports_the_extension_version() {
    let relay = start_relay(&[]).await;
    let (status, json) = answer(relay.get("/readyz").await).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["status"], "ready");
    assert_eq!(json["extension_version"], env!("CARGO_PKG_VERSION"));

    let relay = start_relay(&["--expected-extension-version", "9.9.9"]).await;
    let (status, json) = answer(relay.get("/readyz").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["reason"], "extension version mismatch");
    assert_eq!(json["extension_version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn readyz_fails_while_the_database_is_unreachable_but_healthz_does_not() {
    let relay = start_relay(&["--database-url", "host=127.0.0.1 port=1 user=postgres dbname=nothing"]).await;
    let started = Instant::now();
    let (status, json) = answer(relay.get("/readyz").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["status"], "not_ready");
    assert!(started.elapsed() < Duration::from_secs(10));

    let (status, json) = answer(relay.get("/healthz").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["status"], "ok");

    // a webhook is asked to come back later, after one retry
    let (status, json) = relay.deliver_json(&status_update("asst_x", &new_call_id(), "ringing")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["message"], "temporarily unavailable, retry");
}

#[tokio::test]
async fn metrics_count_requests_by_type_and_outcome() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&[]).await;
    let (status, _) = relay.deliver_json(&status_update(&t.assistant, &new_call_id(), "ringing")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = answer(relay.post("{}", &[]).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let response = relay.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    };
    assert!(value(r#"voxanne_relay_webhook_requests_total{message_type="status-update",outcome="applied"}"#) >= 1.0);
    assert!(value(r#"voxanne_relay_webhook_requests_total{message_type="unknown",outcome="unauthorized"}"#) >= 1.0);
    assert!(value(r#"voxanne_relay_webhook_duration_seconds_count{outcome="applied"}"#) >= 1.0);
    assert!(text.contains("voxanne_relay_webhook_duration_seconds_bucket"), "latency is a histogram");
    for gauge in ["voxanne_relay_db_pool_size", "voxanne_relay_db_pool_in_use", "voxanne_relay_db_pool_waiting"] {
        assert!(text.lines().any(|l| l.starts_with(gauge)), "{gauge} missing");
    }
}

/// The relay's one pooled connection is killed between deliveries. With a pool of one and a
/// database that accepts connections, the next delivery has one way to go: its dead session is
/// replaced (on checkout, or by the relay's one retry on a fresh connection), so it is applied
/// and answered 200, never 503; its redelivery is a duplicate.
#[tokio::test]
async fn a_killed_session_is_replaced_and_the_next_delivery_applies() {
    let db = db().await;
    let t = tenant(&db).await;
    let app_name = format!("voxanne-relay-test-{}", uuid::Uuid::new_v4().simple());
    let relay = start_relay(&["--db-application-name", &app_name, "--pool-size", "1"]).await;

    // warm the pool: its one connection
    let (status, _) = relay.deliver_json(&status_update(&t.assistant, &new_call_id(), "ringing")).await;
    assert_eq!(status, StatusCode::OK);
    let warm = sessions(&db, &app_name).await;
    assert_eq!(warm.len(), 1, "the relay's one session carries application_name {app_name}: {warm:?}");

    let killed: bool = db.query_one("SELECT pg_terminate_backend($1)", &[&warm[0]]).await.unwrap().get(0);
    assert!(killed, "the relay's session {} was terminated", warm[0]);
    // the backend is gone before the next delivery
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sessions(&db, &app_name).await.is_empty() {
        assert!(Instant::now() < deadline, "the killed backend {} is still there", warm[0]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let call = new_call_id();
    let body = status_update(&t.assistant, &call, "ringing");
    let (status, json) = relay.deliver_json(&body).await;
    assert_eq!((status, &json["outcome"]), (StatusCode::OK, &serde_json::json!("applied")), "{json}");
    let fresh = sessions(&db, &app_name).await;
    assert!(fresh.len() == 1 && fresh[0] != warm[0], "a fresh session replaced {}: {fresh:?}", warm[0]);
    // the redelivery is a duplicate, and the call exists exactly once
    let (status, json) = relay.deliver_json(&body).await;
    assert_eq!((status, &json["outcome"]), (StatusCode::OK, &serde_json::json!("duplicate")), "{json}");
    assert_eq!(calls(&db, &call).await, 1);

    let (status, _) = relay.deliver_json(&status_update(&t.assistant, &new_call_id(), "ringing")).await;
    assert_eq!(status, StatusCode::OK);
}

/// The pids of the sessions named `app_name`.
async fn sessions(db: &tokio_postgres::Client, app_name: &str) -> Vec<i32> {
    db.query("SELECT pid FROM pg_stat_activity WHERE application_name = $1", &[&app_name])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i32>(0))
        .collect()
}

/// Waits until `n` sessions named `app_name` wait for a lock; returns their pids.
async fn lock_waiters(db: &tokio_postgres::Client, app_name: &str, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i32> = db
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&app_name],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        if pids.len() >= n {
            return pids;
        }
        assert!(Instant::now() < deadline, "no statement of {app_name} is waiting for a lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_connection_killed_mid_statement_is_retried_transparently() {
    let db = db().await;
    let t = tenant(&db).await;
    let app_name = format!("voxanne-relay-test-{}", uuid::Uuid::new_v4().simple());
    let relay = start_relay(&["--db-application-name", &app_name]).await;
    let mut locker = common::db().await;
    let tx = block_calls_of(&mut locker, &t).await;

    let call = new_call_id();
    let in_flight = {
        let (http, url, body) =
            (relay.http.clone(), relay.webhook_url(), status_update(&t.assistant, &call, "ringing"));
        tokio::spawn(async move {
            let response = http.post(url).header("x-vapi-secret", SECRET).body(body).send().await.unwrap();
            answer(response).await
        })
    };
    // kill the session while its statement runs (waits for the lock)
    let first = lock_waiters(&db, &app_name, 1).await;
    db.execute("SELECT pg_terminate_backend($1)", &[&first[0]]).await.unwrap();
    // the retry runs on a new session and waits for the same lock
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = lock_waiters(&db, &app_name, 1).await;
        if !waiting.contains(&first[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "no retry on a fresh session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.commit().await.unwrap();

    let (status, json) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["outcome"], "applied");
    assert_eq!(calls(&db, &call).await, 1);
    let metrics = relay.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with(r#"voxanne_relay_db_retries_total{code="57P01"}"#)
            || l.starts_with(r#"voxanne_relay_db_retries_total{code="08006"}"#)),
        "the retry is counted:\n{metrics}"
    );
}

#[tokio::test]
async fn statement_timeout_bounds_a_blocked_statement() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&["--statement-timeout", "300ms"]).await;
    assert_a_blocked_delivery_times_out(&relay, &db, &t).await;
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_then_closes_the_pool() {
    let db = db().await;
    let t = tenant(&db).await;
    let app_name = format!("voxanne-relay-test-{}", uuid::Uuid::new_v4().simple());
    let mut relay = start_relay(&["--db-application-name", &app_name]).await;
    let mut locker = common::db().await;
    let tx = block_calls_of(&mut locker, &t).await;

    let call = new_call_id();
    let body = status_update(&t.assistant, &call, "ringing");
    let in_flight = {
        let http = relay.http.clone();
        let url = relay.webhook_url();
        tokio::spawn(async move {
            http.post(url)
                .header("x-vapi-secret", SECRET)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
        })
    };
    // wait until the relay's statement is waiting for the lock
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(
        &db,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        &[&app_name],
    )
    .await
        == 0
    {
        assert!(Instant::now() < deadline, "the delivery never reached the database");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    relay.signal_shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!relay.is_finished(), "the server waits for the request in flight");
    assert!(
        reqwest::Client::builder().no_proxy().build().unwrap().get(relay.url("/healthz")).send().await.is_err(),
        "no new connections are accepted"
    );

    tx.commit().await.unwrap();
    let response = in_flight.await.unwrap().expect("the in-flight request is answered");
    assert_eq!(response.status(), StatusCode::OK);
    relay.join().await.expect("clean shutdown");
    assert!(relay.state.db.pool().is_closed(), "pool closed");
    assert_eq!(calls(&db, &call).await, 1);
}

#[tokio::test]
async fn the_request_timeout_answers_503_so_the_sender_retries() {
    let db = db().await;
    let t = tenant(&db).await;
    let relay = start_relay(&["--request-timeout", "400ms"]).await;
    let mut locker = common::db().await;
    let tx = block_calls_of(&mut locker, &t).await;

    let call = new_call_id();
    let started = Instant::now();
    let (status, json) = relay.deliver_json(&status_update(&t.assistant, &call, "ringing")).await;
    let elapsed = started.elapsed();
    tx.rollback().await.unwrap();

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json, serde_json::json!({ "code": "request_timeout", "message": "temporarily unavailable, retry" }));
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}
