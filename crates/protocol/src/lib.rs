//! The wire contract between the recorder page, the relay and the renderer.
//!
//! Only this crate knows the wire format: every type that derives `Serialize` or
//! `Deserialize` lives here, so a change to what travels over a socket is a change to
//! this crate and to `docs/protocol.md`, never a side effect of an internal refactor.
//!
//! Modules, in reading order:
//! - [`page`]: what the browser sends ([`PageMessage`]) and what it is sent back ([`ServerMessage`]).
//! - [`link`]: the relay ↔ renderer envelope ([`RelayMessage`], [`RendererMessage`]) that carries
//!   page traffic tagged with the connection it came from.
//! - [`limits`]: shared defaults and the [`Limits`] a receiver checks messages against.
//! - [`validate`]: the checks every receiver runs before it trusts a message.
//! - [`codec`]: decoding with errors a sender can act on.
//! - [`options`]: how a heatmap should look ([`RenderOptions`]).
//! - [`dashboard`]: the seed's dashboard messages: detailed-stats filters and counted actions.
//! - [`names`]: the only shape a heatmap file name may have.
//! - [`analytics`]: the HTTP event API of tracked sites ([`analytics::decode_events`]), and the
//!   analytics read back; `country` and `timestamp` turn the seed API's country names and
//!   ISO-8601 times into codes and epoch milliseconds.
//! - [`live`]: what relays tell each other about their pages in cluster mode ([`live::RelayLive`]).
//!
//! The crate does no IO and has no async runtime: it is plain data and pure functions.

pub mod analytics;
pub mod codec;
mod country;
pub mod dashboard;
mod error;
pub mod limits;
pub mod link;
pub mod live;
pub mod names;
pub mod options;
pub mod page;
mod timestamp;
pub mod validate;

pub use codec::{decode_page, decode_relay, decode_renderer, encode};
pub use country::country_code;
pub use dashboard::{Activity, Alert, Member, StatsFilters, VisitorUpdate};
pub use error::{Error, ErrorCode};
pub use limits::Limits;
pub use link::{ConnId, LinkLimits, RelayMessage, RendererMessage};
pub use options::{Colormap, HeatKind, OutputMode, RenderOptions, Scale};
pub use page::{
    AnalyticsUpdate, Cursor, Generate, HeatmapReady, LinkState, PageMessage, Point, PointKind,
    PointsBatch, Preview, PreviewFrame, RecordingId, ServerMessage, Viewport,
};
pub use timestamp::parse_iso8601_ms;

/// The protocol version spoken by this build.
///
/// Both handshakes (page → relay `hello`, relay → renderer `hello`) carry it; a peer with
/// another version is refused with [`ErrorCode::UnsupportedVersion`] rather than being
/// misunderstood silently.
pub const PROTOCOL_VERSION: u32 = 1;
