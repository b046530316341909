//! The relay ↔ renderer link: page traffic in an envelope that names its connection.
//!
//! The relay multiplexes every page over one WebSocket to the renderer. Each page message
//! travels inside [`RelayMessage::Page`] with the relay's [`ConnId`] for that page, and each
//! answer comes back inside [`RendererMessage::Reply`] with the same id, which is how the
//! relay routes it to the page that asked.

use serde::{Deserialize, Serialize};

use crate::analytics::TrackedEvent;
use crate::error::ErrorCode;
use crate::page::{AnalyticsUpdate, PageMessage, ServerMessage};

/// The relay's number for one page connection, unique for the relay's lifetime.
pub type ConnId = u64;

/// What the relay sends the renderer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayMessage {
    /// First message on the link: the relay's protocol version.
    Hello {
        /// Must equal [`crate::PROTOCOL_VERSION`].
        v: u32,
    },
    /// A message from a page, already validated by the relay.
    Page {
        /// The page connection it came from.
        conn: ConnId,
        /// The page's message.
        msg: PageMessage,
    },
    /// Tracked-site events from one `POST /api/events`, already decoded and checked by the
    /// relay. The relay answers the sender `202` only when `events_stored` comes back, so
    /// an acknowledged event is one the renderer's store has committed.
    Events {
        /// The relay's number for this request, echoed in the answer.
        request: u64,
        /// The events, at most [`crate::analytics::MAX_EVENTS_PER_POST`].
        events: Vec<TrackedEvent>,
    },
    /// Whether any dashboard on this relay watches the analytics: while one does, the
    /// renderer pushes `analytics` updates; while none does, it computes nothing.
    Watch {
        /// True while at least one dashboard watches.
        on: bool,
    },
}

/// The renderer's bounds on what the relay sends it, announced in `welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkLimits {
    /// Largest message the renderer reads on the link (the `page` envelope included).
    pub max_frame_bytes: usize,
    /// Most points the renderer accepts in one batch.
    pub max_points_per_batch: usize,
}

/// What the renderer sends the relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RendererMessage {
    /// Answer to `hello`: the link is usable.
    Welcome {
        /// The renderer's protocol version.
        v: u32,
        /// The renderer's bounds, so the relay can refuse a page message the renderer
        /// would refuse (one over its frame size would close the whole link). Absent from
        /// older renderers; the relay then checks only its own bounds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limits: Option<LinkLimits>,
    },
    /// An answer for one page.
    Reply {
        /// The page connection to route it to.
        conn: ConnId,
        /// The answer.
        msg: ServerMessage,
    },
    /// The store committed the events of one `events` request.
    EventsStored {
        /// The relay's number for the request.
        request: u64,
        /// Events of the request that are now stored (resends already stored included).
        accepted: usize,
    },
    /// The events of one `events` request were not stored; none of them.
    EventsRefused {
        /// The relay's number for the request.
        request: u64,
        /// Why, as a stable code: `storage_failed` (try again later), `busy` (the
        /// renderer's ingest queue is full), `bad_field` (an event the renderer refused).
        code: ErrorCode,
        /// A sentence for people, naming the event and field when one is at fault.
        message: String,
        /// Seconds after which trying again can work; absent when it cannot.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_s: Option<u32>,
    },
    /// The live analytics, pushed while the relay says a dashboard watches.
    Analytics(AnalyticsUpdate),
    /// A problem with the link itself (not with one page's message).
    Error {
        /// A stable code to match on.
        code: ErrorCode,
        /// A sentence for people.
        message: String,
    },
}
