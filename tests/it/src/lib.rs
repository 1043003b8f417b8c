//! Shared helpers for the voxanne_ext integration tests.
//!
//! Every test talks to a real database (`VOXANNE_DATABASE_URL`, libpq key=value form) over
//! real connections. Tests never share data: each creates its own org(s) and assistant(s) with
//! random ids and only ever asserts on rows of those orgs, so they are independent of each
//! other, of their order, and of whatever earlier runs left in the database.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, Barrier};
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{AsyncMessage, Client, Config, Error, NoTls};
use uuid::Uuid;

pub use tokio_postgres;

// The reliability and security suite (storms, races, crashes, fuzz, attacks, catalog, report).
pub mod cluster;
pub mod contract;
pub mod figures;
pub mod fuzz;
pub mod model;
pub mod relay;
pub mod vapi;

/// PostgREST emulation: the database work of one Supabase API request, and its HTTP status.
pub mod postgrest;

/// The notification channel the extension publishes on.
pub const OUTBOX_CHANNEL: &str = "voxanne_outbox";

/// How long a test waits for a notification before failing: a bound, never a synchronisation.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Connections

/// The connection settings from `VOXANNE_DATABASE_URL`.
pub fn config() -> Config {
    let url = std::env::var("VOXANNE_DATABASE_URL").expect(
        "VOXANNE_DATABASE_URL must be set, e.g. \
         'host=127.0.0.1 port=54330 user=postgres dbname=voxanne_test'",
    );
    Config::from_str(&url).unwrap_or_else(|e| panic!("VOXANNE_DATABASE_URL is not valid: {e}"))
}

/// One autocommit connection as the configured (owner) user. The connection task ends quietly
/// when the server closes the connection (the crash tests terminate backends on purpose).
pub async fn connect() -> Client {
    connect_with(config()).await
}

/// One connection as `user` (same host, port and database).
pub async fn connect_as(user: &str) -> Client {
    let mut config = config();
    config.user(user);
    connect_with(config).await
}

async fn connect_with(config: Config) -> Client {
    let (client, connection) = config.connect(NoTls).await.unwrap_or_else(|e| panic!("connect: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// `n` independent connections, one backend each.
pub async fn connect_many(n: usize) -> Vec<Arc<Client>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(Arc::new(connect().await));
    }
    clients
}

/// The backend pid serving `client`.
pub async fn backend_pid(client: &Client) -> i32 {
    client.query_one("SELECT pg_catalog.pg_backend_pid()", &[]).await.expect("pg_backend_pid").get(0)
}

/// Open a transaction the way PostgREST runs a request, on a connection logged in as
/// `authenticator`: `BEGIN; SET LOCAL ROLE role`, and the JWT's claims (if any) in
/// `request.jwt.claims` for this transaction only. End it with [`rollback`].
pub async fn begin_as(client: &Client, role: &str, claims: Option<&str>) {
    client
        .batch_execute(&format!("BEGIN; SET LOCAL ROLE {role}"))
        .await
        .unwrap_or_else(|e| panic!("SET ROLE {role}: {}", describe(&e)));
    if let Some(claims) = claims {
        client
            .execute("SELECT pg_catalog.set_config('request.jwt.claims', $1, true)", &[&claims])
            .await
            .expect("set_config");
    }
}

/// End the transaction [`begin_as`] opened; the role and claims go with it.
pub async fn rollback(client: &Client) {
    client.batch_execute("ROLLBACK").await.expect("ROLLBACK");
}

// ---------------------------------------------------------------------------------------------
// Ids and times

/// A random id with a readable prefix (`call-…`, `asst-…`).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

/// A fixed instant plus `seconds` (whole microseconds, so it round-trips through timestamptz).
pub fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_714_564_800 + seconds) // 2024-05-01T12:00:00Z
}

// ---------------------------------------------------------------------------------------------
// Messages: one call of a voxanne function with named arguments, as PostgREST sends it

type Param = Arc<dyn ToSql + Sync + Send>;

/// One call of a `voxanne.*` function with named arguments. Cheap to clone, so the same message
/// can be fired from many connections.
#[derive(Clone)]
pub struct Msg {
    function: &'static str,
    args: Vec<(&'static str, &'static str, Param)>,
}

impl Msg {
    pub fn new(function: &'static str) -> Self {
        Self { function, args: Vec::new() }
    }

