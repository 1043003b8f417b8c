//! pg_cron really runs the retention functions: a job scheduled from the cron database into
//! the test database purges the ledger and the outbox (pg_cron 1.4: minute granularity, so
//! this waits for the next minute boundary, at most ~75 s).

use std::time::Duration;

use voxanne_it::*;

#[tokio::test]
async fn pg_cron_runs_the_scheduled_purges() {
    let db = connect().await;
    let cron_db: String = db.query_one("SHOW cron.database_name", &[]).await.expect("pg_cron is preloaded").get(0);
    let test_db: String = db.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    let org = Org::create(&db).await;
    db.execute(
        "INSERT INTO voxanne.processed_webhook_events (org_id, event_id, event_type, received_at)
         SELECT $1, 'cron-old-' || g, 'status-update', now() - interval '40 days' FROM generate_series(1, 50) g",
        &[&org.id],
    )
    .await
    .unwrap();

    let cron = connect_db(&cron_db).await;
    cron.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_cron").await.unwrap();
    let job = unique("voxanne-purge");
    let command = "SELECT voxanne.purge_processed_events(); SELECT voxanne.purge_outbox();";
    let jobid: i64 = cron
        .query_one("SELECT cron.schedule_in_database($1, '* * * * *', $2, $3)", &[&job, &command, &test_db])
        .await
        .expect("schedule")
        .get(0);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(80);
    let status = loop {
        let row = cron
            .query_opt(
                "SELECT status, return_message FROM cron.job_run_details
                 WHERE jobid = $1 AND status IN ('succeeded', 'failed') ORDER BY runid LIMIT 1",
                &[&jobid],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            break (row.get::<_, String>(0), row.get::<_, Option<String>>(1));
        }
        assert!(tokio::time::Instant::now() < deadline, "the job never ran");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    cron.query_one("SELECT cron.unschedule($1::bigint)", &[&jobid]).await.unwrap();
    assert_eq!(status.0, "succeeded", "{:?}", status.1);
    let left = count(&db, "SELECT count(*) FROM voxanne.processed_webhook_events WHERE org_id = $1", &[&org.id]).await;
    assert_eq!(left, 0, "the scheduled purge deleted the 40-day-old ledger rows");
}
