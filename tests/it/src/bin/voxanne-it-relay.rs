//! The relay as a separate process, for the tests that SIGKILL it (tests/crashes.rs): the same
//! flags, the same runtime (`voxanne_relay::runtime`), the same `voxanne_relay::serve` and the
//! same graceful stop on SIGTERM / Ctrl-C as the `voxanne-relay` binary, without its log output
//! (no tracing subscriber). Built by cargo together with this package's tests
//! (`CARGO_BIN_EXE_voxanne-it-relay`), so the tests need no nested cargo run.

use clap::Parser;
use tokio::net::TcpListener;
use voxanne_relay::{serve, AppState, Config};

fn main() {
    let config = Config::parse();
    config.validate().unwrap_or_else(|e| panic!("invalid relay flags: {e}"));
    voxanne_relay::runtime(&config).expect("the async runtime starts").block_on(run(config));
}

async fn run(config: Config) {
    let state = AppState::from_config(&config).expect("the database pool builds");
    let listener = TcpListener::bind(config.listen).await.expect("listen");
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    serve(listener, state, shutdown).await.expect("serve");
}
