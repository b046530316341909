//! The renderer's HTTP surface: the relay's WebSocket, images, and health.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};
use netkit::http::{self, Body};
use netkit::{ws, Shutdown};
use tracing::warn;

use crate::context::Context;
use crate::link::serve_link;
use crate::output::{heatmap_path, read_heatmap};

/// Answers one HTTP request.
pub(crate) async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    // Health and metrics stay open so that probes and scrapers need no secret; everything
    // else (the link, the event API, the images) is for the relay alone.
    let open_route = path == "/healthz" || path == "/metrics";
    if !open_route && !authorized(&request, ctx.config.token.as_deref()) {
        ctx.metrics.unauthorized.inc();
        warn!(%peer, path, "refused a request without the right token");
        return http::text(
            StatusCode::UNAUTHORIZED,
            "this renderer needs Authorization: Bearer <token>",
        );
    }
    if ws::is_upgrade(&request) && (path == "/" || path == "/ws") {
        return upgrade(request, peer, ctx, shutdown);
    }
    if path.starts_with("/api/") {
        return crate::api::handle(request, ctx).await;
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return http::text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here");
    }
    match path.as_str() {
        "/healthz" => health(&ctx),
        "/metrics" => {
            ctx.metrics.recordings.set(ctx.store.n_recordings() as i64);
            ctx.metrics.points_held.set(ctx.store.n_points() as i64);
            netkit::metrics::response(&ctx.metrics.registry)
        }
        _ => match path.strip_prefix("/heatmaps/") {
            Some(name) => heatmap(&ctx, name).await,
            None => http::text(
                StatusCode::NOT_FOUND,
                "not found: the renderer serves /healthz and /heatmaps/<name>",
            ),
        },
    }
}

fn upgrade(
    request: Request<Incoming>,
    peer: SocketAddr,
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> Response<Body> {
    let max_frame_bytes = ctx.config.max_frame_bytes;
    ws::upgrade(request, max_frame_bytes, move |socket| {
        serve_link(socket, peer, ctx, shutdown)
    })
}

fn health(ctx: &Context) -> Response<Body> {
    // Corruption found in the middle of a stored log needs an operator: the renderer runs
    // and kept every good record, but says so until it restarts on repaired files.
    let corrupt_spans = ctx.metrics.storage_corrupt_spans.get();
    let body = serde_json::json!({
        "status": if corrupt_spans > 0 { "degraded" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": protocol::PROTOCOL_VERSION,
        "links_open": ctx.metrics.links_open.get(),
        "recordings": ctx.store.n_recordings(),
        "points": ctx.store.n_points(),
        "renders_total": ctx.metrics.renders.get(),
        "out_dir": ctx.config.out_dir.display().to_string(),
        "storage": {
            "corrupt_spans": corrupt_spans,
            "corrupt_bytes": ctx.metrics.storage_corrupt_bytes.get(),
            "torn_tails": ctx.metrics.storage_torn_tails.get(),
        },
    });
    let mut body = body.to_string();
    // Splice the error counters in as an object.
    body.pop();
    body.push_str(&format!(",\"errors\":{}}}", ctx.metrics.errors.to_json()));
    http::json(StatusCode::OK, body)
}

async fn heatmap(ctx: &Context, name: &str) -> Response<Body> {
    let Some(path) = heatmap_path(&ctx.config.out_dir, name) else {
        return http::text(StatusCode::NOT_FOUND, "not a heatmap name");
    };
    let read_path = path.clone();
    let read = tokio::task::spawn_blocking(move || read_heatmap(&read_path))
        .await
        .unwrap_or_else(|err| Err(std::io::Error::other(err)));
    match read {
        Ok(bytes) => http::with_body(StatusCode::OK, "image/png", bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            #[cfg(feature = "cluster")]
            if let Some(db) = ctx.recording_db.clone() {
                return stored_heatmap(db, name).await;
            }
            http::text(StatusCode::NOT_FOUND, format!("no heatmap {name}"))
        }
        Err(err) => {
            warn!(path = %path.display(), cause = %err, "cannot read heatmap");
            http::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {name}: {err}"),
            )
        }
    }
}

/// Cluster mode: an image another renderer drew for a Generate from the bus, read from the
/// shared database (the name is already checked by `heatmap_path`).
#[cfg(feature = "cluster")]
async fn stored_heatmap(db: Arc<crate::recording_db::RecordingDb>, name: &str) -> Response<Body> {
    let key = name.to_owned();
    let read = tokio::task::spawn_blocking(move || db.image(&key)).await;
    match read {
        Ok(Ok(Some(bytes))) => http::with_body(StatusCode::OK, "image/png", bytes),
        Ok(Ok(None)) => http::text(StatusCode::NOT_FOUND, format!("no heatmap {name}")),
        Ok(Err(err)) => {
            warn!(name, cause = %err, "cannot read a heatmap from postgresql");
            http::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read {name} from the database now: {err}"),
            )
        }
        Err(err) => http::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read {name}: {err}"),
        ),
    }
}

/// Whether the request may use the renderer: always without `--token`, else only with
/// `Authorization: Bearer <token>` (the scheme in any case, as RFC 9110 allows).
fn authorized(request: &Request<Incoming>, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_credentials);
    presented.is_some_and(|presented| constant_time_eq(presented.as_bytes(), token.as_bytes()))
}

/// The credentials of a `Bearer` authorization value, whatever the scheme's case.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim_start_matches(' '))
}

/// Compares secrets without an early exit, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_matches_in_any_case() {
        assert_eq!(bearer_credentials("Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_credentials("bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_credentials("BEARER  s3cret"), Some("s3cret"));
        assert_eq!(bearer_credentials("Basic s3cret"), None);
        assert_eq!(bearer_credentials("Bearers3cret"), None);
    }
}
