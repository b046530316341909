//! The relay as a process of its own, for tests that SIGKILL or restart it.
//!
//! Cargo gives a test the path of its own package's binaries only (`CARGO_BIN_EXE_*`), so
//! this crate builds the relay binary again from the same library entry point
//! ([`relay::serve_process`]) with the same flags and the same address line; only logging
//! stays off.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = relay::Config::parse();
    match relay::serve_process(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("relay-process: {err:#}");
            ExitCode::FAILURE
        }
    }
}
