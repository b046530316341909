//! The conformance suite every [`Store`] engine passes unchanged.
//!
//! Each function takes a fresh, empty store (or a [`Reopen`] harness for the durability
//! cases) and panics with a message on the first difference, the way a test does; an
//! engine's test module calls every function with its own instance (see
//! `crates/analytics/tests/sqlite.rs`). A new engine is done when they all pass.
//!
//! The expected answers are recomputed from the raw events with the same pure mapping the
//! engines use ([`crate::aggregate`]), so "aggregates equal a recomputation" is checked
//! cell by cell.

use std::collections::HashMap;

use protocol::analytics::EventType;

use crate::aggregate::{heat_cell, HOUR_MS};
use crate::event::{Event, Position};
use crate::query::{Filter, HeatCell, HeatmapQuery, Range, RawSelection, WidthBucket};
use crate::store::{Ingested, Store};
use crate::StoreError;

/// A fixed instant the suite builds its days around (2026-06-15T00:00:00Z).
pub const BASE_MS: i64 = 1_781_481_600_000;

const DAY_MS: i64 = 24 * HOUR_MS;

/// Opens an engine's store on the same data again, to test what survives.
pub trait Reopen {
    /// Opens (or reopens) the store with no size limit.
    fn open(&mut self) -> Box<dyn Store>;
    /// Opens the same store so that it can grow by only about `bytes` more, so a write
    /// fails part-way as on a full disk.
    fn open_cramped(&mut self, bytes: u64) -> Box<dyn Store>;
}

/// Every case that needs only an empty store, in one call.
pub fn run_all(fresh: &mut dyn FnMut() -> Box<dyn Store>) {
    ingested_events_read_back_whole(&*fresh());
    resends_with_the_same_key_count_once(&*fresh());
    ranges_select_by_the_events_own_time(&*fresh());
    filters_apply_to_every_number(&*fresh());
    aggregates_equal_a_recomputation_from_raw_events(&*fresh());
    retention_prunes_whole_hours_older_than_the_cut(&*fresh());
    heatmaps_never_go_backwards_while_batches_are_stored(&*fresh());
    a_range_ends_where_it_says_even_inside_the_newest_hour(&*fresh());
    sessions_carry_their_device_and_referrer(&*fresh());
}

/// A deterministic generator (xorshift64*), so failures reproduce without a seed file.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// `n` varied events from `start_ms` over `span_ms`: several pages, kinds, countries,
/// widths, sessions numbered per session, a few without positions.
pub fn sample_events(rng: &mut Rng, n: usize, start_ms: i64, span_ms: i64) -> Vec<Event> {
    const PAGES: [&str; 3] = ["/", "/pricing", "/docs/start"];
    const COUNTRIES: [Option<&str>; 4] = [Some("IN"), Some("US"), Some("DE"), None];
    const WIDTHS: [f32; 3] = [390.0, 1024.0, 1440.0];
    let mut seqs: HashMap<String, u64> = HashMap::new();
    (0..n)
        .map(|_| {
            let kind = match rng.below(10) {
                0 => EventType::Pageview,
                1..=4 => EventType::Move,
                5..=7 => EventType::Click,
                8 => EventType::Scroll,
                _ => EventType::Leave,
            };
            let session_idx = rng.below(40);
            let session = format!("s{session_idx}");
            let seq = seqs.entry(session.clone()).or_default();
            *seq += 1;
            let at_ms = start_ms + rng.below(span_ms.max(1) as u64) as i64;
            let page = PAGES[rng.below(3) as usize];
            let mut event = Event::new(kind, page, &session, at_ms);
            event.seq = Some(*seq);
            event.received_ms = at_ms + 5;
            // A visitor's country does not change within a session.
            event.country = COUNTRIES[(session_idx % 4) as usize].map(str::to_owned);
            if matches!(kind, EventType::Move | EventType::Click) && rng.below(8) != 0 {
                let viewport_width = WIDTHS[rng.below(3) as usize];
                event.position = Some(Position {
                    x: rng.below(viewport_width as u64) as f32 + 0.5,
                    y: rng.below(3000) as f32,
                    viewport_width,
                    doc_width: viewport_width,
                    doc_height: 3000.0,
                });
            }
            if kind == EventType::Click && rng.below(2) == 0 {
                event.element = Some("main>a.buy".into());
                event.element_offset = Some((0.25, 0.5));
                // Some said dead, some not; drawn from the number, not the generator,
                // so the other events stay as they were.
                event.dead = Some(seq.is_multiple_of(3));
            }
            if kind == EventType::Scroll {
                event.depth = Some(rng.below(100) as f32 / 100.0);
            }
            if kind == EventType::Pageview {
                event.device =
                    Some(["mobile", "tablet", "desktop"][(session_idx % 3) as usize].into());
                event.referrer = session_idx
                    .is_multiple_of(5)
                    .then(|| "news.example".to_owned());
            }
            event
        })
        .collect()
}

