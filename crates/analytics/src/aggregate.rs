//! How an event maps to the pre-aggregated counts: an hour, a width bucket and a heat cell.
//!
//! Pure functions, shared by every engine, so two engines (and a recomputation from raw
//! events) agree to the cell.

use crate::event::Event;
use crate::query::WidthBucket;

/// Columns of the heat grid across the document's width.
///
/// 160 columns is 9 px at the desktop image width of 1440 px: finer than the blur the
/// heatmap applies (18 px), so summing cells loses nothing visible, while a busy page-hour
/// holds at most a few thousand cells.
pub const HEAT_COLUMNS: i64 = 160;

/// Rows of the heat grid (cells are square, so a page 16 times as tall as wide still fits;
/// positions further down are counted in the last row).
pub const MAX_HEAT_ROWS: i64 = HEAT_COLUMNS * 16;

/// Milliseconds in an hour, the aggregates' time unit.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// The hour an instant falls in (hours since the epoch, rounding down before 1970 too).
pub fn hour_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(HOUR_MS)
}

/// The heat cell of an event, with its width bucket, if it has a usable position.
pub(crate) fn heat_cell(event: &Event) -> Option<(WidthBucket, i64, i64)> {
    let position = event.position?;
    let usable = [
        position.x,
        position.y,
        position.doc_width,
        position.viewport_width,
    ]
    .iter()
    .all(|value| value.is_finite())
        && position.doc_width > 0.0;
    if !usable {
        return None;
    }
    let scale = HEAT_COLUMNS as f32 / position.doc_width;
    let cx = ((position.x * scale).floor() as i64).clamp(0, HEAT_COLUMNS - 1);
    let cy = ((position.y * scale).floor() as i64).clamp(0, MAX_HEAT_ROWS - 1);
    Some((WidthBucket::of(position.viewport_width), cx, cy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Position;
    use protocol::analytics::EventType;

    fn at(x: f32, y: f32, viewport_width: f32) -> Event {
        let mut event = Event::new(EventType::Click, "/", "s", 0);
        event.position = Some(Position {
            x,
            y,
            viewport_width,
            doc_width: 1600.0,
            doc_height: 4000.0,
        });
        event
    }

    #[test]
    fn cells_are_square_fractions_of_the_document_width() {
        assert_eq!(
            heat_cell(&at(0.0, 0.0, 1600.0)),
            Some((WidthBucket::Desktop, 0, 0))
        );
        assert_eq!(
            heat_cell(&at(1599.0, 1600.0, 1600.0)),
            Some((WidthBucket::Desktop, 159, 160))
        );
        assert_eq!(
            heat_cell(&at(5000.0, -3.0, 500.0)),
            Some((WidthBucket::Mobile, 159, 0))
        );
        assert_eq!(heat_cell(&at(f32::NAN, 1.0, 900.0)), None);
        assert_eq!(heat_cell(&Event::new(EventType::Click, "/", "s", 0)), None);
    }

    #[test]
    fn hours_round_down() {
        assert_eq!(hour_of(0), 0);
        assert_eq!(hour_of(HOUR_MS - 1), 0);
        assert_eq!(hour_of(HOUR_MS), 1);
        assert_eq!(hour_of(-1), -1);
    }
}
