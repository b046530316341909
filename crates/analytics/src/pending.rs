//! Heat counts held in memory between writes of the heat tables.
//!
//! An engine that writes its heat rows in steps of many batches (rather than once per
//! batch, which rewrites every busy row of the hour and day each time) keeps the counts of
//! the stored events it has not written yet in a [`HeatFold`], adds them to what its
//! tables answer, and rebuilds them from its raw events after a restart. Pure data, no IO.

use std::collections::HashMap;

use crate::aggregate::heat_cell;
use crate::event::Event;

/// A page id, kind code and width bucket code: the rows one heatmap reads.
pub(crate) type Series = (i64, i64, i64);

/// The heat of one series in one hour (or, when rolled up, one day).
#[derive(Debug, Clone, Default)]
pub(crate) struct HeatSpan {
    /// Events per `(cx, cy)` cell.
    pub cells: HashMap<(i64, i64), i64>,
    /// Events with a usable position, the same as the sum of `cells`.
    pub events: i64,
    /// The sum of their documents' height over width, to size an image.
    pub aspect_sum: f64,
}

impl HeatSpan {
    /// Adds another span's counts to these.
    pub fn add(&mut self, other: &HeatSpan) {
        for (cell, n) in &other.cells {
            *self.cells.entry(*cell).or_default() += n;
        }
        self.events += other.events;
        self.aspect_sum += other.aspect_sum;
    }

    /// The cells in the heat tables' key order (column, then row), so writing them walks
    /// each table's pages once.
    pub fn sorted_cells(&self) -> Vec<((i64, i64), i64)> {
        let mut cells: Vec<((i64, i64), i64)> =
            self.cells.iter().map(|(cell, n)| (*cell, *n)).collect();
        cells.sort_unstable();
        cells
    }
}

/// Heat counts of some stored events, per series and hour.
///
/// Bounded by its owner: at most one cell entry per event folded in, and the owner writes
/// it out once `events` passes its limit.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeatFold {
    /// The last stored event id the engine's heat tables already hold, which these counts
    /// build on (kept by the engine's pending set; 0 in a batch's own fold).
    pub base: i64,
    /// Events folded in, positioned or not (what the owner's limit compares).
    pub events: u64,
    /// Heat per series and hour.
    pub hours: HashMap<(Series, i64), HeatSpan>,
}

impl HeatFold {
    /// An empty fold on top of heat tables that hold every event up to id `base`.
    pub fn on(base: i64) -> Self {
        HeatFold {
            base,
            ..HeatFold::default()
        }
    }

    /// Counts one stored event of page `page_id` and kind code `kind`, in `hour`.
    pub fn fold(&mut self, page_id: i64, kind: i64, hour: i64, event: &Event) {
        self.events += 1;
        if let Some((bucket, cx, cy)) = heat_cell(event) {
            let span = self
                .hours
                .entry(((page_id, kind, bucket.code()), hour))
                .or_default();
            *span.cells.entry((cx, cy)).or_default() += 1;
            span.events += 1;
            span.aspect_sum += crate::sqlite::aspect(event);
        }
    }

    /// Adds another fold's counts to these (its `base` is ignored).
    pub fn add(&mut self, other: &HeatFold) {
        self.events += other.events;
        for (key, span) in &other.hours {
            self.hours.entry(*key).or_default().add(span);
        }
    }

    /// The spans in the heat tables' key order (series, then hour).
    pub fn sorted_hours(&self) -> Vec<(&(Series, i64), &HeatSpan)> {
        let mut hours: Vec<_> = self.hours.iter().collect();
        hours.sort_unstable_by_key(|(key, _)| **key);
        hours
    }

    /// The same counts per series and day, in key order.
    pub fn days(&self) -> Vec<((Series, i64), HeatSpan)> {
        let mut days: HashMap<(Series, i64), HeatSpan> = HashMap::new();
        for ((series, hour), span) in &self.hours {
            days.entry((*series, hour.div_euclid(24)))
                .or_default()
                .add(span);
        }
        let mut days: Vec<_> = days.into_iter().collect();
        days.sort_unstable_by_key(|(key, _)| *key);
        days
    }

    /// Copies of one series' spans in the hours `[first, end)`, with their hours, for a
    /// reader that decides which of them to add only after its snapshot has started.
    pub fn spans(&self, series: Series, (first, end): (i64, i64)) -> Vec<(i64, HeatSpan)> {
        self.hours
            .iter()
            .filter(|((span_series, hour), _)| {
                *span_series == series && (first..end).contains(hour)
            })
            .map(|((_, hour), span)| (*hour, span.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Position;
    use protocol::analytics::EventType;

    /// The heat of one series over the hours `[first, end)`.
    fn sum(fold: &HeatFold, series: Series, hours: (i64, i64)) -> HeatSpan {
        let mut sum = HeatSpan::default();
        for (_, span) in fold.spans(series, hours) {
            sum.add(&span);
        }
        sum
    }

    fn click(x: f32, hour: i64) -> (i64, Event) {
        let mut event = Event::new(EventType::Click, "/", "s", hour * 3_600_000);
        event.position = Some(Position {
            x,
            y: 10.0,
            viewport_width: 1440.0,
            doc_width: 1440.0,
            doc_height: 2880.0,
        });
        (hour, event)
    }

    #[test]
    fn folds_sum_by_series_hour_and_day() {
        let mut fold = HeatFold::on(7);
        for (hour, event) in [
            click(0.0, 1),
            click(0.0, 1),
            click(500.0, 2),
            click(0.0, 30),
        ] {
            fold.fold(3, 2, hour, &event);
        }
        fold.fold(3, 2, 1, &Event::new(EventType::Click, "/", "s", 0));
        assert_eq!(
            fold.events, 5,
            "unpositioned events count towards the limit"
        );
        let desktop = (3, 2, 2);
        let first_day = sum(&fold, desktop, (0, 24));
        assert_eq!(first_day.events, 3);
        assert_eq!(first_day.sorted_cells(), vec![((0, 1), 2), ((55, 1), 1)]);
        assert!((first_day.aspect_sum - 6.0).abs() < 1e-9);
        assert_eq!(sum(&fold, (3, 2, 0), (0, 24)).events, 0, "another bucket");
        let days: Vec<(i64, i64)> = fold
            .days()
            .iter()
            .map(|((_, day), span)| (*day, span.events))
            .collect();
        assert_eq!(days, vec![(0, 3), (1, 1)]);
        let mut total = HeatFold::on(0);
        total.add(&fold);
        total.add(&fold);
        assert_eq!(total.events, 10);
        assert_eq!(
            sum(&total, desktop, (1, 2)).sorted_cells(),
            vec![((0, 1), 4)]
        );
        let keys: Vec<i64> = total.sorted_hours().iter().map(|(key, _)| key.1).collect();
        assert_eq!(keys, vec![1, 2, 30]);
    }
}