    fn arg(mut self, name: &'static str, cast: &'static str, value: Param) -> Self {
        self.args.push((name, cast, value));
        self
    }

    pub fn text(self, name: &'static str, value: impl Into<String>) -> Self {
        self.arg(name, "text", Arc::new(value.into()))
    }

    pub fn ts(self, name: &'static str, value: SystemTime) -> Self {
        self.arg(name, "timestamptz", Arc::new(value))
    }

    /// A numeric argument, sent as its decimal text.
    pub fn numeric(self, name: &'static str, value: &str) -> Self {
        self.arg(name, "text::pg_catalog.numeric", Arc::new(value.to_string()))
    }

    pub fn uuid(self, name: &'static str, value: Uuid) -> Self {
        self.arg(name, "uuid", Arc::new(value))
    }

    /// A jsonb argument, sent as its text (as the relay sends a body).
    pub fn jsonb(self, name: &'static str, value: &Value) -> Self {
        self.arg(name, "text::pg_catalog.jsonb", Arc::new(value.to_string()))
    }

    pub fn boolean(self, name: &'static str, value: bool) -> Self {
        self.arg(name, "boolean", Arc::new(value))
    }

    pub fn interval(self, name: &'static str, value: &str) -> Self {
        self.arg(name, "text::pg_catalog.interval", Arc::new(value.to_string()))
    }

    /// `SELECT voxanne.f(p_a => $1::text, …)`
    pub fn sql(&self) -> String {
        let args: Vec<String> =
            self.args.iter().enumerate().map(|(i, (name, cast, _))| format!("{name} => ${}::{cast}", i + 1)).collect();
        format!("SELECT voxanne.{}({})", self.function, args.join(", "))
    }

    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.args.iter().map(|(_, _, p)| p.as_ref() as &(dyn ToSql + Sync)).collect()
    }

    /// Run the call and return its single result column as JSON.
    pub async fn call(&self, client: &Client) -> Result<Value, Error> {
        self.call_scalar(client).await
    }

    /// Run the call and return its single result column.
    pub async fn call_scalar<T: for<'a> FromSql<'a>>(&self, client: &Client) -> Result<T, Error> {
        let row = client.query_one(self.sql().as_str(), &self.params()).await?;
        row.try_get(0)
    }

    /// Run the call and parse its `{"applied", "outcome", …}` result.
    pub async fn outcome(&self, client: &Client) -> Result<Outcome, Error> {
        Ok(Outcome::parse(&self.call(client).await?))
    }
}

/// What a call/transcript function answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub applied: bool,
    pub outcome: String,
    pub org_id: Uuid,
    pub call_id: Option<i64>,
    pub vapi_call_id: String,
    pub event_id: String,
    pub raw: Value,
    /// For raced calls: when the server received the statement and when the function returned.
    pub received: Option<SystemTime>,
    pub finished: Option<SystemTime>,
}

impl Outcome {
    pub fn parse(v: &Value) -> Self {
        let field = |k: &str| v.get(k).unwrap_or_else(|| panic!("result has no '{k}': {v}"));
        let text = |k: &str| field(k).as_str().unwrap_or_else(|| panic!("'{k}' is not a string: {v}")).to_string();
        Self {
            applied: field("applied").as_bool().unwrap_or_else(|| panic!("'applied' is not a bool: {v}")),
            outcome: text("outcome"),
            org_id: Uuid::parse_str(&text("org_id")).unwrap_or_else(|e| panic!("org_id: {e}: {v}")),
            call_id: field("call_id").as_i64(),
            vapi_call_id: text("vapi_call_id"),
            event_id: text("event_id"),
            raw: v.clone(),
            received: None,
            finished: None,
        }
    }

    pub fn is_duplicate(&self) -> bool {
        !self.applied && self.outcome == "duplicate"
    }
}

// ---------------------------------------------------------------------------------------------
// Orgs and the messages of their calls

/// A fresh tenant: a random org with one active agent for a random assistant id.
#[derive(Debug, Clone)]
pub struct Org {
    pub id: Uuid,
    pub assistant_id: String,
    pub agent_id: Uuid,
}

/// The fields an end-of-call report carries.
#[derive(Debug, Clone)]
pub struct Report {
    pub ended_reason: String,
    pub started_at: SystemTime,
    pub ended_at: SystemTime,
    pub duration_seconds: String,
    pub cost: String,
    pub summary: String,
    pub transcript: String,
    pub recording_url: String,
}

