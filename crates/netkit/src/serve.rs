//! The accept loop shared by both servers.
//!
//! Follows mini-redis's `Listener`: a semaphore caps open connections, accept errors are
//! retried with back-off rather than ending the server, and each connection lives in its
//! own task whose errors never reach the loop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, error, warn};

use crate::http::Body;
use crate::shutdown::Shutdown;

/// Bounds of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    /// Most TCP connections open at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// How long a client may take to send its request headers (slow-loris bound).
    pub header_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves HTTP/1.1 (with upgrades) on `listener` until `shutdown` starts.
///
/// `handle` answers each request; it may upgrade the request and spawn a task holding its
/// own [`Shutdown`]. On shutdown the loop stops accepting and every open HTTP connection
/// finishes its current request, then closes.
pub async fn serve<H, F>(
    listener: TcpListener,
    config: ServeConfig,
    mut shutdown: Shutdown,
    handle: H,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(config.max_connections));
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
            warn!(%peer, "connection refused: too many open connections");
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = stream
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 29\r\nconnection: close\r\n\r\ntoo many connections, retry\r\n")
                    .await;
            });
            continue;
        };
        let handle = handle.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let response = handle(request, peer);
                async move { Ok::<_, Infallible>(response.await) }
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
