//! The accept loop shared by both servers.
//!
//! Follows mini-redis's `Listener`: accept errors are retried with back-off rather than
//! ending the server, and each connection lives in its own task whose errors never reach
//! the loop.
//!
//! Connections are bounded in two pools, because a socket that has not yet said what it
//! wants must not take a place from one that has:
//! - *Waiting* connections (still sending request headers, or idle between requests) are
//!   at most `max_pending_connections`, and at most `max_connections_per_ip` from one
//!   address. A newcomer is always let in: over either bound, the oldest waiting one (of
//!   that address, for the per-address bound) is closed instead. A flood of slow strangers
//!   therefore cannot keep a fast peer out, it only pushes the other strangers out.
//! - *Busy* connections (inside a request, or upgraded to a WebSocket) are at most
//!   `max_connections`, and `max_connections_per_ip` from one address. The bound is checked
//!   once the request's path is known, so a request over it gets a 503 while the probe paths
//!   (`/healthz`, `/metrics`) are still answered: health stays observable at the cap.
//!
//! Behind a trusted reverse proxy ([`ServeConfig::trusted_proxies`]) the busy pool's address
//! is the visitor's, read from the forwarding headers of each request, and the handler is
//! given that address; the waiting pool, which counts connections before any header arrives,
//! bounds a proxy's connections only by the overall `max_pending_connections`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, info, warn};

use crate::forwarded::{self, TrustedProxies};
use crate::http::{self, Body};
use crate::shutdown::{Shutdown, ShutdownController};
use crate::tls::TlsServer;

/// Bounds of the accept loop.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Most connections busy at once: inside a request, or upgraded to a WebSocket. A request
    /// over it is answered 503 and its connection closed; [`ServeConfig::probe_paths`] are
    /// answered anyway.
    pub max_connections: usize,
    /// Most connections waiting for a request at once (sending headers, or idle between
    /// requests); over it the oldest waiting one is closed to let the newcomer in.
    pub max_pending_connections: usize,
    /// Per client address: most busy connections (503 over it) and most waiting ones (the
    /// address's oldest waiting one is closed over it), so one address cannot take every place.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send its request headers (slow-loris bound), from the
    /// moment the connection is ready for a request.
    pub header_timeout: Duration,
    /// Largest request body announced in `Content-Length`; larger requests get 413. Our
    /// servers read no bodies, so this only turns away uploads early and clearly.
    pub max_body_bytes: u64,
    /// Paths answered even when `max_connections` are busy, so that probes and scrapers can
    /// still see a server at its cap. Their requests stay in the waiting pool and take no busy
    /// place, so their handlers must answer at once and must never upgrade.
    pub probe_paths: &'static [&'static str],
    /// Peers whose `Forwarded` / `X-Forwarded-*` headers name the real client (see
    /// [`crate::forwarded`]). Their connections are also exempt from the per-address bound of
    /// the waiting pool, because every visitor shares their address.
    pub trusted_proxies: TrustedProxies,
    /// The certificate to serve `https://` and `wss://` with; `None` serves plain HTTP.
    pub tls: Option<TlsServer>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_connections: 1024,
            max_pending_connections: 1024,
            max_connections_per_ip: 64,
            header_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            probe_paths: &["/healthz", "/metrics"],
            trusted_proxies: TrustedProxies::default(),
            tls: None,
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
    let waiting = Arc::new(Waiting::new(&config));
    let busy = Arc::new(Busy::new(&config));
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
        let place = Arc::new(Place::enter(&waiting, peer.ip()));
        tokio::spawn(serve_connection(
            stream,
            peer,
            config.clone(),
            place,
            busy.clone(),
            shutdown.clone(),
            handle.clone(),
        ));
    }
}

