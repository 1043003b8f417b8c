//! voxanne-relay: receives Vapi webhooks over HTTP, authenticates them, and hands each raw body to
//! `voxanne.handle_vapi_message` in PostgreSQL, where all the work happens in one transaction.
//! The relay's own job is the HTTP edge: authentication, size and syntax checks, mapping database
//! outcomes to status codes Vapi understands, one transparent retry of transient failures,
//! sending the reply the database's answer names (or the upstream app's answer, when the answer
//! asks for it: reply.rs), metrics and logs.

pub mod app;
pub mod config;
pub mod db;
pub mod error;
pub mod metrics;
pub mod reply;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod upstream;
pub mod verify;
pub mod webhook;

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal;

pub use app::{app, AppState};
pub use config::Config;
pub use error::RelayError;

/// How often the metrics recorder's housekeeping runs.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// The relay process once its flags are read and its logging is set up: the runtime `config`
/// asks for, the pool, the listener, the extension check, then [`serve`] until SIGTERM or
/// Ctrl-C. Both binaries run it: `voxanne-relay` and the test suite's `voxanne-it-relay`, so the
/// tests that run the relay as a process run it as it ships.
pub fn run(config: Config) -> ExitCode {
    match runtime(&config) {
        Ok(runtime) => runtime.block_on(start(config)),
        Err(e) => {
            tracing::error!(error = %e, "could not start the async runtime");
            ExitCode::FAILURE
        }
    }
}

async fn start(config: Config) -> ExitCode {
    let state = match AppState::from_config(&config) {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(error = %e, "could not start");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, listen = %config.listen, "could not listen");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(?config, "starting");
    match state.db.extension_version().await {
        Ok(Some(v)) if v == config.expected_extension_version => {
            tracing::info!(extension_version = %v, "database ready")
        }
        Ok(v) => tracing::warn!(
            extension_version = ?v,
            expected = %config.expected_extension_version,
            "voxanne_ext is missing or has another version; /readyz reports not ready"
        ),
        Err(e) => tracing::warn!(error = %e, "database not reachable yet; /readyz reports not ready"),
    }
    tracing::info!(listen = %config.listen, path = %config.webhook_path, "listening");

    match serve(listener, state, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        signal::ctrl_c().await.expect("failed to install the Ctrl+C handler");
    };
    #[cfg(unix)]
    let terminate = async {
        signal::unix::signal(signal::unix::SignalKind::terminate())
            .expect("failed to install the SIGTERM handler")
            .recv()
            .await;
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing requests in flight");
}

/// The async runtime `config.worker_threads` asks for: one thread is a current-thread runtime
/// (no cross-thread wake-ups per request), more is a multi-thread one.
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
