//! Different messages of one call arriving at once (Vapi sends them from several workers): the
//! call converges to the same final row whatever the interleaving, and nobody gets an error.

use std::time::SystemTime;

use voxanne_it::*;

const CALLS: usize = 50;
const STATUS_ENDED_REASON: &str = "status-update-reason";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_messages_of_a_new_call_at_once_converge_to_the_reported_end() {
    let db = connect().await;
    let org = Org::create(&db).await;
    let clients = connect_many(5).await;

    let (mut raced_calls, mut raced_pairs) = (0, 0);
    for round in 0..CALLS {
        let call = unique("call");
        let report = Report::for_call(&call);
        let line = format!("hello from {call}");
        let msgs = vec![
            org.status(&call, "ringing", at(0)),
            org.status(&call, "in-progress", at(5)), // its started_at loses to the report's
            org.transcript(&call, "user", &line, at(12)),
            org.report(&call, &report),
            org.status_ended(&call, STATUS_ENDED_REASON), // its ended_reason loses too
        ];
        let outcomes = all_ok(race(&clients, msgs).await, &format!("call {round} ({call})"));
        let pairs = overlapping_pairs(&outcomes);
        raced_calls += usize::from(pairs > 0);
        raced_pairs += pairs;
        let [ringing, in_progress, transcript, report_out, status_ended] = &outcomes[..] else { unreachable!() };

        // Every response names this org and call, and the same call row.
        let row_id: i64 = db
            .query_one("SELECT id FROM voxanne.calls WHERE org_id = $1 AND vapi_call_id = $2", &[&org.id, &call])
            .await
            .expect("exactly one calls row")
            .get(0);
        for o in &outcomes {
            assert_eq!(o.org_id, org.id, "{:?}", o.raw);
            assert_eq!(o.vapi_call_id, call, "{:?}", o.raw);
            assert_eq!(o.call_id, Some(row_id), "call id in {:?}", o.raw);
        }
        // First delivery of each: nothing is a duplicate. The report and the line always apply;
        // a status may find the call already further along (stale).
        assert!(report_out.applied, "report: {:?}", report_out.raw);
        assert!(transcript.applied, "transcript: {:?}", transcript.raw);
        for o in [ringing, in_progress, status_ended] {
            assert!(o.outcome == "applied" || o.outcome == "stale", "status message: {:?}", o.raw);
            assert_eq!(o.applied, o.outcome == "applied", "{:?}", o.raw);
        }

        let row = db
            .query_one(
                "SELECT status, status_event_id, ended_reason, started_at, ended_at,
                        duration_seconds::text, cost::text, summary, transcript, recording_url,
                        customer_number, call_type
                 FROM voxanne.calls WHERE org_id = $1 AND vapi_call_id = $2",
                &[&org.id, &call],
            )
            .await
            .expect("the call row");
        let text = |i: usize| row.get::<_, Option<String>>(i);
        let ctx =
            format!("call {round} ({call}), responses {:#?}", outcomes.iter().map(|o| &o.raw).collect::<Vec<_>>());
        assert_eq!(text(0).as_deref(), Some("ended"), "status: {ctx}");
        let status_event = text(1).unwrap_or_default();
        assert!(
            status_event == format!("status:{call}:ended") || status_event == format!("report:{call}"),
            "status_event_id {status_event:?}: {ctx}"
        );
        assert_eq!(text(2), Some(report.ended_reason.clone()), "ended_reason: {ctx}");
        assert_eq!(row.get::<_, Option<SystemTime>>(3), Some(report.started_at), "started_at: {ctx}");
        assert_eq!(row.get::<_, Option<SystemTime>>(4), Some(report.ended_at), "ended_at: {ctx}");
        assert_eq!(text(5), Some(report.duration_seconds.clone()), "duration: {ctx}");
        assert_eq!(text(6), Some(report.cost.clone()), "cost: {ctx}");
        assert_eq!(text(7), Some(report.summary.clone()), "summary: {ctx}");
        assert_eq!(text(8), Some(report.transcript.clone()), "transcript: {ctx}");
        assert_eq!(text(9), Some(report.recording_url.clone()), "recording_url: {ctx}");
        assert_eq!(text(10).as_deref(), Some("+15550100"), "customer_number: {ctx}");
        assert_eq!(text(11).as_deref(), Some("inboundPhoneCall"), "call_type: {ctx}");

        let rows = call_rows(&db, &org, &call).await;
        assert_eq!(rows.calls, 1, "{ctx}");
        assert_eq!(rows.transcripts, 1, "{ctx}");
        let stored_line = count(
            &db,
            "SELECT count(*) FROM voxanne.call_transcripts WHERE org_id = $1 AND call_id = $2 AND text = $3",
            &[&org.id, &row_id, &line],
        )
        .await;
        assert_eq!(stored_line, 1, "the line as sent: {ctx}");
        // Every message is marked once (transcripts have no ledger row) …
        assert_eq!(rows.ledger, 4, "ledger rows: {ctx}");
        // … and exactly the applied ones wrote an outbox row.
        let applied = outcomes.iter().filter(|o| o.applied).count() as i64;
        assert_eq!(rows.outbox, applied, "outbox rows vs applied responses: {ctx}");
        let topics = grouped(
            &db,
            "SELECT topic, count(*) FROM voxanne.outbox WHERE org_id = $1 AND payload->>'vapi_call_id' = $2 GROUP BY 1",
            &[&org.id, &call],
        )
        .await;
        assert_eq!(topics.get("call.ended"), Some(&1), "call.ended rows: {ctx}");
        assert_eq!(topics.get("call.transcript"), Some(&1), "call.transcript rows: {ctx}");
    }
    eprintln!(
        "{raced_calls} of {CALLS} calls had messages executing at the same time ({raced_pairs} overlapping pairs)"
    );
    assert!(raced_calls > 0, "no call ever had its messages really racing");
    assert_eq!(count_org_rows(&db, "calls", &org).await, CALLS as i64);
    assert_eq!(count_org_rows(&db, "call_transcripts", &org).await, CALLS as i64);
}