/// Serves one accepted connection until it ends, is closed to make room, or shutdown
/// finishes its current request; over TLS when the server has a certificate.
async fn serve_connection<H, F>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    config: ServeConfig,
    place: Arc<Place>,
    busy: Arc<Busy>,
    mut conn_shutdown: Shutdown,
    handle: H,
) where
    H: Fn(Request<Incoming>, SocketAddr, Shutdown) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let Some(tls) = config.tls.clone() else {
        return serve_http(stream, peer, config, place, busy, conn_shutdown, handle).await;
    };
    // The handshake happens while the connection waits, so the waiting pool's bounds and
    // the header timeout hold for it too: a stranger cannot stall in it.
    let evicted = place.evicted.clone();
    let handshake = tokio::time::timeout(config.header_timeout, tls.acceptor().accept(stream));
    let stream = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                debug!(%peer, cause = %err, "tls handshake failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "tls handshake took longer than the header timeout");
                return;
            }
        },
        () = evicted.notified() => {
            debug!(%peer, "closed a connection in its tls handshake to make room for a newer one");
            return;
        }
        _ = conn_shutdown.wait() => return,
    };
    serve_http(stream, peer, config, place, busy, conn_shutdown, handle).await
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it ends, is closed to make room,
/// or shutdown finishes its current request.
async fn serve_http<I, H, F>(
    stream: I,
    peer: SocketAddr,
    config: ServeConfig,
    place: Arc<Place>,
    busy: Arc<Busy>,
    mut conn_shutdown: Shutdown,
    handle: H,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, SocketAddr, Shutdown) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let evicted = place.evicted.clone();
    let header_timeout = config.header_timeout;
    let task_shutdown = conn_shutdown.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let answer = admit(
            request,
            peer,
            &config,
            &place,
            &busy,
            &handle,
            &task_shutdown,
        );
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = evicted.notified() => {
            // Only a waiting connection is ever picked, so no request is cut short.
            debug!(%peer, "closed a waiting connection to make room for a newer one");
            return;
        }
        _ = conn_shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        debug!(%peer, cause = %err, "http connection ended with an error");
    }
}

/// Decides where a request stands (a probe, a busy place, or refused) and starts its answer.
///
/// Runs synchronously when hyper has read the request's headers, so the connection leaves
/// the waiting pool before anything can pick it for closing mid-request.
fn admit<H, F>(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    config: &ServeConfig,
    place: &Arc<Place>,
    busy: &Busy,
    handle: &H,
    task_shutdown: &Shutdown,
) -> impl Future<Output = Response<Answer>> + Send + 'static
where
    H: Fn(Request<Incoming>, SocketAddr, Shutdown) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let is_probe = config.probe_paths.contains(&request.uri().path());
    // Behind a trusted proxy the visitor's address, not the proxy's, takes the per-address
    // place and is what the handler sees; decided per request, because a proxy may carry
    // several visitors' requests over one kept-alive connection.
    let client = forwarded::client(peer, request.headers(), &config.trusted_proxies);
    let client_addr = client.addr;
    let admission = if is_probe {
        // A probe is answered at once: it keeps its waiting place (made the newest, so a
        // flood does not close it first) and takes no busy one.
        place.refresh();
        Ok(None)
    } else if !place.leave() {
        Err("this connection was closed to make room, retry")
    } else {
        busy.try_enter(client_addr).map(Some)
    };
    let busy_place = match admission {
        Ok(busy_place) => busy_place,
        Err(reason) => {
            warn!(peer = %client_addr, via = ?client.forwarded.then_some(peer), "request refused: {reason}");
            return Start::Refused(refusal(reason)).answer(None, None);
        }
    };
    request.extensions_mut().insert(client);
    let guard = busy_place.map(|busy_place| {
        let guard = Arc::new(ConnectionGuard { _busy: busy_place });
        request.extensions_mut().insert(guard.clone());
        guard
    });
    // A request that left the waiting pool rejoins it once its answer is sent.
    let rejoin = (!is_probe).then(|| place.clone());
    let max_body_bytes = config.max_body_bytes;
    let too_large = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .is_some_and(|length| length > max_body_bytes);
    let start = if too_large {
        // JSON, as every API error is: only API routes take bodies.
        Start::Ready(http::json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request bodies over {max_body_bytes} bytes are refused (--max-body-bytes); send fewer events per request"),
        ))
    } else {
        Start::Handler(handle(request, client_addr, task_shutdown.clone()))
    };
    start.answer(guard, rejoin)
}

/// How a request's answer comes about.
enum Start<F> {
    /// The server's handler answers it.
    Handler(F),
    /// The accept loop answers it at once (413).
    Ready(Response<Body>),
    /// Refused for want of a place (503); the connection closes after the answer.
    Refused(Response<Body>),
}

impl<F> Start<F>
where
    F: Future<Output = Response<Body>> + Send + 'static,
{
    /// The answer, holding `guard` (the busy place) until it is sent and then putting the
    /// connection back with the waiting ones (`rejoin`), unless it became a WebSocket.
    async fn answer(
        self,
        guard: Option<Arc<ConnectionGuard>>,
        rejoin: Option<Arc<Place>>,
    ) -> Response<Answer> {
        let (response, rejoin) = match self {
            Start::Handler(handler) => (handler.await, rejoin),
            Start::Ready(response) => (response, rejoin),
            Start::Refused(response) => (response, None),
        };
        let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        response.map(|body| Answer {
            body,
            _guard: guard,
            rejoin: rejoin.filter(|_| !upgraded),
        })
    }
}

