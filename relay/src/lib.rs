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
pub mod json_scan;
pub mod limits;
pub mod metrics;
pub mod reconcile;
pub mod reply;
pub mod spool;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod upstream;
pub mod verify;
pub mod webhook;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use limits::{Activity, ConnectionLimits, Watched};

pub use app::{app, AppState};
pub use config::Config;
pub use error::RelayError;

/// How often the metrics recorder's housekeeping runs.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
    let admin = match config.admin_listen {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::error!(error = %e, admin_listen = %addr, "could not listen");
                return ExitCode::FAILURE;
            }
        },
        None => None,
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
    tracing::info!(listen = %config.listen, admin_listen = ?config.admin_listen, path = %config.webhook_path, "listening");

    match serve(listener, admin, state, shutdown_signal()).await {
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

/// Serves `app(state)` on `listener` (or, with an `admin` listener, the webhook there and the
/// admin endpoints on `admin`) until `shutdown` completes, then stops accepting, lets the
/// requests in flight finish, and closes the database pool. Each listener holds at most
/// `--max-connections` open; past it, new connections wait in the kernel's accept queue rather
/// than being accepted and closed: a genuine client is then served, in its turn, as soon as a
/// connection closes, and the header-read and idle timeouts see to it that connections which
/// send nothing close soon. HTTP/1.1 only: h2c would need its own limits for what a client can
/// open on one connection, and Vapi's deliveries are single requests.
pub async fn serve(
    listener: TcpListener,
    admin: Option<TcpListener>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = state.metrics.clone();
    let spool = state.spool.clone();
    let upkeep = tokio::spawn(async move {
        let mut every = tokio::time::interval(METRICS_UPKEEP);
        loop {
            every.tick().await;
            handle.run_upkeep();
            if let Some(spool) = &spool {
                // the oldest entry's age grows between appends and drains
                spool.record_metrics();
            }
        }
    });
    let (stop, stopped) = watch::channel(false);
    let drain =
        state.spool.clone().map(|spool| tokio::spawn(spool::drain::run(spool, state.db.clone(), stopped.clone())));
    let signal = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let graceful = GracefulShutdown::new();
    let limits = state.connection_limits;
    let (public, admin_app) = match admin {
        Some(_) => (app::webhook_app(state.clone()), Some(app::admin_app(state.clone()))),
        None => (app(state.clone()), None),
    };
    let admin_loop = async {
        if let (Some(listener), Some(router)) = (admin, admin_app) {
            accept_loop(listener, "admin", router, limits, &graceful, stopped.clone()).await;
        }
    };
    tokio::join!(signal, accept_loop(listener, "webhook", public, limits, &graceful, stopped.clone()), admin_loop);
    graceful.shutdown().await;
    if let Some(drain) = drain {
        // it stops at the signal; an entry whose statement it abandoned is replayed next start
        let _ = drain.await;
    }
    upkeep.abort();
    state.db.close();
    tracing::info!("stopped; database pool closed");
    Ok(())
}

/// Accepts connections on `listener` while a permit is free, until `stopped` turns true; then
/// drops the listener, so new connections are refused.
async fn accept_loop(
    listener: TcpListener,
    name: &'static str,
    router: Router,
    limits: ConnectionLimits,
    graceful: &GracefulShutdown,
    mut stopped: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            accepted = async {
                let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
                (permit, listener.accept().await)
            } => accepted,
        };
        match accepted {
            (permit, Ok((stream, _))) => {
                tokio::spawn(connection(stream, name, router.clone(), limits, permit, graceful.watcher()));
            }
            (_, Err(e)) => {
                tracing::warn!(error = %e, listener = name, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves one connection until it ends, or its deadline passes (limits.rs), or, after a
/// shutdown signal, its request in flight is answered.
async fn connection(
    stream: TcpStream,
    listener: &'static str,
    router: Router,
    limits: ConnectionLimits,
    permit: OwnedSemaphorePermit,
    watcher: Watcher,
) {
    metrics::record_connection(listener, 1.0);
    let activity = Activity::new();
    let io = TokioIo::new(Watched::new(stream, activity.clone()));
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let busy = activity.busy();
            let response = router.clone().oneshot(request.map(Body::new));
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        })
    };
    // hyper's own header_read_timeout stays off (no timer): see limits.rs
    let served = watcher.watch(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
    tokio::select! {
        served = served => {
            if let Err(e) = served {
                tracing::debug!(error = %e, listener, "connection ended with an error");
            }
        }
        expired = activity.expired(&limits) => {
            metrics::record_connection_timeout(listener, expired);
            tracing::debug!(listener, phase = expired.label(), "connection closed by its deadline");
        }
    }
    metrics::record_connection(listener, -1.0);
    drop(permit);
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
