use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use tokio::net::TcpListener;
use tokio::signal;
use tracing_subscriber::EnvFilter;
use voxanne_relay::config::{Config, LogFormat};
use voxanne_relay::{serve, AppState};

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(e) = config.validate() {
        Config::command().error(clap::error::ErrorKind::ValueValidation, e).exit();
    }
    init_tracing(config.log_format);
    match voxanne_relay::runtime(&config) {
        Ok(runtime) => runtime.block_on(run(config)),
        Err(e) => {
            tracing::error!(error = %e, "could not start the async runtime");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> ExitCode {
    let state = match AppState::from_config(&config) {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(error = %e, "could not create the database pool");
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

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
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