/// A response body that keeps the connection's busy place until hyper has sent it all.
///
/// hyper drops the body once it is written (or the connection fails), which is the moment the
/// connection is ready for its next request and so counts as waiting again.
struct Answer {
    body: Body,
    _guard: Option<Arc<ConnectionGuard>>,
    rejoin: Option<Arc<Place>>,
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(place) = self.rejoin.take() {
            place.rejoin();
        }
    }
}

/// A 503 that closes the connection, for a request that found no place.
fn refusal(reason: &'static str) -> Response<Body> {
    let mut response = http::text(StatusCode::SERVICE_UNAVAILABLE, reason);
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A connection's place under `--max-connections` and the per-address limit.
///
/// Every request but a probe carries an `Arc` of it in its extensions; [`crate::ws::accept`]
/// moves one into the upgraded socket, so a WebSocket counts as busy for as long as it is open.
#[derive(Debug)]
pub struct ConnectionGuard {
    _busy: BusyPlace,
}

/// The busy pool: connections inside a request or upgraded, by count and by address.
struct Busy {
    permits: Arc<Semaphore>,
    per_ip: PerIpCounts,
    per_ip_limit: usize,
}

/// One busy connection, counted in total and against its address until dropped.
#[derive(Debug)]
struct BusyPlace {
    _permit: OwnedSemaphorePermit,
    _per_ip: PerIpGuard,
}

impl Busy {
    fn new(config: &ServeConfig) -> Self {
        Busy {
            permits: Arc::new(Semaphore::new(config.max_connections)),
            per_ip: PerIpCounts::default(),
            per_ip_limit: config.max_connections_per_ip,
        }
    }

    /// A busy place for a request from `peer`, or why there is none (the 503's text).
    fn try_enter(&self, peer: SocketAddr) -> Result<BusyPlace, &'static str> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Err("too many connections, retry later (--max-connections)");
        };
        let Some(per_ip) = PerIpGuard::try_new(&self.per_ip, peer.ip(), self.per_ip_limit) else {
            return Err(
                "too many connections from your address, retry later (--max-connections-per-ip)",
            );
        };
        Ok(BusyPlace {
            _permit: permit,
            _per_ip: per_ip,
        })
    }
}

/// Busy connections by client address.
type PerIpCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One busy connection counted against its address; uncounted on drop.
#[derive(Debug)]
struct PerIpGuard {
    counts: PerIpCounts,
    ip: IpAddr,
}

