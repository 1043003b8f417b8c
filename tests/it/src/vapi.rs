//! Vapi server messages as the relay receives them, a seeded workload of whole calls, the
//! senders that deliver it (over HTTP to a relay, or straight to `handle_vapi_message`) and
//! redeliver whatever was not acknowledged, and the checks that compare what the senders were
//! told with what is in the tables.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_postgres::{Client, Config, NoTls};
use uuid::Uuid;
use voxanne_relay::db::{classify_sqlstate, Class};

use crate::figures::Rng;
use crate::{describe, Org};

/// The statement the relay runs (the relay's own constant, so the SQL senders deliver exactly
/// what the relay does).
pub use voxanne_relay::db::HANDLE_VAPI_MESSAGE;

/// `$2` of [`HANDLE_VAPI_MESSAGE`] for a message a platform-wide credential verified: no tenant
/// credential's digest.
pub const PLATFORM: Option<&[u8]> = None;

/// 2026-11-25T10:00:00Z in epoch milliseconds: the fixtures' day.
pub const T0_MS: i64 = 1_795_600_800_000;

/// The SQLSTATEs the README documents ("Errors (SQLSTATE)" table), except XX000, which it
/// documents as a bug. Read from README.md at run time, so the tests follow the contract.
pub fn readme_sqlstates() -> &'static BTreeSet<String> {
    static CODES: OnceLock<BTreeSet<String>> = OnceLock::new();
    CODES.get_or_init(|| {
        let readme = std::fs::read_to_string(crate::figures::workspace_root().join("README.md")).expect("README.md");
        let section =
            readme.split("### Errors (SQLSTATE)").nth(1).expect("README.md has an \"Errors (SQLSTATE)\" section");
        let codes: BTreeSet<String> = section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split('|').nth(1).map(|c| c.trim().to_string()))
            .filter(|c| c.len() == 5 && c.chars().all(|ch| ch.is_ascii_alphanumeric()) && c != "XX000")
            .collect();
        assert!(codes.len() >= 5, "README.md errors table not found: {codes:?}");
        codes
    })
}

/// What the relay README documents as a 422 ("Outcome mapping"): exact codes and classes.
pub fn relay_422_sqlstates() -> &'static (BTreeSet<String>, BTreeSet<String>) {
    static CODES: OnceLock<(BTreeSet<String>, BTreeSet<String>)> = OnceLock::new();
    CODES.get_or_init(|| {
        let readme =
            std::fs::read_to_string(crate::figures::workspace_root().join("relay/README.md")).expect("relay/README.md");
        let (mut codes, mut classes) = (BTreeSet::new(), BTreeSet::new());
        for row in readme.lines().filter(|l| l.starts_with('|') && l.contains("| 422 |")) {
            for (i, token) in row.split('`').enumerate() {
                if i % 2 == 1 {
                    if token.len() == 5 && token.chars().all(|c| c.is_ascii_alphanumeric()) {
                        codes.insert(token.to_string());
                    } else if token.len() == 2 && token.chars().all(|c| c.is_ascii_alphanumeric()) {
                        classes.insert(token.to_string());
                    }
                }
            }
        }
        assert!(!codes.is_empty(), "relay/README.md outcome mapping not found");
        (codes, classes)
    })
}

/// A SQLSTATE a bad webhook body may be answered with: documented by the README, or by the
/// relay README as a 422 (which covers the `::jsonb` cast's own errors). Never XX000.
pub fn is_documented_data_error(code: &str) -> bool {
    let (codes, classes) = relay_422_sqlstates();
    code != "XX000"
        && (readme_sqlstates().contains(code)
            || codes.contains(code)
            || classes.iter().any(|c| code.starts_with(c.as_str())))
}

/// ISO-8601 (UTC, milliseconds) of epoch milliseconds.
pub fn iso(ms: i64) -> String {
    // days from civil, Howard Hinnant's algorithm, to avoid a chrono dependency
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", sod / 3600, (sod % 3600) / 60, sod % 60)
}

/// What every workload message says of its call besides its ids.
pub const CUSTOMER_NUMBER: &str = "+15551230001";
pub const CALL_TYPE: &str = "inboundPhoneCall";
pub const PHONE_NUMBER_ID: &str = "pn_it";
/// The `endedReason` of the workload's status `ended`.
pub const STATUS_ENDED_REASON: &str = "status-ended-reason";

fn call_object(assistant: &str, call: &str) -> Value {
    json!({
        "id": call,
        "orgId": "vapi-org-it",
        "assistantId": assistant,
        "type": CALL_TYPE,
        "phoneNumberId": PHONE_NUMBER_ID,
        "customer": { "number": CUSTOMER_NUMBER },
    })
}

/// What the workload's end-of-call report of a call sends (report_body builds the body from it,
/// the model reads it): no `durationSeconds`, so the duration is derived from the timestamps.
#[derive(Debug, Clone)]
pub struct ReportFields {
    pub ended_reason: &'static str,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub cost: f64,
    pub summary: String,
    pub transcript: String,
    pub recording_url: String,
    pub timestamp_ms: i64,
}

impl ReportFields {
    pub fn of(call: &str, start_ms: i64) -> Self {
        Self {
            ended_reason: "customer-ended-call",
            started_at_ms: start_ms + 1_000,
            ended_at_ms: start_ms + 61_500,
            cost: 0.1234,
            summary: format!("summary of {call}"),
            transcript: format!("AI: Hello\nUser: this is {call}"),
            recording_url: format!("https://recordings.example.com/{call}.wav"),
            timestamp_ms: start_ms + 62_000,
        }
    }
}