/// What every event must read back as: all fields, oldest first.
pub fn ingested_events_read_back_whole(store: &dyn Store) {
    let mut rng = Rng::new(1);
    let mut events = sample_events(&mut rng, 300, BASE_MS, DAY_MS);
    let mut clicked = Event::new(EventType::Click, "/pricing", "seed-1", BASE_MS - 10);
    clicked.element = Some("button#buy".into());
    events.push(clicked);
    let ingested = ingest_ok(store, &events);
    assert_eq!(
        ingested,
        Ingested {
            stored: 301,
            duplicates: 0
        }
    );
    let mut expected = events.clone();
    expected.sort_by_key(|event| event.at_ms);
    let read = all_events(store);
    assert_eq!(read.len(), expected.len(), "every stored event reads back");
    // Ties in time keep insertion order in both lists (a stable sort above).
    assert_eq!(read, expected, "events read back with every field");
}

/// An event resent under the same `(session, seq)` is stored once; events without a
/// `seq` are never merged.
pub fn resends_with_the_same_key_count_once(store: &dyn Store) {
    let mut rng = Rng::new(2);
    let events = sample_events(&mut rng, 200, BASE_MS, HOUR_MS);
    assert_eq!(ingest_ok(store, &events).stored, 200);
    // The whole batch again, and a batch mixing old and new events.
    assert_eq!(
        ingest_ok(store, &events),
        Ingested {
            stored: 0,
            duplicates: 200
        }
    );
    let mut fresh = Event::new(EventType::Click, "/", "s-new", BASE_MS + 1);
    fresh.seq = Some(1);
    let mixed = vec![events[0].clone(), fresh.clone(), events[5].clone()];
    assert_eq!(
        ingest_ok(store, &mixed),
        Ingested {
            stored: 1,
            duplicates: 2
        }
    );
    // Unnumbered events (the seed's API) are all kept.
    let plain = Event::new(EventType::Pageview, "/", "s-plain", BASE_MS + 2);
    assert_eq!(ingest_ok(store, &[plain.clone(), plain.clone()]).stored, 2);
    let totals = totals_ok(store, Range::all(), &Filter::default());
    assert_eq!(totals.events, 203, "duplicates change no total");
    let expected = heat_of(
        &[events.clone(), vec![fresh]].concat(),
        EventType::Click,
        WidthBucket::Desktop,
        Range::all(),
    );
    let query = HeatmapQuery {
        page: "/".into(),
        kind: EventType::Click,
        bucket: WidthBucket::Desktop,
        range: Range::all(),
    };
    let expected: Vec<HeatCell> = expected.get("/").cloned().unwrap_or_default();
    assert_eq!(
        heat_ok(store, &query).cells,
        expected,
        "duplicates change no heat cell"
    );
}

