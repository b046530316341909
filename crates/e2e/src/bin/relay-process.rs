//! The relay as a process of its own, for tests that SIGKILL or restart it.
//!
//! Cargo gives a test the path of its own package's binaries only (`CARGO_BIN_EXE_*`), so
//! this crate builds the relay binary again from the same library entry point
//! ([`relay::run`]) with the same flags and the same address line; only logging stays off.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let config = relay::Config::parse();
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("relay-process: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: relay::Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("bind {}", config.listen))?;
    let addr = listener.local_addr().context("read the bound address")?;
    // The handlers go in before the address goes out, as in the relay binary.
    let shutdown = netkit::shutdown::signal();
    println!("http://{addr}");
    relay::run(listener, config, shutdown).await
}
