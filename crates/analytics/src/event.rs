//! One stored event.

use protocol::analytics::EventType;

/// Where on the page an event happened, with the sizes that make it comparable across
/// screens. Events without one (a click reported with only its element) count in the
/// totals but not in heatmaps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    /// Horizontal position in the document, CSS pixels.
    pub x: f32,
    /// Vertical position in the document, CSS pixels.
    pub y: f32,
    /// Viewport width, which picks the width bucket.
    pub viewport_width: f32,
    /// Document width, the unit cells are measured in.
    pub doc_width: f32,
    /// Document height.
    pub doc_height: f32,
}

/// One accepted event, as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventType,
    /// The page's path.
    pub page: String,
    /// The visitor's session id.
    pub session: String,
    /// The event's number within its session, when the sender numbers them (the snippet
    /// does). With it a resent event is stored once; without it every copy counts.
    pub seq: Option<u64>,
    /// When it happened, ms since the epoch (the sender's time, clamped to the receive time
    /// when it lies in the future): every range and aggregate uses this.
    pub at_ms: i64,
    /// When the server received it, ms since the epoch (kept for audits and imports).
    pub received_ms: i64,
    /// Two-letter country code, upper case, when known.
    pub country: Option<String>,
    /// Where it happened, if the sender said.
    pub position: Option<Position>,
    /// The clicked or hovered element's short CSS path.
    pub element: Option<String>,
    /// Where in that element, as fractions of its width and height.
    pub element_offset: Option<(f32, f32)>,
    /// For scroll events: the deepest fraction of the document seen.
    pub depth: Option<f32>,
    /// For visibility events: whether the page is now visible.
    pub visible: Option<bool>,
    /// The kind of device, as the sender named it (`mobile`), lower case.
    pub device: Option<String>,
    /// The host the visitor came from.
    pub referrer: Option<String>,
    /// For clicks: whether the snippet saw nothing answer it within a second (a dead
    /// click); `None` when the sender did not say (older snippets, other kinds).
    pub dead: Option<bool>,
}

impl Event {
    /// A bare event of `kind` on `page` in `session` at `at_ms`, for tests and imports;
    /// the other fields start empty.
    pub fn new(kind: EventType, page: &str, session: &str, at_ms: i64) -> Self {
        Event {
            kind,
            page: page.to_owned(),
            session: session.to_owned(),
            seq: None,
            at_ms,
            received_ms: at_ms,
            country: None,
            position: None,
            element: None,
            element_offset: None,
            depth: None,
            visible: None,
            device: None,
            referrer: None,
            dead: None,
        }
    }
}

/// The byte each event type is stored as (the order is part of the schema).
pub(crate) const KINDS: [EventType; 7] = [
    EventType::Pageview,
    EventType::Move,
    EventType::Click,
    EventType::Scroll,
    EventType::Visibility,
    EventType::Leave,
    EventType::Custom,
];

/// The stored number of an event type.
pub(crate) fn kind_code(kind: EventType) -> i64 {
    KINDS.iter().position(|known| *known == kind).unwrap_or(6) as i64
}

/// The event type a stored number stands for (unknown numbers read as custom).
pub(crate) fn kind_of(code: i64) -> EventType {
    usize::try_from(code)
        .ok()
        .and_then(|idx| KINDS.get(idx).copied())
        .unwrap_or(EventType::Custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_codes_round_trip() {
        for kind in KINDS {
            assert_eq!(kind_of(kind_code(kind)), kind);
        }
        assert_eq!(kind_of(99), EventType::Custom);
    }
}
