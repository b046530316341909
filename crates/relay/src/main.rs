//! The `relay` binary: parse flags, set up logging, bind, and hand over to [`relay::run`].

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let config = relay::Config::parse();
    netkit::logging::init();
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("relay: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: relay::Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("bind {}", config.listen))?;
    let addr = listener.local_addr().context("read the bound address")?;
    // The signal handlers go in before the address goes out: whoever reads the line may
    // send SIGTERM at once, and it must find a graceful shutdown, not the default action.
    let shutdown = netkit::shutdown::signal();
    // One line on stdout with the real address: the URL to open.
    let scheme = if config.tls_cert.is_some() {
        // `systemctl reload` right after the start must reload, not kill.
        netkit::tls::catch_sighup()?;
        "https"
    } else {
        "http"
    };
    println!("{scheme}://{addr}");
    relay::run(listener, config, shutdown).await
}