/// Ranges select by the event's own time: an import dated yesterday or 20 days ago lands
/// in the past, inside a 30-day range and outside a 24-hour one.
pub fn ranges_select_by_the_events_own_time(store: &dyn Store) {
    let now = BASE_MS + 12 * HOUR_MS;
    let mut yesterday = Event::new(EventType::Click, "/", "old-1", now - DAY_MS - 60_000);
    yesterday.received_ms = now;
    yesterday.position = Some(desktop_at(100.0, 200.0));
    let mut twenty_days = Event::new(EventType::Click, "/", "old-2", now - 20 * DAY_MS);
    twenty_days.received_ms = now;
    twenty_days.position = Some(desktop_at(700.0, 40.0));
    let today = Event::new(EventType::Pageview, "/", "new-1", now - 1000);
    ingest_ok(store, &[yesterday.clone(), twenty_days.clone(), today]);
    let last_30d = Range::new(now - 30 * DAY_MS, now).expect("ok: a valid range");
    let last_24h = Range::new(now - DAY_MS, now).expect("ok: a valid range");
    assert_eq!(totals_ok(store, last_30d, &Filter::default()).events, 3);
    assert_eq!(totals_ok(store, last_30d, &Filter::default()).clicks, 2);
    assert_eq!(totals_ok(store, last_24h, &Filter::default()).events, 1);
    let query = |range| HeatmapQuery {
        page: "/".into(),
        kind: EventType::Click,
        bucket: WidthBucket::Desktop,
        range,
    };
    assert_eq!(heat_ok(store, &query(last_30d)).events, 2);
    assert_eq!(heat_ok(store, &query(last_24h)).events, 0);
    // An explicit from/to around the older import only.
    let around = Range::new(now - 21 * DAY_MS, now - 19 * DAY_MS).expect("ok: a valid range");
    let cells = heat_ok(store, &query(around));
    assert_eq!(cells.events, 1);
    assert_eq!(cells.cells.len(), 1);
    assert!(Range::new(now, now).is_err(), "an empty range is refused");
}

/// Page and country filters narrow totals, sessions and events alike.
pub fn filters_apply_to_every_number(store: &dyn Store) {
    let mut rng = Rng::new(3);
    let events = sample_events(&mut rng, 1500, BASE_MS, 3 * DAY_MS);
    ingest_ok(store, &events);
    let range =
        Range::new(BASE_MS + 7_777, BASE_MS + 2 * DAY_MS + 1_234).expect("ok: a valid range");
    for page in [None, Some("/pricing")] {
        for country in [None, Some("IN")] {
            let filter = Filter {
                page: page.map(str::to_owned),
                country: country.map(str::to_owned),
            };
            let matching: Vec<&Event> = events
                .iter()
                .filter(|event| range.contains(event.at_ms))
                .filter(|event| page.is_none_or(|page| event.page == page))
                .filter(|event| {
                    country.is_none_or(|country| event.country.as_deref() == Some(country))
                })
                .collect();
            let totals = totals_ok(store, range, &filter);
            assert_eq!(
                totals.events,
                matching.len() as u64,
                "events for {filter:?}"
            );
            let pageviews = matching
                .iter()
                .filter(|event| event.kind == EventType::Pageview)
                .count();
            assert_eq!(
                totals.pageviews, pageviews as u64,
                "page views for {filter:?}"
            );
            let read = store
                .events(range, &filter, &RawSelection::default(), usize::MAX >> 1)
                .expect("ok: events query");
            assert_eq!(read.len(), matching.len(), "raw events for {filter:?}");
            // The selection narrows in the query: by kind, by visit, and both, with the
            // limit counting only what it lets through.
            let session = matching.first().map(|event| event.session.clone());
            for only in [
                RawSelection {
                    kind: Some(EventType::Click),
                    session: None,
                },
                RawSelection {
                    kind: None,
                    session: session.clone(),
                },
                RawSelection {
                    kind: Some(EventType::Click),
                    session: session.clone(),
                },
            ] {
                let wanted: Vec<(&str, i64)> = matching
                    .iter()
                    .filter(|event| only.kind.is_none_or(|kind| event.kind == kind))
                    .filter(|event| only.session.as_ref().is_none_or(|id| event.session == *id))
                    .map(|event| (event.session.as_str(), event.at_ms))
                    .collect();
                let read = store
                    .events(range, &filter, &only, usize::MAX >> 1)
                    .expect("ok: events query");
                let mut got: Vec<(&str, i64)> = read
                    .iter()
                    .map(|event| (event.session.as_str(), event.at_ms))
                    .collect();
                let mut want = wanted.clone();
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "raw events for {filter:?} and {only:?}");
                if wanted.len() > 1 {
                    let limited = store
                        .events(range, &filter, &only, 1)
                        .expect("ok: events query");
                    assert_eq!(limited.len(), 1, "the limit counts selected events only");
                }
            }
            if page.is_some() {
                let mut sessions: Vec<&str> = matching
                    .iter()
                    .map(|event| event.session.as_str())
                    .collect();
                sessions.sort_unstable();
                sessions.dedup();
                assert_eq!(
                    totals.sessions,
                    sessions.len() as u64,
                    "sessions for {filter:?}"
                );
                let listed = store
                    .sessions(range, &filter, 1000)
                    .expect("ok: sessions query");
                assert_eq!(
                    listed.len(),
                    sessions.len(),
                    "listed sessions for {filter:?}"
                );
            }
            if let Some(country) = country {
                assert!(totals.top_countries.iter().all(|(name, _)| name == country));
            }
        }
    }
    let nowhere = Filter {
        page: Some("/nope".into()),
        country: None,
    };
    let totals = totals_ok(store, range, &nowhere);
    assert_eq!(
        (totals.events, totals.sessions),
        (0, 0),
        "an unknown page counts nothing"
    );
    assert!(store
        .sessions(range, &nowhere, 10)
        .expect("ok: sessions query")
        .is_empty());
}