pub fn status_body(assistant: &str, call: &str, status: &str, at_ms: i64) -> String {
    json!({"message": {"type": "status-update", "status": status, "timestamp": at_ms,
                       "call": call_object(assistant, call)}})
    .to_string()
}

pub fn status_ended_body(assistant: &str, call: &str, reason: &str, at_ms: i64) -> String {
    json!({"message": {"type": "status-update", "status": "ended", "endedReason": reason,
                       "timestamp": at_ms, "call": call_object(assistant, call)}})
    .to_string()
}

pub fn transcript_body(assistant: &str, call: &str, role: &str, text: &str, at_ms: i64) -> String {
    json!({"message": {"type": "transcript", "role": role, "transcriptType": "final",
                       "transcript": text, "timestamp": at_ms,
                       "call": call_object(assistant, call)}})
    .to_string()
}

pub fn report_body(assistant: &str, call: &str, start_ms: i64) -> String {
    let r = ReportFields::of(call, start_ms);
    json!({"message": {
        "type": "end-of-call-report",
        "endedReason": r.ended_reason,
        "startedAt": iso(r.started_at_ms),
        "endedAt": iso(r.ended_at_ms),
        "cost": r.cost,
        "analysis": {"summary": r.summary},
        "artifact": {"transcript": r.transcript, "recordingUrl": r.recording_url},
        "timestamp": r.timestamp_ms,
        "call": call_object(assistant, call),
    }})
    .to_string()
}

