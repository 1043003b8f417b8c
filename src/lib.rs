//! voxanne_ext: Vapi webhook handling inside PostgreSQL.
//!
//! Each webhook is handled in one transaction: the idempotency mark, the writes and the outbox
//! row commit together, scoped by the org its ids route to (src/routing.rs).

// Entry points return pgrx's ErrorReport (it keeps the SQLSTATE); its size is pgrx's choice.
#![allow(clippy::result_large_err)]

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

// shared pieces
mod domain;
mod error;
mod jsonb;
mod notify;
mod outcome;
mod plans;
mod routing;

// one module per kind of message, each with its SQL entry point and its statement
mod calls;
mod ending;
mod status;
mod transcript;
mod vapi;

// the rest of the SQL API
mod agents;
mod credentials;
mod directory;
mod rejected;
mod retention;
mod tenancy;
mod tenant_token;

#[cfg(any(test, feature = "pg_test"))]
mod testing;

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // pgrx puts a Rust backtrace into the DETAIL of any error raised under it (a statement
    // timeout inside a kept statement too) when the server's environment has RUST_BACKTRACE;
    // no backtrace may reach a client. std reads this once, at the first capture, which is
    // later; a backend is one thread.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    notify::init();
}

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/outbox.sql", name = "outbox");
extension_sql_file!("../sql/reconcile.sql", name = "reconcile", requires = [vapi::handle_vapi_message]);
extension_sql_file!("../sql/security.sql", name = "security", finalize);

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