/// Heat cells and totals from the aggregates equal a recomputation from the raw events,
/// for ranges on hour boundaries and ranges that cut hours in two.
pub fn aggregates_equal_a_recomputation_from_raw_events(store: &dyn Store) {
    let mut rng = Rng::new(4);
    let events = sample_events(&mut rng, 4000, BASE_MS, 5 * DAY_MS);
    for chunk in events.chunks(333) {
        ingest_ok(store, chunk);
    }
    let ranges = [
        Range::all(),
        Range::new(BASE_MS, BASE_MS + 2 * DAY_MS).expect("ok: a valid range"),
        Range::new(BASE_MS + 1_234_567, BASE_MS + 3 * DAY_MS + 765_432).expect("ok: a valid range"),
        Range::new(BASE_MS + 1000, BASE_MS + 2000 + HOUR_MS / 2).expect("ok: a valid range"),
    ];
    for range in ranges {
        for kind in [EventType::Click, EventType::Move] {
            for bucket in [
                WidthBucket::Mobile,
                WidthBucket::Tablet,
                WidthBucket::Desktop,
            ] {
                let expected = heat_of(&events, kind, bucket, range);
                for page in ["/", "/pricing", "/docs/start"] {
                    let query = HeatmapQuery {
                        page: page.into(),
                        kind,
                        bucket,
                        range,
                    };
                    let cells = heat_ok(store, &query);
                    let want = expected.get(page).cloned().unwrap_or_default();
                    assert_eq!(cells.cells, want, "heat cells for {query:?}");
                    let n: u64 = want.iter().map(|cell| cell.count).sum();
                    assert_eq!(cells.events, n, "heat events for {query:?}");
                    if n > 0 {
                        let width: f64 = match bucket {
                            WidthBucket::Mobile => 390.0,
                            WidthBucket::Tablet => 1024.0,
                            WidthBucket::Desktop => 1440.0,
                        };
                        let aspect_error = (cells.mean_aspect - 3000.0 / width).abs();
                        assert!(aspect_error < 1e-3, "aspect for {query:?}");
                    }
                }
            }
        }
        let totals = totals_ok(store, range, &Filter::default());
        let inside: Vec<&Event> = events
            .iter()
            .filter(|event| range.contains(event.at_ms))
            .collect();
        assert_eq!(totals.events, inside.len() as u64);
        assert_eq!(
            totals.clicks,
            inside.iter().filter(|e| e.kind == EventType::Click).count() as u64
        );
        let mut pages: HashMap<&str, u64> = HashMap::new();
        for event in inside.iter().filter(|e| e.kind == EventType::Pageview) {
            *pages.entry(event.page.as_str()).or_default() += 1;
        }
        let mut pages: Vec<(String, u64)> =
            pages.into_iter().map(|(p, n)| (p.to_owned(), n)).collect();
        pages.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        assert_eq!(totals.top_pages, pages, "top pages over {range:?}");
        let mut by_events: HashMap<&str, u64> = HashMap::new();
        for event in &inside {
            *by_events.entry(event.page.as_str()).or_default() += 1;
        }
        let mut by_events: Vec<(String, u64)> = by_events
            .into_iter()
            .map(|(p, n)| (p.to_owned(), n))
            .collect();
        by_events.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        by_events.truncate(10);
        assert_eq!(
            totals.top_pages_by_events, by_events,
            "top pages by events over {range:?}"
        );
    }
}

