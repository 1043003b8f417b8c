//! How the outbox wakes listeners. Every applied effect writes its outbox row in the caller's
//! transaction; `voxanne.notify` decides whether it also sends `NOTIFY voxanne_outbox`.
//!
//! NOTIFY is transactional, which is why it is the default wake-up, but PostgreSQL serializes
//! the commits of notifying transactions (a database-wide lock from pre-commit until the end of
//! commit, async.c `PreCommit_Notify`), so concurrent webhooks commit one at a time. Supabase
//! Realtime reads the outbox from WAL and `outbox_read` consumers can poll: both can run with
//! `voxanne.notify = off` and keep group commit (bench/RESULTS.md measures the difference).

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

static NOTIFY: GucSetting<bool> = GucSetting::<bool>::new(true);

pub fn init() {
    GucRegistry::define_bool_guc(
        c"voxanne.notify",
        c"Send NOTIFY voxanne_outbox for each applied effect.",
        c"Off keeps group commit under concurrency; Realtime and outbox_read consumers do not need it.",
        &NOTIFY,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// Whether this transaction's applied effects notify `voxanne_outbox`.
pub fn notify() -> bool {
    NOTIFY.get()
}
