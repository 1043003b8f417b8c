//! An independent model of what the product must leave behind, written from the documented
//! rules (README "Vapi messages", docs/ARCHITECTURE.md "Idempotency keys" and "Merge rules"),
//! never by calling the product: a call's messages in, the call row, its lines, its ledger and
//! the order-insensitive part of its outbox out. The suite compares the database with it field
//! by field ([`expected`] against [`observed`]), and the senders' answers with the tables both
//! ways ([`two_way`]).
//!
//! The model reads what was sent (the workload's messages and [`ReportFields`]), and nothing
//! the product computed: the transcript hash is recomputed here from its documented framing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::describe;
use crate::vapi::{
    Kind, Message, ReportFields, Senders, Verdicts, CALL_TYPE, CUSTOMER_NUMBER, PHONE_NUMBER_ID, STATUS_ENDED_REASON,
};

/// PostgreSQL counts microseconds from 2000-01-01, Vapi milliseconds from 1970-01-01.
const PG_EPOCH_UNIX_MS: i64 = 946_684_800_000;

/// The documented order a status may move in (`scheduled < … < ended`).
pub const STATUS_ORDER: [&str; 6] = ["scheduled", "queued", "ringing", "in-progress", "forwarding", "ended"];

pub fn rank(status: &str) -> usize {
    STATUS_ORDER.iter().position(|s| *s == status).map_or(0, |p| p + 1)
}

/// The documented transcript key: sha256 over "voxanne.transcript.v1" and the length-prefixed
/// (u64, big-endian) call id, role, type, moment (PostgreSQL microseconds, i64 big-endian) and
/// text.
pub fn content_hash(call: &str, role: &str, transcript_type: &str, spoken_at_ms: i64, text: &str) -> String {
    let micros = ((spoken_at_ms - PG_EPOCH_UNIX_MS) * 1000).to_be_bytes();
    let mut hasher = Sha256::new();
    hasher.update(b"voxanne.transcript.v1");
    for field in [call.as_bytes(), role.as_bytes(), transcript_type.as_bytes(), &micros, text.as_bytes()] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field);
    }
    hex::encode(hasher.finalize())
}

/// What one call must look like once `messages` (its distinct messages, each delivered at
/// least once, in any order) have been handled. None: no row at all (only ignored types).
fn expected_call(call: &str, messages: &[&Message]) -> Option<Value> {
    let kinds: Vec<&Kind> = messages.iter().map(|m| &m.kind).collect();
    if kinds.iter().all(|k| matches!(k, Kind::Ignored)) {
        return None;
    }
    let statuses: Vec<&Message> = messages.iter().copied().filter(|m| matches!(m.kind, Kind::Status(_))).collect();
    let status_of = |m: &Message| match m.kind {
        Kind::Status(s) => s,
        _ => unreachable!(),
    };
    let highest = statuses.iter().max_by_key(|m| rank(status_of(m))).map(|m| status_of(m));
    let ended = messages.iter().find(|m| m.kind == Kind::StatusEnded);
    let report = messages.iter().find(|m| m.kind == Kind::Report).map(|m| ReportFields::of(call, m.start_ms));
    let in_progress = statuses.iter().find(|m| status_of(m) == "in-progress");

    // rule 1 and 2: the status only moves forward; the report owns an ended call's event
    let (status, status_event) = match (&report, ended, highest) {
        (Some(_), _, _) => (Some("ended"), Some(format!("report:{call}"))),
        (None, Some(_), _) => (Some("ended"), Some(format!("status:{call}:ended"))),
        (None, None, Some(s)) => (Some(s), Some(format!("status:{call}:{s}"))),
        (None, None, None) => (None, None),
    };
    // rule 2: the report's values overwrite; a status `ended` and `in-progress` fill gaps
    let ended_reason = report.as_ref().map(|r| r.ended_reason).or(ended.map(|_| STATUS_ENDED_REASON));
    let started_at = report.as_ref().map(|r| r.started_at_ms).or(in_progress.map(|m| m.at_ms));
    let ended_at = report.as_ref().map(|r| r.ended_at_ms).or(ended.map(|m| m.at_ms));
    // no durationSeconds in the report: endedAt - startedAt
    let duration = report.as_ref().map(|r| (r.ended_at_ms - r.started_at_ms) as f64 / 1000.0);
    // rule 4: what only a status before the end carries
    let has_status = !statuses.is_empty();
    let pick = |v: &'static str| has_status.then_some(v);

    let mut lines = Vec::new();
    let mut transcript_events = Vec::new();
    let mut ledger = Vec::new();
    for m in messages {
        match &m.kind {
            Kind::Transcript { role, text } => {
                let hash = content_hash(call, role, "final", m.at_ms, text);
                lines.push(json!([m.at_ms, role, "final", text, hash]));
                transcript_events.push(json!([hash, role, text, m.at_ms]));
            }
            Kind::Status(s) => ledger.push(format!("status:{call}:{s}/status-update")),
            Kind::StatusEnded => ledger.push(format!("status:{call}:ended/status-update")),
            Kind::Report => ledger.push(format!("report:{call}/end-of-call-report")),
            Kind::Ignored => {}
        }
    }
    lines.sort_by_key(|l| (l[0].as_i64(), l[4].as_str().map(str::to_string)));
    transcript_events.sort_by_key(|e| e[0].as_str().map(str::to_string));
    ledger.sort();
    // the report announces the row as it left it: its own values, since it overwrites them all
    let ended_events: Vec<Value> = report
        .iter()
        .map(|r| {
            json!({"status": "ended", "ended_reason": r.ended_reason, "started_at_ms": r.started_at_ms,
                   "ended_at_ms": r.ended_at_ms, "duration_seconds": duration, "cost": r.cost,
                   "source": "end-of-call-report"})
        })
        .collect();
    Some(json!({
        // a consumer that applies a status only when it moves forward (docs/ARCHITECTURE.md,
        // call.status and call.ended rows in any order) ends where the call row ends
        "consumer_status": status,
        "status": status, "status_event_id": status_event, "ended_reason": ended_reason,
        "started_at_ms": started_at, "ended_at_ms": ended_at, "duration_seconds": duration,
        "cost": report.as_ref().map(|r| r.cost), "summary": report.as_ref().map(|r| r.summary.clone()),
        "transcript": report.as_ref().map(|r| r.transcript.clone()),
        "recording_url": report.as_ref().map(|r| r.recording_url.clone()),
        "customer_number": pick(CUSTOMER_NUMBER), "call_type": pick(CALL_TYPE),
        "phone_number_id": pick(PHONE_NUMBER_ID),
        "lines": lines, "ledger": ledger, "ended_events": ended_events, "transcript_events": transcript_events,
    }))
}