pub fn ignored_body(assistant: &str, call: &str, at_ms: i64) -> String {
    json!({"message": {"type": "speech-update", "status": "started", "role": "assistant",
                       "timestamp": at_ms, "call": call_object(assistant, call)}})
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// A workload: whole calls of several orgs, each message with the effect it must have

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A status before the end: ledger `status:<call>:<status>`.
    Status(&'static str),
    /// Status `ended`: ledger `status:<call>:ended`.
    StatusEnded,
    /// A final transcript line: one `call_transcripts` row.
    Transcript { role: &'static str, text: String },
    /// The end-of-call report: ledger `report:<call>`, one `call.ended` outbox row.
    Report,
    /// A type the product acknowledges and ignores: no row at all.
    Ignored,
}

#[derive(Debug, Clone)]
pub struct Message {
    /// Index into the workload's orgs.
    pub org: usize,
    pub call: String,
    pub kind: Kind,
    pub at_ms: i64,
    /// The call's start, for the report's fields.
    pub start_ms: i64,
}

impl Message {
    pub fn body(&self, assistant: &str) -> String {
        match &self.kind {
            Kind::Status(s) => status_body(assistant, &self.call, s, self.at_ms),
            Kind::StatusEnded => status_ended_body(assistant, &self.call, STATUS_ENDED_REASON, self.at_ms),
            Kind::Transcript { role, text } => transcript_body(assistant, &self.call, role, text, self.at_ms),
            Kind::Report => report_body(assistant, &self.call, self.start_ms),
            Kind::Ignored => ignored_body(assistant, &self.call, self.at_ms),
        }
    }

    /// The ledger event id it writes, if any.
    pub fn ledger_event(&self) -> Option<String> {
        match &self.kind {
            Kind::Status(s) => Some(format!("status:{}:{s}", self.call)),
            Kind::StatusEnded => Some(format!("status:{}:ended", self.call)),
            Kind::Report => Some(format!("report:{}", self.call)),
            Kind::Transcript { .. } | Kind::Ignored => None,
        }
    }

    pub fn label(&self) -> String {
        match &self.kind {
            Kind::Status(s) => format!("status {s} of {}", self.call),
            Kind::StatusEnded => format!("status ended of {}", self.call),
            Kind::Transcript { role, text } => format!("{role} line {text:?} of {}", self.call),
            Kind::Report => format!("report of {}", self.call),
            Kind::Ignored => format!("speech-update of {}", self.call),
        }
    }
}

/// The messages of one call, in the order Vapi would send them.
pub fn call_script(org: usize, call: &str, start_ms: i64) -> Vec<Message> {
    let m = |kind: Kind, offset_ms: i64| Message {
        org,
        call: call.to_string(),
        kind,
        at_ms: start_ms + offset_ms,
        start_ms,
    };
    vec![
        m(Kind::Status("ringing"), 0),
        m(Kind::Status("in-progress"), 1_000),
        m(Kind::Ignored, 1_500),
        m(Kind::Transcript { role: "user", text: format!("hello from {call}") }, 3_000),
        m(
            Kind::Transcript {
                role: "assistant", text: format!("Voxanne here: how can I help? ({call}) — ünïcödé ✓")
            },
            4_250,
        ),
        m(Kind::StatusEnded, 61_000),
        m(Kind::Report, 62_000),
    ]
}

/// `calls_per_org` whole calls for each of `orgs` orgs, in canonical (serial) order.
pub fn workload(orgs: usize, calls_per_org: usize, tag: &str) -> Vec<Message> {
    let mut out = Vec::new();
    for org in 0..orgs {
        for k in 0..calls_per_org {
            let call = format!("call_{tag}_{k}_{}", Uuid::new_v4().simple());
            out.extend(call_script(org, &call, T0_MS + k as i64 * 100_000));
        }
    }
    out
}

/// Delivery slots: every message once, some twice or three times (a sender's duplicates),
/// shuffled. Returns message indexes.
pub fn slots(rng: &mut Rng, messages: usize, duplicate_rate: f64) -> Vec<usize> {
    let mut out = Vec::with_capacity(messages * 2);
    for i in 0..messages {
        out.push(i);
        if rng.chance(duplicate_rate) {
            out.push(i);
            if rng.chance(0.3) {
                out.push(i);
            }
        }
    }
    rng.shuffle(&mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Transports

/// What a sender concluded from one attempt.
#[derive(Debug)]
pub enum Verdict {
    /// 2xx / the statement returned: the sender will never send this again (unless it is a
    /// planned duplicate).
    Acked(Value),
    /// 5xx, connection refused or lost, transient SQLSTATE: redeliver later.
    Retry(String),
    /// Anything else: a contract violation for a valid message.
    Refused(String),
}

/// The statement of a timed SQL sender: the relay's, [`crate::timed`].
pub fn timed_statement() -> String {
    crate::timed(HANDLE_VAPI_MESSAGE)
}

/// What one attempt tells besides its verdict.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measure {
    /// The statement's window on the server (`statement_timestamp()` .. `clock_timestamp()`):
    /// timed SQL transports only.
    pub server: Option<(SystemTime, SystemTime)>,
    /// The database answered the statement (a result, or a SQLSTATE; over HTTP: a 2xx, which
    /// carries the database's answer).
    pub reached: bool,
}

#[allow(clippy::large_enum_variant)] // a handful per test
pub enum Transport {
    Http { client: reqwest::Client, url: String, secret: String },
    Sql { config: Config, client: Option<Client>, timed: bool },
}

impl Transport {
    pub fn http(client: reqwest::Client, url: impl Into<String>, secret: &str) -> Self {
        Self::Http { client, url: url.into(), secret: secret.to_string() }
    }

    /// Straight to `handle_vapi_message`, with the relay's own statement.
    pub fn sql(config: Config) -> Self {
        Self::Sql { config, client: None, timed: false }
    }

    /// Straight to `handle_vapi_message`, with [`timed_statement`]: every answered attempt
    /// carries its server-side statement window.
    pub fn sql_timed(config: Config) -> Self {
        Self::Sql { config, client: None, timed: true }
    }

    pub async fn deliver(&mut self, body: &str) -> Verdict {
        self.deliver_measured(body).await.0
    }

    /// [`deliver`](Self::deliver), and what the attempt measured.
    pub async fn deliver_measured(&mut self, body: &str) -> (Verdict, Measure) {
        let mut measure = Measure::default();
        let verdict = match self {
            Self::Http { client, url, secret } => {
                let sent = client
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .header("x-vapi-secret", secret.as_str())
                    .body(body.to_string())
                    .send()
                    .await;
                match sent {
                    Err(e) => Verdict::Retry(format!("http: {e}")),
                    Ok(response) => {
                        let status = response.status();
                        match response.text().await {
                            Err(e) => Verdict::Retry(format!("http body: {e}")),
                            Ok(text) if status.is_success() => match serde_json::from_str(&text) {
                                Ok(v) => {
                                    measure.reached = true;
                                    Verdict::Acked(v)
                                }
                                Err(e) => Verdict::Refused(format!("{status} with a non-JSON body {text:?}: {e}")),
                            },
                            Ok(text) if status == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                                Verdict::Retry(format!("{status} {text}"))
                            }
                            Ok(text) => Verdict::Refused(format!("{status} {text}")),
                        }
                    }
                }
            }
            Self::Sql { config, client, timed } => 'sql: {
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    let connected = tokio::time::timeout(Duration::from_secs(5), config.connect(NoTls)).await;
                    match connected {
                        Ok(Ok((c, connection))) => {
                            tokio::spawn(async move {
                                let _ = connection.await;
                            });
                            *client = Some(c);
                        }
                        Ok(Err(e)) => break 'sql Verdict::Retry(format!("connect: {}", describe(&e))),
                        Err(_) => break 'sql Verdict::Retry("connect: timed out".into()),
                    }
                }
                let c = client.as_ref().unwrap();
                let answer = if *timed {
                    c.query_one(timed_statement().as_str(), &[&body, &PLATFORM]).await
                } else {
                    c.query_one(HANDLE_VAPI_MESSAGE, &[&body, &PLATFORM]).await
                };
                match answer {
                    Ok(row) => {
                        measure.reached = true;
                        let column = usize::from(*timed);
                        if *timed {
                            if let (Ok(received), Ok(finished)) = (row.try_get(0), row.try_get(2)) {
                                measure.server = Some((received, finished));
                            }
                        }
                        match row.try_get::<_, Value>(column) {
                            Ok(v) => Verdict::Acked(v),
                            Err(e) => Verdict::Refused(format!("result: {e}")),
                        }
                    }
                    Err(e) => {
                        measure.reached = e.as_db_error().is_some();
                        let code = e.code().map(|c| c.code().to_string());
                        match code {
                            Some(code) if classify_sqlstate(&code) != Class::Transient => {
                                Verdict::Refused(describe(&e))
                            }
                            _ => {
                                // the session may be gone: reconnect before the next attempt
                                if code.as_deref().is_none_or(|c| c.starts_with("57P") || c.starts_with("08")) {
                                    *client = None;
                                }
                                Verdict::Retry(describe(&e))
                            }
                        }
                    }
                }
            }
        };
        (verdict, measure)
    }
}

// ---------------------------------------------------------------------------------------------
// Senders that redeliver until acknowledged

/// What a sender concluded from one attempt (the verdict without its payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concluded {
    Acked,
    Retry,
    Refused,
}

