//! The drain: one task that replays the spool into the database in arrival order, one message
//! at a time, through the same statement as a live webhook. An entry is settled when its
//! statement committed (applied, or answered duplicate: it had been applied before a crash) or
//! when the database refused it as bad input and it went to the dead letter, as a live refusal
//! does; until then it is tried again with backoff. A segment is deleted once all its entries
//! are settled.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::segment::{self, Entry};
use super::Spool;
use crate::db::{Answer, Db, DbError};
use crate::metrics;

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A spooled message whose statement times out this many times in a row goes to the dead
/// letter, so that one message cannot hold up every one behind it.
const TIMEOUTS_MAX: u32 = 3;
/// SQLSTATE query_canceled: the statement timeout.
const STATEMENT_TIMEOUT: &str = "57014";
/// The dead letter's code for a message whose tenant credential was revoked in the meantime.
const REVOKED: &str = "28000";

/// Learns the reply-expecting types, then drains for ever, until `stop` turns true.
pub async fn run(spool: Arc<Spool>, db: Db, mut stop: watch::Receiver<bool>) {
    let work = async {
        learn_reply_types(&spool, &db).await;
        loop {
            let seq = spool.next_segment().await;
            drain_segment(&spool, &db, seq).await;
        }
    };
    tokio::select! {
        () = work => {}
        _ = stop.wait_for(|stop| *stop) => {}
    }
}

/// Doubling pauses, up to [`BACKOFF_MAX`]; the first failure of a run is logged as a warning.
struct Backoff {
    next: Duration,
    failures: u32,
}

impl Backoff {
    fn new() -> Self {
        Self { next: BACKOFF_FIRST, failures: 0 }
    }

    async fn wait(&mut self, what: &str, error: &(dyn std::fmt::Display + Sync)) {
        if self.failures == 0 {
            tracing::warn!(error = %error, "spool: {what}; retrying with backoff");
        } else {
            tracing::debug!(error = %error, attempt = self.failures + 1, "spool: {what}");
        }
        self.failures += 1;
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(BACKOFF_MAX);
    }
}

/// Asks the database which message types expect a reply (never spooled) until it answers.
async fn learn_reply_types(spool: &Spool, db: &Db) {
    let mut backoff = Backoff::new();
    loop {
        match db.reply_message_types().await {
            Ok(types) => {
                if let Err(e) = spool.set_reply_types(types) {
                    tracing::warn!(error = %e, "spool: could not keep the reply-expecting types on disk");
                }
                return;
            }
            Err(e) => backoff.wait("cannot learn the reply-expecting message types yet", &e).await,
        }
    }
}

async fn drain_segment(spool: &Spool, db: &Db, seq: u64) {
    let mut backoff = Backoff::new();
    let bytes = loop {
        match spool.read(seq).await {
            Ok(bytes) => break bytes,
            Err(e) => backoff.wait("cannot read a segment", &e).await,
        }
    };
    let scan = segment::scan(&bytes);
    if let Some(damage) = scan.damage {
        // an append this process failed (its sender got a 503); open() cuts such tails off
        tracing::warn!(seq, offset = scan.valid_len, damage = damage.describe(), "spool: damaged record skipped");
        metrics::record_spool_damaged();
    }
    for (i, entry) in scan.entries.iter().enumerate() {
        let outcome = settle(spool, db, entry).await;
        metrics::record_spool_drained(outcome);
        spool.settled(seq, scan.entries.get(i + 1).map(|next| next.arrived_ms));
    }
    let mut backoff = Backoff::new();
    while let Err(e) = spool.remove(seq).await {
        backoff.wait("cannot delete a drained segment", &e).await;
    }
}

/// Applies one entry, or puts it in the dead letter; returns the outcome label.
async fn settle(spool: &Spool, db: &Db, entry: &Entry<'_>) -> &'static str {
    let mut backoff = Backoff::new();
    let mut timeouts = 0;
    loop {
        let (code, message) = match db.handle_vapi_message(entry.body, entry.credential).await {
            Ok(answer) => {
                spool.database_reachable();
                return Answer::of(&answer).outcome_label();
            }
            Err(DbError::Permanent { code, message } | DbError::Forbidden { code, message }) => (code, message),
            Err(DbError::Unauthorized) => (
                REVOKED.to_string(),
                "the tenant credential that verified this spooled message was revoked before it was applied".into(),
            ),
            Err(DbError::Transient { code, source }) if code == STATEMENT_TIMEOUT => {
                timeouts += 1;
                if timeouts < TIMEOUTS_MAX {
                    backoff.wait("a spooled message timed out", &source).await;
                    continue;
                }
                (code, format!("the statement timed out {TIMEOUTS_MAX} times"))
            }
            Err(e) => {
                backoff.wait("the database cannot take spooled messages yet", &e).await;
                continue;
            }
        };
        match db.record_rejected_event(entry.body, &code, &message).await {
            Ok(id) => {
                tracing::info!(sqlstate = %code, message = %message, rejected_event_id = id, "spool: refused; body stored");
                return DEAD_LETTERED;
            }
            Err(e) => backoff.wait("cannot store a refused spooled message", &e).await,
        }
    }
}

/// The drained outcome of an entry the database refused.
pub const DEAD_LETTERED: &str = "dead_lettered";
