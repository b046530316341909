//! The HTTP event API: events a tracked site sends, and the analytics it can read back.
//!
//! Compatible with the visitor-analytics service this replaces: an event is
//! `{type, page, sessionId, timestamp, country?, metadata?}`, sent alone or in an array to
//! `POST /api/events`. Positions travel in `metadata` with the sizes they are relative to,
//! so heatmaps stay true across screen sizes.

use serde::{Deserialize, Serialize};

/// Longest page path kept, in bytes.
pub const MAX_PAGE_LEN: usize = 512;
/// Longest CSS path of a clicked element, in bytes.
pub const MAX_ELEMENT_PATH_LEN: usize = 256;
/// Most events in one `POST /api/events`.
pub const MAX_EVENTS_PER_POST: usize = 500;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A page was shown.
    Pageview,
    /// The pointer moved (sampled).
    Move,
    /// A click.
    Click,
    /// The page scrolled; `metadata.depth` is the deepest fraction seen.
    Scroll,
    /// The tab was hidden or shown again (`metadata.visible`).
    Visibility,
    /// The visitor left the page.
    Leave,
    /// Anything else a site wants to count.
    Custom,
}

impl EventType {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Pageview => "pageview",
            EventType::Move => "move",
            EventType::Click => "click",
            EventType::Scroll => "scroll",
            EventType::Visibility => "visibility",
            EventType::Leave => "leave",
            EventType::Custom => "custom",
        }
    }
}

/// One tracked event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackedEvent {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The page's path (no query string), up to [`MAX_PAGE_LEN`] bytes.
    pub page: String,
    /// The visitor's session, 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    pub session_id: String,
    /// When it happened, milliseconds since the Unix epoch (the sender's clock).
    pub timestamp: f64,
    /// Two-letter country code, if the sender knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Positions and sizes.
    #[serde(default)]
    pub metadata: EventMetadata,
}

/// Where an event happened, with the sizes that make it comparable across screens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Horizontal position in the document, CSS pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<f64>,
    /// Vertical position in the document, CSS pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<f64>,
    /// Viewport width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vw: Option<f64>,
    /// Viewport height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vh: Option<f64>,
    /// Document width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dw: Option<f64>,
    /// Document height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dh: Option<f64>,
    /// Short CSS path of the clicked element.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Offset of the click inside that element, as fractions of its width and height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ox: Option<f64>,
    /// See `ox`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oy: Option<f64>,
    /// Scroll depth: the bottom of the viewport as a fraction of the document height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<f64>,
    /// For visibility events: whether the page is now visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible: Option<bool>,
}

impl TrackedEvent {
    /// Checks every field; returns a sentence naming the first bad one.
    ///
    /// # Errors
    /// A message for the 400 response.
    pub fn validate(&self) -> Result<(), String> {
        if self.page.is_empty() || self.page.len() > MAX_PAGE_LEN || !self.page.starts_with('/') {
            return Err(format!(
                "page must be a path starting with / of at most {MAX_PAGE_LEN} bytes"
            ));
        }
        let id_ok = !self.session_id.is_empty()
            && self.session_id.len() <= 64
            && self
                .session_id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
        if !id_ok {
            return Err("sessionId must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'".into());
        }
        if !self.timestamp.is_finite() || self.timestamp < 0.0 {
            return Err("timestamp must be milliseconds since the Unix epoch".into());
        }
        if let Some(country) = &self.country {
            if country.len() != 2 || !country.bytes().all(|byte| byte.is_ascii_alphabetic()) {
                return Err("country must be a two-letter code".into());
            }
        }
        let meta = &self.metadata;
        for (name, value) in [
            ("x", meta.x),
            ("y", meta.y),
            ("vw", meta.vw),
            ("vh", meta.vh),
            ("dw", meta.dw),
            ("dh", meta.dh),
        ] {
            if let Some(value) = value {
                if !value.is_finite() || !(0.0..=1_000_000.0).contains(&value) {
                    return Err(format!(
                        "metadata.{name} must be a number from 0 to 1000000"
                    ));
                }
            }
        }
        for (name, value) in [("ox", meta.ox), ("oy", meta.oy), ("depth", meta.depth)] {
            if let Some(value) = value {
                if !value.is_finite() || !(0.0..=1.0).contains(&value) {
                    return Err(format!("metadata.{name} must be a fraction from 0 to 1"));
                }
            }
        }
        if meta
            .path
            .as_ref()
            .is_some_and(|path| path.len() > MAX_ELEMENT_PATH_LEN)
        {
            return Err(format!(
                "metadata.path is longer than {MAX_ELEMENT_PATH_LEN} bytes"
            ));
        }
        if matches!(self.kind, EventType::Move | EventType::Click) {
            let has_position =
                meta.x.is_some() && meta.y.is_some() && meta.dw.is_some() && meta.dh.is_some();
            if !has_position {
                return Err(format!(
                    "{} events need metadata x, y, dw and dh",
                    self.kind.as_str()
                ));
            }
        }
        Ok(())
    }
}

/// One event or a batch, as `POST /api/events` accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EventBatch {
    /// A single event.
    One(Box<TrackedEvent>),
    /// Several.
    Many(Vec<TrackedEvent>),
}

impl EventBatch {
    /// The events, one or many.
    pub fn into_vec(self) -> Vec<TrackedEvent> {
        match self {
            EventBatch::One(event) => vec![*event],
            EventBatch::Many(events) => events,
        }
    }
}

/// The answer to `POST /api/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsAccepted {
    /// Events stored.
    pub accepted: usize,
}

/// The answer to a refused request: what was wrong, for people and programs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// A sentence naming the problem (and the event's index in a batch).
    pub error: String,
}

/// `GET /api/analytics/summary`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Sessions with an event within the session timeout.
    pub active_users: usize,
    /// Events received in the last minute.
    pub events_last_minute: u64,
    /// Events received in the last 5 minutes.
    pub events_last_5_minutes: u64,
    /// Pages by events, most first (top 10, within the filters).
    pub top_pages: Vec<Count>,
    /// Countries by events, most first (top 10, within the filters).
    pub top_countries: Vec<Count>,
    /// Events per second for the last 300 seconds, oldest first.
    pub per_second: Vec<u32>,
}

/// A name and how often it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// The page or country.
    pub name: String,
    /// Events.
    pub events: u64,
}

/// One entry of `GET /api/analytics/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The session id.
    pub session_id: String,
    /// Its country, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// First event, ms since the epoch (server clock).
    pub first_seen: i64,
    /// Last event, ms since the epoch (server clock).
    pub last_seen: i64,
    /// Events in the session.
    pub events: u64,
    /// The pages in the order visited (consecutive repeats folded).
    pub journey: Vec<JourneyStep>,
}

/// A page in a session's journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyStep {
    /// The page.
    pub page: String,
    /// When it was entered, ms since the epoch (server clock).
    pub at: i64,
}