/// Pruning removes whole hours before the cut (events and aggregates together) and keeps
/// everything after it.
pub fn retention_prunes_whole_hours_older_than_the_cut(store: &dyn Store) {
    let mut rng = Rng::new(5);
    let events = sample_events(&mut rng, 2000, BASE_MS, 4 * DAY_MS);
    ingest_ok(store, &events);
    let cut = BASE_MS + 2 * DAY_MS + HOUR_MS / 3;
    let cut_hour_start = cut.div_euclid(HOUR_MS) * HOUR_MS;
    let removed = store.prune(cut).expect("ok: prune");
    let kept: Vec<Event> = events
        .iter()
        .filter(|event| event.at_ms >= cut_hour_start)
        .cloned()
        .collect();
    assert_eq!(
        removed as usize,
        events.len() - kept.len(),
        "events removed"
    );
    assert_eq!(all_events(store).len(), kept.len(), "events kept");
    let totals = totals_ok(store, Range::all(), &Filter::default());
    assert_eq!(
        totals.events,
        kept.len() as u64,
        "aggregates pruned with their events"
    );
    let expected = heat_of(&kept, EventType::Move, WidthBucket::Desktop, Range::all());
    let query = HeatmapQuery {
        page: "/".into(),
        kind: EventType::Move,
        bucket: WidthBucket::Desktop,
        range: Range::all(),
    };
    assert_eq!(
        heat_ok(store, &query).cells,
        expected.get("/").cloned().unwrap_or_default()
    );
    assert_eq!(
        store.prune(cut).expect("ok: prune"),
        0,
        "a second prune finds nothing"
    );
}

/// Batches written to a store that runs out of room part-way are stored whole or not at
/// all: after a reopen, exactly the acknowledged events are there, and resending the
/// refused ones (and the acknowledged ones again) gives exact totals.
///
/// Returns how many failures were injected, for the report.
pub fn acknowledged_batches_survive_a_full_disk_and_a_reopen(harness: &mut dyn Reopen) -> usize {
    let mut rng = Rng::new(6);
    let events = sample_events(&mut rng, 6000, BASE_MS, 2 * DAY_MS);
    let batches: Vec<&[Event]> = events.chunks(50).collect();
    let mut acknowledged: Vec<Event> = Vec::new();
    let mut refused: Vec<&[Event]> = Vec::new();
    // Give the store a little more room each time, so failures land at many points inside
    // a transaction (the index pages, the aggregates, the commit).
    let mut room = 0u64;
    let mut next = 0;
    let mut failures = 0;
    while next < batches.len() {
        let store = harness.open_cramped(room);
        while let Some(batch) = batches.get(next) {
            match store.ingest(batch) {
                Ok(ingested) => {
                    assert_eq!(ingested.stored as usize, batch.len());
                    acknowledged.extend_from_slice(batch);
                    next += 1;
                }
                Err(err) => {
                    assert!(
                        matches!(err, StoreError::Full(_)),
                        "a full store says so: {err}"
                    );
                    assert!(err.is_retryable());
                    failures += 1;
                    refused.push(batch);
                    next += 1;
                    break;
                }
            }
        }
        room += 4096 * (1 + rng.below(3));
    }
    let store = harness.open();
    let mut expected = acknowledged.clone();
    expected.sort_by_key(|event| event.at_ms);
    let mut read = all_events(&*store);
    read.sort_by_key(|event| event.at_ms);
    assert_eq!(
        read.len(),
        acknowledged.len(),
        "acknowledged = recovered, exactly"
    );
    assert_eq!(read, expected, "acknowledged = recovered, field by field");
    let totals = totals_ok(&*store, Range::all(), &Filter::default());
    assert_eq!(
        totals.events,
        acknowledged.len() as u64,
        "no aggregate of a refused batch"
    );
    // Resending everything: the refused batches count now, the others are duplicates.
    let mut stored = 0;
    for batch in &batches {
        stored += ingest_ok(&*store, batch).stored as usize;
    }
    assert_eq!(stored, events.len() - acknowledged.len());
    let totals = totals_ok(&*store, Range::all(), &Filter::default());
    assert_eq!(
        totals.events,
        events.len() as u64,
        "every event once after the resends"
    );
    for kind in [EventType::Click, EventType::Move] {
        let expected = heat_of(&events, kind, WidthBucket::Desktop, Range::all());
        let query = HeatmapQuery {
            page: "/".into(),
            kind,
            bucket: WidthBucket::Desktop,
            range: Range::all(),
        };
        assert_eq!(
            heat_ok(&*store, &query).cells,
            expected.get("/").cloned().unwrap_or_default()
        );
    }
    failures
}

