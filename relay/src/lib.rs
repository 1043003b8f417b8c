//! voxanne-relay: receives Vapi webhooks over HTTP, authenticates them, and hands each raw body to
//! `voxanne.handle_vapi_message` in PostgreSQL, where all the work happens in one transaction.
//! The relay's own job is the HTTP edge: authentication, size and syntax checks, mapping database
//! outcomes to status codes Vapi understands, one transparent retry of transient failures,
//! metrics and logs.

pub mod app;
pub mod config;
pub mod db;
pub mod error;
pub mod metrics;
pub mod verify;
pub mod webhook;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

pub use app::{app, AppState};
pub use config::Config;
pub use error::RelayError;

/// How often the metrics recorder's housekeeping runs.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// The async runtime `config.worker_threads` asks for: one thread is a current-thread runtime
/// (no cross-thread wake-ups per request), more is a multi-thread one. Both binaries use it, so
/// the tests that run the relay as a process run it on the runtime it ships with.
pub fn runtime(config: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    match config.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    }
}

/// Serves `app(state)` on `listener` until `shutdown` completes, then stops accepting, lets the
/// requests in flight finish, and closes the database pool.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = state.metrics.clone();
    let upkeep = tokio::spawn(async move {
        let mut every = tokio::time::interval(METRICS_UPKEEP);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
    let served = axum::serve(listener, app(state.clone())).with_graceful_shutdown(shutdown).await;
    upkeep.abort();
    state.db.close();
    tracing::info!("stopped; database pool closed");
    served
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use tokio::runtime::RuntimeFlavor;

    use super::*;

    fn flavor_for(worker_threads: &str) -> RuntimeFlavor {
        let config = Config::try_parse_from([
            "voxanne-relay",
            "--database-url",
            "host=127.0.0.1 port=1 user=x",
            "--webhook-secrets",
            "s",
            "--worker-threads",
            worker_threads,
        ])
        .unwrap();
        let runtime = runtime(&config).unwrap();
        // a spawned task runs to completion on either flavor
        runtime.block_on(async {
            tokio::spawn(async { tokio::runtime::Handle::current().runtime_flavor() }).await.unwrap()
        })
    }

    #[test]
    fn one_worker_thread_is_a_current_thread_runtime_and_more_is_multi_thread() {
        assert_eq!(flavor_for("1"), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor_for("3"), RuntimeFlavor::MultiThread);
    }
}
