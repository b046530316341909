//! Reads the relay passes through to the renderer over HTTP: heatmap images and the
//! analytics queries (`GET /api/...`). Events go over the link instead (`events`).
//!
//! The renderer may run in another folder or on another machine, so the relay does not
//! read files or hold analytics: it asks the renderer, on the host and port of the link.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use netkit::http::{self, Body};
use protocol::names::is_heatmap_name;
use tracing::warn;

use crate::context::Context;

/// Largest answer passed through (a 8192x8192 RGB PNG stays well below this).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// How long one request to the renderer may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Answers `/heatmaps/<name>`.
pub(crate) async fn serve_heatmap(ctx: &Context, name: &str) -> Response<Body> {
    if !is_heatmap_name(name) {
        return http::text(StatusCode::NOT_FOUND, "not a heatmap name");
    }
    forward(ctx, Method::GET, &format!("/heatmaps/{name}"), Bytes::new()).await
}

/// Passes a read of the API (`GET /api/...`, path and query) to the renderer; a renderer
/// that cannot be reached is a JSON 503 with `Retry-After`, like every API error.
pub(crate) async fn serve_api(ctx: &Context, request: Request<Incoming>) -> Response<Body> {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|value| value.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let path = request.uri().path().to_owned();
    match tokio::time::timeout(
        FETCH_TIMEOUT,
        fetch(ctx, Method::GET, &path_and_query, Bytes::new()),
    )
    .await
    {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => {
            warn!(path, cause = %format!("{err:#}"), "cannot reach the renderer over http");
            let mut response = http::json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the renderer cannot be reached for {path} now; ask again after Retry-After"
                ),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("2"));
            response
        }
        Err(_) => http::json_error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the renderer did not answer {path} within {} s",
                FETCH_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// Sends one request to the renderer and returns its answer (status, type and body).
pub(crate) async fn forward(
    ctx: &Context,
    method: Method,
    path: &str,
    body: Bytes,
) -> Response<Body> {
    match tokio::time::timeout(FETCH_TIMEOUT, fetch(ctx, method, path, body)).await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => {
            warn!(path, cause = %format!("{err:#}"), "cannot reach the renderer over http");
            http::text(
                StatusCode::BAD_GATEWAY,
                format!("cannot reach the renderer for {path}: {err:#}"),
            )
        }
        Err(_) => http::text(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the renderer did not answer {path} in time"),
        ),
    }
}

/// Reads `path` from the renderer (`GET`), giving its status and whole body, within
/// [`FETCH_TIMEOUT`] and [`MAX_RESPONSE_BYTES`]; for answers the relay reads itself rather
/// than passes on (the dashboards' `detailed_stats`).
///
/// # Errors
/// The renderer cannot be reached, does not answer in time, or sends a body too large.
pub(crate) async fn get_bytes(ctx: &Context, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let response = tokio::time::timeout(FETCH_TIMEOUT, async {
        let response = send(ctx, Method::GET, path, Bytes::new()).await?;
        let status = response.status();
        let body = read_body(response).await?;
        anyhow::Ok((status, body))
    })
    .await
    .map_err(|_| anyhow!("no answer within {} s", FETCH_TIMEOUT.as_secs()))??;
    Ok(response)
}

async fn fetch(
    ctx: &Context,
    method: Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<Response<Body>> {
    let response = send(ctx, method, path, body).await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    // A 503 from a full store says when to try again; the sender must hear it too.
    let retry_after = response.headers().get(RETRY_AFTER).cloned();
    let body = read_body(response).await?;
    let mut reply = http::with_body(status, "application/octet-stream", body);
    reply.headers_mut().insert(CONTENT_TYPE, content_type);
    if let Some(retry_after) = retry_after {
        reply.headers_mut().insert(RETRY_AFTER, retry_after);
    }
    Ok(reply)
}

/// Sends one request to the renderer on a new connection and returns its answer's head.
async fn send(
    ctx: &Context,
    method: Method,
    path: &str,
    body: Bytes,
) -> anyhow::Result<Response<Incoming>> {
    let authority = &ctx.renderer_authority;
    let stream = ctx.renderer_connector.connect().await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("http handshake")?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, authority.as_str())
        .body(Full::new(body))
        .context("build request")?;
    if let Some(token) = &ctx.config.token {
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            request.headers_mut().insert(AUTHORIZATION, value);
        }
    }
    sender.send_request(request).await.context("send request")
}

/// Reads a renderer answer's body, up to [`MAX_RESPONSE_BYTES`].
async fn read_body(response: Response<Incoming>) -> anyhow::Result<Bytes> {
    Ok(Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|err| anyhow!("read body: {err}"))?
        .to_bytes())
}
