//! `purge_processed_events`: the idempotency ledger is kept only as long as senders retry
//! (seed #13), and deleted in bounded batches so no single statement holds millions of locks.

use pgrx::datum::Interval;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

use crate::error::VoxError;
use crate::events::defaulted;
use crate::plans::{Statement, INT8, INTERVAL};

const BATCH: i64 = 10_000;

/// Vapi retries for minutes, not hours; purging younger rows would let a late retry apply twice.
const MIN_RETENTION_MICROS: i128 = 3_600 * 1_000_000;

static PURGE_BATCH: Statement = Statement {
    sql: "DELETE FROM voxanne.processed_webhook_events
          WHERE ctid = ANY (ARRAY(
              SELECT e.ctid FROM voxanne.processed_webhook_events AS e
              WHERE e.received_at < pg_catalog.now() - $1
              LIMIT $2))",
    arg_types: &[INTERVAL, INT8],
};

pub fn purge(older_than: Interval) -> Result<i64, VoxError> {
    if older_than.as_micros() < MIN_RETENTION_MICROS {
        return Err(VoxError::invalid("p_older_than", older_than.to_string(), "must be at least 1 hour"));
    }
    Spi::connect_mut(|client| {
        let mut total = 0i64;
        loop {
            let deleted = PURGE_BATCH.run(client, &[older_than.into(), BATCH.into()])?.len() as i64;
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
    Ok(purge(defaulted("p_older_than", p_older_than)?)?)
}
