//! The HTTP event API: events a tracked site sends, and the analytics it can read back.
//!
//! Compatible with the visitor-analytics service this replaces: an event is
//! `{type, page, sessionId, timestamp, country?, metadata?}`, sent alone or in an array to
//! `POST /api/events`. Positions travel in `metadata` with the sizes they are relative to,
//! so heatmaps stay true across screen sizes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::country::country_code;
use crate::timestamp::parse_iso8601_ms;

/// Longest page path kept, in bytes.
pub const MAX_PAGE_LEN: usize = 512;
/// Longest CSS path of a clicked element, in bytes.
pub const MAX_ELEMENT_PATH_LEN: usize = 256;

/// Longest device label (`metadata.device`, e.g. `mobile`), in bytes.
pub const MAX_DEVICE_LEN: usize = 32;

/// Longest referrer host (`metadata.referrer`), in bytes: a DNS name's limit.
pub const MAX_REFERRER_LEN: usize = 253;

/// Longest language tag (`metadata.locale`), in bytes (BCP 47 allows 35 for common tags).
pub const MAX_LOCALE_LEN: usize = 35;
/// Most events in one `POST /api/events`.
pub const MAX_EVENTS_PER_POST: usize = 500;
/// The latest timestamp accepted (the end of the year 2999), to refuse nonsense early.
pub const MAX_TIMESTAMP_MS: i64 = 32_503_680_000_000;

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
    /// When it happened, ms since the Unix epoch (the sender's clock); absent means "when
    /// received". On the wire it may also be an ISO-8601 string (see [`decode_events`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// The event's number within its session, if the sender numbers them (the snippet
    /// does): a resent event with the same number is counted once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Two-letter country code, if the sender knows it (a name such as `India` is turned
    /// into its code when decoded).
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
    /// For clicks: `true` when nothing answered the click within a second (no navigation,
    /// no change of the page), a "dead click" that tells a site owner an element looks
    /// clickable but is not. Only the snippet can see this, so it sends the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead: Option<bool>,
    /// The kind of device as the sender names it (`mobile`, `tablet`, `desktop`), lower
    /// case, for the session details and the device filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The host the visitor came from (`google.com`). A whole URL is cut to its host when
    /// decoded: the path and query of a referring page may carry personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// The browser's language tag (`en-IN`), which the snippet sends with a page view.
    /// Its region is the visitor's country when neither the event nor a proxy's header
    /// says one; it is not stored itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

impl TrackedEvent {
    /// Checks every field; returns a sentence naming the first bad one.
    ///
    /// # Errors
    /// A message for the 400 response.
    pub fn validate(&self) -> Result<(), String> {
        if self.page.is_empty() || self.page.len() > MAX_PAGE_LEN || !self.page.starts_with('/') {
            return Err(format!(
                "page: must be a path starting with / of at most {MAX_PAGE_LEN} bytes"
            ));
        }
        let id_ok = !self.session_id.is_empty()
            && self.session_id.len() <= 64
            && self
                .session_id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
        if !id_ok {
            return Err(
                "sessionId: must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'".into(),
            );
        }
        if self
            .timestamp
            .is_some_and(|at| !(0..=MAX_TIMESTAMP_MS).contains(&at))
        {
            return Err("timestamp: must be from 1970 to 2999, in ms since the Unix epoch".into());
        }
        if let Some(country) = &self.country {
            if country.len() != 2 || !country.bytes().all(|byte| byte.is_ascii_alphabetic()) {
                return Err("country: must be a two-letter code or a country name".into());
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
                        "metadata.{name}: must be a number from 0 to 1000000"
                    ));
                }
            }
        }
        for (name, value) in [("ox", meta.ox), ("oy", meta.oy), ("depth", meta.depth)] {
            if let Some(value) = value {
                if !value.is_finite() || !(0.0..=1.0).contains(&value) {
                    return Err(format!("metadata.{name}: must be a fraction from 0 to 1"));
                }
            }
        }
        if meta
            .path
            .as_ref()
            .is_some_and(|path| path.len() > MAX_ELEMENT_PATH_LEN)
        {
            return Err(format!(
                "metadata.path: longer than {MAX_ELEMENT_PATH_LEN} bytes"
            ));
        }
        let printable = |text: &str| !text.chars().any(char::is_control);
        if meta
            .device
            .as_ref()
            .is_some_and(|device| device.len() > MAX_DEVICE_LEN || !printable(device))
        {
            return Err(format!(
                "metadata.device: must be at most {MAX_DEVICE_LEN} bytes of printable text"
            ));
        }
        if meta
            .referrer
            .as_ref()
            .is_some_and(|host| host.len() > MAX_REFERRER_LEN || !printable(host))
        {
            return Err(format!(
                "metadata.referrer: must be a host name of at most {MAX_REFERRER_LEN} bytes"
            ));
        }
        if meta.locale.as_ref().is_some_and(|tag| {
            tag.len() > MAX_LOCALE_LEN
                || !tag
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        }) {
            return Err(format!(
                "metadata.locale: must be a language tag such as en-IN of at most {MAX_LOCALE_LEN} bytes"
            ));
        }
        Ok(())
    }
}