/// One attempt of one sender: its slot and window, when it was sent and answered (the test's
/// clock), the server's statement window when the transport measures it, and its verdict.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub slot: usize,
    /// Index of the sender task (its transport) that made it.
    pub sender: usize,
    pub window: usize,
    /// Just before the request / statement was sent, and when its answer (or failure) was in.
    pub sent: Instant,
    pub answered: Instant,
    pub measure: Measure,
    pub concluded: Concluded,
    /// Answered `applied`.
    pub applied: bool,
}

/// Run between two windows of [`Senders::spawn_with`], with the index of the window just done.
pub type WindowHook =
    Arc<dyn Fn(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// Which windows a race is measured by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The statements' windows on the server (timed SQL transports).
    Server,
    /// The requests' windows as the senders saw them (send .. answer received).
    Client,
}

/// Shared by the sender tasks of one run: the queue of delivery slots, what each slot was told,
/// and a gate the test can close (senders finish their attempt in flight, then wait).
///
/// The slots may be cut into consecutive windows ([`Senders::in_windows`]): then the senders
/// deliver one window at a time and start each together (a barrier of all senders), so the
/// deliveries of a window race each other and no window overlaps another.
pub struct Senders {
    pub bodies: Vec<String>,
    /// message index of each slot
    pub slot_message: Vec<usize>,
    /// window of each slot
    pub slot_window: Vec<usize>,
    /// per window, the slots not yet taken by a sender
    queues: Vec<Mutex<VecDeque<usize>>>,
    /// senders wait for each other at the start of every window
    barrier: bool,
    /// per slot: the acknowledged answer
    pub acked: Mutex<Vec<Option<Value>>>,
    pub refused: Mutex<Vec<String>>,
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
    /// Every attempt, in the order they were answered.
    pub attempt_log: Mutex<Vec<Attempt>>,
    pub in_flight: AtomicUsize,
    pub finished_workers: AtomicUsize,
    gate: watch::Sender<bool>,
}

impl Senders {
    /// `bodies[i]` is message i's body; `slot_message` the slots in sending order, taken by
    /// whichever sender is free (one window, no barrier).
    pub fn new(bodies: Vec<String>, slot_message: Vec<usize>) -> Arc<Self> {
        let n = slot_message.len();
        Self::build(bodies, slot_message, vec![n], false)
    }

    /// Like [`new`](Self::new), the slots cut into consecutive windows of `window_lengths`
    /// slots (they must add up to the number of slots): every sender waits for all the others
    /// before a window starts, so a window's slots are sent at the same moment.
    pub fn in_windows(bodies: Vec<String>, slot_message: Vec<usize>, window_lengths: Vec<usize>) -> Arc<Self> {
        assert_eq!(window_lengths.iter().sum::<usize>(), slot_message.len(), "windows cover every slot once");
        Self::build(bodies, slot_message, window_lengths, true)
    }

    fn build(bodies: Vec<String>, slot_message: Vec<usize>, window_lengths: Vec<usize>, barrier: bool) -> Arc<Self> {
        let n = slot_message.len();
        let mut slot_window = Vec::with_capacity(n);
        let mut queues = Vec::with_capacity(window_lengths.len());
        for (w, len) in window_lengths.iter().enumerate() {
            let first = slot_window.len();
            slot_window.extend(std::iter::repeat_n(w, *len));
            queues.push(Mutex::new((first..first + len).collect()));
        }
        Arc::new(Self {
            bodies,
            slot_message,
            slot_window,
            queues,
            barrier,
            acked: Mutex::new(vec![None; n]),
            refused: Mutex::new(Vec::new()),
            attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            attempt_log: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            finished_workers: AtomicUsize::new(0),
            gate: watch::channel(true).0,
        })
    }

    pub fn close_gate(&self) {
        self.gate.send_replace(false);
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().iter().filter(|a| a.is_some()).count()
    }

    /// Messages with at least one acknowledged slot.
    pub fn acked_messages(&self) -> BTreeSet<usize> {
        let acked = self.acked.lock().unwrap();
        acked.iter().enumerate().filter(|(_, a)| a.is_some()).map(|(slot, _)| self.slot_message[slot]).collect()
    }

    /// Attempts the database answered (a result or a SQLSTATE).
    pub fn reached(&self) -> u64 {
        self.attempt_log.lock().unwrap().iter().filter(|a| a.measure.reached).count() as u64
    }

    /// Per window, when its first attempt was sent and its last one answered (the test's
    /// clock); `None` for a window without attempts. With a barrier, no two overlap.
    pub fn window_spans(&self) -> Vec<Option<(Instant, Instant)>> {
        let mut spans: Vec<Option<(Instant, Instant)>> = vec![None; self.queues.len()];
        for a in self.attempt_log.lock().unwrap().iter() {
            let s = spans[a.window].get_or_insert((a.sent, a.answered));
            s.0 = s.0.min(a.sent);
            s.1 = s.1.max(a.answered);
        }
        spans
    }