impl PerIpGuard {
    /// Counts a connection from `ip`, unless it already has `limit` open.
    fn try_new(counts: &PerIpCounts, ip: IpAddr, limit: usize) -> Option<Self> {
        let mut map = lock(counts);
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
        let mut map = lock(&self.counts);
        if let Some(open) = map.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The waiting pool: connections between requests, oldest first.
struct Waiting {
    limit: usize,
    per_ip_limit: usize,
    /// Proxies carry every visitor, so their connections only count against `limit`.
    trusted_proxies: TrustedProxies,
    state: Mutex<WaitingState>,
}

#[derive(Default)]
struct WaitingState {
    /// The key the next connection to wait gets; keys only grow, so they order by age.
    next_key: u64,
    /// Every waiting connection by key, so the first is the one waiting longest.
    queue: BTreeMap<u64, Waiter>,
    /// Waiting connections by address.
    per_ip: HashMap<IpAddr, usize>,
}

/// A waiting connection as the pool sees it.
struct Waiter {
    ip: IpAddr,
    /// Wakes the connection's task to close it.
    evict: Arc<Notify>,
}

impl Waiting {
    fn new(config: &ServeConfig) -> Self {
        Waiting {
            limit: config.max_pending_connections.max(1),
            per_ip_limit: config.max_connections_per_ip.max(1),
            trusted_proxies: config.trusted_proxies.clone(),
            state: Mutex::default(),
        }
    }

    /// Adds a connection from `ip` as the newest waiting one, first closing the oldest one
    /// from the same address and then the oldest of all if either bound is reached.
    fn push(&self, ip: IpAddr, evict: &Arc<Notify>) -> u64 {
        let mut state = lock(&self.state);
        if state.per_ip.get(&ip).copied().unwrap_or(0) >= self.per_ip_limit
            && !self.trusted_proxies.contains(ip)
        {
            let oldest_here = state
                .queue
                .iter()
                .find(|(_, waiter)| waiter.ip == ip)
                .map(|(key, _)| *key);
            if let Some(key) = oldest_here {
                state.evict(key);
            }
        }
        if state.queue.len() >= self.limit {
            if let Some(key) = state.queue.keys().next().copied() {
                state.evict(key);
            }
        }
        let key = state.next_key;
        state.next_key += 1;
        state.queue.insert(
            key,
            Waiter {
                ip,
                evict: evict.clone(),
            },
        );
        *state.per_ip.entry(ip).or_insert(0) += 1;
        key
    }

    /// Takes the connection with `key` out of the pool; `false` if it was already closed to
    /// make room.
    fn remove(&self, key: u64) -> bool {
        lock(&self.state).remove(key).is_some()
    }
}

impl WaitingState {
    fn remove(&mut self, key: u64) -> Option<Waiter> {
        let waiter = self.queue.remove(&key)?;
        if let Some(count) = self.per_ip.get_mut(&waiter.ip) {
            *count -= 1;
            if *count == 0 {
                self.per_ip.remove(&waiter.ip);
            }
        }
        Some(waiter)
    }

    fn evict(&mut self, key: u64) {
        if let Some(waiter) = self.remove(key) {
            // `notify_one` keeps the wake-up if the task is not listening at this instant.
            waiter.evict.notify_one();
        }
    }
}

/// One connection's membership of the waiting pool, shared by its task and its requests.
struct Place {
    waiting: Arc<Waiting>,
    ip: IpAddr,
    /// Woken when the pool closes this connection to make room.
    evicted: Arc<Notify>,
    /// The connection's key in the pool while it waits, `None` while it is busy.
    key: Mutex<Option<u64>>,
}

impl Place {
    /// A new connection, waiting for its first request.
    fn enter(waiting: &Arc<Waiting>, ip: IpAddr) -> Self {
        let evicted = Arc::new(Notify::new());
        let key = waiting.push(ip, &evicted);
        Place {
            waiting: waiting.clone(),
            ip,
            evicted,
            key: Mutex::new(Some(key)),
        }
    }

    /// Leaves the pool for a request; `false` if the connection was closed to make room just
    /// before its request arrived.
    fn leave(&self) -> bool {
        match lock(&self.key).take() {
            Some(key) => self.waiting.remove(key),
            None => true,
        }
    }

    /// Waits again, as the newest, once a request's answer is sent.
    fn rejoin(&self) {
        let mut key = lock(&self.key);
        if key.is_none() {
            *key = Some(self.waiting.push(self.ip, &self.evicted));
        }
    }

    /// Makes a waiting connection the newest, as a probe request arrives on it.
    fn refresh(&self) {
        let mut key = lock(&self.key);
        // A connection already closed to make room stays out; its task is ending.
        let still_waiting = key.take().is_none_or(|old| self.waiting.remove(old));
        if still_waiting {
            *key = Some(self.waiting.push(self.ip, &self.evicted));
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(key) = lock(&self.key).take() {
            self.waiting.remove(key);
        }
    }
}

/// Locks `mutex`, recovering from a panic elsewhere: every critical section here leaves the
/// counts consistent before anything can panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A server process's start: binds `listen`, installs the signal handlers, then prints
/// `SCHEME://ADDR` (the real address, after a `:0` port was chosen) as the one line on
/// stdout, where scripts, tests and people find it.
///
/// The handlers go in before the address goes out: whoever reads the line may send
/// SIGTERM at once, and it must find a graceful shutdown, not the default action; a TLS
/// server (`tls`) also catches SIGHUP, so `systemctl reload` right after the start reloads
/// the certificate instead of killing the process. Returns the listener and the future
/// that resolves on SIGINT or SIGTERM.
///
/// # Errors
/// The address cannot be bound or a signal handler cannot be installed.
pub async fn bind_and_announce(
    listen: std::net::SocketAddr,
    scheme: &str,
    tls: bool,
) -> anyhow::Result<(
    tokio::net::TcpListener,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let addr = listener.local_addr().context("read the bound address")?;
    let shutdown = crate::shutdown::signal();
    if tls {
        crate::tls::catch_sighup()?;
    }
    println!("{scheme}://{addr}");
    Ok((listener, shutdown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_pending_connections: usize, max_connections_per_ip: usize) -> ServeConfig {
        ServeConfig {
            max_connections: 2,
            max_pending_connections,
            max_connections_per_ip,
            ..ServeConfig::default()
        }
    }

    /// Whether the pool woke this connection's task to close it.
    async fn woken(evict: &Notify) -> bool {
        tokio::time::timeout(Duration::ZERO, evict.notified())
            .await
            .is_ok()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[tokio::test]
    async fn a_full_pool_closes_its_oldest_waiter_for_a_newcomer() {
        let waiting = Waiting::new(&config(2, 10));
        let evicts: Vec<Arc<Notify>> = (0..3).map(|_| Arc::new(Notify::new())).collect();
        let keys: Vec<u64> = evicts
            .iter()
            .enumerate()
            .map(|(idx, evict)| waiting.push(ip(idx as u8), evict))
            .collect();
        assert!(woken(&evicts[0]).await, "the oldest is closed");
        assert!(!woken(&evicts[1]).await && !woken(&evicts[2]).await);
        assert!(!waiting.remove(keys[0]), "the closed one left the pool");
        assert!(waiting.remove(keys[1]) && waiting.remove(keys[2]));
    }

    #[tokio::test]
    async fn an_address_at_its_bound_closes_only_its_own_oldest_waiter() {
        let waiting = Waiting::new(&config(10, 2));
        let evicts: Vec<Arc<Notify>> = (0..4).map(|_| Arc::new(Notify::new())).collect();
        let first = waiting.push(ip(1), &evicts[0]);
        let other = waiting.push(ip(2), &evicts[1]);
        waiting.push(ip(1), &evicts[2]);
        waiting.push(ip(1), &evicts[3]);
        assert!(woken(&evicts[0]).await, "the address's oldest is closed");
        assert!(
            !woken(&evicts[1]).await,
            "another address's older one is kept"
        );
        assert!(!woken(&evicts[2]).await && !woken(&evicts[3]).await);
        assert!(!waiting.remove(first));
        assert!(waiting.remove(other));
    }

    #[tokio::test]
    async fn a_trusted_proxy_is_bounded_only_by_the_whole_pool() {
        let proxy = ip(1);
        let waiting = Waiting::new(&ServeConfig {
            trusted_proxies: TrustedProxies::new(&[proxy.to_string().parse().unwrap()]),
            ..config(3, 1)
        });
        let evicts: Vec<Arc<Notify>> = (0..4).map(|_| Arc::new(Notify::new())).collect();
        for evict in &evicts[..3] {
            waiting.push(proxy, evict);
        }
        for evict in &evicts[..3] {
            assert!(
                !woken(evict).await,
                "the proxy's visitors share its address"
            );
        }
        waiting.push(proxy, &evicts[3]);
        assert!(woken(&evicts[0]).await, "the overall bound still holds");
    }

    #[tokio::test]
    async fn a_request_leaves_the_pool_and_rejoins_it_as_the_newest() {
        let waiting = Arc::new(Waiting::new(&config(2, 10)));
        let busy_one = Place::enter(&waiting, ip(1));
        let idle = Place::enter(&waiting, ip(2));
        assert!(busy_one.leave(), "not closed before its request");
        let newcomer = Place::enter(&waiting, ip(3));
        assert!(!woken(&idle.evicted).await, "the busy one made room");
        // Rejoining as the newest closes the oldest waiter, and a later newcomer closes the
        // next oldest, not the one that just finished a request.
        busy_one.rejoin();
        assert!(woken(&idle.evicted).await);
        let _latest = Place::enter(&waiting, ip(4));
        assert!(woken(&newcomer.evicted).await);
        assert!(!woken(&busy_one.evicted).await);
        assert!(
            !idle.leave(),
            "a closed connection's late request is refused"
        );
        drop(busy_one);
        drop(_latest);
        assert_eq!(
            lock(&waiting.state).queue.len(),
            0,
            "dropping a place frees it"
        );
    }

    #[test]
    fn the_busy_pool_names_the_bound_that_refused() {
        let busy = Busy::new(&ServeConfig {
            max_connections: 2,
            max_connections_per_ip: 1,
            ..ServeConfig::default()
        });
        let here = SocketAddr::from(([10, 0, 0, 1], 1));
        let there = SocketAddr::from(([10, 0, 0, 2], 1));
        let _first = busy.try_enter(here).unwrap();
        let refused = busy.try_enter(here).unwrap_err();
        assert!(refused.contains("your address"), "{refused}");
        let _second = busy.try_enter(there).unwrap();
        let refused = busy
            .try_enter(SocketAddr::from(([10, 0, 0, 3], 1)))
            .unwrap_err();
        assert!(refused.contains("--max-connections)"), "{refused}");
        drop(_first);
        assert!(busy.try_enter(here).is_ok(), "a freed place is reused");
    }
}
