//! State shared by every task of one relay.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use netkit::TokenBucket;
use protocol::Limits;
use tokio::sync::{mpsc, Semaphore};

use crate::config::Config;
use crate::events::EventSender;
use crate::hub::Hub;
use crate::origins::PublicOrigins;
use crate::upstream::Outbound;

/// Everything a session or the upstream task needs, behind one `Arc`.
#[derive(Debug)]
pub(crate) struct Context {
    /// The flags the relay was started with.
    pub config: Config,
    /// Message bounds derived from the flags.
    pub limits: Limits,
    /// Sessions and the renderer link state.
    pub hub: Hub,
    /// Page messages on their way to the renderer (bounded: `--upstream-queue`).
    pub upstream: mpsc::Sender<Outbound>,
    /// Event-API requests on their way to the renderer (bounded: `--events-queue`).
    pub events: EventSender,
    /// `host:port` of the renderer, for image requests.
    pub renderer_authority: String,
    /// Opens connections to the renderer, over TLS for a `wss://` URL (`--renderer-ca`).
    pub renderer_connector: netkit::tls::Connector,
    /// The names browsers may use for the relay (`Host` and `Origin` checks).
    pub origins: PublicOrigins,
    /// Event-API rate limits, one bucket per client address.
    pub api_limits: ApiLimits,
    /// Places for dashboards' `request_detailed_stats` reads from the renderer
    /// (`--max-stats-requests`), so many dashboards cannot open unbounded HTTP requests.
    pub stats_permits: Arc<Semaphore>,
    /// The NATS JetStream bus tracked events go to instead of the renderer link
    /// (`--bus`); `None` without it.
    #[cfg(feature = "cluster")]
    pub bus: Option<crate::bus::Bus>,
}

/// Token buckets per client address for the event API, bounded in size: past
/// [`MAX_TRACKED_ADDRESSES`] the table starts over (a flood from many addresses is then
/// limited by `--max-connections` instead).
#[derive(Debug, Default)]
pub(crate) struct ApiLimits {
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

/// Addresses whose API rate is tracked at once.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

impl ApiLimits {
    /// Takes a token for `ip`; `false` means the request is over its rate.
    pub fn allow(&self, ip: IpAddr, rate: u32, burst: u32) -> bool {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_TRACKED_ADDRESSES && !buckets.contains_key(&ip) {
            buckets.clear();
        }
        buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(rate, burst))
            .try_take()
    }
}