impl Report {
    /// A report whose every field is specific to `vapi_call_id`.
    pub fn for_call(vapi_call_id: &str) -> Self {
        Self {
            ended_reason: "customer-ended-call".into(),
            started_at: at(10),
            ended_at: at(75),
            duration_seconds: "65.5".into(),
            cost: "0.1234".into(),
            summary: format!("summary of {vapi_call_id}"),
            transcript: format!("AI: hello\nUser: this is {vapi_call_id}"),
            recording_url: format!("https://recordings.example.com/{vapi_call_id}.wav"),
        }
    }
}

impl Org {
    /// A new org with one active agent, registered through `voxanne.upsert_agent`.
    pub async fn create(client: &Client) -> Self {
        let id = Uuid::new_v4();
        let assistant_id = unique("asst");
        let agent_id: Uuid = client
            .query_one(
                "SELECT voxanne.upsert_agent(p_org_id => $1, p_vapi_assistant_id => $2, p_name => 'it agent')",
                &[&id, &assistant_id],
            )
            .await
            .expect("upsert_agent")
            .get(0);
        Self { id, assistant_id, agent_id }
    }

    /// A status message before the end (`create_inbound_call`).
    pub fn status(&self, vapi_call_id: &str, status: &str, occurred_at: SystemTime) -> Msg {
        Msg::new("create_inbound_call")
            .text("p_vapi_call_id", vapi_call_id)
            .text("p_assistant_id", self.assistant_id.clone())
            .text("p_customer_number", "+15550100")
            .text("p_status", status)
            .ts("p_occurred_at", occurred_at)
    }

    /// The first status of an inbound call.
    pub fn ringing(&self, vapi_call_id: &str) -> Msg {
        self.status(vapi_call_id, "ringing", at(0))
    }

    /// One transcript line (`record_transcript`, type final).
    pub fn transcript(&self, vapi_call_id: &str, role: &str, text: &str, spoken_at: SystemTime) -> Msg {
        Msg::new("record_transcript")
            .text("p_vapi_call_id", vapi_call_id)
            .text("p_assistant_id", self.assistant_id.clone())
            .text("p_role", role)
            .text("p_text", text)
            .ts("p_spoken_at", spoken_at)
    }

    /// The end-of-call report (`complete_call`, default source).
    pub fn report(&self, vapi_call_id: &str, r: &Report) -> Msg {
        Msg::new("complete_call")
            .text("p_vapi_call_id", vapi_call_id)
            .text("p_assistant_id", self.assistant_id.clone())
            .text("p_ended_reason", r.ended_reason.clone())
            .ts("p_started_at", r.started_at)
            .ts("p_ended_at", r.ended_at)
            .numeric("p_duration_seconds", &r.duration_seconds)
            .numeric("p_cost", &r.cost)
            .text("p_summary", r.summary.clone())
            .text("p_transcript", r.transcript.clone())
            .text("p_recording_url", r.recording_url.clone())
    }

    /// A status `ended` (`complete_call` with `p_source => 'status-update'`).
    pub fn status_ended(&self, vapi_call_id: &str, ended_reason: &str) -> Msg {
        Msg::new("complete_call")
            .text("p_vapi_call_id", vapi_call_id)
            .text("p_assistant_id", self.assistant_id.clone())
            .text("p_ended_reason", ended_reason)
            .text("p_source", "status-update")
    }
}

// ---------------------------------------------------------------------------------------------
// Racing

/// Fire one message per client at once: every client prepares its statement, then all wait on
/// one barrier and send together. Returns every client's result, in client order, each with
/// the server's `statement_timestamp()` (when the backend received it) and `clock_timestamp()`
/// after the function returned, so a test can tell how far the executions really overlapped.
pub async fn race(clients: &[Arc<Client>], msgs: Vec<Msg>) -> Vec<Result<Outcome, Error>> {
    assert_eq!(clients.len(), msgs.len(), "one message per client");
    let barrier = Arc::new(Barrier::new(clients.len()));
    let mut tasks = Vec::with_capacity(clients.len());
    for (client, msg) in clients.iter().cloned().zip(msgs) {
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let sql = timed(&msg.sql());
            // Prepare first, so the race is only the execution. On a prepare error, still
            // reach the barrier so the others are not left waiting.
            let stmt = client.prepare(&sql).await;
            barrier.wait().await;
            let row = client.query_one(&stmt?, &msg.params()).await?;
            let mut outcome = Outcome::parse(&row.get::<_, Value>(1));
            outcome.received = Some(row.get(0));
            outcome.finished = Some(row.get(2));
            Ok::<Outcome, Error>(outcome)
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("racing task panicked"));
    }
    results
}

