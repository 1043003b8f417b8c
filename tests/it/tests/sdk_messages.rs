//! Vapi's own messages, built from its SDKs' types (`tests/fixtures/sdk/`, validated against
//! `@vapi-ai/server-sdk` and `vapi-server-sdk` by `tests/sdk/check`), through the real relay
//! into a real database: every message is stored, acknowledged or answered as README "Vapi
//! messages" says; every call sequence ends in the same rows in any order and under
//! redeliveries; with Vapi's default `serverMessages` the lines are stored; a transient
//! assistant's call routes by its tenant token, and a missing or forged one is refused and kept;
//! a call whose report never came is ended by `voxanne-relay reconcile` from a fake of Vapi's
//! API serving the call object, in the rows its report makes.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::Value;
use tokio_postgres::Client;
use uuid::Uuid;
use voxanne_it::figures::{seed, Rng};
use voxanne_it::relay::{Relay, SECRET};
use voxanne_it::*;
use voxanne_relay::reconcile::{self, ReconcileConfig};
use voxanne_relay::testing::FakeVapiApi;

// tests/sdk/README.md "Ids"
const AVA: &str = "a0000000-0000-4000-8000-000000000001";
const MAX: &str = "a0000000-0000-4000-8000-000000000002";
const NORA: &str = "a0000000-0000-4000-8000-000000000003";
const BEN: &str = "a0000000-0000-4000-8000-000000000004";
const SQUAD: &str = "5a000000-0000-4000-8000-000000000001";
const WORKFLOW: &str = "f0000000-0000-4000-8000-000000000001";
const PHONE_AVA: &str = "b0000000-0000-4000-8000-000000000001";
const PHONE_SQUAD: &str = "b0000000-0000-4000-8000-000000000002";
const PHONE_MAX: &str = "b0000000-0000-4000-8000-000000000003";
const PHONE_UNASSIGNED: &str = "b0000000-0000-4000-8000-000000000004";
const TOKEN_PLACEHOLDER: &str = "__VOXANNE_TENANT_TOKEN__";

fn fixtures() -> PathBuf {
    voxanne_it::figures::workspace_root().join("tests/fixtures/sdk")
}

/// The `.json` files of `dir`, sorted by name.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// A private database whose one org has every id of the fixtures registered as their README
/// says (the Vapi org itself is not: it would route every call), and the relay on it.
struct World {
    db_name: String,
    db: Client,
    org: Uuid,
    token: String,
    relay: Relay,
}

impl World {
    async fn new() -> Self {
        let (db_name, db) = private_db("", "CREATE EXTENSION voxanne_ext").await;
        let org = Uuid::new_v4();
        for assistant in [AVA, MAX, NORA, BEN] {
            db.execute("SELECT voxanne.upsert_agent($1, $2)", &[&org, &assistant]).await.unwrap();
        }
        db.execute("SELECT voxanne.upsert_squad($1, $2)", &[&org, &SQUAD]).await.unwrap();
        db.execute("SELECT voxanne.upsert_workflow($1, $2)", &[&org, &WORKFLOW]).await.unwrap();
        for (number, assistant, squad) in [
            (PHONE_AVA, Some(AVA), None),
            (PHONE_SQUAD, None, Some(SQUAD)),
            (PHONE_MAX, Some(MAX), None),
            (PHONE_UNASSIGNED, None, None),
        ] {
            db.execute(
                "SELECT voxanne.upsert_phone_number($1, $2, p_vapi_assistant_id => $3, p_vapi_squad_id => $4)",
                &[&org, &number, &assistant, &squad],
            )
            .await
            .unwrap();
        }
        let token: String = db.query_one("SELECT voxanne.tenant_token($1)", &[&org]).await.unwrap().get(0);
        let url = format!("{} dbname={db_name}", std::env::var("VOXANNE_DATABASE_URL").expect("VOXANNE_DATABASE_URL"));
        let relay = Relay::start(&url, &["--pool-size", "2"]).await;
        Self { db_name, db, org, token, relay }
    }

    /// A fixture as Vapi would send it for this org: the token placeholder filled in.
    fn body(&self, path: &Path) -> String {
        std::fs::read_to_string(path).unwrap().replace(TOKEN_PLACEHOLDER, &self.token)
    }