/// The region of a language tag as a country code: `en-IN` → `IN`, `zh-Hant-TW` → `TW`;
/// `None` for a tag without one (`en`) or with a numeric region (`es-419`).
pub fn locale_region(tag: &str) -> Option<String> {
    tag.split(['-', '_'])
        .skip(1)
        .find(|part| part.len() == 2 && part.bytes().all(|byte| byte.is_ascii_alphabetic()))
        .map(str::to_ascii_uppercase)
}

/// One event or a batch, as a sender writes the body of `POST /api/events` (the server
/// decodes bodies with [`decode_events`], which also takes the seed API's spellings).
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
    /// Events per 10 seconds of wall time for the last 10 minutes (60 buckets, the last
    /// one the current, unfinished 10 s), oldest first: the dashboard's chart, whole from
    /// the first push rather than only from what the page saw since it opened.
    #[serde(default)]
    pub per_ten_seconds: Vec<u32>,
    /// Counts over the asked range (`from`, `to` or `range`), from the stored history;
    /// absent without a range, where the live numbers above are the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<RangeTotals>,
    /// The seed API's name for `active_users`, so its clients read this summary as theirs.
    #[serde(default, rename = "totalActive")]
    pub total_active: usize,
    /// Visitors (sessions) with an event today, midnight UTC to now, from the store.
    #[serde(default, rename = "totalToday")]
    pub total_today: u64,
    /// Page views today per page (the 50 most viewed), from the store.
    #[serde(default, rename = "pagesVisited")]
    pub pages_visited: BTreeMap<String, u64>,
    /// Events today per country code (the 50 most frequent), from the store.
    #[serde(default)]
    pub countries: BTreeMap<String, u64>,
    /// The latest events received, newest first (at most 20, within the filters).
    #[serde(default, rename = "recentEvents")]
    pub recent_events: Vec<RecentEvent>,
}

/// One of the summary's latest events, in the seed API's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentEvent {
    /// `pageview`, `click`, … (our names).
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The page.
    pub page: String,
    /// The visitor's session.
    pub session_id: String,
    /// When it happened, ISO-8601 in UTC.
    pub timestamp: String,
    /// Its country code, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// What happened over a range of the stored history, so a dashboard can show "last 30
/// days" beside the live numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeTotals {
    /// Events of every type.
    pub events: u64,
    /// Page views.
    pub pageviews: u64,
    /// Clicks.
    pub clicks: u64,
    /// Sessions with an event in the range.
    pub sessions: u64,
}

/// A name and how often it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// The page or country.
    pub name: String,
    /// Events.
    pub events: u64,
}

/// One entry of `GET /api/analytics/sessions`: the seed API's fields (`sessionId`,
/// `startTime`, `currentPage`, `journey` as pages, `duration`), with ours beside them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The session id.
    #[serde(rename = "sessionId")]
    pub session_id: String,
    /// When it started, ISO-8601 in UTC.
    #[serde(rename = "startTime")]
    pub start_time: String,
    /// The page of its latest page change.
    #[serde(rename = "currentPage")]
    pub current_page: String,
    /// Seconds from its first to its latest event.
    pub duration: u64,
    /// Its country, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// The kind of device it is on (`mobile`), if the sender said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The host the visitor came from, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// First event, ms since the epoch (server clock).
    pub first_seen: i64,
    /// Last event, ms since the epoch (server clock).
    pub last_seen: i64,
    /// Events in the session.
    pub events: u64,
    /// The pages in the order visited (consecutive repeats folded), as the seed lists them.
    pub journey: Vec<String>,
    /// The same journey with the time each page was entered.
    pub steps: Vec<JourneyStep>,
}