/// Fire the same message from every client at once.
pub async fn race_same(clients: &[Arc<Client>], msg: &Msg) -> Vec<Result<Outcome, Error>> {
    race(clients, vec![msg.clone(); clients.len()]).await
}

/// Unwrap every result of a race; any client error fails the test, naming the message.
pub fn all_ok(results: Vec<Result<Outcome, Error>>, what: &str) -> Vec<Outcome> {
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("{what}: client {i} got an error: {}", describe(&e))))
        .collect()
}

/// `sql` (one `SELECT f(…)`) with the server's `statement_timestamp()` (when the backend
/// received it) before and `clock_timestamp()` (after the function returned) after it: the
/// target list is evaluated left to right, so columns 0 and 2 bound the statement's window.
pub fn timed(sql: &str) -> String {
    sql.replacen("SELECT ", "SELECT pg_catalog.statement_timestamp(), ", 1) + ", pg_catalog.clock_timestamp()"
}

/// The server's window of every statement of a race: received (`statement_timestamp()`) to
/// finished (`clock_timestamp()` after the function returned).
fn server_spans(outcomes: &[Outcome]) -> Vec<(SystemTime, SystemTime)> {
    outcomes.iter().map(|o| (o.received.expect("raced outcome"), o.finished.expect("raced outcome"))).collect()
}

