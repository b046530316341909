//! What can be asked of a store, and the answers.

use protocol::analytics::EventType;

use crate::error::StoreError;

/// A time range, `from_ms` inclusive, `to_ms` exclusive, in ms since the epoch of the
/// events' own times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The first millisecond in the range.
    pub from_ms: i64,
    /// The first millisecond after it.
    pub to_ms: i64,
}

impl Range {
    /// The range `[from_ms, to_ms)`.
    ///
    /// # Errors
    /// [`StoreError::InvalidQuery`] when `to_ms` is not after `from_ms`.
    pub fn new(from_ms: i64, to_ms: i64) -> Result<Self, StoreError> {
        if to_ms <= from_ms {
            return Err(StoreError::InvalidQuery(format!(
                "the range ends ({to_ms}) before or where it starts ({from_ms})"
            )));
        }
        Ok(Range { from_ms, to_ms })
    }

    /// Everything, for tests and full exports.
    pub fn all() -> Self {
        Range {
            from_ms: i64::MIN / 2,
            to_ms: i64::MAX / 2,
        }
    }

    /// Whether an instant is inside.
    pub fn contains(&self, at_ms: i64) -> bool {
        (self.from_ms..self.to_ms).contains(&at_ms)
    }
}

/// Narrows totals and sessions; `None` means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this page.
    pub page: Option<String>,
    /// Only this country (two-letter code, upper case).
    pub country: Option<String>,
}

/// Narrows a raw-event read ([`crate::Store::events`]) beyond the [`Filter`]: engines
/// apply it in the query, so the read's limit counts only the events asked for (one
/// visit's, or the clicks among a page's moves) instead of everything in the span.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawSelection {
    /// Only this kind of event.
    pub kind: Option<EventType>,
    /// Only this visit's events.
    pub session: Option<String>,
}

/// Viewport widths that are drawn together, because a page's layout changes with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WidthBucket {
    /// Under 768 px.
    Mobile,
    /// 768 to 1199 px.
    Tablet,
    /// 1200 px and wider.
    Desktop,
}

impl WidthBucket {
    /// The bucket of a viewport width.
    pub fn of(viewport_width: f32) -> Self {
        if viewport_width < 768.0 {
            WidthBucket::Mobile
        } else if viewport_width < 1200.0 {
            WidthBucket::Tablet
        } else {
            WidthBucket::Desktop
        }
    }

    /// Its stored number (part of the schema).
    pub(crate) fn code(self) -> i64 {
        match self {
            WidthBucket::Mobile => 0,
            WidthBucket::Tablet => 1,
            WidthBucket::Desktop => 2,
        }
    }
}

/// A heatmap's counts: one page, one kind, one width bucket, one range.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapQuery {
    /// The page.
    pub page: String,
    /// Clicks or moves (other kinds have no positions worth a heatmap).
    pub kind: EventType,
    /// The width bucket.
    pub bucket: WidthBucket,
    /// The events' times.
    pub range: Range,
}

/// One cell of the heat grid and how many events fell in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeatCell {
    /// Column, 0 to [`crate::HEAT_COLUMNS`] − 1.
    pub cx: i64,
    /// Row, 0 to [`crate::MAX_HEAT_ROWS`] − 1.
    pub cy: i64,
    /// Events in it.
    pub count: u64,
}

/// The answer to a [`HeatmapQuery`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeatmapCells {
    /// Non-empty cells, sorted by row then column.
    pub cells: Vec<HeatCell>,
    /// Events behind them.
    pub events: u64,
    /// The mean of the documents' height over width, to size the image.
    pub mean_aspect: f64,
}

impl HeatmapCells {
    /// The answer from summed counts per `(cx, cy)` cell, the events behind them and the
    /// sum of their aspect ratios, as every engine sums them.
    pub(crate) fn from_sums(
        cells: std::collections::HashMap<(i64, i64), u64>,
        events: u64,
        aspect_sum: f64,
    ) -> Self {
        let mut cells: Vec<HeatCell> = cells
            .into_iter()
            .map(|((cx, cy), count)| HeatCell { cx, cy, count })
            .collect();
        cells.sort_by_key(|cell| (cell.cy, cell.cx));
        HeatmapCells {
            cells,
            events,
            mean_aspect: if events > 0 {
                aspect_sum / events as f64
            } else {
                0.0
            },
        }
    }
}

/// Counts over a range, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Every event.
    pub events: u64,
    /// Page views.
    pub pageviews: u64,
    /// Clicks.
    pub clicks: u64,
    /// Sessions with an event in the range.
    pub sessions: u64,
    /// Pages by page views, most first (ties by name), at most `limit` of them.
    pub top_pages: Vec<(String, u64)>,
    /// Pages by events of every kind, most first (ties by name), at most `limit` of them:
    /// what the summary's top pages list, since a page's clicks and moves count as much
    /// as its views there.
    pub top_pages_by_events: Vec<(String, u64)>,
    /// Countries by events, most first (ties by code), at most `limit` of them.
    pub top_countries: Vec<(String, u64)>,
}

/// One session, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Its id.
    pub session: String,
    /// Its country, if known.
    pub country: Option<String>,
    /// Its first event's time.
    pub first_ms: i64,
    /// Its last event's time.
    pub last_ms: i64,
    /// Events in it.
    pub events: u64,
    /// The kind of device it was on, if the sender said.
    pub device: Option<String>,
    /// The host it came from, if known.
    pub referrer: Option<String>,
}
