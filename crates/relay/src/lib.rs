//! The relay: serves the recorder page and carries its traffic to the renderer.
//!
//! Pages connect to `/ws`; the relay checks each message at the edge, forwards it over
//! its single WebSocket to the renderer, routes each answer back to the page that asked,
//! and tells every page whenever the renderer link changes state. Images are fetched
//! from the renderer on request, so the two tiers share no disk.
//!
//! Modules, in reading order:
//! - `config`: the flags ([`Config`]).
//! - `server`: HTTP routes, the Origin check and the WebSocket upgrade.
//! - `session`: one page's socket.
//! - `dashboard`: the seed's dashboard requests (`request_detailed_stats`,
//!   `track_dashboard_action`), answered to the asking page alone.
//! - `hub`: sessions by connection id and the link state they watch.
//! - `metrics`: counters, gauges and histograms for `/metrics`.
//! - `upstream`: the renderer link, its reconnects and reply routing.
//! - `backoff`: reconnect delays with jitter.
//! - `events`: `POST /api/events`, decoded here, stored by the renderer over the link,
//!   answered `202` once committed.
//! - `bus` (cluster builds): with `--bus`, events published to NATS JetStream instead,
//!   answered `202` once the stream stored them.
//! - `live_bus` (cluster builds): with `--bus`, presence, members, cursors and the
//!   dashboard feed shared with the other relays over NATS core subjects.
//! - `page_bus` (cluster builds): with `--bus`, a page's recording published to the same
//!   stream (each batch acknowledged once stored there) and Generate asked of the renderer
//!   group, so recording needs no renderer link.
//! - `feed`: presence once a second, live cursors ten times a second (the analytics feed is
//!   pushed by the renderer over the link while a dashboard watches).
//! - `passthrough`: images and analytics queries, read from the renderer over HTTP.
//! - `origins`: the relay's own public origins, against DNS rebinding.
//! - `cors`: which sites may call the event API.
//! - `assets`: the page, compiled in.

mod alerts;
mod assets;
mod backoff;
#[cfg(feature = "cluster")]
mod bus;
mod config;
mod context;
mod cors;
mod dashboard;
mod events;
mod feed;
mod hub;
#[cfg(feature = "cluster")]
mod live_bus;
mod metrics;
mod origins;
#[cfg(feature = "cluster")]
mod page_bus;
mod passthrough;
mod server;
mod session;
mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use netkit::{ServeConfig, ShutdownController, TrustedProxies};
use protocol::Limits;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use config::Config;

/// The relay as a process: binds `--listen`, installs the signal handlers, prints the
/// URL to open as the one line on stdout, then serves until SIGINT or SIGTERM.
///
/// The `relay` binary and the tests' own relay build (`e2e`'s `relay-process`, which
/// tests SIGKILL) both start here, so they bind and announce themselves the same way.
///
/// # Errors
/// The address cannot be bound, a signal handler cannot be installed, or [`run`] fails.
pub async fn serve_process(config: Config) -> anyhow::Result<()> {
    let tls = config.tls_cert.is_some();
    let scheme = if tls { "https" } else { "http" };
    let (listener, shutdown) = netkit::serve::bind_and_announce(config.listen, scheme, tls).await?;
    run(listener, config, shutdown).await
}

/// Serves on `listener` until `shutdown` resolves, then closes every page and the
/// renderer link with 1001.
///
/// # Errors
/// An unusable `--renderer` URL, `--renderer-ca`, `--tls-cert` or `--tls-key`; nothing after
/// serving starts ends the relay.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let renderer_connector =
        netkit::tls::Connector::for_url(&config.renderer, config.renderer_ca.as_deref())?;
    let addr = listener.local_addr().context("read the bound address")?;
    let tls = config.tls_server()?;
    let scheme = if tls.is_some() {
        origins::Scheme::Https
    } else {
        origins::Scheme::Http
    };
    let origins = origins::PublicOrigins::new(&config.public_urls, addr, scheme)?;
    let trusted_proxies: Vec<String> = config
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    info!(%addr, tls = tls.is_some(), renderer = %config.renderer, bus = ?config.bus, %origins, ?trusted_proxies, "relay listening");
    if !addr.ip().is_loopback() && config.public_urls.is_empty() {
        warn!(%addr, "listening beyond loopback without --public-url: browsers must use one of {origins}; pass --public-url with the name they use");
    }

    let serve_config = ServeConfig {
        max_connections: config.max_connections,
        max_pending_connections: config.max_pending_connections,
        max_connections_per_ip: config.max_connections_per_ip,
        header_timeout: Duration::from_millis(config.header_timeout_ms),
        max_body_bytes: config.max_body_bytes,
        trusted_proxies: TrustedProxies::new(&config.trusted_proxies),
        tls: tls.clone(),
        ..ServeConfig::default()
    };
    #[cfg(feature = "cluster")]
    let bus = match &config.bus {
        Some(url) => Some(bus::Bus::connect(&config, url).await?),
        None => None,
    };
    #[cfg(not(feature = "cluster"))]
    if config.bus.is_some() {
        anyhow::bail!(
            "--bus needs a relay built with the cluster feature; build one with \
             `cargo build --release --features cluster -p relay`"
        );
    }
    let (upstream_tx, upstream_rx) = mpsc::channel(config.upstream_queue.max(1));
    let (events_tx, events_rx) = mpsc::channel(config.events_queue.max(1));
    let ctx = Arc::new(context::Context {
        limits: Limits {
            max_points_per_batch: config.max_points_per_batch,
        },
        hub: hub::Hub::default(),
        upstream: upstream_tx,
        events: events::EventSender::new(events_tx),
        renderer_authority: renderer_connector.authority().to_owned(),
        renderer_connector,
        api_limits: context::ApiLimits::default(),
        stats_permits: Arc::new(tokio::sync::Semaphore::new(
            config.max_stats_requests as usize,
        )),
        origins,
        #[cfg(feature = "cluster")]
        bus,
        config,
    });
    let controller = ShutdownController::default();
    if let Some(tls) = tls {
        netkit::tls::reload_on_sighup(tls, controller.subscribe())?;
    }
    tokio::spawn(upstream::run_upstream(
        ctx.clone(),
        upstream_rx,
        events_rx,
        controller.subscribe(),
    ));
    tokio::spawn(feed::run_presence(ctx.clone(), controller.subscribe()));
    tokio::spawn(feed::run_cursors(ctx.clone(), controller.subscribe()));
    if ctx.config.max_activity_per_sec > 0 {
        tokio::spawn(feed::run_activity(ctx.clone(), controller.subscribe()));
    }
    #[cfg(feature = "cluster")]
    if let Some(url) = ctx.config.bus.clone() {
        live_bus::start(ctx.clone(), &url, controller.subscribe()).await?;
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
    info!("relay stopped");
    Ok(())
}
