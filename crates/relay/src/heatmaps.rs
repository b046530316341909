//! `/heatmaps/<name>`: images fetched from the renderer and passed through.
//!
//! The renderer may run in another folder or on another machine, so the relay does not
//! read files: it asks the renderer over HTTP, on the same host and port as the link.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use netkit::http::{self, Body};
use protocol::names::is_heatmap_name;
use tokio::net::TcpStream;
use tracing::warn;

use crate::context::Context;

/// Largest image passed through (a 8192x8192 RGB PNG stays well below this).
const MAX_IMAGE_BYTES: usize = 256 * 1024 * 1024;

/// How long fetching one image may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Answers `/heatmaps/<name>`.
pub(crate) async fn serve_heatmap(ctx: &Context, name: &str) -> Response<Body> {
    if !is_heatmap_name(name) {
        return http::text(StatusCode::NOT_FOUND, "not a heatmap name");
    }
    match tokio::time::timeout(FETCH_TIMEOUT, fetch(ctx, name)).await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => {
            warn!(name, cause = %format!("{err:#}"), "cannot fetch heatmap from the renderer");
            http::text(
                StatusCode::BAD_GATEWAY,
                format!("cannot fetch {name} from the renderer: {err:#}"),
            )
        }
        Err(_) => http::text(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the renderer did not send {name} in time"),
        ),
    }
}

async fn fetch(ctx: &Context, name: &str) -> anyhow::Result<Response<Body>> {
    let authority = &ctx.renderer_authority;
    let stream = TcpStream::connect(authority.as_str())
        .await
        .with_context(|| format!("connect to {authority}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("http handshake")?;
    tokio::spawn(connection);
    let mut request = Request::get(format!("/heatmaps/{name}"))
        .header(HOST, authority.as_str())
        .body(Empty::<bytes::Bytes>::new())
        .context("build request")?;
    if let Some(token) = &ctx.config.token {
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            request.headers_mut().insert(AUTHORIZATION, value);
        }
    }
    let response = sender.send_request(request).await.context("send request")?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let body = Limited::new(response.into_body(), MAX_IMAGE_BYTES)
        .collect()
        .await
        .map_err(|err| anyhow!("read body: {err}"))?
        .to_bytes();
    let mut reply = http::with_body(status, "application/octet-stream", body);
    reply.headers_mut().insert(CONTENT_TYPE, content_type);
    Ok(reply)
}

/// `host:port` from a `ws://host:port/...` URL.
pub(crate) fn authority_of(url: &str) -> anyhow::Result<String> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("renderer url {url}"))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some(other) => {
            return Err(anyhow!(
                "renderer url {url}: scheme {other} is not supported, use ws://"
            ))
        }
        None => return Err(anyhow!("renderer url {url}: needs ws://host:port")),
    }
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("renderer url {url} has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_comes_from_the_ws_url() {
        assert_eq!(
            authority_of("ws://127.0.0.1:5000").unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(
            authority_of("ws://renderer.internal/").unwrap(),
            "renderer.internal:80"
        );
        assert!(authority_of("http://127.0.0.1:5000").is_err());
        assert!(authority_of("127.0.0.1:5000").is_err());
    }
}