/// The model's state of an org that received `messages` (every message of the org's calls,
/// each at least once): call id -> the call as [`observed`] shows it.
pub fn expected(messages: &[&Message]) -> BTreeMap<String, Value> {
    let mut by_call: BTreeMap<&str, Vec<&Message>> = BTreeMap::new();
    for m in messages {
        by_call.entry(m.call.as_str()).or_default().push(m);
    }
    // each message's effect once, however often it was delivered
    by_call
        .into_iter()
        .filter_map(|(call, ms)| {
            let mut seen = BTreeSet::new();
            let distinct: Vec<&Message> = ms.into_iter().filter(|m| seen.insert(m.label())).collect();
            expected_call(call, &distinct).map(|v| (call.to_string(), v))
        })
        .collect()
}

/// The database's state of `org` in the model's shape: times as epoch milliseconds, numbers as
/// numbers, outbox payloads read back from their text.
pub async fn observed(db: &Client, org: Uuid) -> BTreeMap<String, Value> {
    const MS: &str = "(extract(epoch FROM {}) * 1000)::bigint";
    let ms = |e: &str| MS.replace("{}", e);
    let sql = format!(
        "WITH lines AS (
             SELECT t.call_id,
                    pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array({spoken}, t.role, t.transcript_type, t.text,
                        pg_catalog.encode(t.content_hash, 'hex')) ORDER BY {spoken}, pg_catalog.encode(t.content_hash, 'hex')) AS lines
             FROM voxanne.call_transcripts t WHERE t.org_id = $1 GROUP BY t.call_id),
         ledger AS (
             SELECT CASE WHEN e.event_id LIKE 'report:%' THEN pg_catalog.substr(e.event_id, 8)
                         ELSE pg_catalog.regexp_replace(e.event_id, '^status:(.*):[a-z-]+$', '\\1') END AS call,
                    pg_catalog.jsonb_agg(e.event_id || '/' || e.event_type ORDER BY e.event_id || '/' || e.event_type) AS ledger
             FROM voxanne.processed_webhook_events e WHERE e.org_id = $1 GROUP BY 1),
         ended AS (
             SELECT o.payload->>'vapi_call_id' AS call, pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                        'status', o.payload->>'status', 'ended_reason', o.payload->>'ended_reason',
                        'started_at_ms', {p_started}, 'ended_at_ms', {p_ended},
                        'duration_seconds', (o.payload->>'duration_seconds')::float8,
                        'cost', (o.payload->>'cost')::float8, 'source', o.payload->>'source') ORDER BY o.id) AS events
             FROM voxanne.outbox o WHERE o.org_id = $1 AND o.topic = 'call.ended' GROUP BY 1),
         told AS (
             SELECT o.payload->>'vapi_call_id' AS call, pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(
                        o.payload->>'content_hash', o.payload->>'role', o.payload->>'text', {p_spoken})
                        ORDER BY o.payload->>'content_hash') AS events
             FROM voxanne.outbox o WHERE o.org_id = $1 AND o.topic = 'call.transcript' GROUP BY 1)
         SELECT c.vapi_call_id, pg_catalog.jsonb_build_object(
             'status', c.status, 'status_event_id', c.status_event_id, 'ended_reason', c.ended_reason,
             'started_at_ms', {started}, 'ended_at_ms', {ended_at},
             'duration_seconds', c.duration_seconds::float8, 'cost', c.cost::float8, 'summary', c.summary,
             'transcript', c.transcript, 'recording_url', c.recording_url,
             'customer_number', c.customer_number, 'call_type', c.call_type, 'phone_number_id', c.phone_number_id,
             'lines', coalesce(lines.lines, '[]'), 'ledger', coalesce(ledger.ledger, '[]'),
             'ended_events', coalesce(ended.events, '[]'), 'transcript_events', coalesce(told.events, '[]'))
         FROM voxanne.calls c
         LEFT JOIN lines ON lines.call_id = c.id
         LEFT JOIN ledger ON ledger.call = c.vapi_call_id
         LEFT JOIN ended ON ended.call = c.vapi_call_id
         LEFT JOIN told ON told.call = c.vapi_call_id
         WHERE c.org_id = $1",
        spoken = ms("t.spoken_at"),
        p_started = ms("(o.payload->>'started_at')::timestamptz"),
        p_ended = ms("(o.payload->>'ended_at')::timestamptz"),
        p_spoken = ms("(o.payload->>'spoken_at')::timestamptz"),
        started = ms("c.started_at"),
        ended_at = ms("c.ended_at"),
    );
    let rows = db.query(&sql, &[&org]).await.unwrap_or_else(|e| panic!("model::observed: {}", describe(&e)));
    let announced = status_events(db, org).await;
    rows.into_iter()
        .map(|r| {
            let call: String = r.get(0);
            let mut row: Value = r.get(1);
            let ended = row["ended_events"].as_array().is_some_and(|e| !e.is_empty()).then_some("ended");
            let statuses = announced.get(&call).into_iter().flatten().map(String::as_str);
            row["consumer_status"] = json!(statuses.chain(ended).max_by_key(|s| rank(s)));
            (call, row)
        })
        .collect()
}

