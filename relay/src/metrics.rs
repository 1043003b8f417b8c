//! Prometheus metrics, rendered at GET /metrics. The recorder is process-global (the `metrics`
//! facade allows one), so it is installed once and every `AppState` shares its handle.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Webhook requests, labelled `message_type` and `outcome` (the database's outcome, a reply's
/// `replied` / `forwarded` / `upstream_failed` (reply.rs), or the error's).
pub const REQUESTS: &str = "voxanne_relay_webhook_requests_total";
/// Webhook latency in seconds, labelled `outcome`.
pub const LATENCY: &str = "voxanne_relay_webhook_duration_seconds";
/// Transient database failures retried, labelled `code`.
pub const DB_RETRIES: &str = "voxanne_relay_db_retries_total";
/// Database checks behind /readyz (each answer is reused for a second).
pub const READY_CHECKS: &str = "voxanne_relay_ready_checks_total";
/// Open connections, labelled `listener` (`webhook`, `admin`).
pub const CONNECTIONS: &str = "voxanne_relay_connections";
/// Connections closed by a deadline, labelled `listener` and `phase` (`headers`, `idle`).
pub const CONNECTION_TIMEOUTS: &str = "voxanne_relay_connection_timeouts_total";
/// Messages appended to the spool (answered 200 while the database could not take them).
pub const SPOOL_APPENDED: &str = "voxanne_relay_spool_appended_total";
/// Spooled messages settled by the drain, labelled `outcome` (the database's, or `dead_lettered`).
pub const SPOOL_DRAINED: &str = "voxanne_relay_spool_drained_total";
/// Messages the spool could not take, labelled `reason` (`full`, `reply_expected`,
/// `untyped`, `types_unknown`, `io`): answered 503.
pub const SPOOL_REFUSED: &str = "voxanne_relay_spool_refused_total";
/// Damaged records (a crash mid-append) cut off and never replayed.
pub const SPOOL_DAMAGED: &str = "voxanne_relay_spool_damaged_records_total";
pub const SPOOL_ENTRIES: &str = "voxanne_relay_spool_entries";
pub const SPOOL_BYTES: &str = "voxanne_relay_spool_bytes";
pub const SPOOL_OLDEST_AGE: &str = "voxanne_relay_spool_oldest_age_seconds";
pub const POOL_MAX_SIZE: &str = "voxanne_relay_db_pool_max_size";
pub const POOL_SIZE: &str = "voxanne_relay_db_pool_size";
pub const POOL_IN_USE: &str = "voxanne_relay_db_pool_in_use";
pub const POOL_AVAILABLE: &str = "voxanne_relay_db_pool_available";
pub const POOL_WAITING: &str = "voxanne_relay_db_pool_waiting";

const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0];

/// Vapi server message types known to the relay; anything else is counted as "other" so a
/// sender cannot grow the label set without bound.
const MESSAGE_TYPES: &[&str] = &[
    "assistant-request",
    "call.endpointing.request",
    "campaign.predial",
    "conversation-update",
    "end-of-call-report",
    "function-call",
    "handoff-destination-request",
    "hang",
    "knowledge-base-request",
    "language-change-detected",
    "model-output",
    "phone-call-control",
    "speech-update",
    "status-update",
    "tool-calls",
    "transcript",
    "transfer-destination-request",
    "transfer-update",
    "user-interrupted",
    "voice-input",
    "voice-request",
];

