//! How a time range splits into what the aggregates answer (whole days, whole hours) and
//! what only raw events can (the partial hours at its ends), shared by every engine so
//! their answers agree to the event.

use crate::aggregate::HOUR_MS;
use crate::query::Range;

/// The whole hours inside a range (`[first, end)`, if any) and the partial edges to read
/// from raw events.
pub(crate) fn split_hours(range: Range) -> (Option<(i64, i64)>, Vec<Range>) {
    let first_hour =
        range.from_ms.div_euclid(HOUR_MS) + i64::from(range.from_ms.rem_euclid(HOUR_MS) != 0);
    let end_hour = range.to_ms.div_euclid(HOUR_MS);
    if first_hour >= end_hour {
        return (None, vec![range]);
    }
    let mut edges = Vec::new();
    let whole_from = first_hour * HOUR_MS;
    let whole_to = end_hour * HOUR_MS;
    if range.from_ms < whole_from {
        edges.push(Range {
            from_ms: range.from_ms,
            to_ms: whole_from,
        });
    }
    if whole_to < range.to_ms {
        edges.push(Range {
            from_ms: whole_to,
            to_ms: range.to_ms,
        });
    }
    (Some((first_hour, end_hour)), edges)
}

/// Which rollup a span of a range is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rollup {
    /// Whole days, `[first, end)` day numbers.
    Day,
    /// Whole hours, `[first, end)` hour numbers.
    Hour,
}

/// Splits whole hours `[first, end)` into the whole days inside them and the hours left at
/// either end, so a 30-day heatmap sums 30 daily rows per cell instead of 720 hourly ones.
pub(crate) fn split_days((first_hour, end_hour): (i64, i64)) -> Vec<(Rollup, (i64, i64))> {
    let first_day = first_hour.div_euclid(24) + i64::from(first_hour.rem_euclid(24) != 0);
    let end_day = end_hour.div_euclid(24);
    if first_day >= end_day {
        return vec![(Rollup::Hour, (first_hour, end_hour))];
    }
    let mut spans = vec![(Rollup::Day, (first_day, end_day))];
    if first_hour < first_day * 24 {
        spans.push((Rollup::Hour, (first_hour, first_day * 24)));
    }
    if end_day * 24 < end_hour {
        spans.push((Rollup::Hour, (end_day * 24, end_hour)));
    }
    spans
}

/// The `limit` largest counts, ties by name, for top-pages and top-countries lists.
pub(crate) fn top(mut counts: Vec<(String, u64)>, limit: usize) -> Vec<(String, u64)> {
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(limit);
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_hours_split_into_days_and_the_hours_around_them() {
        assert_eq!(split_days((0, 48)), vec![(Rollup::Day, (0, 2))]);
        assert_eq!(
            split_days((5, 50)),
            vec![
                (Rollup::Day, (1, 2)),
                (Rollup::Hour, (5, 24)),
                (Rollup::Hour, (48, 50))
            ]
        );
        assert_eq!(split_days((5, 30)), vec![(Rollup::Hour, (5, 30))]);
    }

    #[test]
    fn ranges_split_into_whole_hours_and_edges() {
        let h = HOUR_MS;
        assert_eq!(
            split_hours(Range {
                from_ms: 0,
                to_ms: 2 * h
            }),
            (Some((0, 2)), vec![])
        );
        assert_eq!(
            split_hours(Range {
                from_ms: 10,
                to_ms: 2 * h + 5
            }),
            (
                Some((1, 2)),
                vec![
                    Range {
                        from_ms: 10,
                        to_ms: h
                    },
                    Range {
                        from_ms: 2 * h,
                        to_ms: 2 * h + 5
                    }
                ]
            )
        );
        assert_eq!(
            split_hours(Range {
                from_ms: 10,
                to_ms: 20
            }),
            (
                None,
                vec![Range {
                    from_ms: 10,
                    to_ms: 20
                }]
            )
        );
        assert_eq!(
            split_hours(Range {
                from_ms: -h - 1,
                to_ms: 0
            })
            .0,
            Some((-1, 0))
        );
    }
}
