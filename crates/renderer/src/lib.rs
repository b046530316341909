//! The renderer: holds recordings and turns them into PNG heatmaps.
//!
//! It is a WebSocket server for the relay (one link carries every page's traffic) and a
//! small HTTP server for the images it wrote. The relay is its only client by design; the
//! renderer still validates every message, because it is a server of its own. The drawing
//! itself (points to PNG bytes) is the `heatmap` crate's; this crate decides when to draw,
//! with which settings, and where the file goes.
//!
//! Modules, in reading order:
//! - `config`: the flags ([`Config`]).
//! - `api`: the event API of tracked sites and page heatmaps; the live view of their
//!   sessions and the history are the `analytics` crate's (`live`, the store).
//! - `event_store`: which engine keeps the events (`--store`): SQLite in `--data-dir`, or
//!   PostgreSQL with the `cluster` feature.
//! - `ingest`: the event store's one writer, committing waiting requests together.
//! - `bus` (cluster builds): with `--bus`, events and recordings' batches consumed from
//!   NATS JetStream as one group with the other renderers, acknowledged once committed, and
//!   Generate answered as a request to the renderer group.
//! - `live_bus` (cluster builds): with `--bus`, each commit's live facts told to the other
//!   renderers and theirs folded into this one's live view, so it counts every event.
//! - `push`: live analytics pushed to a relay while its dashboards watch.
//! - `retention`: the background task that prunes events past `--retention-days`.
//! - `server`: HTTP routes and the WebSocket upgrade.
//! - `link`: one relay connection: decode, apply, answer; on shutdown, finish renders first.
//! - `requests`: Generate requests by the page's number, so a resend draws no second image.
//! - `store`: recordings, their points and the batches already counted.
//! - `metrics`: counters, gauges and histograms for `/metrics`.
//! - `journal`: the append-only log per recording that makes them survive restarts.
//! - `recording_db` (feature `cluster`): with `--store postgres://…`, the recordings'
//!   batches in the shared database instead of the journal, so any renderer renders any
//!   recording.
//! - `append_log`: whole-record appends and recovery for `journal`.
//! - `output`: file names and writes inside the output folder.

mod api;
pub mod append_log;
#[cfg(feature = "cluster")]
mod bus;
mod config;
mod context;
mod error;
mod event_store;
mod ingest;
pub mod journal;
mod link;
#[cfg(feature = "cluster")]
mod live_bus;
mod metrics;
pub mod output;
mod push;
#[cfg(feature = "cluster")]
mod recording_db;
mod requests;
mod retention;
mod server;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use netkit::{ServeConfig, ShutdownController};
use tokio::net::TcpListener;
use tracing::{error, info};

pub use config::Config;
pub use error::Error;

/// What the `renderer` binary does after parsing its flags: binds `config.listen`,
/// installs the SIGINT/SIGTERM handlers, prints `ws://<address>` on stdout, and serves until
/// a signal. The handlers go in before the address goes out: whoever reads the line may
/// send SIGTERM at once, and it must find a graceful shutdown, not the default action.
///
/// Public so a test crate can build the renderer as a process of its own.
///
/// # Errors
/// The address cannot be bound, or [`run`] fails before serving.
pub async fn serve_process(config: Config) -> anyhow::Result<()> {
    let tls = config.tls_cert.is_some();
    let scheme = if tls { "wss" } else { "ws" };
    let (listener, shutdown) = netkit::serve::bind_and_announce(config.listen, scheme, tls).await?;
    run(listener, config, shutdown).await
}

/// Serves on `listener` until `shutdown` resolves, then stops reading links, finishes the
/// renders in flight and sends their answers (for up to `--drain-ms`), closes every link
/// with 1001 and waits (boundedly) for the rest.
///
/// # Errors
/// Only for problems before serving starts (`--tls-cert`/`--tls-key` unusable, say); an
/// unwritable output folder is logged and
/// reported to each Generate instead, so the renderer keeps running.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    #[cfg(not(feature = "cluster"))]
    if config.bus.is_some() {
        anyhow::bail!(
            "--bus needs a renderer built with the cluster feature; build one with \
             `cargo build --release --features cluster -p renderer`"
        );
    }
    if let Err(err) = std::fs::create_dir_all(&config.out_dir) {
        error!(path = %config.out_dir.display(), cause = %err, "cannot create the output folder; Generate will fail until it exists");
    }
    let addr = listener.local_addr().context("read the bound address")?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(netkit::tls::TlsServer::load(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    };
    info!(%addr, tls = tls.is_some(), out_dir = %config.out_dir.display(), "renderer listening");

    let serve_config = ServeConfig {
        max_connections: config.max_connections,
        max_pending_connections: config.max_pending_connections,
        // The renderer has one client, the relay, often on the same address as everything
        // else on its host: no per-address bound below the pools' own.
        max_connections_per_ip: config.max_connections.max(config.max_pending_connections),
        header_timeout: Duration::from_millis(config.header_timeout_ms),
        // Event batches from tracked sites reach up to 1 MiB (`api.rs` bounds them again).
        max_body_bytes: 1024 * 1024,
        tls: tls.clone(),
        ..ServeConfig::default()
    };
    // The live subscription comes before the live view is rebuilt from the store, so no
    // other renderer's commit falls between the two.
    #[cfg(feature = "cluster")]
    let live = match &config.bus {
        Some(url) => Some(live_bus::subscribe(&config, url).await?),
        None => None,
    };
    // Opening the stores blocks (and PostgreSQL's client runs a runtime of its own, which
    // must not start on an async worker).
    let ctx = tokio::task::spawn_blocking(move || context::Context::new(config))
        .await
        .context("start the renderer")?
        .context("start the renderer")?;
    let ctx = Arc::new(ctx);
    let controller = ShutdownController::default();
    if let Some(tls) = tls {
        netkit::tls::reload_on_sighup(tls, controller.subscribe())?;
    }
    // The commits are tapped before the consumer stores any, so every one is shared.
    #[cfg(feature = "cluster")]
    if let Some(live) = live {
        live_bus::start(ctx.clone(), live, controller.subscribe())?;
    }
    #[cfg(feature = "cluster")]
    if ctx.config.bus.is_some() && ctx.recording_db.is_none() {
        anyhow::bail!(
            "--bus needs --store postgres://…: recordings' batches from the bus are stored in \
             the shared database, where every renderer can render them"
        );
    }
    #[cfg(feature = "cluster")]
    if let Some(url) = ctx.config.bus.clone() {
        bus::start(ctx.clone(), &url, controller.subscribe()).await?;
    }
    netkit::serve_until(
        listener,
        serve_config,
        controller,
        shutdown,
        move |request, peer, task_shutdown| {
            server::handle(request, peer, ctx.clone(), task_shutdown)
        },
    )
    .await;
    info!("renderer stopped");
    Ok(())
}
