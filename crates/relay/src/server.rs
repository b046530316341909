//! The relay's HTTP surface: the page, its WebSocket, images and health.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, HOST, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use netkit::http::{self, Body};
use netkit::{ws, Shutdown};
use tracing::warn;

use crate::assets;
use crate::context::Context;
use crate::cors;
use crate::events::post_events;
use crate::passthrough::{serve_api, serve_heatmap};
use crate::session::serve_session;

/// Answers one HTTP request.
pub(crate) async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    // Probes and scrapers address the relay by whatever IP they see; health and metrics
    // reveal no page data, so they answer under any name.
    if path != "/healthz" && path != "/metrics" {
        if let Some(refused) = misdirected(&request, peer, &ctx, &path) {
            return refused;
        }
    }
    if path == "/ws" {
        return upgrade(request, peer, ctx, shutdown);
    }
    if path.starts_with("/api/") {
        return api(request, peer, &ctx).await;
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return http::text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here");
    }
    if let Some(asset) = assets::lookup(&path) {
        return http::with_body(StatusCode::OK, asset.content_type, asset.body);
    }
    match path.as_str() {
        "/healthz" => health(&ctx),
        "/metrics" => netkit::metrics::response(&ctx.hub.metrics.registry),
        _ => match path.strip_prefix("/heatmaps/") {
            Some(name) => serve_heatmap(&ctx, name).await,
            None => http::text(StatusCode::NOT_FOUND, format!("not found: {path}")),
        },
    }
}

fn upgrade(
    request: Request<Incoming>,
    peer: SocketAddr,
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> Response<Body> {
    if !ws::is_upgrade(&request) {
        return http::text(StatusCode::UPGRADE_REQUIRED, "/ws speaks WebSocket only");
    }
    // Browsers always send `Origin` on WebSocket requests, so its absence means a
    // non-browser client (a test, a load generator), which cross-site forgery cannot reach.
    if let cors::Verdict::Refused(origin) =
        cors::check(&request, &ctx.origins, &ctx.config.allow_origins)
    {
        ctx.hub.metrics.origin_refused.inc();
        warn!(%peer, %origin, "refused a page from another origin (see --allow-origin)");
        return http::text(
            StatusCode::FORBIDDEN,
            format!("origin {origin} may not connect; start the relay with --allow-origin {origin} to allow it"),
        );
    }
    let max_frame_bytes = ctx.config.max_frame_bytes;
    ws::upgrade(request, max_frame_bytes, move |socket| {
        serve_session(socket, peer, ctx, shutdown)
    })
}

/// The event API: rate, origin check, preflight, then the answer; counted by status.
async fn api(request: Request<Incoming>, peer: SocketAddr, ctx: &Context) -> Response<Body> {
    let response = api_answer(request, peer, ctx).await;
    ctx.hub.metrics.api_response(response.status());
    response
}

async fn api_answer(request: Request<Incoming>, peer: SocketAddr, ctx: &Context) -> Response<Body> {
    let config = &ctx.config;
    let is_events = request.uri().path() == "/api/events";
    if !ctx
        .api_limits
        .allow(peer.ip(), config.max_api_requests_per_sec, config.api_burst)
    {
        // Counted as an API answer and, for events, a refusal; not as a page's
        // `rate_limited`, which is about WebSocket messages.
        if is_events && request.method() == Method::POST {
            ctx.hub.metrics.events_refused("rate_limited");
        }
        let mut response = http::json_error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("more than {} api requests per second from your address (--max-api-requests-per-sec); retry after Retry-After", config.max_api_requests_per_sec),
        );
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    let allowed_origin = match cors::check(&request, &ctx.origins, &ctx.config.sites) {
        cors::Verdict::SameOrigin => None,
        cors::Verdict::Allowed(origin) => Some(origin),
        cors::Verdict::Refused(origin) => {
            ctx.hub.metrics.cors_refused.inc();
            if is_events {
                ctx.hub.metrics.events_refused("origin");
            }
            warn!(%origin, "refused an api call from an unlisted site (see --site)");
            return http::json_error(
                StatusCode::FORBIDDEN,
                format!(
                    "origin {origin} may not call this api; start the relay with --site {origin}"
                ),
            );
        }
    };
    let method = request.method().clone();
    let mut response = if method == Method::OPTIONS {
        http::with_body(StatusCode::NO_CONTENT, "text/plain", "")
    } else if is_events {
        if method == Method::POST {
            post_events(ctx, request).await
        } else {
            let mut response = http::json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} /api/events: events are sent with POST"),
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST, OPTIONS"));
            response
        }
    } else if method == Method::GET {
        serve_api(ctx, request).await
    } else {
        let mut response = http::json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{method} {}: this part of the api is read with GET",
                request.uri().path()
            ),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, OPTIONS"));
        response
    };
    if let Some(origin) = allowed_origin {
        cors::allow(&mut response, &origin);
    }
    response
}

/// A 421 answer when the request's `Host` is not one of the relay's own names (a
/// DNS-rebinding page names its own domain), or `None` to go on.
fn misdirected(
    request: &Request<Incoming>,
    peer: SocketAddr,
    ctx: &Context,
    path: &str,
) -> Option<Response<Body>> {
    // A trusted proxy says which scheme and host the visitor used; from anyone else the
    // accept loop left both unset, and the `Host` header is all there is.
    let client = request.extensions().get::<netkit::Client>();
    let scheme = client.and_then(|client| client.proto);
    let host = client
        .and_then(|client| client.host.as_deref())
        .or_else(|| {
            request
                .headers()
                .get(HOST)
                .map(|host| host.to_str().unwrap_or("<not ascii>"))
        });
    if host.is_some_and(|host| ctx.origins.allows_host_over(host, scheme)) {
        return None;
    }
    let host = host.unwrap_or("<none>");
    ctx.hub.metrics.host_refused.inc();
    warn!(%peer, host, path, "refused a request for another host (see --public-url)");
    let message = format!(
        "host {host} is not this relay's; it answers as {}; start it with --public-url for another name",
        ctx.origins
    );
    Some(if path.starts_with("/api/") {
        http::json(
            StatusCode::MISDIRECTED_REQUEST,
            serde_json::json!({ "error": message }).to_string(),
        )
    } else {
        http::text(StatusCode::MISDIRECTED_REQUEST, message)
    })
}

/// The event bus as `/healthz` shows it: `off` without `--bus`, else `connected` once
/// NATS is connected and the stream declared (events are then accepted), `declaring` or
/// `disconnected` before.
fn bus_state(ctx: &Context) -> &'static str {
    #[cfg(feature = "cluster")]
    if let Some(bus) = &ctx.bus {
        return bus.state();
    }
    let _ = ctx;
    "off"
}

fn health(ctx: &Context) -> Response<Body> {
    let hub = &ctx.hub;
    let body = serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": protocol::PROTOCOL_VERSION,
        "renderer": hub.link_state().as_str(),
        "renderer_url": ctx.config.renderer,
        "bus": bus_state(ctx),
        "sessions_open": hub.n_sessions(),
        "sessions_total": hub.metrics.sessions_total.get(),
        "forwarded_total": hub.metrics.forwarded.get(),
        "replies_dropped": hub.metrics.replies_dropped.get(),
        "backlog_depth": hub.metrics.backlog_depth.get(),
    });
    let mut body = body.to_string();
    body.pop();
    body.push_str(&format!(",\"errors\":{}}}", hub.metrics.errors.to_json()));
    http::json(StatusCode::OK, body)
}