/// Whether two windows `(start, end)` of deliveries (server statement windows, or client request
/// windows) were open at the same time.
pub fn spans_overlap<T: PartialOrd>(a: &(T, T), b: &(T, T)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// How many of `spans` overlap `spans[i]` (itself not counted).
pub fn overlapping_span<T: PartialOrd>(spans: &[(T, T)], i: usize) -> usize {
    spans.iter().enumerate().filter(|(j, s)| *j != i && spans_overlap(&spans[i], s)).count()
}

/// How many of `spans` overlap at least one other: the deliveries of a race that ran at the
/// same time as another of the same race.
pub fn overlapping_any<T: PartialOrd>(spans: &[(T, T)]) -> usize {
    (0..spans.len()).filter(|i| overlapping_span(spans, *i) > 0).count()
}

/// How real the races of a test were.
#[derive(Debug, Default)]
pub struct RaceStats {
    pub rounds: usize,
    /// Rounds in which at least one other statement overlapped the applied one.
    pub contended_rounds: usize,
    /// Sum over rounds of the statements that overlapped the applied one.
    pub overlapping: usize,
    /// Deliveries that ran at the same time as at least one other delivery of their round
    /// (the `overlap` figure).
    pub overlapped: usize,
    /// Windows measured (a measurement may see only some of a round's deliveries).
    pub windows: usize,
}

impl RaceStats {
    /// A round of statements timed by the server (`received` / `finished` of every outcome).
    pub fn record(&mut self, outcomes: &[Outcome]) {
        let spans = server_spans(outcomes);
        let winners: Vec<usize> = outcomes.iter().enumerate().filter(|(_, o)| o.applied).map(|(i, _)| i).collect();
        self.record_spans(&spans, &winners);
    }

    /// A round of deliveries as windows `(start, end)`; `winners` are the indexes of the ones
    /// answered `applied` (one per race of the round: several when a round races several
    /// messages, e.g. one per org). A winner counts as contended when another window overlaps
    /// it; the round when any of its winners is.
    pub fn record_spans<T: PartialOrd>(&mut self, spans: &[(T, T)], winners: &[usize]) {
        self.rounds += 1;
        self.windows += spans.len();
        self.overlapped += overlapping_any(spans);
        let mut contended = false;
        for w in winners {
            let n = overlapping_span(spans, *w);
            self.overlapping += n;
            contended |= n > 0;
        }
        self.contended_rounds += usize::from(contended);
    }

    /// Print the statistics (visible with `--nocapture`) and fail if no round ever overlapped:
    /// then the harness, not the extension, was tested.
    pub fn assert_raced(&self, what: &str) {
        eprintln!(
            "{what}: {} of {} rounds had statements in flight with the applied one ({} in all); \
             {} of {} measured deliveries overlapped another of their round",
            self.contended_rounds, self.rounds, self.overlapping, self.overlapped, self.windows
        );
        assert!(self.contended_rounds > 0, "{what}: no round really raced: {self:?}");
    }
}

/// The server's windows of other sessions' statements, for races whose statements cannot
/// time themselves (the relay's): the sessions of one `application_name` running `query`, read
/// from `pg_stat_activity` — each idle session's last statement, `query_start` (when the
/// backend received it, `statement_timestamp()`) .. `state_change` (when it went idle). A
/// session that ran two statements between two reads shows only the second, so the windows
/// are a lower bound of the statements.
pub struct StatementWindows {
    application_name: String,
    query: String,
    /// per backend pid, the `query_start` of the last statement already handed out
    seen: HashMap<i32, SystemTime>,
}

impl StatementWindows {
    pub fn new(application_name: &str, query: &str) -> Self {
        Self { application_name: application_name.to_string(), query: query.to_string(), seen: HashMap::new() }
    }

    /// The windows of the statements that ended since the last read, and how many sessions
    /// were still running a statement not seen before (no end yet: never measured).
    pub async fn read_new(&mut self, db: &Client) -> (Vec<(SystemTime, SystemTime)>, u64) {
        let rows = db
            .query(
                "SELECT pid, query_start, state_change, state = 'idle' FROM pg_catalog.pg_stat_activity
                 WHERE application_name = $1 AND query = $2 AND query_start IS NOT NULL",
                &[&self.application_name, &self.query],
            )
            .await
            .unwrap_or_else(|e| panic!("pg_stat_activity: {}", describe(&e)));
        let mut windows = Vec::new();
        let mut active = 0;
        for r in rows {
            let (pid, start): (i32, SystemTime) = (r.get(0), r.get(1));
            // a statement still running is not measured, now or later
            if self.seen.insert(pid, start) == Some(start) {
                continue;
            }
            if r.get::<_, bool>(3) {
                windows.push((start, r.get(2)));
            } else {
                active += 1;
            }
        }
        (windows, active)
    }
}

/// How many pairs of statements of a race were executing at the same time on the server.
pub fn overlapping_pairs(outcomes: &[Outcome]) -> usize {
    let spans = server_spans(outcomes);
    (0..spans.len()).map(|i| spans[i + 1..].iter().filter(|b| spans_overlap(&spans[i], b)).count()).sum()
}

/// An error with its SQLSTATE, message and detail (`Display` of a db error omits them).
pub fn describe(e: &Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "SQLSTATE {} {}: {}{}",
            db.code().code(),
            db.severity(),
            db.message(),
            db.detail().map(|d| format!(" (detail: {d})")).unwrap_or_default()
        ),
        None => format!("{e:?}"),
    }
}

/// Assert a race of identical messages: exactly one applied, every other one a duplicate, and
/// all of them naming the same org, call and event.
pub fn assert_one_applied_rest_duplicate(outcomes: &[Outcome], org: &Org, vapi_call_id: &str, what: &str) {
    let applied: Vec<&Outcome> = outcomes.iter().filter(|o| o.applied).collect();
    let duplicates = outcomes.iter().filter(|o| o.is_duplicate()).count();
    assert_eq!(applied.len(), 1, "{what}: applied responses: {outcomes:#?}");
    assert_eq!(applied[0].outcome, "applied", "{what}: {:?}", applied[0].raw);
    assert_eq!(duplicates, outcomes.len() - 1, "{what}: duplicate responses: {outcomes:#?}");
    for o in outcomes {
        assert_eq!(o.org_id, org.id, "{what}: org of {:?}", o.raw);
        assert_eq!(o.vapi_call_id, vapi_call_id, "{what}: {:?}", o.raw);
        assert_eq!(o.event_id, applied[0].event_id, "{what}: event id of {:?}", o.raw);
        assert_eq!(o.call_id, applied[0].call_id, "{what}: call id of {:?}", o.raw);
    }
    assert!(applied[0].call_id.is_some(), "{what}: no call id in {:?}", applied[0].raw);
}

// ---------------------------------------------------------------------------------------------
// Reading an org's rows

