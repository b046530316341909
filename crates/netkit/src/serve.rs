//! The accept loop shared by both servers.
//!
//! Follows mini-redis's `Listener`: a semaphore caps open connections, accept errors are
//! retried with back-off rather than ending the server, and each connection lives in its
//! own task whose errors never reach the loop.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, error, info, warn};

use crate::http::{self, Body};
use crate::shutdown::{Shutdown, ShutdownController};

/// Bounds of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    /// Most TCP connections open at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Most TCP connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send its request headers (slow-loris bound).
    pub header_timeout: Duration,
    /// Largest request body announced in `Content-Length`; larger requests get 413. Our
    /// servers read no bodies, so this only turns away uploads early and clearly.
    pub max_body_bytes: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_connections: 1024,
            max_connections_per_ip: 64,
            header_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Serves on `listener` until `signal` resolves, then stops every task of `controller`
/// and waits for them, at most [`SHUTDOWN_GRACE`].
///
/// This is the whole life of a server process: `run` in each binary's library builds its
/// state and its handler, and hands over here.
pub async fn serve_until<H, F>(
    listener: TcpListener,
    config: ServeConfig,
    controller: ShutdownController,
    signal: impl Future<Output = ()>,
    handle: H,
) where
    H: Fn(Request<Incoming>, SocketAddr, Shutdown) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let server = serve(listener, config, controller.subscribe(), handle);
    tokio::select! {
        () = server => {}
        () = signal => info!("shutdown requested"),
    }
    if !controller.shutdown(SHUTDOWN_GRACE).await {
        warn!("some connections were still open after {SHUTDOWN_GRACE:?}; stopping anyway");
    }
}

/// How long shutdown waits for connections and tasks to finish before giving up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves HTTP/1.1 (with upgrades) on `listener` until `shutdown` starts.
///
/// `handle` answers each request and is given a [`Shutdown`] for any task it spawns (an
/// upgraded WebSocket, say). On shutdown the loop stops accepting and every open HTTP connection
/// finishes its current request, then closes.
pub async fn serve<H, F>(
    listener: TcpListener,
    config: ServeConfig,
    mut shutdown: Shutdown,
    handle: H,
) where
    H: Fn(Request<Incoming>, SocketAddr, Shutdown) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let per_ip_counts: PerIpCounts = Arc::default();
    let mut backoff = Duration::from_millis(1);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(1);
                pair
            }
            Err(err) => {
                // Typically EMFILE: wait for connections to close rather than spin.
                error!(cause = %err, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(%peer, "connection refused: too many open connections (--max-connections)");
            refuse(stream, "too many connections, retry later");
            continue;
        };
        let Some(per_ip) =
            PerIpGuard::try_new(&per_ip_counts, peer.ip(), config.max_connections_per_ip)
        else {
            warn!(%peer, "connection refused: too many open connections from this address (--max-connections-per-ip)");
            refuse(
                stream,
                "too many connections from your address, retry later",
            );
            continue;
        };
        let handle = handle.clone();
        let mut conn_shutdown = shutdown.clone();
        let task_shutdown = shutdown.clone();
        // Shared by the HTTP connection and, through the request's extensions, by a
        // WebSocket it is upgraded to: the slot is free only when both are gone.
        let guard = Arc::new(ConnectionGuard {
            _permit: permit,
            _per_ip: per_ip,
        });
        tokio::spawn(async move {
            let max_body_bytes = config.max_body_bytes;
            let service = service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(guard.clone());
                let too_large = request
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u64>().ok())
                    .is_some_and(|length| length > max_body_bytes);
                let response = (!too_large).then(|| handle(request, peer, task_shutdown.clone()));
                async move {
                    Ok::<_, Infallible>(match response {
                        Some(response) => response.await,
                        None => http::text(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("request bodies over {max_body_bytes} bytes are refused"),
                        ),
                    })
                }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(config.header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = conn_shutdown.wait() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                debug!(%peer, cause = %err, "http connection ended with an error");
            }
        });
    }
}

/// Open connections by client address.
type PerIpCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One open connection counted against its address; uncounted on drop.
#[derive(Debug)]
struct PerIpGuard {
    counts: PerIpCounts,
    ip: IpAddr,
}

impl PerIpGuard {
    /// Counts a connection from `ip`, unless it already has `limit` open.
    fn try_new(counts: &PerIpCounts, ip: IpAddr, limit: usize) -> Option<Self> {
        let mut map = counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let open = map.entry(ip).or_insert(0);
        if *open >= limit.max(1) {
            return None;
        }
        *open += 1;
        Some(PerIpGuard {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(open) = map.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Answers 503 on a raw connection and closes it.
fn refuse(mut stream: tokio::net::TcpStream, reason: &'static str) {
    tokio::spawn(async move {
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}\n",
            reason.len() + 1
        );
        let _ = stream.write_all(response.as_bytes()).await;
    });
}

/// A connection's place under `--max-connections` and the per-address limit.
///
/// Every request carries an `Arc` of it in its extensions; [`crate::ws::accept`] moves one
/// into the upgraded socket, so a WebSocket counts for as long as it is open.
#[derive(Debug)]
pub struct ConnectionGuard {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _per_ip: PerIpGuard,
}