/// A page in a session's journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyStep {
    /// The page.
    pub page: String,
    /// When it was entered, ms since the epoch (server clock).
    pub at: i64,
}

/// Why `POST /api/events` refused a body: which event (its index in a batch), which field,
/// and what was wrong, so the sender can fix exactly that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    /// The event's index in the batch (0 for a single event); `None` for the body itself.
    pub index: Option<usize>,
    /// The field, with `metadata.` in front for positions (`timestamp`, `metadata.x`).
    pub field: Option<String>,
    /// What was wrong with it.
    pub message: String,
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.index, &self.field) {
            (Some(index), Some(field)) => write!(f, "event {index}: {field}: {}", self.message),
            (Some(index), None) => write!(f, "event {index}: {}", self.message),
            (None, Some(field)) => write!(f, "{field}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for EventError {}

/// The event types by every name the API accepts: ours, and the seed API's
/// (`page_view`, `session_end`).
const TYPE_NAMES: &[(&str, EventType)] = &[
    ("pageview", EventType::Pageview),
    ("page_view", EventType::Pageview),
    ("move", EventType::Move),
    ("click", EventType::Click),
    ("scroll", EventType::Scroll),
    ("visibility", EventType::Visibility),
    ("leave", EventType::Leave),
    ("session_end", EventType::Leave),
    ("custom", EventType::Custom),
];

/// Decodes and validates the body of `POST /api/events`: one event object or an array of
/// up to [`MAX_EVENTS_PER_POST`].
///
/// Lenient where the seed API is (a `type` of `page_view` or `session_end`, `timestamp` as
/// ISO-8601 or epoch ms, `country` as a name, `metadata.element` for the element's path,
/// unknown fields ignored), strict where a wrong value would corrupt the data (positions,
/// ids, sizes).
///
/// # Errors
/// The first problem, naming the event and the field; nothing of the batch is to be stored.
pub fn decode_events(body: &[u8]) -> Result<Vec<TrackedEvent>, EventError> {
    let body_error = |message: String| EventError {
        index: None,
        field: None,
        message,
    };
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| body_error(format!("the body is not JSON: {err}")))?;
    let items = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => {
            return Err(body_error(
                "expected an event object or an array of them".into(),
            ))
        }
    };
    if items.len() > MAX_EVENTS_PER_POST {
        return Err(body_error(format!(
            "{} events in one request; the limit is {MAX_EVENTS_PER_POST}",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            decode_event(item).map_err(|(field, message)| EventError {
                index: Some(index),
                field: field.map(str::to_owned),
                message,
            })
        })
        .collect()
}

/// A field's name (if the problem is one field) and the problem.
type FieldProblem = (Option<&'static str>, String);

fn decode_event(item: &Value) -> Result<TrackedEvent, FieldProblem> {
    let Value::Object(fields) = item else {
        return Err((None, "expected an object".into()));
    };
    let kind_name = required_str(fields, "type")?;
    let kind = TYPE_NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(kind_name))
        .map(|(_, kind)| *kind)
        .ok_or_else(|| {
            let names: Vec<&str> = TYPE_NAMES.iter().map(|(name, _)| *name).collect();
            (
                Some("type"),
                format!(
                    "unknown event type {kind_name:?}; expected one of {}",
                    names.join(", ")
                ),
            )
        })?;
    let page = page_path(required_str(fields, "page")?);
    let session_id = required_str(fields, "sessionId")?.to_owned();
    let timestamp = match fields.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(value) => Some(timestamp_ms(value).ok_or_else(|| {
            (
                Some("timestamp"),
                "expected ISO-8601 (2025-07-19T10:30:00Z) or epoch ms".to_owned(),
            )
        })?),
    };
    let seq = match fields.get("seq") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .ok_or_else(|| (Some("seq"), "expected a whole number from 0".to_owned()))?,
        ),
    };
    let country = match fields.get("country") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.trim().is_empty() => None,
        Some(Value::String(text)) => Some(country_code(text).ok_or_else(|| {
            (
                Some("country"),
                format!("{text:?} is neither a two-letter code nor a country name"),
            )
        })?),
        Some(_) => return Err((Some("country"), "expected a string".into())),
    };
    let metadata = match fields.get("metadata") {
        None | Some(Value::Null) => EventMetadata::default(),
        Some(Value::Object(meta)) => decode_metadata(meta)?,
        Some(_) => return Err((Some("metadata"), "expected an object".into())),
    };
    let event = TrackedEvent {
        kind,
        page,
        session_id,
        timestamp,
        seq,
        country,
        metadata,
    };
    event
        .validate()
        .map_err(|message| match message.split_once(": ") {
            Some((field, rest)) => (
                FIELDS.iter().find(|known| **known == field).copied(),
                if FIELDS.contains(&field) {
                    rest.to_owned()
                } else {
                    message.clone()
                },
            ),
            None => (None, message),
        })?;
    Ok(event)
}