/// `SELECT count(*) …` with parameters.
pub async fn count(client: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> i64 {
    client.query_one(sql, params).await.unwrap_or_else(|e| panic!("{sql}: {}", describe(&e))).get(0)
}

/// All rows of `table` belonging to `org`.
pub async fn count_org_rows(client: &Client, table: &str, org: &Org) -> i64 {
    let sql = format!("SELECT count(*) FROM voxanne.{table} WHERE org_id = $1");
    count(client, &sql, &[&org.id]).await
}

/// Rows of one call in each table (by vapi call id; outbox rows by their payload's call id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallRows {
    pub calls: i64,
    pub outbox: i64,
    pub ledger: i64,
    pub transcripts: i64,
}

pub async fn call_rows(client: &Client, org: &Org, vapi_call_id: &str) -> CallRows {
    let row = client
        .query_one(
            "SELECT
                (SELECT count(*) FROM voxanne.calls WHERE org_id = $1 AND vapi_call_id = $2),
                (SELECT count(*) FROM voxanne.outbox
                  WHERE org_id = $1 AND payload->>'vapi_call_id' = $2),
                (SELECT count(*) FROM voxanne.processed_webhook_events
                  WHERE org_id = $1 AND (event_id = 'report:' || $2 OR event_id LIKE 'status:' || $2 || ':%')),
                (SELECT count(*) FROM voxanne.call_transcripts t
                   JOIN voxanne.calls c ON c.org_id = t.org_id AND c.id = t.call_id
                  WHERE t.org_id = $1 AND c.vapi_call_id = $2)",
            &[&org.id, &vapi_call_id],
        )
        .await
        .expect("call_rows");
    CallRows { calls: row.get(0), outbox: row.get(1), ledger: row.get(2), transcripts: row.get(3) }
}

/// `key -> number of rows` for a query returning (text, bigint) pairs.
pub async fn grouped(client: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> HashMap<String, i64> {
    client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
        .into_iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect()
}

/// Assert that `counts` holds exactly the keys `expected`, each exactly once.
pub fn assert_each_once(counts: &HashMap<String, i64>, expected: &[String], what: &str) {
    let mut missing: Vec<&String> = expected.iter().filter(|k| !counts.contains_key(*k)).collect();
    missing.truncate(5);
    assert!(missing.is_empty(), "{what}: no row for {missing:?}");
    let mut repeated: Vec<(&String, &i64)> = counts.iter().filter(|(_, n)| **n != 1).collect();
    repeated.truncate(5);
    assert!(repeated.is_empty(), "{what}: more than one row for {repeated:?}");
    assert_eq!(counts.len(), expected.len(), "{what}: unexpected extra keys");
}

// ---------------------------------------------------------------------------------------------
// Notifications

/// A connection that has executed `LISTEN voxanne_outbox`, and its notifications as they come.
pub struct Listener {
    pub client: Client,
    rx: mpsc::UnboundedReceiver<tokio_postgres::Notification>,
}

impl Listener {
    pub async fn start() -> Self {
        let (client, mut connection) = config().connect(NoTls).await.expect("listener connect");
        let (tx, rx) = mpsc::unbounded_channel();
        // The connection must be polled for its messages: a plain `connection.await` drops
        // notifications.
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        client.batch_execute(&format!("LISTEN {OUTBOX_CHANNEL}")).await.expect("LISTEN");
        Self { client, rx }
    }

    /// Publish a marker on the channel from `client`. Notifications are delivered in commit
    /// order, so once the marker arrives, every notification of a transaction that committed
    /// before it has arrived too: no waiting for "nothing more" is needed.
    pub async fn send_marker(client: &Client) -> String {
        let marker = unique("marker");
        client
            .execute("SELECT pg_catalog.pg_notify($1, $2)", &[&OUTBOX_CHANNEL, &marker])
            .await
            .expect("pg_notify marker");
        marker
    }

    /// Every notification on the channel for `org` (parsed JSON payloads) received before
    /// `marker`. Fails if the marker does not arrive within `NOTIFY_TIMEOUT`.
    pub async fn org_notifications_until(&mut self, org: &Org, marker: &str) -> Vec<Value> {
        let deadline = Instant::now() + NOTIFY_TIMEOUT;
        let mut found = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(n)) => n,
                Ok(None) => panic!("listener connection closed"),
                Err(_) => panic!("marker {marker} not received within {NOTIFY_TIMEOUT:?}"),
            };
            assert_eq!(n.channel(), OUTBOX_CHANNEL);
            if n.payload() == marker {
                return found;
            }
            let Ok(payload) = serde_json::from_str::<Value>(n.payload()) else {
                continue; // another test's marker
            };
            if payload.get("org_id").and_then(Value::as_str) == Some(org.id.to_string().as_str()) {
                found.push(payload);
            }
        }
    }

    /// Send a marker from `client` and collect `org`'s notifications up to it. `client` must
    /// not be inside an open transaction (its marker would wait for the commit).
    pub async fn drain(&mut self, client: &Client, org: &Org) -> Vec<Value> {
        let marker = Self::send_marker(client).await;
        self.org_notifications_until(org, &marker).await
    }
}

