//! Messages between a browser page and the relay.
//!
//! Every message is a JSON object with a `type` field. The page speaks [`PageMessage`];
//! it hears [`ServerMessage`], some written by the relay (link state) and some by the
//! renderer (acknowledgements, images) and routed back by the relay.

use serde::{Deserialize, Serialize};

use crate::analytics::{SessionInfo, Summary};
use crate::dashboard::{Activity, Alert, Member, StatsFilters, VisitorUpdate};
use crate::error::ErrorCode;
use crate::limits::MAX_RECORDING_ID_LEN;
use crate::options::{HeatKind, RenderOptions};

/// What a page sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PageMessage {
    /// First message of a connection: the protocol version the page speaks.
    Hello {
        /// Must equal [`crate::PROTOCOL_VERSION`].
        v: u32,
    },
    /// A new recording begins; ids are chosen by the page so that resends after a
    /// reconnect land in the same recording.
    Start {
        /// The recording's id, unique per recording.
        recording: RecordingId,
        /// The viewport size when recording started.
        viewport: Viewport,
    },
    /// A batch of coalesced pointer events.
    Points(PointsBatch),
    /// The recording ends; later batches with lower sequence numbers (resends) still count.
    Stop {
        /// The recording that ends.
        recording: RecordingId,
    },
    /// Render the recording into a PNG heatmap.
    Generate(Generate),
    /// Ask for a small live frame of the recording's density (for the page's preview).
    Preview(Preview),
    /// Subscribe this connection to the live analytics feed (the dashboard does). Answered
    /// by the relay itself with an `analytics` message every second.
    Watch,
    /// Where this page's pointer is, for the other pages' live cursors (relay-local).
    Cursor {
        /// Horizontal position as a fraction of the viewport width, 0 to 1.
        x: f32,
        /// Vertical position as a fraction of the viewport height, 0 to 1.
        y: f32,
    },
    /// The seed's request for the summary narrowed to a country and/or a page; answered
    /// with `detailed_stats` to this connection alone, so one dashboard's filter never
    /// changes what the others see.
    RequestDetailedStats {
        /// What to narrow to; missing or `null` means the whole site.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filters: Option<StatsFilters>,
    },
    /// The name this page shows in the members list (the person chose it; the page keeps it).
    SetName {
        /// 1 to [`crate::dashboard::MAX_NAME_CHARS`] characters, trimmed.
        #[serde(deserialize_with = "crate::dashboard::name_text")]
        name: String,
    },
    /// The seed's usage report from a dashboard (a filter changed, a session opened);
    /// acknowledged with `dashboard_action_ack` and counted by action.
    TrackDashboardAction {
        /// What the person did, 1 to [`crate::dashboard::MAX_ACTION_LEN`] bytes.
        #[serde(deserialize_with = "crate::dashboard::action_text")]
        action: String,
        /// Whatever the dashboard adds; accepted (the frame size bounds it) and not kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<serde_json::Value>,
    },
}

/// A batch of points of one recording.
///
/// The page numbers batches from 0 per recording so the renderer can drop a resent
/// duplicate and acknowledge each batch exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointsBatch {
    /// The recording the points belong to.
    pub recording: RecordingId,
    /// The batch's sequence number within its recording, starting at 0.
    pub seq: u64,
    /// The viewport the coordinates are relative to (it may change between batches).
    pub viewport: Viewport,
    /// The points, in the order they happened.
    pub points: Vec<Point>,
}

/// A request to render a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generate {
    /// The recording to render: the page's latest one, stopped or still running.
    pub recording: RecordingId,
    /// How it should look; missing fields take the renderer's defaults.
    #[serde(default)]
    pub options: RenderOptions,
    /// The page's number for this request (one per click of Generate), echoed in the answer.
    ///
    /// It makes Generate safe to resend: the relay replays a Generate with a number that
    /// was unanswered when the renderer link dropped, the page resends it after reconnecting,
    /// and the renderer answers a repeat of `(recording, request)` with the image it already
    /// wrote (or is writing) instead of rendering a second one. Without it, a Generate is
    /// sent once and not replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
}

/// Another page's pointer, as fractions of its viewport.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The relay's number for that page (stable while it stays connected).
    pub id: u64,
    /// Horizontal fraction, 0 to 1.
    pub x: f32,
    /// Vertical fraction, 0 to 1.
    pub y: f32,
}