    async fn post(&self, body: &str) -> (u16, String) {
        let response = self
            .relay
            .http
            .post(self.relay.webhook_url())
            .header("content-type", "application/json")
            .header("x-vapi-secret", SECRET)
            .body(body.to_string())
            .send()
            .await
            .expect("the relay answers");
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn count(&self, sql: &str, call: &str) -> i64 {
        self.db.query_one(sql, &[&self.org, &call]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
    }

    async fn drop(self) {
        drop(self.relay);
        drop(self.db);
        drop_db(&self.db_name).await;
    }
}

const LINES: &str = "SELECT count(*) FROM voxanne.call_transcripts t JOIN voxanne.calls c
                     ON c.org_id = t.org_id AND c.id = t.call_id WHERE c.org_id = $1 AND c.vapi_call_id = $2";
const CALLS: &str = "SELECT count(*) FROM voxanne.calls WHERE org_id = $1 AND vapi_call_id = $2";
const REPORTS: &str = "SELECT count(*) FROM voxanne.call_reports r JOIN voxanne.calls c
                       ON c.org_id = r.org_id AND c.id = r.call_id
                       WHERE c.org_id = $1 AND c.vapi_call_id = $2 AND c.status = 'ended'";

/// The body Vapi gets for reply-expecting fixture `name`: exactly `replies/<name>` (README
/// "Replies"), which tests/sdk/check holds to the SDK's response type of the message.
fn check_reply(name: &str, kind: &str, body: &str) -> Result<(), String> {
    if kind == "voice-request" {
        // raw PCM is expected; the database has none: an empty body
        return if body.is_empty() { Ok(()) } else { Err(format!("voice-request answered {body:.200}")) };
    }
    let reply: Value = serde_json::from_str(body).map_err(|e| format!("{kind}: not JSON ({e}): {body:.200}"))?;
    let path = fixtures().join("replies").join(name);
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?).unwrap();
    if reply == want {
        Ok(())
    } else {
        Err(format!("{kind}: {reply}, not {want}"))
    }
}

const REPLY_TYPES: &[&str] = &[
    "assistant-request",
    "tool-calls",
    "transfer-destination-request",
    "handoff-destination-request",
    "knowledge-base-request",
    "call.endpointing.request",
    "campaign.predial",
    "voice-request",
];
const LIFECYCLE: &[&str] = &["scheduled", "queued", "ringing", "in-progress", "forwarding", "ended"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdk_message_is_stored_acknowledged_or_answered_through_the_relay() {
    let world = World::new().await;
    // what the relay never spools (relay/src/spool) is exactly what this test finds answered
    let named: Vec<String> = world.db.query_one("SELECT voxanne.reply_message_types()", &[]).await.unwrap().get(0);
    let mut expected: Vec<&str> = REPLY_TYPES.to_vec();
    expected.sort_unstable();
    let mut named: Vec<&str> = named.iter().map(String::as_str).collect();
    named.sort_unstable();
    assert_eq!(named, expected, "voxanne.reply_message_types()");
    let files = json_files(&fixtures());
    assert!(files.len() >= 50, "the SDK fixtures are there: {}", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let body = world.body(path);
        let doc: Value = serde_json::from_str(&body).unwrap();
        let message = &doc["message"];
        let kind = message["type"].as_str().unwrap_or("tool-calls");
        let call = message["call"]["id"].as_str().unwrap_or_default().to_string();
        let (status, answer) = world.post(&body).await;
        if status != 200 {
            failures.push(format!("{name}: HTTP {status} {answer:.300}"));
            continue;
        }
        if REPLY_TYPES.contains(&kind) {
            if let Err(e) = check_reply(&name, kind, &answer) {
                failures.push(format!("{name}: {e}"));
            }
            continue;
        }
        let a: Value = serde_json::from_str(&answer).unwrap();
        let ignored = a["ignored"].as_str();
        let status_value = message["status"].as_str().unwrap_or_default();
        let transcript = message["transcript"].as_str().unwrap_or_default();
        // what must be in the database now, or the acknowledgement
        let stored = match kind {
            "status-update" if LIFECYCLE.contains(&status_value) => world.count(CALLS, &call).await == 1,
            "status-update" => ignored == Some(format!("status-update[{status_value}]").as_str()),
            "end-of-call-report" => world.count(REPORTS, &call).await == 1 && world.count(LINES, &call).await > 0,
            "conversation-update" => world.count(LINES, &call).await > 0,
            k if k.starts_with("transcript") && message["transcriptType"] == "partial" => {
                ignored == Some("transcript[partial]")
            }
            k if k.starts_with("transcript") && transcript.is_empty() => ignored == Some("transcript[empty]"),
            k if k.starts_with("transcript") && message.get("timestamp").is_none() => {
                ignored == Some("transcript[no timestamp]")
            }
            k if k.starts_with("transcript") => {
                world.count(LINES, &call).await > 0 && a["org_id"] == world.org.to_string()
            }
            other => ignored == Some(other) && a["applied"] == false,
        };
        if !stored {
            failures.push(format!("{name}: answered {answer:.300}, rows not as README says"));
        }
    }
    assert!(failures.is_empty(), "{} of {} SDK messages:\n{}", failures.len(), files.len(), failures.join("\n"));
    world.drop().await;
}

/// A call's rows as an app reads them, ids and write times aside: the call row, its lines and
/// its kept report (with the run's call id taken out).
async fn final_rows(world: &World, call: &str) -> String {
    let rows = call_and_lines(world, call).await;
    let report: Option<String> = world
        .db
        .query_one(
            "SELECT md5(replace(r.report::text, $2, 'CALL')) FROM voxanne.call_reports r
             JOIN voxanne.calls c ON c.org_id = r.org_id AND c.id = r.call_id
             WHERE c.org_id = $1 AND c.vapi_call_id = $2",
            &[&world.org, &call],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(None);
    format!("{rows} | {}", report.unwrap_or_default())
}

/// The call row and its lines, as an app reads them, ids and write times aside.
async fn call_and_lines(world: &World, call: &str) -> String {
    world
        .db
        .query_one(
            "SELECT concat_ws(' | ', row(c.agent_id IS NULL, c.call_type, c.customer_number, c.phone_number_id, c.status,
                        c.ended_reason, c.started_at, c.ended_at, c.duration_seconds, c.cost, c.summary, c.transcript,
                        c.recording_url)::text,
                    (SELECT string_agg(t.role || '@' || t.spoken_at || ':' || t.text, ' / ' ORDER BY t.spoken_at, t.role)
                     FROM voxanne.call_transcripts t WHERE t.org_id = c.org_id AND t.call_id = c.id))
             FROM voxanne.calls c WHERE c.org_id = $1 AND c.vapi_call_id = $2",
            &[&world.org, &call],
        )
        .await
        .unwrap_or_else(|e| panic!("the call {call}: {e}"))
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdk_call_sequence_ends_in_the_same_rows_in_any_order_and_under_redeliveries() {
    let world = World::new().await;
    let mut rng = Rng::new(seed(14));
    let mut sequences: Vec<PathBuf> =
        std::fs::read_dir(fixtures().join("sequences")).unwrap().map(|e| e.unwrap().path()).collect();
    sequences.sort();
    assert_eq!(sequences.len(), 4, "{sequences:?}");
    for dir in sequences {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let bodies: Vec<String> = json_files(&dir).iter().map(|p| world.body(p)).collect();
        let call =
            serde_json::from_str::<Value>(&bodies[0]).unwrap()["message"]["call"]["id"].as_str().unwrap().to_string();
        let mut states = Vec::new();
        for run in 0..4 {
            // run 0: as Vapi sends them; then shuffled, a third of them delivered twice
            let mut order: Vec<usize> = (0..bodies.len()).collect();
            if run > 0 {
                rng.shuffle(&mut order);
                let again: Vec<usize> = order.iter().copied().filter(|_| rng.chance(0.33)).collect();
                for i in again {
                    let at = rng.below(order.len() + 1);
                    order.insert(at, i);
                }
            }
            let this_call = format!("{call}-run{run}");
            for i in order {
                let (status, answer) = world.post(&bodies[i].replace(&call, &this_call)).await;
                assert_eq!(status, 200, "{name} run {run}, message {i}: {answer:.300}");
            }
            states.push(final_rows(&world, &this_call).await.replace(&this_call, "CALL"));
        }
        for (run, state) in states.iter().enumerate().skip(1) {
            assert_eq!(
                state, &states[0],
                "{name}: run {run} (shuffled, redelivered) differs from the order Vapi sends"
            );
        }
        // the report's list holds every spoken line of the call: each is stored
        let report: Value = serde_json::from_str(bodies.last().unwrap()).unwrap();
        let spoken = report["message"]["artifact"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| {
                matches!(m["role"].as_str(), Some("user" | "bot"))
                    && m["message"].as_str().is_some_and(|t| !t.is_empty())
            })
            .count() as i64;
        assert!(spoken > 0, "{name}");
        // with transcript messages too (whose artifact may not list their words), still once
        let stored = world.count(LINES, &format!("{call}-run0")).await;
        assert_eq!(stored, spoken, "{name}: every spoken line is stored, once");
    }
    world.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_report_never_came_is_ended_by_reconcile_from_vapis_api_in_the_rows_its_report_makes() {
    let world = World::new().await;
    let key = "vapi-private-key";
    let api = FakeVapiApi::start(key).await;
    let mut sequences: Vec<PathBuf> =
        std::fs::read_dir(fixtures().join("sequences")).unwrap().map(|e| e.unwrap().path()).collect();
    sequences.sort();
    // per SDK call sequence: one call gets every message, its twin all but the report, whose
    // call Vapi's API serves (calls/<sequence>.json: the SDK's `Call`; the first after a 429
    // and a 503)
    let mut twins = Vec::new();
    for (n, dir) in sequences.iter().enumerate() {
        let bodies: Vec<String> = json_files(dir).iter().map(|p| world.body(p)).collect();
        let call =
            serde_json::from_str::<Value>(&bodies[0]).unwrap()["message"]["call"]["id"].as_str().unwrap().to_string();
        let (reported, reconciled) = (format!("{call}-reported"), format!("{call}-reconciled"));
        for (i, body) in bodies.iter().enumerate() {
            assert_eq!(world.post(&body.replace(&call, &reported)).await.0, 200);
            if i + 1 < bodies.len() {
                assert_eq!(world.post(&body.replace(&call, &reconciled)).await.0, 200);
            }
        }
        let report = bodies.last().unwrap().replace(&call, &reconciled);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let api_call = world.body(&fixtures().join("calls").join(format!("{name}.json"))).replace(&call, &reconciled);
        api.serve(serde_json::from_str(&api_call).unwrap(), if n == 0 { &[429, 503] } else { &[] });
        twins.push((reported, reconciled, report));
    }
    // and a call Vapi's API does not know
    let status = world.body(&fixtures().join("status-update--in-progress.json"));
    let unknown_id =
        serde_json::from_str::<Value>(&status).unwrap()["message"]["call"]["id"].as_str().unwrap().to_string();
    assert_eq!(world.post(&status.replace(&unknown_id, "call-vapi-forgot")).await.0, 200);

    let url = format!("{} dbname={}", std::env::var("VOXANNE_DATABASE_URL").unwrap(), world.db_name);
    let config = ReconcileConfig::try_parse_from([
        "voxanne-relay reconcile",
        "--database-url",
        &url,
        "--vapi-api-url",
        &api.url,
        "--vapi-api-key",
        key,
        "--quiet",
        "0s",
        "--rate",
        "100",
    ])
    .unwrap();
    let first = reconcile::run(&config).await.unwrap();
    assert_eq!(first.listed, twins.len() as u64 + 1, "{first:?}");
    assert_eq!(first.outcomes.get("applied"), Some(&(twins.len() as u64)), "{first:?}");
    assert_eq!((first.not_found, first.failed), (1, 0), "{first:?}");
    let asked_first = api.requests().iter().filter(|id| **id == twins[0].1).count();
    assert_eq!(asked_first, 3, "a 429 and a 503 are retried");
    let mut rows = Vec::new();
    for (reported, reconciled, _) in &twins {
        let want = call_and_lines(&world, reported).await.replace(reported.as_str(), "CALL");
        let got = call_and_lines(&world, reconciled).await.replace(reconciled.as_str(), "CALL");
        assert_eq!(got, want, "the reconciled call {reconciled} differs from its reported twin");
        rows.push(final_rows(&world, reconciled).await);
    }

    // again: only the call Vapi does not know is still missing its end, and nothing changes
    let second = reconcile::run(&config).await.unwrap();
    assert_eq!((second.listed, second.not_found, second.outcomes.len()), (1, 1, 0), "{second:?}");
    // the report, delivered after all, is a duplicate of its reconciliation
    for (_, reconciled, report) in &twins {
        let (status, answer) = world.post(report).await;
        assert_eq!(status, 200);
        assert_eq!(serde_json::from_str::<Value>(&answer).unwrap()["outcome"], "duplicate", "{reconciled}: {answer}");
    }
    for ((_, reconciled, _), before) in twins.iter().zip(&rows) {
        assert_eq!(&final_rows(&world, reconciled).await, before, "{reconciled} changed");
    }

    // attack 26: an API answer for a call of another org than the one listed (a key of the
    // wrong Vapi account, a forged response) is refused, and nothing is written
    let twin = &twins[0].1;
    let mut foreign: Value =
        serde_json::from_str(&world.body(
            &fixtures().join("calls").join(format!("{}.json", sequences[0].file_name().unwrap().to_string_lossy())),
        ))
        .unwrap();
    foreign["id"] = "call-of-another-org".into();
    let refused = world
        .db
        .query_one("SELECT voxanne.reconcile_call($1, $2)", &[&Uuid::new_v4(), &foreign])
        .await
        .expect_err("another org's call");
    assert_eq!(refused.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{twin}: {refused}");
    assert_eq!(world.count(CALLS, "call-of-another-org").await, 0, "nothing written");

    // bad input names its parameter, with a stable SQLSTATE, and writes nothing
    for (org, call, code, named) in [
        (None, serde_json::json!({"id": "x"}), tokio_postgres::error::SqlState::NULL_VALUE_NOT_ALLOWED, "p_org_id"),
        (Some(world.org), serde_json::json!([1]), tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE, "p_call"),
    ] {
        let refused =
            world.db.query_one("SELECT voxanne.reconcile_call($1, $2)", &[&org, &call]).await.expect_err("bad input");
        assert_eq!(refused.code(), Some(&code), "{refused}");
        let message = refused.as_db_error().unwrap().message().to_string();
        assert!(message.contains(named), "{message}");
    }

    // a wrong API key ends the run
    let mut wrong = config.clone();
    wrong.vapi_api_key = "not-the-key".into();
    assert!(matches!(reconcile::run(&wrong).await, Err(reconcile::ReconcileError::Credentials(_))));
    world.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_or_shared_assistants_call_routes_by_its_token_and_a_missing_or_forged_one_is_refused_and_kept() {
    let world = World::new().await;
    let other_org = Uuid::new_v4();
    let other: String = world.db.query_one("SELECT voxanne.tenant_token($1)", &[&other_org]).await.unwrap().get(0);
    let (head, mac) = world.token.rsplit_once('.').unwrap();
    let flipped = format!("{head}.{}{}", if mac.starts_with('0') { '1' } else { '0' }, &mac[1..]);
    let resigned = other.replace(&other_org.to_string(), &world.org.to_string());
    let cases = [
        ("valid", world.token.clone(), 200, Some(world.org)),
        ("another org's valid token", other.clone(), 200, Some(other_org)),
        ("missing", String::new(), 422, None),
        ("forged signature", flipped, 422, None),
        ("another org's signature over this org's id", resigned, 422, None),
    ];
    // the token in a transient assistant's metadata, and in the overrides of a saved assistant
    // that every tenant shares (registered to none)
    for fixture in ["status-update--transient-assistant.json", "status-update--shared-assistant-overrides.json"] {
        let template = std::fs::read_to_string(fixtures().join(fixture)).unwrap();
        assert!(template.contains(TOKEN_PLACEHOLDER), "{fixture}");
        for (i, (what, token, want, org)) in cases.iter().enumerate() {
            let what = format!("{fixture}: {what}");
            let call = format!("{fixture}-{i}");
            let body = template.replace(TOKEN_PLACEHOLDER, token);
            let doc: Value = serde_json::from_str(&body).unwrap();
            let body = body.replace(doc["message"]["call"]["id"].as_str().unwrap(), &call);
            let (status, answer) = world.post(&body).await;
            assert_eq!(status, *want, "{what}: {answer:.300}");
            let a: Value = serde_json::from_str(&answer).unwrap();
            match org {
                Some(org) => assert_eq!(a["org_id"], org.to_string(), "{what}"),
                None => {
                    let kept: Option<Uuid> = world
                        .db
                        .query_one("SELECT org_id FROM voxanne.rejected_events WHERE vapi_call_id = $1", &[&call])
                        .await
                        .unwrap_or_else(|e| panic!("{what}: the body is kept: {e}"))
                        .get(0);
                    assert_eq!(kept, None, "{what}: the dead letter names no org");
                    assert!(!answer.contains(token.as_str()) || token.is_empty(), "{what}: the token is never echoed");
                }
            }
        }
        let refused =
            world.count(CALLS, &format!("{fixture}-3")).await + world.count(CALLS, &format!("{fixture}-4")).await;
        assert_eq!(refused, 0, "{fixture}");
    }
    world.drop().await;
}
