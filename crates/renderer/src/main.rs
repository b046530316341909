//! The `renderer` binary: parse flags, set up logging, and hand over to
//! [`renderer::serve_process`].

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = renderer::Config::parse();
    netkit::logging::init();
    match renderer::serve_process(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("renderer: {err:#}");
            ExitCode::FAILURE
        }
    }
}