/// Field names [`TrackedEvent::validate`] may name, so its message splits into field and
/// problem.
const FIELDS: &[&str] = &[
    "page",
    "sessionId",
    "timestamp",
    "country",
    "metadata.x",
    "metadata.y",
    "metadata.vw",
    "metadata.vh",
    "metadata.dw",
    "metadata.dh",
    "metadata.ox",
    "metadata.oy",
    "metadata.depth",
    "metadata.path",
    "metadata.device",
    "metadata.referrer",
    "metadata.locale",
];

fn decode_metadata(meta: &Map<String, Value>) -> Result<EventMetadata, FieldProblem> {
    let number = |name: &'static str, field: &'static str| -> Result<Option<f64>, FieldProblem> {
        match meta.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_f64()
                .map(Some)
                .ok_or_else(|| (Some(field), "expected a number".to_owned())),
        }
    };
    let text = |name: &'static str, field: &'static str| -> Result<Option<String>, FieldProblem> {
        match meta.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err((Some(field), "expected a string".to_owned())),
        }
    };
    let visible = match meta.get("visible") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(visible)) => Some(*visible),
        Some(_) => return Err((Some("metadata.visible"), "expected true or false".into())),
    };
    let dead = match meta.get("dead") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(dead)) => Some(*dead),
        Some(_) => return Err((Some("metadata.dead"), "expected true or false".into())),
    };
    Ok(EventMetadata {
        x: number("x", "metadata.x")?,
        y: number("y", "metadata.y")?,
        vw: number("vw", "metadata.vw")?,
        vh: number("vh", "metadata.vh")?,
        dw: number("dw", "metadata.dw")?,
        dh: number("dh", "metadata.dh")?,
        // The seed API names the clicked element `element`; ours is its CSS `path`.
        path: match text("path", "metadata.path")? {
            Some(path) => Some(path),
            None => text("element", "metadata.element")?,
        },
        ox: number("ox", "metadata.ox")?,
        oy: number("oy", "metadata.oy")?,
        depth: number("depth", "metadata.depth")?,
        visible,
        dead,
        device: text("device", "metadata.device")?
            .map(|device| device.trim().to_lowercase())
            .filter(|device| !device.is_empty()),
        referrer: text("referrer", "metadata.referrer")?
            .as_deref()
            .and_then(referrer_host),
        locale: text("locale", "metadata.locale")?.filter(|tag| !tag.is_empty()),
    })
}

fn required_str<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, FieldProblem> {
    match fields.get(name) {
        Some(Value::String(text)) => Ok(text),
        None | Some(Value::Null) => Err((Some(name), "is required".into())),
        Some(_) => Err((Some(name), "expected a string".into())),
    }
}

/// A page given as a path, or as a whole URL whose path is taken (query and fragment
/// dropped either way: they may carry personal data).
fn page_path(page: &str) -> String {
    let page = page.trim();
    let path = match page.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |at| &rest[at..]),
        None => page,
    };
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path[..end].to_owned()
}

/// The host of a referrer given as a host (`google.com`) or a whole URL
/// (`https://www.google.com/search?q=…` → `www.google.com`), lower case, without a port;
/// `None` when nothing is left.
fn referrer_host(referrer: &str) -> Option<String> {
    let rest = referrer
        .trim()
        .split_once("://")
        .map_or(referrer.trim(), |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|byte| byte.is_ascii_digit()) => name,
        _ => host,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Epoch ms from a number (ms) or a string (ISO-8601, or digits meaning ms).
fn timestamp_ms(value: &Value) -> Option<i64> {
    let millis = match value {
        Value::Number(number) => {
            let millis = number.as_f64()?;
            millis.is_finite().then_some(millis.round() as i64)?
        }
        Value::String(text) => match text.trim().parse::<i64>() {
            Ok(millis) => millis,
            Err(_) => parse_iso8601_ms(text)?,
        },
        _ => return None,
    };
    (0..=MAX_TIMESTAMP_MS).contains(&millis).then_some(millis)
}
