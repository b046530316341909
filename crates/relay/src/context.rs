//! State shared by every task of one relay.

use protocol::Limits;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::hub::Hub;
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
    /// `host:port` of the renderer, for image requests.
    pub renderer_authority: String,
}