/// The org's `call.status` outbox rows per call: their statuses.
async fn status_events(db: &Client, org: Uuid) -> BTreeMap<String, Vec<String>> {
    let rows = db
        .query(
            "SELECT o.payload->>'vapi_call_id', o.payload->>'status' FROM voxanne.outbox o
             WHERE o.org_id = $1 AND o.topic = 'call.status' ORDER BY o.xid, o.id",
            &[&org],
        )
        .await
        .unwrap_or_else(|e| panic!("model::status_events: {}", describe(&e)));
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(r.get(1));
    }
    out
}

/// The senders' answers against the tables, both ways, for the messages of org `o`:
/// - an answer naming another org is a leak;
/// - every message answered `applied` has its outbox row, and one answered only `stale` has
///   none;
/// - a message answered only `duplicate` must have had its effect applied by some delivery:
///   with `exact` (no answer can have been lost: no crash), one of its deliveries must have
///   been answered `applied` or `stale`, or the duplicate answer hides a missing effect;
/// - with `exact`, every `call.status` row was announced to exactly one delivery as `applied`.
pub async fn two_way(
    db: &Client,
    o: usize,
    org: Uuid,
    messages: &[Message],
    senders: &Senders,
    exact: bool,
) -> Verdicts {
    let mut v = Verdicts::default();
    let observed = observed(db, org).await;
    let status_rows = status_events(db, org).await;
    let acked = senders.acked.lock().unwrap().clone();
    let mut answers: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
    for (slot, a) in acked.into_iter().enumerate() {
        if let Some(a) = a {
            answers.entry(senders.slot_message[slot]).or_default().push(a);
        }
    }
    let mut applied_statuses: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, m) in messages.iter().enumerate().filter(|(_, m)| m.org == o) {
        let told = answers.get(&i).map(Vec::as_slice).unwrap_or_default();
        for a in told {
            if let Some(other) = a.get("org_id").and_then(Value::as_str).filter(|id| *id != org.to_string()) {
                v.leaks.push(format!("org {o}: {} answered for org {other}", m.label()));
            }
        }
        if matches!(m.kind, Kind::Ignored) {
            continue;
        }
        let applied = told.iter().filter(|a| a["outcome"] == "applied").count();
        let stale = told.iter().filter(|a| a["outcome"] == "stale").count();
        let call = observed.get(&m.call);
        let announced = || -> bool {
            match &m.kind {
                Kind::Status(s) => status_rows.get(&m.call).is_some_and(|r| r.iter().any(|x| x == s)),
                Kind::StatusEnded => status_rows.get(&m.call).is_some_and(|r| r.iter().any(|x| x == "ended")),
                Kind::Report => call.is_some_and(|c| c["ended_events"].as_array().is_some_and(|e| e.len() == 1)),
                Kind::Transcript { role, text } => {
                    let hash = content_hash(&m.call, role, "final", m.at_ms, text);
                    call.is_some_and(|c| {
                        c["transcript_events"].as_array().is_some_and(|e| e.iter().any(|x| x[0] == hash))
                    })
                }
                Kind::Ignored => false,
            }
        };
        let effect = call.is_some_and(|c| match &m.kind {
            Kind::Transcript { role, text } => {
                let hash = content_hash(&m.call, role, "final", m.at_ms, text);
                c["lines"].as_array().is_some_and(|l| l.iter().any(|x| x[4] == hash))
            }
            _ => {
                let event = m.ledger_event().unwrap();
                c["ledger"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|x| x.as_str().is_some_and(|x| x.starts_with(&format!("{event}/")))))
            }
        });
        if applied > 0 && !announced() {
            v.lost.push(format!("org {o}: {} answered applied, its outbox row is missing", m.label()));
        }
        // stale means behind the call: the answer shows the call's status after the message,
        // which must be further on than the message's own
        let behind = |s: &str| {
            told.iter()
                .filter(|a| a["outcome"] == "stale")
                .all(|a| a["status"].as_str().is_some_and(|shown| rank(shown) > rank(s)))
        };
        if let Kind::Status(s) = &m.kind {
            if stale > 0 && !behind(s) {
                v.lost.push(format!(
                    "org {o}: {} answered stale, but the call was not past it: its announcement is missing",
                    m.label()
                ));
            }
        }
        if applied == 0 && stale > 0 && matches!(m.kind, Kind::Status(_) | Kind::StatusEnded) && announced() {
            // a later delivery cannot announce what the first one marked stale
            v.doubled.push(format!("org {o}: {} answered only stale, yet announced", m.label()));
        }
        if !told.is_empty() && !effect {
            v.lost.push(format!("org {o}: {} acknowledged ({} answers), its effect is missing", m.label(), told.len()));
        }
        if exact && !told.is_empty() && applied + stale == 0 {
            v.lost.push(format!("org {o}: {} answered only duplicate: no delivery applied it", m.label()));
        }
        if exact && applied + stale > 1 {
            v.doubled.push(format!("org {o}: {} applied by {} deliveries", m.label(), applied + stale));
        }
        if let Kind::Status(s) = &m.kind {
            *applied_statuses.entry((m.call.clone(), s.to_string())).or_default() += applied;
        }
        if m.kind == Kind::StatusEnded {
            *applied_statuses.entry((m.call.clone(), "ended".into())).or_default() += applied;
        }
    }
    // (xid, id), the order outbox_read hands rows out in, is not the order of commits: two
    // transactions of one call can come out either way, so no order is checked here
    for (call, rows) in &status_rows {
        if exact {
            for s in rows {
                if applied_statuses.get(&(call.clone(), s.clone())).copied().unwrap_or(0) != 1 {
                    v.partial.push(format!("org {o}: call.status {s} of {call} was not answered applied exactly once"));
                }
            }
        }
    }
    v
}