// ---------------------------------------------------------------------------------------------
// Private databases, for tests whose state is global to a database (consumer cursors,
// publications, extension versions)

/// A connection to `dbname` on the configured server, as the configured user.
pub async fn connect_db(dbname: &str) -> Client {
    let mut config = config();
    config.dbname(dbname);
    connect_with(config).await
}

/// A new database (random name) with `voxanne_ext` created by `create_extension_sql`, e.g.
/// `CREATE EXTENSION voxanne_ext VERSION '0.1.0'`; `before` runs first (a publication, say).
pub async fn private_db(before: &str, create_extension_sql: &str) -> (String, Client) {
    let name = format!("vox_it_{}", Uuid::new_v4().simple());
    connect().await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    let client = connect_db(&name).await;
    client.batch_execute(before).await.expect("setup before the extension");
    client.batch_execute(create_extension_sql).await.expect("create extension");
    (name, client)
}

/// Drop a database made by `private_db`.
pub async fn drop_db(name: &str) {
    connect()
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop database");
}

/// A ledger for a purge with its 30-day default to meet: `org`'s three rows of 31 days and one
/// of 29 that the purge must keep, after the aged rows of earlier tests are purged.
pub async fn plant_aged_ledger_rows(db: &Client, org: Uuid) {
    db.query_one("SELECT voxanne.purge_processed_events()", &[]).await.expect("purge first");
    db.execute(
        "INSERT INTO voxanne.processed_webhook_events (org_id, event_id, event_type, received_at)
         SELECT $1, 'aged:' || g || ':' || d, 'status-update', now() - make_interval(days => d)
         FROM generate_series(1, 3) g, unnest(ARRAY[31, 29]) d WHERE d = 31 OR g = 1",
        &[&org],
    )
    .await
    .expect("plant aged ledger rows");
}

/// What is left of [`plant_aged_ledger_rows`]: after the purge, the 29-day row alone.
pub async fn assert_only_the_young_aged_row_is_left(db: &Client, org: Uuid) {
    let aged = grouped(
        db,
        "SELECT event_id, count(*) FROM voxanne.processed_webhook_events WHERE org_id = $1 AND event_id LIKE 'aged:%'
         GROUP BY 1",
        &[&org],
    )
    .await;
    assert_eq!(aged, HashMap::from([("aged:1:29".to_string(), 1)]), "the 29-day ledger row survives the purge");
}

/// The dead letter as it was at a moment: how often each body had been refused
/// (`rejected_events` keeps one row per distinct body, counted in `times_seen`).
pub struct DeadLetter(std::collections::HashMap<Vec<u8>, i32>);

impl DeadLetter {
    pub async fn snapshot(db: &Client) -> DeadLetter {
        let rows = db.query("SELECT body_sha256, times_seen FROM voxanne.rejected_events", &[]).await.unwrap();
        DeadLetter(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Each body refused since the snapshot, with how many times.
    pub async fn refusals_since(&self, db: &Client) -> std::collections::BTreeMap<String, i64> {
        let rows = db.query("SELECT body_sha256, times_seen, body FROM voxanne.rejected_events", &[]).await.unwrap();
        rows.iter()
            .filter_map(|r| {
                let (digest, seen): (Vec<u8>, i32) = (r.get(0), r.get(1));
                let since = i64::from(seen - self.0.get(&digest).copied().unwrap_or(0));
                (since > 0).then(|| (r.get::<_, String>(2), since))
            })
            .collect()
    }
}