    /// How the windows raced, measured by `clock`: per window, the attempts whose windows
    /// overlapped another attempt of the same window, and the applied ones that had another
    /// attempt in flight with them. With [`Clock::Server`], attempts without a server window
    /// (failed ones, untimed transports) are not measured.
    pub fn race_stats(&self, clock: Clock) -> crate::RaceStats {
        let log = self.attempt_log.lock().unwrap();
        let mut by_window: Vec<Vec<&Attempt>> = vec![Vec::new(); self.queues.len()];
        for a in log.iter() {
            by_window[a.window].push(a);
        }
        let mut stats = crate::RaceStats::default();
        for attempts in by_window {
            let winners_of = |measured: &[&Attempt]| -> Vec<usize> {
                measured.iter().enumerate().filter(|(_, a)| a.applied).map(|(i, _)| i).collect()
            };
            match clock {
                Clock::Server => {
                    let measured: Vec<&Attempt> =
                        attempts.iter().copied().filter(|a| a.measure.server.is_some()).collect();
                    let spans: Vec<_> = measured.iter().map(|a| a.measure.server.unwrap()).collect();
                    stats.record_spans(&spans, &winners_of(&measured));
                }
                Clock::Client => {
                    let spans: Vec<_> = attempts.iter().map(|a| (a.sent, a.answered)).collect();
                    stats.record_spans(&spans, &winners_of(&attempts));
                }
            }
        }
        stats
    }

