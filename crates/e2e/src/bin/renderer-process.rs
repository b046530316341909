//! The renderer as a process of its own, for tests that SIGKILL or SIGTERM it.
//!
//! Cargo gives a test the path of its own package's binaries only (`CARGO_BIN_EXE_*`), so
//! this crate builds the renderer binary again from the same library entry point
//! ([`renderer::serve_process`]) with the same flags; only logging stays off.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = renderer::Config::parse();
    match renderer::serve_process(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("renderer-process: {err:#}");
            ExitCode::FAILURE
        }
    }
}