/// A heatmap read while batches are being stored (and an engine writes its aggregates
/// behind them) never shows fewer events than an earlier read did, and never more than
/// were sent; once the batches are stored it equals a recomputation.
pub fn heatmaps_never_go_backwards_while_batches_are_stored(store: &dyn Store) {
    let mut rng = Rng::new(8);
    let events = sample_events(&mut rng, 6000, BASE_MS, 2 * DAY_MS);
    let query = HeatmapQuery {
        page: "/".into(),
        kind: EventType::Move,
        bucket: WidthBucket::Desktop,
        range: Range::all(),
    };
    let expected = heat_of(&events, EventType::Move, WidthBucket::Desktop, Range::all());
    let expected = expected.get("/").cloned().unwrap_or_default();
    let total: u64 = expected.iter().map(|cell| cell.count).sum();
    let stored = std::sync::atomic::AtomicBool::new(false);
    let reads = std::thread::scope(|scope| {
        scope.spawn(|| {
            for batch in events.chunks(60) {
                ingest_ok(store, batch);
            }
            stored.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let (mut last, mut reads) = (0, 0);
        while !stored.load(std::sync::atomic::Ordering::SeqCst) {
            let seen = heat_ok(store, &query).events;
            assert!(seen >= last, "a heatmap went from {last} to {seen} events");
            assert!(seen <= total, "a heatmap shows {seen} of {total} events");
            last = seen;
            reads += 1;
        }
        reads
    });
    assert!(reads > 0, "the heatmap was read while batches were stored");
    assert_eq!(heat_ok(store, &query).cells, expected, "heat once stored");
}

/// Heatmaps and totals are exact after a reopen, whatever an engine kept in memory when it
/// closed (a crash loses the process, not what was acknowledged), and batches stored after
/// the reopen add to them exactly.
pub fn aggregates_survive_a_reopen(harness: &mut dyn Reopen) {
    let mut rng = Rng::new(7);
    let events = sample_events(&mut rng, 3000, BASE_MS, 3 * DAY_MS);
    let (first, second) = events.split_at(1700);
    let check = |store: &dyn Store, stored: &[Event], when: &str| {
        let range = Range::new(BASE_MS + 1_234_567, BASE_MS + 3 * DAY_MS - 7_654)
            .expect("ok: a valid range");
        for range in [Range::all(), range] {
            for kind in [EventType::Click, EventType::Move] {
                let expected = heat_of(stored, kind, WidthBucket::Tablet, range);
                for page in ["/", "/pricing"] {
                    let query = HeatmapQuery {
                        page: page.into(),
                        kind,
                        bucket: WidthBucket::Tablet,
                        range,
                    };
                    let want = expected.get(page).cloned().unwrap_or_default();
                    let cells = heat_ok(store, &query);
                    assert_eq!(cells.cells, want, "heat cells {when} for {query:?}");
                    let n: u64 = want.iter().map(|cell| cell.count).sum();
                    assert_eq!(cells.events, n, "heat events {when} for {query:?}");
                }
            }
            let inside = stored.iter().filter(|e| range.contains(e.at_ms)).count();
            let totals = totals_ok(store, range, &Filter::default());
            assert_eq!(totals.events, inside as u64, "totals {when} over {range:?}");
        }
    };
    {
        let store = harness.open();
        for batch in first.chunks(170) {
            ingest_ok(&*store, batch);
        }
        check(&*store, first, "before the reopen");
    }
    let store = harness.open();
    check(&*store, first, "after the reopen");
    for batch in second.chunks(130) {
        ingest_ok(&*store, batch);
    }
    assert_eq!(
        ingest_ok(&*store, first).duplicates,
        first.len() as u64,
        "events stored before the reopen are still recognised"
    );
    check(&*store, &events, "after more batches");
    drop(store);
    check(&*harness.open(), &events, "after a second reopen");
}

/// A range that ends inside the newest stored hour counts what lies before its end and
/// nothing after, before and after newer events of that hour arrive (an engine may read
/// the hour whole only while nothing newer than the end is stored).
pub fn a_range_ends_where_it_says_even_inside_the_newest_hour(store: &dyn Store) {
    let half_past = BASE_MS + 30 * 60_000;
    let mut first = Event::new(EventType::Click, "/", "early", half_past);
    first.position = Some(desktop_at(100.0, 100.0));
    ingest_ok(store, &[first]);
    let until = |to_ms| Range::new(BASE_MS - DAY_MS, to_ms).expect("ok: a valid range");
    let on_home = Filter {
        page: Some("/".into()),
        country: None,
    };
    let counts = |range: Range| {
        let heat = heat_ok(
            store,
            &HeatmapQuery {
                page: "/".into(),
                kind: EventType::Click,
                bucket: WidthBucket::Desktop,
                range,
            },
        );
        let totals = totals_ok(store, range, &on_home);
        (heat.events, totals.events, totals.sessions)
    };
    assert_eq!(
        counts(until(half_past + 1)),
        (1, 1, 1),
        "the end's own hour"
    );
    assert_eq!(counts(until(half_past)), (0, 0, 0), "the end is exclusive");
    let mut later = Event::new(EventType::Click, "/", "later", half_past + 10 * 60_000);
    later.position = Some(desktop_at(200.0, 100.0));
    ingest_ok(store, &[later]);
    assert_eq!(
        counts(until(half_past + 1)),
        (1, 1, 1),
        "a newer event of the same hour is past the end"
    );
    assert_eq!(counts(until(half_past + 10 * 60_000 + 1)), (2, 2, 2));
}

/// A session lists the device and referrer its events carried.
pub fn sessions_carry_their_device_and_referrer(store: &dyn Store) {
    let mut landing = Event::new(EventType::Pageview, "/", "referred", BASE_MS);
    landing.device = Some("mobile".into());
    landing.referrer = Some("news.example".into());
    let click = Event::new(EventType::Click, "/", "referred", BASE_MS + 1000);
    let direct = Event::new(EventType::Pageview, "/", "direct", BASE_MS + 2000);
    ingest_ok(store, &[landing, click, direct]);
    let sessions = store
        .sessions(Range::all(), &Filter::default(), 10)
        .expect("ok: sessions query");
    let find = |id: &str| {
        sessions
            .iter()
            .find(|row| row.session == id)
            .map(|row| (row.device.clone(), row.referrer.clone(), row.events))
    };
    assert_eq!(
        find("referred"),
        Some((Some("mobile".into()), Some("news.example".into()), 2))
    );
    assert_eq!(find("direct"), Some((None, None, 1)));
}

fn desktop_at(x: f32, y: f32) -> Position {
    Position {
        x,
        y,
        viewport_width: 1440.0,
        doc_width: 1440.0,
        doc_height: 2000.0,
    }
}

/// Expected heat cells per page, recomputed from raw events.
fn heat_of(
    events: &[Event],
    kind: EventType,
    bucket: WidthBucket,
    range: Range,
) -> HashMap<String, Vec<HeatCell>> {
    let mut counts: HashMap<(String, i64, i64), u64> = HashMap::new();
    let mut seen: std::collections::HashSet<(&str, u64)> = std::collections::HashSet::new();
    for event in events {
        if event.kind != kind || !range.contains(event.at_ms) {
            continue;
        }
        if let Some(seq) = event.seq {
            if !seen.insert((event.session.as_str(), seq)) {
                continue;
            }
        }
        if let Some((cell_bucket, cx, cy)) = heat_cell(event) {
            if cell_bucket == bucket {
                *counts.entry((event.page.clone(), cx, cy)).or_default() += 1;
            }
        }
    }
    let mut pages: HashMap<String, Vec<HeatCell>> = HashMap::new();
    for ((page, cx, cy), count) in counts {
        pages
            .entry(page)
            .or_default()
            .push(HeatCell { cx, cy, count });
    }
    for cells in pages.values_mut() {
        cells.sort_by_key(|cell| (cell.cy, cell.cx));
    }
    pages
}

fn ingest_ok(store: &dyn Store, events: &[Event]) -> Ingested {
    store
        .ingest(events)
        .expect("ok: the suite's ingest succeeds")
}

fn totals_ok(store: &dyn Store, range: Range, filter: &Filter) -> crate::Totals {
    store.totals(range, filter, 10).expect("ok: totals query")
}

fn heat_ok(store: &dyn Store, query: &HeatmapQuery) -> crate::HeatmapCells {
    store.heatmap(query).expect("ok: heatmap query")
}

fn all_events(store: &dyn Store) -> Vec<Event> {
    store
        .events(
            Range::all(),
            &Filter::default(),
            &RawSelection::default(),
            usize::MAX >> 1,
        )
        .expect("ok: events query")
}
