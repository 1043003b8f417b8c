//! Exactly-once under real concurrency: 16 connections fire the SAME message at the same moment
//! (a barrier releases them together), 100 rounds per function. Exactly one response applies,
//! the other 15 are duplicates, exactly one row of each kind is written, and no client ever
//! sees an error. And two different messages of the same utterance (a provisional transcript
//! line and the list that gives it) racing: it is stored once.

use std::sync::Arc;

use voxanne_it::*;

const CLIENTS: usize = 16;
const ROUNDS: usize = 100;

async fn setup() -> (tokio_postgres::Client, Org, Vec<Arc<tokio_postgres::Client>>) {
    let db = connect().await;
    let org = Org::create(&db).await;
    let clients = connect_many(CLIENTS).await;
    (db, org, clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_status_message_from_16_connections_applies_once() {
    let (db, org, clients) = setup().await;
    let mut calls = Vec::new();
    let mut stats = RaceStats::default();
    for round in 0..ROUNDS {
        let call = unique("call");
        let outcomes = all_ok(race_same(&clients, &org.ringing(&call)).await, &format!("round {round}"));
        stats.record(&outcomes);
        assert_one_applied_rest_duplicate(&outcomes, &org, &call, &format!("round {round}"));
        let applied = outcomes.iter().find(|o| o.applied).unwrap();
        assert_eq!(applied.event_id, format!("status:{call}:ringing"));
        assert_eq!(applied.raw["status"], "ringing", "{:?}", applied.raw);
        calls.push(call);
    }
    stats.assert_raced("ringing race");

    let rows =
        grouped(&db, "SELECT vapi_call_id, count(*) FROM voxanne.calls WHERE org_id = $1 GROUP BY 1", &[&org.id]).await;
    assert_each_once(&rows, &calls, "calls rows per vapi call id");
    let outbox = grouped(
        &db,
        "SELECT payload->>'vapi_call_id', count(*) FROM voxanne.outbox
         WHERE org_id = $1 AND topic = 'call.status' GROUP BY 1",
        &[&org.id],
    )
    .await;
    assert_each_once(&outbox, &calls, "outbox rows per call");
    assert_eq!(count_org_rows(&db, "outbox", &org).await, ROUNDS as i64, "outbox rows of the org");
    let ledger = grouped(
        &db,
        "SELECT event_id, count(*) FROM voxanne.processed_webhook_events WHERE org_id = $1 GROUP BY 1",
        &[&org.id],
    )
    .await;
    let events: Vec<String> = calls.iter().map(|c| format!("status:{c}:ringing")).collect();
    assert_each_once(&ledger, &events, "ledger rows");
    // The single row per call holds what the message said.
    let wrong = count(
        &db,
        "SELECT count(*) FROM voxanne.calls WHERE org_id = $1
         AND (status IS DISTINCT FROM 'ringing' OR status_event_id IS DISTINCT FROM 'status:' || vapi_call_id || ':ringing'
              OR customer_number IS DISTINCT FROM '+15550100' OR agent_id IS DISTINCT FROM $2)",
        &[&org.id, &org.agent_id],
    )
    .await;
    assert_eq!(wrong, 0, "calls rows whose content is not the message's");
}

/// Shared by the two transcript tests: `line_call(round)` names the call of each round's line.
async fn race_transcript_lines(
    org: &Org,
    clients: &[Arc<tokio_postgres::Client>],
    line_call: impl Fn(usize) -> String,
) -> Vec<(String, String, String)> {
    let mut lines = Vec::new();
    let mut stats = RaceStats::default();
    for round in 0..ROUNDS {
        let call = line_call(round);
        let text = format!("line {round}: {}", unique("words"));
        let msg = org.transcript(&call, "user", &text, at(20 + round as u64));
        let outcomes = all_ok(race_same(clients, &msg).await, &format!("round {round}"));
        stats.record(&outcomes);
        assert_one_applied_rest_duplicate(&outcomes, org, &call, &format!("round {round}"));
        let hash = outcomes.iter().find(|o| o.applied).unwrap().raw["content_hash"]
            .as_str()
            .expect("content_hash in the result")
            .to_string();
        for o in &outcomes {
            assert_eq!(o.raw["content_hash"].as_str(), Some(hash.as_str()), "{:?}", o.raw);
        }
        lines.push((call, text, hash));
    }
    stats.assert_raced("transcript race");
    lines
}

/// `ledger` is the number of ledger rows the org had before the lines (transcripts add none).
async fn assert_one_row_per_line(
    db: &tokio_postgres::Client,
    org: &Org,
    lines: &[(String, String, String)],
    ledger: i64,
) {
    let hashes: Vec<String> = lines.iter().map(|(_, _, h)| h.clone()).collect();
    let rows = grouped(
        db,
        "SELECT encode(content_hash, 'hex'), count(*) FROM voxanne.call_transcripts WHERE org_id = $1 GROUP BY 1",
        &[&org.id],
    )
    .await;
    assert_each_once(&rows, &hashes, "call_transcripts rows per line");
    let outbox = grouped(
        db,
        "SELECT payload->>'content_hash', count(*) FROM voxanne.outbox
         WHERE org_id = $1 AND topic = 'call.transcript' GROUP BY 1",
        &[&org.id],
    )
    .await;
    assert_each_once(&outbox, &hashes, "outbox rows per line");
    // Each stored line is the one that was sent, attached to its own call.
    for (call, text, hash) in lines {
        let ok = count(
            db,
            "SELECT count(*) FROM voxanne.call_transcripts t JOIN voxanne.calls c
               ON c.org_id = t.org_id AND c.id = t.call_id
             WHERE t.org_id = $1 AND encode(t.content_hash, 'hex') = $2 AND c.vapi_call_id = $3
               AND t.text = $4 AND t.role = 'user' AND t.transcript_type = 'final'",
            &[&org.id, hash, call, text],
        )
        .await;
        assert_eq!(ok, 1, "line {text:?} of {call} not stored as sent");
    }
    // Transcripts are deduplicated by their key, not by the ledger.
    assert_eq!(count_org_rows(db, "processed_webhook_events", org).await, ledger, "ledger rows: transcripts add none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_transcript_line_from_16_connections_is_stored_once() {
    let (db, org, clients) = setup().await;
    let call = unique("call");
    org.ringing(&call).outcome(&db).await.expect("ringing");
    let lines = race_transcript_lines(&org, &clients, |_| call.clone()).await;
    assert_one_row_per_line(&db, &org, &lines, 1).await;
    assert_eq!(call_rows(&db, &org, &call).await.calls, 1);
    assert_eq!(count_org_rows(&db, "calls", &org).await, 1);
}

/// The first message of a call can be a transcript line: then all 16 also race to create the
/// call row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_transcript_line_of_a_new_call_from_16_connections_is_stored_once() {
    let (db, org, clients) = setup().await;
    let calls: Vec<String> = (0..ROUNDS).map(|_| unique("call")).collect();
    let lines = race_transcript_lines(&org, &clients, |round| calls[round].clone()).await;
    assert_one_row_per_line(&db, &org, &lines, 0).await;
    let rows =
        grouped(&db, "SELECT vapi_call_id, count(*) FROM voxanne.calls WHERE org_id = $1 GROUP BY 1", &[&org.id]).await;
    assert_each_once(&rows, &calls, "calls rows per vapi call id");
}

#[derive(Clone, Copy, PartialEq)]
enum End {
    Report,
    StatusEnded,
}

async fn race_ends(end: End, existing_call: bool) {
    let (db, org, clients) = setup().await;
    let mut calls = Vec::new();
    let mut stats = RaceStats::default();
    let (event_prefix, topic) = match end {
        End::Report => ("report", "call.ended"),
        End::StatusEnded => ("status", "call.status"),
    };
    let event_of = |call: &str| match end {
        End::Report => format!("report:{call}"),
        End::StatusEnded => format!("status:{call}:ended"),
    };
    for round in 0..ROUNDS {
        let call = unique("call");
        if existing_call {
            assert!(org.ringing(&call).outcome(&db).await.expect("ringing").applied);
        }
        let report = Report::for_call(&call);
        let msg = match end {
            End::Report => org.report(&call, &report),
            End::StatusEnded => org.status_ended(&call, &report.ended_reason),
        };
        let outcomes = all_ok(race_same(&clients, &msg).await, &format!("round {round}"));
        stats.record(&outcomes);
        assert_one_applied_rest_duplicate(&outcomes, &org, &call, &format!("round {round}"));
        let applied = outcomes.iter().find(|o| o.applied).unwrap();
        assert_eq!(applied.event_id, event_of(&call));

        let row = db
            .query_one(
                "SELECT status, status_event_id, ended_reason, summary, recording_url, cost::text, duration_seconds::text
                 FROM voxanne.calls WHERE org_id = $1 AND vapi_call_id = $2",
                &[&org.id, &call],
            )
            .await
            .expect("the call row");
        assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("ended"));
        assert_eq!(row.get::<_, Option<String>>(1), Some(event_of(&call)));
        assert_eq!(row.get::<_, Option<String>>(2), Some(report.ended_reason.clone()));
        if end == End::Report {
            assert_eq!(row.get::<_, Option<String>>(3), Some(report.summary.clone()));
            assert_eq!(row.get::<_, Option<String>>(4), Some(report.recording_url.clone()));
            assert_eq!(row.get::<_, Option<String>>(5), Some(report.cost.clone()));
            assert_eq!(row.get::<_, Option<String>>(6), Some(report.duration_seconds.clone()));
        }
        calls.push(call);
    }
    stats.assert_raced(&format!("{event_prefix} race, existing call: {existing_call}"));

    let rows =
        grouped(&db, "SELECT vapi_call_id, count(*) FROM voxanne.calls WHERE org_id = $1 GROUP BY 1", &[&org.id]).await;
    assert_each_once(&rows, &calls, "calls rows per vapi call id");
    let ended = grouped(
        &db,
        "SELECT payload->>'vapi_call_id', count(*) FROM voxanne.outbox
         WHERE org_id = $1 AND topic = $2 AND payload->>'status' = 'ended' GROUP BY 1",
        &[&org.id, &topic],
    )
    .await;
    assert_each_once(&ended, &calls, "outbox rows of the end per call");
    let marks = grouped(
        &db,
        "SELECT event_id, count(*) FROM voxanne.processed_webhook_events
         WHERE org_id = $1 AND (event_id LIKE 'report:%' OR event_id LIKE 'status:%:ended') GROUP BY 1",
        &[&org.id],
    )
    .await;
    let events: Vec<String> = calls.iter().map(|c| event_of(c)).collect();
    assert_each_once(&marks, &events, "ledger rows of the end");
    // Nothing else was written: one outbox and one ledger row per ringing, if any.
    let before = if existing_call { ROUNDS as i64 } else { 0 };
    assert_eq!(count_org_rows(&db, "outbox", &org).await, ROUNDS as i64 + before, "outbox rows of the org");
    assert_eq!(
        count_org_rows(&db, "processed_webhook_events", &org).await,
        ROUNDS as i64 + before,
        "ledger rows of the org"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_report_for_an_existing_call_from_16_connections_applies_once() {
    race_ends(End::Report, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_report_for_an_unseen_call_from_16_connections_applies_once() {
    race_ends(End::Report, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_status_ended_for_an_existing_call_from_16_connections_applies_once() {
    race_ends(End::StatusEnded, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_status_ended_for_an_unseen_call_from_16_connections_applies_once() {
    race_ends(End::StatusEnded, false).await;
}

/// A transcript message its artifact does not list (a provisional line, README "Transcripts")
/// and the conversation-update that lists the same utterance, each from two connections at the
/// same moment, 100 rounds (half on a call not seen yet): every round ends with the utterance
/// stored once, as the listed line, and a provisional line that was stored first is named in
/// the listed line's announcement. Without the line lock both statements miss each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provisional_line_and_the_list_of_its_utterance_racing_store_it_once() {
    let (db, org, clients) = setup().await;
    let clients = &clients[..4];
    let mut stats = RaceStats::default();
    let mut replaced = 0;
    for round in 0..ROUNDS {
        let call = unique("call");
        if round % 2 == 0 {
            org.ringing(&call).outcome(&db).await.unwrap();
        }
        let words = format!("round {round}: yes");
        let route = serde_json::json!({"id": call, "assistantId": org.assistant_id});
        let sent = Msg::new("handle_vapi_message").jsonb(
            "p_body",
            &serde_json::json!({"message": {"type": "transcript", "transcriptType": "final", "role": "user",
                "transcript": words, "timestamp": 1_795_600_811_700_i64, "call": route}}),
        );
        let listed = Msg::new("handle_vapi_message").jsonb(
            "p_body",
            &serde_json::json!({"message": {"type": "conversation-update", "call": route, "messages": [
                {"role": "user", "message": words, "time": 1_795_600_810_500_i64, "endTime": 1_795_600_811_400_i64}]}}),
        );
        let what = format!("round {round}");
        let outcomes = all_ok(race(clients, vec![sent.clone(), listed.clone(), sent, listed]).await, &what);
        stats.record(&outcomes);
        let lines = grouped(
            &db,
            "SELECT t.provisional::text || ' ' || (extract(epoch FROM t.spoken_at) * 1000)::bigint, count(*)
             FROM voxanne.call_transcripts t
             JOIN voxanne.calls c ON c.org_id = t.org_id AND c.id = t.call_id
             WHERE t.org_id = $1 AND c.vapi_call_id = $2 GROUP BY 1",
            &[&org.id, &call],
        )
        .await;
        let listed_once = std::collections::HashMap::from([("false 1795600810500".to_string(), 1)]);
        assert_eq!(lines, listed_once, "{what}: {outcomes:?}");
        let sent_applied = outcomes.iter().step_by(2).filter(|o| o.applied).count();
        assert!(sent_applied <= 1, "{what}: {outcomes:?}");
        replaced += sent_applied;
    }
    stats.assert_raced("provisional and listed race");
    // every provisional line stored was replaced, and its replacement says so
    let named = count(
        &db,
        "SELECT count(*) FROM voxanne.outbox WHERE org_id = $1 AND topic = 'call.transcript' AND payload ? 'replaces'",
        &[&org.id],
    )
    .await;
    assert_eq!(named, replaced as i64);
    eprintln!("provisional lines stored first, then replaced: {replaced} of {ROUNDS} rounds");
}

/// The dead letter keeps one row per distinct body: a sender's retries of a refused body racing
/// each other (16 connections at once, 20 rounds) count on one row, none is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_refused_body_from_16_connections_is_one_dead_letter_row_counted_16_times() {
    let (db, _, clients) = setup().await;
    for round in 0..20 {
        let body = format!(
            r#"{{"message":{{"type":"status-update","status":"dialing","call":{{"id":"{}"}}}}}}"#,
            unique("dl")
        );
        let barrier = Arc::new(tokio::sync::Barrier::new(clients.len()));
        let tasks = clients.iter().map(|client| {
            let (client, barrier, body) = (client.clone(), barrier.clone(), body.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                client
                    .query_one("SELECT voxanne.record_rejected_event($1, '22023', 'refused')", &[&body])
                    .await
                    .map(|r| r.get::<_, i64>(0))
            })
        });
        let ids: Vec<i64> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(|t| t.unwrap().unwrap_or_else(|e| panic!("round {round}: {}", describe(&e))))
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "round {round}: every delivery answers the one row: {ids:?}");
        let row = db
            .query_one("SELECT count(*), max(times_seen) FROM voxanne.rejected_events WHERE body = $1", &[&body])
            .await
            .unwrap();
        assert_eq!((row.get::<_, i64>(0), row.get::<_, i32>(1)), (1, CLIENTS as i32), "round {round}");
    }
}