/// The global recorder's handle, installed on first use.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LATENCY.to_string()), LATENCY_BUCKETS)
                .expect("latency buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::warn!(error = %e, "a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(REQUESTS, "Webhook requests by Vapi message type and outcome.");
    metrics::describe_histogram!(LATENCY, metrics::Unit::Seconds, "Webhook request latency by outcome.");
    metrics::describe_counter!(DB_RETRIES, "Transient database failures retried once, by code.");
    metrics::describe_counter!(READY_CHECKS, "Database checks made to answer /readyz.");
    metrics::describe_gauge!(CONNECTIONS, "Open HTTP connections, by listener.");
    metrics::describe_counter!(CONNECTION_TIMEOUTS, "Connections closed by the header-read or idle timeout.");
    metrics::describe_counter!(SPOOL_APPENDED, "Messages spooled while the database could not take them.");
    metrics::describe_counter!(SPOOL_DRAINED, "Spooled messages settled by the drain, by outcome.");
    metrics::describe_counter!(SPOOL_REFUSED, "Messages the spool could not take (answered 503), by reason.");
    metrics::describe_counter!(SPOOL_DAMAGED, "Damaged spool records cut off, never replayed.");
    metrics::describe_gauge!(SPOOL_ENTRIES, "Spooled messages not yet settled.");
    metrics::describe_gauge!(SPOOL_BYTES, "Bytes the spool holds on disk.");
    metrics::describe_gauge!(SPOOL_OLDEST_AGE, metrics::Unit::Seconds, "Age of the oldest unsettled spooled message.");
    metrics::describe_gauge!(POOL_MAX_SIZE, "Configured maximum of pooled database connections.");
    metrics::describe_gauge!(POOL_SIZE, "Open pooled database connections.");
    metrics::describe_gauge!(POOL_IN_USE, "Pooled database connections checked out.");
    metrics::describe_gauge!(POOL_AVAILABLE, "Idle pooled database connections.");
    metrics::describe_gauge!(POOL_WAITING, "Requests waiting for a pooled database connection.");
}

pub fn message_type_label(message_type: Option<&str>) -> &'static str {
    match message_type {
        None => "unknown",
        Some(t) => MESSAGE_TYPES.iter().find(|known| **known == t).copied().unwrap_or("other"),
    }
}

pub fn record_webhook(message_type: &'static str, outcome: &'static str, elapsed: Duration) {
    metrics::counter!(REQUESTS, "message_type" => message_type, "outcome" => outcome).increment(1);
    metrics::histogram!(LATENCY, "outcome" => outcome).record(elapsed.as_secs_f64());
}

pub fn record_ready_check() {
    metrics::counter!(READY_CHECKS).increment(1);
}

/// A connection opened (`+1.0`) or closed (`-1.0`) on `listener`.
pub fn record_connection(listener: &'static str, delta: f64) {
    metrics::gauge!(CONNECTIONS, "listener" => listener).increment(delta);
}

pub fn record_connection_timeout(listener: &'static str, expired: crate::limits::Expired) {
    metrics::counter!(CONNECTION_TIMEOUTS, "listener" => listener, "phase" => expired.label()).increment(1);
}

pub fn record_spool_appended() {
    metrics::counter!(SPOOL_APPENDED).increment(1);
}

pub fn record_spool_drained(outcome: &'static str) {
    metrics::counter!(SPOOL_DRAINED, "outcome" => outcome).increment(1);
}

pub fn record_spool_refused(reason: &'static str) {
    metrics::counter!(SPOOL_REFUSED, "reason" => reason).increment(1);
}

pub fn record_spool_damaged() {
    metrics::counter!(SPOOL_DAMAGED).increment(1);
}

pub fn record_spool_depth(depth: crate::spool::Depth) {
    metrics::gauge!(SPOOL_ENTRIES).set(depth.entries as f64);
    metrics::gauge!(SPOOL_BYTES).set(depth.bytes as f64);
    metrics::gauge!(SPOOL_OLDEST_AGE).set(depth.oldest_age_seconds as f64);
}

pub fn record_pool(status: deadpool_postgres::Status) {
    metrics::gauge!(POOL_MAX_SIZE).set(status.max_size as f64);
    metrics::gauge!(POOL_SIZE).set(status.size as f64);
    metrics::gauge!(POOL_IN_USE).set(status.size.saturating_sub(status.available) as f64);
    metrics::gauge!(POOL_AVAILABLE).set(status.available as f64);
    metrics::gauge!(POOL_WAITING).set(status.waiting as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(message_type_label(Some("status-update")), "status-update");
        assert_eq!(message_type_label(Some("x".repeat(1000).as_str())), "other");
        assert_eq!(message_type_label(None), "unknown");
        // outcome labels come from the answer's typed view: db::tests::answers_give_their_outcome_label
    }

    #[test]
    fn recorded_requests_are_rendered() {
        let handle = handle();
        record_webhook("transcript", "stale", Duration::from_millis(3));
        let text = handle.render();
        assert!(
            text.contains(r#"voxanne_relay_webhook_requests_total{message_type="transcript",outcome="stale"}"#),
            "{text}"
        );
        assert!(text.contains("voxanne_relay_webhook_duration_seconds_bucket"), "{text}");
    }
}
