//! The `relay` binary: parse flags, set up logging, and hand over to
//! [`relay::serve_process`].

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = relay::Config::parse();
    netkit::logging::init();
    match relay::serve_process(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("relay: {err:#}");
            ExitCode::FAILURE
        }
    }
}
