//! The `loadgen` binary: parse flags, run the visitors, print the report.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = loadgen::Config::parse();
    match loadgen::run(&config, true).await {
        Ok(report) => {
            println!("{report}");
            if report.lost() > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(err) => {
            eprintln!("loadgen: {err:#}");
            ExitCode::FAILURE
        }
    }
}
