//! The renderer as a process of its own, for tests that SIGKILL or SIGTERM it.
//!
//! Cargo gives a test the path of its own package's binaries only (`CARGO_BIN_EXE_*`), so
//! this crate carries a thin twin of the renderer's `main`: the same `renderer::run` with
//! the real signal handler, configured by four arguments rather than the full flag set.
//!
//! Usage: `renderer-process LISTEN OUT_DIR DATA_DIR WIDTHxHEIGHT`. The first line on
//! stdout is `ws://` and the bound address, as the real binary prints it.

use std::process::ExitCode;

use anyhow::Context as _;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("renderer-process: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, out_dir, data_dir, size] = args.as_slice() else {
        anyhow::bail!("usage: renderer-process LISTEN OUT_DIR DATA_DIR WIDTHxHEIGHT");
    };
    let (width, height) = size.split_once('x').context("size must be WIDTHxHEIGHT")?;
    let config = renderer::Config {
        listen: listen.parse().context("listen address")?,
        out_dir: out_dir.into(),
        data_dir: data_dir.into(),
        width: width.parse().context("width")?,
        height: height.parse().context("height")?,
        ..renderer::Config::default()
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("bind {}", config.listen))?;
    let addr = listener.local_addr().context("read the bound address")?;
    println!("ws://{addr}");
    renderer::run(listener, config, netkit::shutdown::signal()).await
}