/// One tick of the live analytics feed: the summary and the active sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsUpdate {
    /// As `GET /api/analytics/summary`.
    pub summary: Summary,
    /// As `GET /api/analytics/sessions`, the most recent 50.
    pub sessions: Vec<SessionInfo>,
}

/// A request for a live preview frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    /// The recording, usually still running.
    pub recording: RecordingId,
    /// Which events to show; the renderer's default if missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<HeatKind>,
}

/// A small density frame for the page to draw itself, refreshed while recording.
///
/// Intensities rather than a PNG: a few kilobytes, drawn on a canvas with the page's own
/// colour table, and no file is written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewFrame {
    /// The recording shown.
    pub recording: RecordingId,
    /// Columns of `cells`.
    pub width: u32,
    /// Rows of `cells`.
    pub height: u32,
    /// Points the frame was computed from.
    pub n_points: u64,
    /// Row-major intensities, 0 (nothing) to 255 (the densest cell), on a square-root scale.
    pub cells: Vec<u8>,
}

/// What the page is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to `hello`: the versions agree, and the current renderer link state.
    Welcome {
        /// The relay's protocol version.
        v: u32,
        /// The relay ↔ renderer link state at this moment.
        renderer: LinkState,
    },
    /// The relay ↔ renderer link changed state; sent to every page on each change.
    Link {
        /// The new state.
        renderer: LinkState,
    },
    /// The renderer knows the recording and will accept its batches.
    Started {
        /// The recording that started.
        recording: RecordingId,
    },
    /// The renderer accepted a batch (or had it already: acks are idempotent).
    Ack {
        /// The recording of the batch.
        recording: RecordingId,
        /// The batch's sequence number.
        seq: u64,
        /// How many points the recording holds now.
        n_points: u64,
    },
    /// The recording was stopped.
    Stopped {
        /// The recording that stopped.
        recording: RecordingId,
        /// How many points it holds.
        n_points: u64,
    },
    /// A heatmap was written; the relay serves it at `/heatmaps/<name>`.
    Heatmap(HeatmapReady),
    /// A live preview frame.
    Preview(PreviewFrame),
    /// How many pages are connected to the relay now; sent on change, at most once a second.
    Presence {
        /// Pages (recorders and dashboards) connected now.
        online: usize,
        /// Of those, the dashboards (connections that sent `watch`); what a dashboard shows
        /// as "dashboards online", since `online` also counts recorders.
        #[serde(default)]
        dashboards: usize,
    },
    /// The answer to `request_detailed_stats`, sent only to the connection that asked.
    DetailedStats {
        /// The filters applied, normalised (country as its two-letter code, blanks dropped).
        filters: StatsFilters,
        /// As `GET /api/analytics/summary` with those filters.
        summary: Summary,
    },
    /// The answer to `track_dashboard_action`: it was counted.
    DashboardActionAck {
        /// The action, as sent.
        action: String,
    },
    /// A dashboard connected (sent `watch`); sent to every dashboard, the new one included.
    UserConnected {
        /// Dashboards connected now.
        dashboards: usize,
    },
    /// The seed's name for the live numbers: sent to dashboards beside every `analytics`.
    VisitorUpdate(VisitorUpdate),
    /// Traffic spiked (the relay's judgement, once per spike); sent to every dashboard.
    Alert(Alert),
    /// Events just stored (oldest first), sent to dashboards at most four times a second;
    /// past `--max-activity-per-sec` the oldest are left out and counted in `dropped`.
    SessionActivity {
        /// The events, oldest first.
        events: Vec<Activity>,
        /// Events stored since the last message that are not listed.
        #[serde(default)]
        dropped: u64,
    },
    /// The members list as this page joins it (after `hello`): who it is, how many pages
    /// are members, and the most recent ones (`--members-shown`), newest first.
    Members {
        /// This page, with the name it was given.
        you: Member,
        /// Pages that said `hello` and are still here.
        count: usize,
        /// The most recent members, newest first.
        recent: Vec<Member>,
    },
    /// A page joined the members list, or renamed itself (an `id` already known); sent to
    /// every member.
    UserJoin {
        /// The page.
        member: Member,
        /// Members now.
        count: usize,
    },
    /// A page left; sent to the members that stay.
    UserLeave {
        /// The page.
        member: Member,
        /// Members now.
        count: usize,
    },
    /// A dashboard disconnected; sent to the remaining dashboards.
    UserDisconnected {
        /// Dashboards connected now.
        dashboards: usize,
    },
    /// The live analytics feed, for connections that sent `watch`.
    Analytics(AnalyticsUpdate),
    /// The other pages' cursors (never the receiver's own), at most ten times a second.
    Cursors {
        /// One entry per other page that moved its pointer in the last few seconds.
        cursors: Vec<Cursor>,
    },
    /// A message was refused. The connection stays open unless the code says otherwise.
    Error {
        /// A stable code to match on.
        code: ErrorCode,
        /// A sentence for people.
        message: String,
        /// The recording concerned, when the refused message named one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recording: Option<RecordingId>,
        /// The batch concerned, when the refused message was a batch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// The Generate concerned, when the refused message was a Generate with a `request`
        /// number, so the page and the relay can tell which request this answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
}

