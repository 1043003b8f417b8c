//! Retention: the idempotency ledger is kept only as long as senders retry (seed #13), the
//! outbox as long as its readers need it. Both are deleted in bounded batches so no single
//! statement holds millions of row locks.

use pgrx::datum::Interval;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::domain::defaulted;
use crate::error::VoxError;
use crate::plans::Statement;

const BATCH: i64 = 10_000;

/// Vapi retries for minutes, not hours; purging younger ledger rows would let a late retry
/// apply twice, and younger outbox rows may not have reached Realtime yet.
const MIN_RETENTION_MICROS: i128 = 3_600 * 1_000_000;

static PURGE_BATCH: Statement = Statement::new(
    "DELETE FROM voxanne.processed_webhook_events
          WHERE ctid = ANY (ARRAY(
              SELECT e.ctid FROM voxanne.processed_webhook_events AS e
              WHERE e.received_at < pg_catalog.now() - $1
              LIMIT $2))",
);

/// Outbox rows older than $1 that every registered consumer has acknowledged.
static PURGE_OUTBOX_BATCH: Statement = Statement::new(
    "DELETE FROM voxanne.outbox
          WHERE ctid = ANY (ARRAY(
              SELECT o.ctid FROM voxanne.outbox AS o
              WHERE o.created_at < pg_catalog.now() - $1
                AND (o.xid, o.id) <= ALL (SELECT c.last_xid, c.last_id FROM voxanne.outbox_consumers AS c)
              LIMIT $2))",
);

fn purge(batch: &'static Statement, older_than: Option<Interval>) -> Result<i64, VoxError> {
    let older_than = defaulted("p_older_than", older_than)?;
    if older_than.as_micros() < MIN_RETENTION_MICROS {
        return Err(VoxError::invalid("p_older_than", older_than.to_string(), "must be at least 1 hour"));
    }
    Spi::connect_mut(|client| {
        let mut total = 0i64;
        loop {
            let deleted = batch.run(client, &[older_than.into(), BATCH.into()])?.len() as i64;
            total += deleted;
            if deleted < BATCH {
                return Ok(total);
            }
        }
    })
}

/// Delete ledger rows older than `p_older_than`; returns how many were deleted.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn purge_processed_events(p_older_than: default!(Option<Interval>, "'30 days'")) -> Result<i64, ErrorReport> {
    Ok(purge(&PURGE_BATCH, p_older_than)?)
}

/// Delete outbox rows older than `p_older_than` that no registered consumer still needs.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn purge_outbox(p_older_than: default!(Option<Interval>, "'7 days'")) -> Result<i64, ErrorReport> {
    Ok(purge(&PURGE_OUTBOX_BATCH, p_older_than)?)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::testing::{assert_refused, count, error_of, org_with_agent};

    #[pg_test]
    fn purge_deletes_only_rows_older_than_the_interval_across_batches() {
        let org = org_with_agent("asst_r");
        // 25,000 old rows cross two batch boundaries; 10 recent ones must survive
        Spi::run_with_args(
            "INSERT INTO voxanne.processed_webhook_events (org_id, event_id, event_type, received_at)
             SELECT $1::uuid, 'old:' || g, 'status-update', now() - interval '31 days'
             FROM generate_series(1, 25000) g;
             INSERT INTO voxanne.processed_webhook_events (org_id, event_id, event_type, received_at)
             SELECT $1::uuid, 'new:' || g, 'status-update', now() - interval '29 days'
             FROM generate_series(1, 10) g",
            &[org.as_str().into()],
        )
        .unwrap();
        let purged: i64 = Spi::get_one("SELECT voxanne.purge_processed_events()").unwrap().unwrap();
        assert_eq!(purged, 25_000);
        let left = count(
            "SELECT count(*) FROM voxanne.processed_webhook_events WHERE org_id = $1::uuid AND event_id LIKE 'new:%'",
            &[org.as_str().into()],
        );
        assert_eq!(left, 10);
        assert_eq!(Spi::get_one::<i64>("SELECT voxanne.purge_processed_events()").unwrap(), Some(0));
    }

    #[pg_test]
    fn purge_refuses_a_window_shorter_than_retries_last() {
        let err = error_of("SELECT voxanne.purge_processed_events('5 minutes')");
        assert!(err.starts_with("22023") && err.contains("p_older_than"), "{err}");
    }

    #[pg_test]
    fn purge_refuses_a_null_window() {
        assert_refused(&[("SELECT voxanne.purge_processed_events(NULL)", "22004", "p_older_than")]);
    }
}
