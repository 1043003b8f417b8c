use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use voxanne_relay::config::{Config, LogFormat};
use voxanne_relay::reconcile::{self, ReconcileConfig};

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|first| first == "reconcile") {
        let config = ReconcileConfig::parse_from(std::iter::once("voxanne-relay reconcile".into()).chain(args));
        init_tracing(config.log_format);
        return run_reconcile(&config);
    }
    let config = Config::from_command_line();
    init_tracing(config.log_format);
    voxanne_relay::run(config)
}

/// `voxanne-relay reconcile`: one run; fails when a call was left for the next one.
fn run_reconcile(config: &ReconcileConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(reconcile::run(config)) {
        Ok(summary) => {
            tracing::info!(?summary, "reconcile finished");
            if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "reconcile failed");
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