/// Arrays in one order and numbers as f64 on both sides, so that equal states compare equal
/// whatever the database's collation or its number formatting.
fn normalize(mut call: Value) -> Value {
    fn floats(v: &mut Value) {
        for key in ["duration_seconds", "cost"] {
            if let Some(n) = v.get(key).and_then(Value::as_f64) {
                v[key] = json!(n);
            }
        }
    }
    floats(&mut call);
    for key in ["lines", "ledger", "ended_events", "transcript_events"] {
        if let Some(items) = call.get_mut(key).and_then(Value::as_array_mut) {
            items.iter_mut().for_each(floats);
            items.sort_by_key(|x| x.to_string());
        }
    }
    call
}

/// The model against the database for every org: each difference names the call and fields.
pub async fn compare(db: &Client, orgs: &[crate::Org], messages: &[Message], max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (o, org) in orgs.iter().enumerate() {
        let mine: Vec<&Message> = messages.iter().filter(|m| m.org == o).collect();
        let want: BTreeMap<String, Value> = expected(&mine).into_iter().map(|(k, v)| (k, normalize(v))).collect();
        let got: BTreeMap<String, Value> =
            observed(db, org.id).await.into_iter().map(|(k, v)| (k, normalize(v))).collect();
        for d in crate::vapi::state_diff(&got, &want, max) {
            out.push(format!("org {o} differs from the model: {d}"));
        }
    }
    out
}
