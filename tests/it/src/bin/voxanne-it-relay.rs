//! The relay as a separate process, for the tests that SIGKILL it (tests/crashes.rs): the
//! `voxanne-relay` binary's own startup (`voxanne_relay::run`: the same flags, the same runtime,
//! the same graceful stop on SIGTERM / Ctrl-C), without its log output (no tracing subscriber).
//! It is built by cargo together with this package's tests (`CARGO_BIN_EXE_voxanne-it-relay`),
//! so the tests need no nested cargo run.

use std::process::ExitCode;

use voxanne_relay::Config;

fn main() -> ExitCode {
    voxanne_relay::run(Config::from_command_line())
}