    /// Wait (bounded) until no attempt is in flight: with the gate closed, every sender is then
    /// parked, and what was acknowledged so far is final for this phase.
    pub async fn quiesce(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "senders still in flight after 60 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Start `transports.len()` sender tasks; each takes the next slot and delivers it until
    /// it is acknowledged (backing off 10 ms … 200 ms between attempts) or refused. With
    /// windows, a sender that finds its window's queue empty waits for the others at the start
    /// of the next window.
    pub fn spawn(self: &Arc<Self>, transports: Vec<Transport>) -> Vec<tokio::task::JoinHandle<()>> {
        self.spawn_with(transports, None)
    }

    /// [`spawn`](Self::spawn); with windows, `after_window(w)` runs once every sender has
    /// finished window `w` and before any starts the next one: nothing is in flight while it
    /// runs (to read what the window left on the server, say).
    pub fn spawn_with(
        self: &Arc<Self>,
        transports: Vec<Transport>,
        after_window: Option<WindowHook>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        assert!(after_window.is_none() || self.barrier, "a window hook needs windows");
        let barrier = Arc::new(tokio::sync::Barrier::new(transports.len()));
        transports
            .into_iter()
            .enumerate()
            .map(|(sender, mut transport)| {
                let me = Arc::clone(self);
                let barrier = Arc::clone(&barrier);
                let after_window = after_window.clone();
                tokio::spawn(async move {
                    let mut gate = me.gate.subscribe();
                    for window in 0..me.queues.len() {
                        if me.barrier {
                            barrier.wait().await;
                        }
                        loop {
                            let Some(slot) = me.queues[window].lock().unwrap().pop_front() else {
                                break;
                            };
                            me.deliver_slot(&mut transport, &mut gate, sender, slot).await;
                        }
                        if let Some(hook) = &after_window {
                            // every sender is done with the window; the one the barrier picks
                            // runs the hook while the others wait at the next window's start
                            if barrier.wait().await.is_leader() {
                                hook(window).await;
                            }
                        }
                    }
                    me.finished_workers.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect()
    }

    /// Deliver one slot until it is acknowledged or refused.
    async fn deliver_slot(
        &self,
        transport: &mut Transport,
        gate: &mut watch::Receiver<bool>,
        sender: usize,
        slot: usize,
    ) {
        let body = &self.bodies[self.slot_message[slot]];
        let mut backoff = Duration::from_millis(10);
        loop {
            // the gate is checked with in_flight raised, so quiesce() cannot miss an attempt
            // that passed the gate just before it closed
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            if !*gate.borrow_and_update() {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                let _ = gate.wait_for(|open| *open).await;
                continue;
            }
            self.attempts.fetch_add(1, Ordering::Relaxed);
            let sent = Instant::now();
            let (verdict, measure) = transport.deliver_measured(body).await;
            let answered = Instant::now();
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let (concluded, applied) = match &verdict {
                Verdict::Acked(v) => (Concluded::Acked, v["applied"] == true),
                Verdict::Retry(_) => (Concluded::Retry, false),
                Verdict::Refused(_) => (Concluded::Refused, false),
            };
            self.attempt_log.lock().unwrap().push(Attempt {
                slot,
                sender,
                window: self.slot_window[slot],
                sent,
                answered,
                measure,
                concluded,
                applied,
            });
            match verdict {
                Verdict::Acked(v) => {
                    self.acked.lock().unwrap()[slot] = Some(v);
                    return;
                }
                Verdict::Retry(_) => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                Verdict::Refused(why) => {
                    self.refused
                        .lock()
                        .unwrap()
                        .push(format!("slot {slot}: {why}; body {}", &body[..body.len().min(300)]));
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checking the tables against the workload

/// What the tables hold for the workload's orgs compared to what they should.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// A message that must be present (acknowledged, or everything after redelivery) whose
    /// effect is missing.
    pub lost: Vec<String>,
    /// An effect present more than once (outbox rows per event, transcript lines, calls).
    pub doubled: Vec<String>,
    /// Rows breaking the one-statement invariants, or rows no message asked for.
    pub partial: Vec<String>,
    /// Rows of one org naming another org's assistant or call.
    pub leaks: Vec<String>,
}

impl Verdicts {
    pub fn record(&self, figures: &mut crate::figures::Figures) {
        for (kind, list) in
            [("lost", &self.lost), ("doubled", &self.doubled), ("partial", &self.partial), ("leaks", &self.leaks)]
        {
            for v in list {
                figures.violation(kind, v.clone());
            }
        }
    }

    pub fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.doubled.is_empty() && self.partial.is_empty() && self.leaks.is_empty()
    }
}

/// Rows of `org` that break the invariants every call statement keeps (the ledger mark, the
/// effect and the outbox row are written together or not at all). Each string names one.
pub async fn partial_rows(db: &Client, org: Uuid) -> Vec<String> {
    // Written as joins against per-org aggregates (no correlated scans), so they stay fast for
    // the long runs' tens of thousands of rows.
    const LEDGER_CALL: &str = "CASE WHEN e.event_id LIKE 'report:%' THEN pg_catalog.substr(e.event_id, 8)
                                    ELSE pg_catalog.regexp_replace(e.event_id, '^status:(.*):[a-z-]+$', '\\1') END";
    let ledger_without_call = format!(
        "SELECT e.event_id FROM voxanne.processed_webhook_events e
         LEFT JOIN voxanne.calls c ON c.org_id = e.org_id AND c.vapi_call_id = {LEDGER_CALL}
         WHERE e.org_id = $1 AND c.id IS NULL"
    );
    let orphan_calls = format!(
        "WITH marked AS (SELECT DISTINCT {LEDGER_CALL} AS call FROM voxanne.processed_webhook_events e WHERE e.org_id = $1),
              spoken AS (SELECT DISTINCT t.call_id FROM voxanne.call_transcripts t WHERE t.org_id = $1)
         SELECT c.vapi_call_id FROM voxanne.calls c
         LEFT JOIN marked ON marked.call = c.vapi_call_id
         LEFT JOIN spoken ON spoken.call_id = c.id
         WHERE c.org_id = $1 AND marked.call IS NULL AND spoken.call_id IS NULL"
    );
    let checks: [(&str, &str); 9] = [
        ("ledger row without its call", &ledger_without_call),
        (
            "report mark without exactly one call.ended outbox row",
            "WITH ended AS (SELECT o.payload->>'vapi_call_id' AS call, count(*) AS n FROM voxanne.outbox o
                            WHERE o.org_id = $1 AND o.topic = 'call.ended' GROUP BY 1)
             SELECT e.event_id FROM voxanne.processed_webhook_events e
             LEFT JOIN ended ON ended.call = pg_catalog.substr(e.event_id, 8)
             WHERE e.org_id = $1 AND e.event_id LIKE 'report:%' AND coalesce(ended.n, 0) <> 1",
        ),
        (
            "call.ended outbox row without its report mark",
            "SELECT o.id::text FROM voxanne.outbox o
             LEFT JOIN voxanne.processed_webhook_events e
                    ON e.org_id = o.org_id AND e.event_id = 'report:' || (o.payload->>'vapi_call_id')
             WHERE o.org_id = $1 AND o.topic = 'call.ended' AND e.event_id IS NULL",
        ),
        (
            "call.status outbox row without its status mark",
            "SELECT o.id::text FROM voxanne.outbox o
             LEFT JOIN voxanne.processed_webhook_events e
                    ON e.org_id = o.org_id
                   AND e.event_id = 'status:' || (o.payload->>'vapi_call_id') || ':' || (o.payload->>'status')
             WHERE o.org_id = $1 AND o.topic = 'call.status' AND e.event_id IS NULL",
        ),
        (
            "call.transcript outbox row without its line (and not a provisional line a later row replaced)",
            "WITH replaced AS (SELECT DISTINCT r.hash FROM voxanne.outbox o,
                                   pg_catalog.jsonb_array_elements_text(o.payload->'replaces') AS r (hash)
                               WHERE o.org_id = $1 AND o.topic = 'call.transcript')
             SELECT o.id::text FROM voxanne.outbox o
             LEFT JOIN voxanne.call_transcripts t
                    ON t.org_id = o.org_id AND t.content_hash = pg_catalog.decode(o.payload->>'content_hash', 'hex')
             LEFT JOIN replaced ON replaced.hash = o.payload->>'content_hash' AND o.payload->>'provisional' = 'true'
             WHERE o.org_id = $1 AND o.topic = 'call.transcript' AND t.content_hash IS NULL AND replaced.hash IS NULL",
        ),
        (
            "line a later outbox row says it replaced, still stored",
            "SELECT r.hash FROM voxanne.outbox o, pg_catalog.jsonb_array_elements_text(o.payload->'replaces') AS r (hash)
             JOIN voxanne.call_transcripts t ON t.org_id = $1 AND t.content_hash = pg_catalog.decode(r.hash, 'hex')
             WHERE o.org_id = $1 AND o.topic = 'call.transcript'",
        ),
        (
            "transcript line without exactly one call.transcript outbox row",
            "WITH told AS (SELECT o.payload->>'content_hash' AS hash, count(*) AS n FROM voxanne.outbox o
                           WHERE o.org_id = $1 AND o.topic = 'call.transcript' GROUP BY 1)
             SELECT pg_catalog.encode(t.content_hash, 'hex') FROM voxanne.call_transcripts t
             LEFT JOIN told ON told.hash = pg_catalog.encode(t.content_hash, 'hex')
             WHERE t.org_id = $1 AND coalesce(told.n, 0) <> 1",
        ),
        (
            "call whose status event is not in the ledger",
            "SELECT c.vapi_call_id FROM voxanne.calls c
             LEFT JOIN voxanne.processed_webhook_events e ON e.org_id = c.org_id AND e.event_id = c.status_event_id
             WHERE c.org_id = $1 AND c.status_event_id IS NOT NULL AND e.event_id IS NULL",
        ),
        ("call with neither a ledger mark nor a transcript line", &orphan_calls),
    ];
    let mut out = Vec::new();
    for (what, sql) in checks {
        let rows = db.query(sql, &[&org]).await.unwrap_or_else(|e| panic!("{what}: {}", describe(&e)));
        for r in rows {
            out.push(format!("{what}: {} (org {org})", r.get::<_, String>(0)));
        }
    }
    out
}

/// Compare the tables of the workload's orgs with the workload. `must_be_present(i)` says
/// whether message i's effect must be there (acknowledged messages mid-run; all after
/// redelivery). Effects of other messages may be there or not, but never twice.
pub async fn verify(
    db: &Client,
    orgs: &[Org],
    messages: &[Message],
    must_be_present: &dyn Fn(usize) -> bool,
) -> Verdicts {
    let mut v = Verdicts::default();
    for (o, org) in orgs.iter().enumerate() {
        let ledger = crate::grouped(
            db,
            "SELECT event_id, count(*) FROM voxanne.processed_webhook_events WHERE org_id = $1 GROUP BY 1",
            &[&org.id],
        )
        .await;
        let calls = crate::grouped(
            db,
            "SELECT vapi_call_id, count(*) FROM voxanne.calls WHERE org_id = $1 GROUP BY 1",
            &[&org.id],
        )
        .await;
        let lines = crate::grouped(
            db,
            "SELECT c.vapi_call_id || E'\\x1f' || t.role || E'\\x1f' || t.text || E'\\x1f'
                    || (extract(epoch FROM t.spoken_at) * 1000)::bigint, count(*)
             FROM voxanne.call_transcripts t JOIN voxanne.calls c ON c.org_id = t.org_id AND c.id = t.call_id
             WHERE t.org_id = $1 GROUP BY 1",
            &[&org.id],
        )
        .await;
        let outbox = crate::grouped(
            db,
            "SELECT topic || ' ' || coalesce(payload->>'vapi_call_id', '?') || ' '
                    || coalesce(payload->>'status', payload->>'content_hash', ''), count(*)
             FROM voxanne.outbox WHERE org_id = $1 GROUP BY 1",
            &[&org.id],
        )
        .await;

        let mine: Vec<(usize, &Message)> = messages.iter().enumerate().filter(|(_, m)| m.org == o).collect();
        let known_calls: BTreeSet<&str> = mine.iter().map(|(_, m)| m.call.as_str()).collect();
        let mut known_events = BTreeSet::new();
        let mut known_lines = BTreeSet::new();
        for (i, m) in &mine {
            let present = must_be_present(*i);
            match &m.kind {
                Kind::Transcript { role, text } => {
                    let key = format!("{}\u{1f}{role}\u{1f}{text}\u{1f}{}", m.call, m.at_ms);
                    if present && !lines.contains_key(&key) {
                        v.lost.push(format!("org {o}: {}", m.label()));
                    }
                    known_lines.insert(key);
                }
                Kind::Ignored => {}
                _ => {
                    let event = m.ledger_event().unwrap();
                    if present && !ledger.contains_key(&event) {
                        v.lost.push(format!("org {o}: {} (no ledger row {event})", m.label()));
                    }
                    known_events.insert(event);
                }
            }
            if present && !matches!(m.kind, Kind::Ignored) && !calls.contains_key(&m.call) {
                v.lost.push(format!("org {o}: no calls row for {}", m.call));
            }
        }
        for (key, n) in lines.iter().chain(calls.iter()).chain(ledger.iter()) {
            if *n != 1 {
                v.doubled.push(format!("org {o}: {n} rows for {key:?}"));
            }
        }
        for (key, n) in &outbox {
            if *n != 1 {
                v.doubled.push(format!("org {o}: {n} outbox rows for {key:?}"));
            }
        }
        for call in calls.keys() {
            if !known_calls.contains(call.as_str()) {
                v.partial.push(format!("org {o}: a calls row nobody sent: {call}"));
            }
        }
        for event in ledger.keys() {
            if !known_events.contains(event) {
                v.partial.push(format!("org {o}: a ledger row nobody sent: {event}"));
            }
        }
        for line in lines.keys() {
            if !known_lines.contains(line) {
                v.partial.push(format!("org {o}: a line nobody sent: {line:?}"));
            }
        }
        // A call id only other orgs sent, held by this org, is a cross-tenant write. (A
        // workload may send the same call id to several orgs, as the storms do: then each org
        // holds its own call of that id, and a write routed to the wrong org shows as a
        // doubled or a foreign row instead.)
        let foreign: Vec<String> = messages
            .iter()
            .filter(|m| m.org != o && !known_calls.contains(m.call.as_str()))
            .map(|m| m.call.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|c| calls.contains_key(c))
            .collect();
        for c in foreign {
            v.leaks.push(format!("org {o} holds another org's call {c}"));
        }
        v.partial.extend(partial_rows(db, org.id).await);
    }
    v
}

/// The order-independent state of an org's calls: every column a message sets, the lines, the
/// ledger, and the payloads of the `call.ended` / `call.transcript` outbox rows (without row
/// ids). Two orgs that received the same messages, in whatever order, must have equal states.
pub async fn org_state(db: &Client, org: Uuid) -> BTreeMap<String, Value> {
    let mut state = BTreeMap::new();
    let rows = db
        .query(
            "WITH lines AS (
                 SELECT t.call_id, pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(
                            t.spoken_at, t.role, t.transcript_type, t.text, pg_catalog.encode(t.content_hash, 'hex'))
                        ORDER BY t.spoken_at, t.content_hash) AS lines
                 FROM voxanne.call_transcripts t WHERE t.org_id = $1 GROUP BY t.call_id),
             ledger AS (
                 SELECT CASE WHEN e.event_id LIKE 'report:%' THEN pg_catalog.substr(e.event_id, 8)
                             ELSE pg_catalog.regexp_replace(e.event_id, '^status:(.*):[a-z-]+$', '\\1') END AS call,
                        pg_catalog.jsonb_agg(e.event_id || '/' || e.event_type ORDER BY e.event_id) AS ledger
                 FROM voxanne.processed_webhook_events e WHERE e.org_id = $1 GROUP BY 1),
             outbox AS (
                 SELECT o.payload->>'vapi_call_id' AS call,
                        pg_catalog.jsonb_agg(o.topic || ' ' || (o.payload - 'call_id')::text
                                             ORDER BY o.topic, (o.payload - 'call_id')::text) AS outbox
                 FROM voxanne.outbox o WHERE o.org_id = $1 AND o.topic IN ('call.ended', 'call.transcript') GROUP BY 1)
             SELECT c.vapi_call_id, pg_catalog.jsonb_build_object(
                 'status', c.status, 'status_event_id', c.status_event_id, 'ended_reason', c.ended_reason,
                 'started_at', c.started_at, 'ended_at', c.ended_at, 'duration_seconds', c.duration_seconds::text,
                 'cost', c.cost::text, 'summary', c.summary, 'transcript', c.transcript,
                 'recording_url', c.recording_url, 'customer_number', c.customer_number,
                 'call_type', c.call_type, 'phone_number_id', c.phone_number_id,
                 'lines', coalesce(lines.lines, '[]'), 'ledger', coalesce(ledger.ledger, '[]'),
                 'outbox', coalesce(outbox.outbox, '[]'))
             FROM voxanne.calls c
             LEFT JOIN lines ON lines.call_id = c.id
             LEFT JOIN ledger ON ledger.call = c.vapi_call_id
             LEFT JOIN outbox ON outbox.call = c.vapi_call_id
             WHERE c.org_id = $1",
            &[&org],
        )
        .await
        .unwrap_or_else(|e| panic!("org_state: {}", describe(&e)));
    for r in rows {
        state.insert(r.get::<_, String>(0), r.get::<_, Value>(1));
    }
    state
}

/// Differences between two org states (at most `max`), for messages.
pub fn state_diff(got: &BTreeMap<String, Value>, want: &BTreeMap<String, Value>, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&String> = got.keys().chain(want.keys()).collect();
    for k in keys {
        match (got.get(k), want.get(k)) {
            (Some(g), Some(w)) if g == w => {}
            (Some(g), Some(w)) => {
                let (g, w) = (g.as_object().unwrap(), w.as_object().unwrap());
                let fields: Vec<String> = g
                    .keys()
                    .filter(|f| g.get(*f) != w.get(*f))
                    .map(|f| format!("{f}: got {} want {}", g[f], w.get(f).unwrap_or(&Value::Null)))
                    .collect();
                out.push(format!("call {k}: {}", fields.join("; ")));
            }
            (Some(_), None) => out.push(format!("call {k}: present, absent in the reference")),
            (None, Some(_)) => out.push(format!("call {k}: missing, present in the reference")),
            (None, None) => unreachable!(),
        }
        if out.len() >= max {
            break;
        }
    }
    out
}

/// Deliver `messages` (all of org index `org`) one after the other to `assistant`, through
/// `handle_vapi_message`: the serial reference.
pub async fn deliver_serially(db: &Client, assistant: &str, messages: &[&Message]) {
    for m in messages {
        let body = m.body(assistant);
        db.query_one(HANDLE_VAPI_MESSAGE, &[&body, &PLATFORM])
            .await
            .unwrap_or_else(|e| panic!("serial delivery of {}: {}", m.label(), describe(&e)));
    }
}

/// Tally of the acknowledged answers by outcome (`applied`, `duplicate`, `stale`, `ignored`).
pub fn outcomes(answers: &[Option<Value>]) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for a in answers.iter().flatten() {
        let key = if a.get("ignored").is_some() {
            "ignored".to_string()
        } else if a["spooled"] == true {
            "spooled".to_string()
        } else {
            a.get("outcome").and_then(Value::as_str).unwrap_or("?").to_string()
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

/// The sender's side of the ledger: for every message, what its deliveries were told. Returns
/// the messages acknowledged as `applied` more than once (a doubled effect, as the sender sees
/// it), and how many effectful messages were never acknowledged with an effect (applied or
/// stale) although their effect is there: the commit happened, the answer was lost in the crash,
/// and the redelivery was (correctly) a duplicate.
pub fn sender_ledger(senders: &Senders, messages: &[Message]) -> (Vec<String>, u64) {
    let acked = senders.acked.lock().unwrap();
    let mut applied = vec![0u32; messages.len()];
    let mut effect = vec![0u32; messages.len()];
    for (slot, answer) in acked.iter().enumerate() {
        let Some(a) = answer else { continue };
        let m = senders.slot_message[slot];
        applied[m] += u32::from(a["applied"] == true);
        effect[m] += u32::from(a["applied"] == true || a["outcome"] == "stale");
    }
    let doubled = (0..messages.len())
        .filter(|m| applied[*m] > 1)
        .map(|m| format!("{} acknowledged as applied {} times", messages[m].label(), applied[m]))
        .collect();
    let unacknowledged =
        (0..messages.len()).filter(|m| messages[*m].kind != Kind::Ignored && effect[*m] == 0).count() as u64;
    (doubled, unacknowledged)
}

/// Counter shared by concurrent tasks.
pub type Counter = Arc<AtomicU64>;