/// A rendered heatmap, announced to the page that asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeatmapReady {
    /// The recording it shows.
    pub recording: RecordingId,
    /// The file name, of the shape [`crate::names::is_heatmap_name`] accepts.
    pub name: String,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Points the image was computed from.
    pub n_points: u64,
    /// Time the renderer spent, in milliseconds (accumulate to encoded file).
    pub render_ms: f64,
    /// The options the image was rendered with, defaults filled in.
    #[serde(default)]
    pub options: RenderOptions,
    /// The `request` number of the Generate this answers, so a page can match the answer
    /// to its pending request and treat a repeated answer as harmless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
}

/// State of a link as shown in the page's nav bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Connected and the handshake is done.
    Connected,
    /// Trying to (re)connect.
    Connecting,
    /// Not connected and waiting before the next attempt.
    Disconnected,
}

impl LinkState {
    /// The state as written on the wire and in `data-state`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connected => "connected",
            LinkState::Connecting => "connecting",
            LinkState::Disconnected => "disconnected",
        }
    }
}

/// A page-chosen recording id: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
///
/// Checked when decoded, so no code past the decoder can meet an id that could be a path,
/// a log injection or an unbounded key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordingId(String);

impl RecordingId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RecordingId {
    type Error = String;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        let well_formed = !id.is_empty()
            && id.len() <= MAX_RECORDING_ID_LEN
            && id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
        if well_formed {
            Ok(RecordingId(id))
        } else {
            Err(format!(
                "recording id must be 1 to {MAX_RECORDING_ID_LEN} characters of A-Z, a-z, 0-9, '_' or '-'"
            ))
        }
    }
}

impl TryFrom<&str> for RecordingId {
    type Error = String;

    fn try_from(id: &str) -> Result<Self, Self::Error> {
        RecordingId::try_from(id.to_owned())
    }
}

impl From<RecordingId> for String {
    fn from(id: RecordingId) -> String {
        id.0
    }
}

impl std::fmt::Display for RecordingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The page's viewport in CSS pixels; coordinates are relative to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewport {
    /// Width, 1 to [`crate::limits::MAX_VIEWPORT_SIDE`].
    pub width: u32,
    /// Height, 1 to [`crate::limits::MAX_VIEWPORT_SIDE`].
    pub height: u32,
}

/// What kind of pointer event a point records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointKind {
    /// The pointer moved here.
    Move,
    /// A click (primary button press) happened here.
    Click,
}

/// One pointer event, sent as the compact array `[x, y, t, kind]`.
///
/// `x`/`y` are CSS pixels inside the batch's viewport; `t` is milliseconds since the
/// recording started. The array form keeps batches about half the size of objects.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(
    from = "(f32, f32, u32, PointKind)",
    into = "(f32, f32, u32, PointKind)"
)]
pub struct Point {
    /// Horizontal position, 0 ..= viewport width.
    pub x: f32,
    /// Vertical position, 0 ..= viewport height.
    pub y: f32,
    /// Milliseconds since the recording started.
    pub t: u32,
    /// Move or click.
    pub kind: PointKind,
}

impl From<(f32, f32, u32, PointKind)> for Point {
    fn from((x, y, t, kind): (f32, f32, u32, PointKind)) -> Self {
        Point { x, y, t, kind }
    }
}

impl From<Point> for (f32, f32, u32, PointKind) {
    fn from(point: Point) -> Self {
        (point.x, point.y, point.t, point.kind)
    }
}
