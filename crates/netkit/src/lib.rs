//! Plumbing that the relay and the renderer share, so that neither depends on the other.
//!
//! Both tiers are hyper 1 servers that upgrade some requests to WebSockets; the code that
//! accepts connections, upgrades them, limits them and stops them is the same and lives
//! here. Nothing in this crate knows what a heatmap is.
//!
//! Modules, in reading order:
//! - [`shutdown`]: one signal every task listens to, and a wait for all of them to finish.
//! - [`serve`]: the accept loop: waiting and busy connection pools, accept back-off, graceful stop.
//! - [`forwarded`]: the real client behind a trusted reverse proxy.
//! - [`http`]: small response builders.
//! - [`logging`]: the binaries' `tracing` setup.
//! - [`tls`]: certificates for `https://`/`wss://`, reloaded on SIGHUP, and the relay's TLS client.
//! - [`ws`]: the server side of the WebSocket upgrade on a hyper request.
//! - [`rate`]: a token bucket for per-connection message rates.
//! - [`counters`]: error counters keyed by the protocol's error codes.
//! - [`metrics`]: `/metrics` in the OpenMetrics text format.

pub mod counters;
pub mod forwarded;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod rate;
pub mod serve;
pub mod shutdown;
pub mod tls;
pub mod ws;

pub use counters::ErrorCounters;
pub use forwarded::{Client, IpNet, TrustedProxies};
pub use rate::TokenBucket;
pub use serve::{serve, serve_until, ServeConfig};
pub use shutdown::{Shutdown, ShutdownController};
