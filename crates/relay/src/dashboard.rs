//! The seed's dashboard requests on the page socket, answered by the relay to the asking
//! connection alone.
//!
//! `request_detailed_stats` reads the filtered summary from the renderer over HTTP, the way
//! `passthrough` serves `GET /api/analytics/summary`, rather than over the link: the
//! renderer already answers that read (filters, validation, the store on a blocking
//! thread), the link carries no request/answer pairs for reads, and an HTTP read is bounded
//! by itself (a timeout, a body limit). The relay bounds how many run at once with
//! `--max-stats-requests` and allows one per connection, so a dashboard cannot queue
//! reads faster than the renderer answers them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hyper::StatusCode;
use netkit::Shutdown;
use protocol::analytics::Summary;
use protocol::{ConnId, Error, ErrorCode, ServerMessage, StatsFilters};
use tracing::debug;

use crate::context::Context;
use crate::passthrough;

/// Starts answering one `request_detailed_stats` in a task of its own, so the page's
/// socket keeps reading (and hearing link and presence changes) while the renderer reads.
///
/// # Errors
/// [`ErrorCode::Busy`] when this connection already waits for an answer or every
/// `--max-stats-requests` place is taken; nothing is started then.
pub(crate) fn spawn_detailed_stats(
    ctx: &Arc<Context>,
    conn: ConnId,
    filters: StatsFilters,
    in_flight: &Arc<AtomicBool>,
    mut shutdown: Shutdown,
) -> Result<(), Error> {
    if in_flight.swap(true, Ordering::AcqRel) {
        return Err(Error::new(
            ErrorCode::Busy,
            "request_detailed_stats: this connection already waits for a detailed_stats; ask again once it arrives",
        ));
    }
    let guard = InFlight(in_flight.clone());
    let Ok(permit) = ctx.stats_permits.clone().try_acquire_owned() else {
        return Err(Error::new(
            ErrorCode::Busy,
            format!(
                "request_detailed_stats: {} are being answered (--max-stats-requests); ask again shortly",
                ctx.config.max_stats_requests
            ),
        ));
    };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let reply = tokio::select! {
            reply = detailed_stats(&ctx, filters) => reply,
            _ = shutdown.wait() => return,
        };
        drop(permit);
        drop(guard);
        let msg = match reply {
            Ok(msg) => msg,
            Err(err) => {
                ctx.hub.metrics.errors.record(err.code);
                debug!(conn, code = %err.code, message = %err.message, "detailed stats not answered");
                ServerMessage::Error {
                    code: err.code,
                    message: err.message,
                    recording: None,
                    seq: None,
                    request: None,
                }
            }
        };
        ctx.hub.deliver(conn, &msg);
    });
    Ok(())
}

/// Clears a connection's "waiting for detailed stats" mark however its task ends.
struct InFlight(Arc<AtomicBool>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Reads the summary for `filters` (already normalised) from the renderer.
async fn detailed_stats(ctx: &Context, filters: StatsFilters) -> Result<ServerMessage, Error> {
    let path = summary_path(&filters);
    let (status, body) = passthrough::get_bytes(ctx, &path).await.map_err(|err| {
        Error::new(
            ErrorCode::RendererUnavailable,
            format!("request_detailed_stats: the renderer cannot be reached now ({err:#}); ask again later"),
        )
    })?;
    if status == StatusCode::BAD_REQUEST {
        // The relay checked the filters already; a renderer that still refuses says why.
        let message = String::from_utf8_lossy(&body).into_owned();
        return Err(Error::new(
            ErrorCode::BadField,
            format!("request_detailed_stats: {message}"),
        ));
    }
    if status != StatusCode::OK {
        return Err(Error::new(
            ErrorCode::RendererUnavailable,
            format!("request_detailed_stats: the renderer answered {status}; ask again later"),
        ));
    }
    let summary: Summary = serde_json::from_slice(&body).map_err(|err| {
        Error::new(
            ErrorCode::RendererUnavailable,
            format!("request_detailed_stats: the renderer's summary does not decode: {err}"),
        )
    })?;
    Ok(ServerMessage::DetailedStats { filters, summary })
}

/// `/api/analytics/summary` with the filters as query parameters.
fn summary_path(filters: &StatsFilters) -> String {
    let mut path = String::from("/api/analytics/summary");
    let mut separator = '?';
    for (name, value) in [("country", &filters.country), ("page", &filters.page)] {
        if let Some(value) = value {
            path.push(separator);
            path.push_str(name);
            path.push('=');
            path.push_str(&percent_encode(value));
            separator = '&';
        }
    }
    path
}

/// Escapes everything in a query value but unreserved characters and `/`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_an_escaped_query() {
        assert_eq!(
            summary_path(&StatsFilters::default()),
            "/api/analytics/summary"
        );
        let filters = StatsFilters {
            country: Some("DE".into()),
            page: Some("/a b&c=ü".into()),
        };
        assert_eq!(
            summary_path(&filters),
            "/api/analytics/summary?country=DE&page=/a%20b%26c%3D%C3%BC"
        );
    }
}