/// 16 different lines of a call nobody has seen yet, at once: all race to create the call row,
/// every line is stored, and the call exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_different_lines_of_a_new_call_at_once_are_all_stored() {
    const ROUNDS: usize = 50;
    let db = connect().await;
    let org = Org::create(&db).await;
    let clients = connect_many(16).await;
    let mut raced = 0;
    for round in 0..ROUNDS {
        let call = unique("call");
        let msgs: Vec<Msg> = (0..clients.len())
            .map(|i| {
                org.transcript(&call, if i % 2 == 0 { "user" } else { "assistant" }, &format!("line {i}"), at(i as u64))
            })
            .collect();
        let outcomes = all_ok(race(&clients, msgs).await, &format!("round {round} ({call})"));
        raced += usize::from(overlapping_pairs(&outcomes) > 0);
        let call_id = outcomes[0].call_id;
        for o in &outcomes {
            assert!(o.applied, "round {round}: every line is new: {:?}", o.raw);
            assert_eq!(o.call_id, call_id, "round {round}: one call: {:?}", o.raw);
        }
        let rows = call_rows(&db, &org, &call).await;
        assert_eq!(rows, CallRows { calls: 1, outbox: 16, ledger: 0, transcripts: 16 }, "round {round} ({call})");
    }
    assert!(raced > 0, "no round really raced");
}

/// Every message of a new call delivered three times, all fifteen at once: per message exactly
/// one delivery takes effect (applied, or stale for a status the call is already past) and the
/// other two are duplicates; the call still converges to the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_of_a_new_call_delivered_three_times_at_once_takes_effect_once() {
    const COPIES: usize = 3;
    let db = connect().await;
    let org = Org::create(&db).await;
    let clients = connect_many(5 * COPIES).await;
    for round in 0..CALLS {
        let call = unique("call");
        let report = Report::for_call(&call);
        let distinct = [
            org.status(&call, "ringing", at(0)),
            org.status(&call, "in-progress", at(5)),
            org.transcript(&call, "user", "hello", at(12)),
            org.report(&call, &report),
            org.status_ended(&call, STATUS_ENDED_REASON),
        ];
        // Interleaved, so copies of one message are on different clients.
        let msgs: Vec<Msg> = (0..COPIES).flat_map(|_| distinct.iter().cloned()).collect();
        let outcomes = all_ok(race(&clients, msgs).await, &format!("call {round} ({call})"));
        let ctx = format!("call {round} ({call}): {:#?}", outcomes.iter().map(|o| &o.raw).collect::<Vec<_>>());
        let mut applied = 0;
        for (m, name) in ["ringing", "in-progress", "transcript", "report", "status ended"].iter().enumerate() {
            let copies: Vec<&Outcome> = (0..COPIES).map(|c| &outcomes[c * 5 + m]).collect();
            let effective: Vec<&&Outcome> = copies.iter().filter(|o| !o.is_duplicate()).collect();
            assert_eq!(effective.len(), 1, "{name}: one delivery takes effect: {ctx}");
            assert!(effective[0].outcome == "applied" || effective[0].outcome == "stale", "{name}: {ctx}");
            if m == 2 || m == 3 {
                assert!(effective[0].applied, "{name} always applies: {ctx}");
            }
            applied += usize::from(effective[0].applied);
            for o in &copies {
                assert_eq!(o.event_id, effective[0].event_id, "{name}: {ctx}");
            }
        }
        let rows = call_rows(&db, &org, &call).await;
        assert_eq!(rows, CallRows { calls: 1, outbox: applied as i64, ledger: 4, transcripts: 1 }, "{ctx}");
        let row = db
            .query_one(
                "SELECT status, ended_reason, summary, started_at FROM voxanne.calls WHERE org_id = $1 AND vapi_call_id = $2",
                &[&org.id, &call],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "ended", "{ctx}");
        assert_eq!(row.get::<_, String>(1), report.ended_reason, "{ctx}");
        assert_eq!(row.get::<_, String>(2), report.summary, "{ctx}");
        assert_eq!(row.get::<_, SystemTime>(3), report.started_at, "{ctx}");
    }
}
