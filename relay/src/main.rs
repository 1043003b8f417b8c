use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use voxanne_relay::config::{Config, LogFormat};

fn main() -> ExitCode {
    let config = Config::from_command_line();
    init_tracing(config.log_format);
    voxanne_relay::run(config)
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
}
