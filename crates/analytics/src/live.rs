//! The live view: tracked events go to the store first, then into a small view in memory.
//!
//! Events arrive through the relay's `POST /api/events`. Each is stamped with the server's
//! clock (a [`Clock`], so tests can move time by hand) and written to the store
//! (`crate::Store`, SQLite by default), which keeps every accepted event for the
//! retention period and answers history: totals, top lists and heatmaps over any range.
//! Only once the store has committed a batch is it folded into memory, which serves the
//! live numbers alone (active users, the last minute and 5 minutes, journeys): a bounded
//! ring of recent events (`--max-events`) and the sessions. A session ends after
//! `--session-timeout-secs` without events. At start the live view is rebuilt from the
//! store's events of the last session timeout plus 5 minutes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::{Event, Ingested, Position, Range, Store, StoreError};
use protocol::analytics::{
    Count, EventType, JourneyStep, RecentEvent, SessionInfo, Summary, TrackedEvent,
};

/// How far ahead of the server's clock an event's own timestamp may be before it is
/// clamped to the receive time.
pub const MAX_CLOCK_SKEW_MS: i64 = 60_000;

/// Steps kept in one session's journey.
const MAX_JOURNEY: usize = 50;

/// Where "now" comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told, for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn at(now_ms: i64) -> Self {
        ManualClock(AtomicI64::new(now_ms))
    }

    /// Moves it forward.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The live numbers look back this far (events in the last 5 minutes, per-second chart).
const LIVE_WINDOW_MS: i64 = 300_000;

/// The dashboard chart's buckets: 10 seconds of wall time each (aligned to multiples of
/// 10 s since the epoch, as the page draws them), 60 of them for 10 minutes.
const CHART_BUCKET_MS: i64 = 10_000;
const CHART_BUCKETS: usize = 60;

/// A validated event as received at `received_ms` (server clock), in the store's shape.
///
/// It is placed at its own `timestamp` when it has one (an import of yesterday's events
/// lands in yesterday), but never later than [`MAX_CLOCK_SKEW_MS`] past the receive time:
/// a sender's clock running fast must not push events into the future. A position counts
/// only with all of `x`, `y`, `vw`, `dw` and `dh`, since a heat cell needs them all.
pub fn stored_event(event: TrackedEvent, received_ms: i64) -> Event {
    let at_ms = event
        .timestamp
        .map_or(received_ms, |at| at.min(received_ms + MAX_CLOCK_SKEW_MS));
    let meta = &event.metadata;
    // A scroll event has no pointer position but the sizes and the depth reached: it is
    // placed where the depth reached, mid-width, so scroll maps can still tell screens
    // apart (the store's heat cells of scroll events are never drawn).
    let scrolled_to = match (event.kind, meta.depth, meta.dw, meta.dh) {
        (EventType::Scroll, Some(depth), Some(dw), Some(dh)) => Some((dw / 2.0, depth * dh)),
        _ => None,
    };
    let point = meta.x.zip(meta.y).or(scrolled_to);
    let position = match (point, meta.vw, meta.dw, meta.dh) {
        (Some((x, y)), Some(vw), Some(dw), Some(dh)) => Some(Position {
            x: x as f32,
            y: y as f32,
            viewport_width: vw as f32,
            doc_width: dw as f32,
            doc_height: dh as f32,
        }),
        _ => None,
    };
    Event {
        kind: event.kind,
        seq: event.seq,
        at_ms,
        received_ms,
        country: event
            .country
            .as_deref()
            .map(|code| code.to_ascii_uppercase()),
        position,
        element: meta.path.clone(),
        element_offset: meta.ox.zip(meta.oy).map(|(ox, oy)| (ox as f32, oy as f32)),
        depth: meta.depth.map(|depth| depth as f32),
        visible: meta.visible,
        device: meta.device.clone(),
        referrer: meta.referrer.clone(),
        dead: meta.dead,
        page: event.page,
        session: event.session_id,
    }
}

/// One event of the live ring: what the live numbers need, nothing more.
#[derive(Debug, Clone)]
struct LiveEvent {
    kind: EventType,
    page: Arc<str>,
    session: Arc<str>,
    country: Option<Arc<str>>,
    at_ms: i64,
    /// The store's key of a numbered event, so a resend is not counted twice here either.
    key: Option<EventKey>,
}

/// `(session, seq, at_ms)`: what makes a numbered event a duplicate in the store.
type EventKey = (Arc<str>, u64, i64);

/// Filters of the analytics queries; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this page.
    pub page: Option<String>,
    /// Only this event type.
    pub kind: Option<EventType>,
    /// Only events at or after this time (ms since the epoch).
    pub from: Option<i64>,
    /// Only events at or before this time.
    pub to: Option<i64>,
    /// Only this country.
    pub country: Option<String>,
}

impl Filter {
    fn matches(&self, event: &LiveEvent) -> bool {
        self.page.as_deref().is_none_or(|page| &*event.page == page)
            && self.kind.is_none_or(|kind| event.kind == kind)
            && self.from.is_none_or(|from| event.at_ms >= from)
            && self.to.is_none_or(|to| event.at_ms <= to)
            && self
                .country
                .as_deref()
                .is_none_or(|country| event.country.as_deref() == Some(country))
    }

    /// Whether a time range was asked for (history rather than the live view).
    pub fn has_range(&self) -> bool {
        self.from.is_some() || self.to.is_some()
    }

    /// The store's range for `from` and `to` (`to` is inclusive here, exclusive there);
    /// an open end reaches as far as the store does.
    pub fn range(&self) -> Range {
        let all = Range::all();
        Range {
            from_ms: self.from.unwrap_or(all.from_ms).max(all.from_ms),
            to_ms: self
                .to
                .map_or(all.to_ms, |to| to.saturating_add(1))
                .min(all.to_ms),
        }
    }

    /// The store's filter (page and country; the store has no type filter).
    pub fn store_filter(&self) -> crate::Filter {
        crate::Filter {
            page: self.page.clone(),
            country: self.country.clone(),
        }
    }
}

#[derive(Debug)]
struct Session {
    /// The visitor left (a `leave` event) and has not come back since.
    left: bool,
    country: Option<Arc<str>>,
    /// The device and referrer of the first event that named them (the snippet sends
    /// them with the page view that starts a visit).
    device: Option<Box<str>>,
    referrer: Option<Box<str>>,
    first_seen: i64,
    last_seen: i64,
    events: u64,
    journey: Vec<JourneyStep>,
}

#[derive(Debug, Default)]
struct State {
    events: VecDeque<LiveEvent>,
    /// Keys of the numbered events in `events`, so a resend within the live window is
    /// folded in once; bounded with the ring.
    keys: HashSet<EventKey>,
    sessions: HashMap<Arc<str>, Session>,
    pages: HashMap<String, Arc<str>>,
}

/// Tracked-site analytics: the store for history, memory for the live view.
///
/// Ingest writes to the store first and folds into memory only what the store committed,
/// so the live numbers never show an event that a restart would lose.
#[derive(Debug)]
pub struct Analytics {
    clock: Arc<dyn Clock>,
    /// Where every accepted event is kept for the retention period.
    store: Arc<dyn Store>,
    /// Events held in the live ring (`--max-events`).
    max_events: usize,
    session_timeout_ms: i64,
    /// The live view, behind one lock (folding a batch takes microseconds).
    state: Mutex<State>,
}

impl Analytics {
    /// An empty live view over `store`, holding at most `max_events` recent events.
    pub fn new(
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
        max_events: usize,
        session_timeout_ms: i64,
    ) -> Self {
        Analytics {
            clock,
            store,
            max_events: max_events.max(1),
            session_timeout_ms,
            state: Mutex::new(State::default()),
        }
    }

    /// The store behind it, for history queries.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// How far back the live view reaches: a session's timeout plus the 5 minutes the
    /// live numbers cover.
    fn live_window_ms(&self) -> i64 {
        self.session_timeout_ms.saturating_add(LIVE_WINDOW_MS)
    }

    /// Stores validated events, stamped with the server's clock: first in the store, then,
    /// once it has committed them, in the live view. Blocks on the store: call it from a
    /// blocking thread.
    ///
    /// # Errors
    /// The store's error; nothing of the batch is stored or counted then, and
    /// [`StoreError::is_retryable`] says whether the sender should try again.
    pub fn ingest(&self, events: Vec<TrackedEvent>) -> Result<Ingested, StoreError> {
        let now = self.clock.now_ms();
        let events: Vec<Event> = events
            .into_iter()
            .map(|event| stored_event(event, now))
            .collect();
        let ingested = self.store.ingest(&events)?;
        let mut state = lock(&self.state);
        self.forget_timed_out_sessions(&mut state, now);
        for event in &events {
            self.fold(&mut state, event, now);
        }
        Ok(ingested)
    }

    /// Folds events another renderer sharing the store has just committed into the live
    /// view only (never into the store, which has them already), so in cluster mode every
    /// renderer's live numbers count every event, not just its share of the bus. Each
    /// event should carry the `timestamp` its committing renderer stamped; a numbered one
    /// already in the view is skipped, as in [`Analytics::ingest`].
    pub fn fold_remote(&self, events: Vec<TrackedEvent>) {
        let now = self.clock.now_ms();
        let mut state = lock(&self.state);
        self.forget_timed_out_sessions(&mut state, now);
        for event in events {
            self.fold(&mut state, &stored_event(event, now), now);
        }
    }

    /// Rebuilds the live view at start from the store's events of the live window, so a
    /// restart keeps active users and journeys. Blocks on the store.
    ///
    /// # Errors
    /// The store's error; the live view starts empty then (history is still in the store).
    pub fn restore(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        let range = Range::new(
            now.saturating_sub(self.live_window_ms()),
            now.saturating_add(MAX_CLOCK_SKEW_MS + 1),
        )?;
        let events = self.store.events(
            range,
            &crate::Filter::default(),
            &crate::RawSelection::default(),
            self.max_events,
        )?;
        if events.len() >= self.max_events {
            tracing::warn!(
                events = events.len(),
                "the live window holds more events than --max-events; the live view starts from the oldest of them"
            );
        }
        let mut state = lock(&self.state);
        for event in &events {
            self.fold(&mut state, event, now);
        }
        Ok(events.len())
    }

    /// Folds one stored event into its session and the ring, as of the event's own time.
    /// Events older than the live window only matter to history, which the store has; a
    /// numbered event already in the ring is a resend and is skipped.
    /// Forgets the sessions that timed out once the map holds more than 10,000, which
    /// bounds it.
    fn forget_timed_out_sessions(&self, state: &mut State, now: i64) {
        let timeout = self.session_timeout_ms;
        if state.sessions.len() > 10_000 {
            state
                .sessions
                .retain(|_, session| now - session.last_seen <= timeout);
        }
    }

    fn fold(&self, state: &mut State, event: &Event, now: i64) {
        if event.at_ms < now.saturating_sub(self.live_window_ms()) {
            return;
        }
        let session_id: Arc<str> = match state.sessions.get_key_value(event.session.as_str()) {
            Some((key, _)) => key.clone(),
            None => Arc::from(event.session.as_str()),
        };
        let key = event.seq.map(|seq| (session_id.clone(), seq, event.at_ms));
        if let Some(key) = &key {
            if !state.keys.insert(key.clone()) {
                return;
            }
        }
        let at = event.at_ms;
        let timeout = self.session_timeout_ms;
        let page = intern(&mut state.pages, &event.page);
        let country: Option<Arc<str>> = event.country.as_deref().map(Arc::from);
        let fresh = || Session {
            left: false,
            country: country.clone(),
            device: None,
            referrer: None,
            first_seen: at,
            last_seen: at,
            events: 0,
            journey: Vec::new(),
        };
        let session = state
            .sessions
            .entry(session_id.clone())
            .or_insert_with(fresh);
        if at - session.last_seen > timeout {
            // The same id after a long pause is a new visit.
            *session = fresh();
        }
        session.last_seen = session.last_seen.max(at);
        session.first_seen = session.first_seen.min(at);
        session.events += 1;
        // Only a sign of presence brings a visitor back: a tab being hidden (its beacon
        // may arrive after the leave's) or a custom event does not.
        match event.kind {
            EventType::Leave => session.left = true,
            EventType::Visibility if event.visible != Some(true) => {}
            EventType::Custom => {}
            _ => session.left = false,
        }
        if session.country.is_none() {
            session.country = country.clone();
        }
        if session.device.is_none() {
            session.device = event.device.as_deref().map(Box::from);
        }
        if session.referrer.is_none() {
            session.referrer = event.referrer.as_deref().map(Box::from);
        }
        let new_page = session
            .journey
            .last()
            .is_none_or(|step| *step.page != *page);
        if new_page && session.journey.len() < MAX_JOURNEY {
            session.journey.push(JourneyStep {
                page: page.to_string(),
                at,
            });
        }
        state.events.push_back(LiveEvent {
            kind: event.kind,
            page,
            session: session_id.clone(),
            country,
            at_ms: at,
            key,
        });
        if state.events.len() > self.max_events {
            if let Some(oldest) = state.events.pop_front() {
                if let Some(key) = &oldest.key {
                    state.keys.remove(key);
                }
            }
        }
    }

    /// Active users, recent rates, and top pages and countries: of the last 5 minutes
    /// from memory, or, when the filter has a range, of that range from the store (with
    /// its totals). Blocks on the store when there is a range.
    ///
    /// # Errors
    /// The store's error (ranged summaries only); [`StoreError::InvalidQuery`] for a type
    /// filter with a range, which the stored totals cannot narrow by.
    pub fn summary(&self, filter: &Filter) -> Result<Summary, StoreError> {
        let mut summary = self.live_summary(filter);
        self.add_today(&mut summary, filter)?;
        if filter.has_range() {
            if filter.kind.is_some() {
                return Err(StoreError::InvalidQuery(
                    "type: cannot be combined with from, to or range (totals over a range count every type)".into(),
                ));
            }
            let totals = self
                .store
                .totals(filter.range(), &filter.store_filter(), TOP_LISTED)?;
            summary.top_pages = counts(totals.top_pages_by_events);
            summary.top_countries = counts(totals.top_countries);
            summary.totals = Some(protocol::analytics::RangeTotals {
                events: totals.events,
                pageviews: totals.pageviews,
                clicks: totals.clicks,
                sessions: totals.sessions,
            });
        }
        Ok(summary)
    }

    /// Today's numbers the seed API's summary carries (visitors, page views per page,
    /// events per country), from the store's aggregates for midnight UTC to now.
    fn add_today(&self, summary: &mut Summary, filter: &Filter) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let midnight = now - now.rem_euclid(DAY_MS);
        let today = Range::new(midnight, now.saturating_add(MAX_CLOCK_SKEW_MS + 1))?;
        let totals = self
            .store
            .totals(today, &filter.store_filter(), TODAY_LISTED)?;
        summary.total_today = totals.sessions;
        summary.pages_visited = totals.top_pages.into_iter().collect();
        summary.countries = totals.top_countries.into_iter().collect();
        Ok(())
    }

    /// The live numbers, from memory.
    fn live_summary(&self, filter: &Filter) -> Summary {
        let now = self.clock.now_ms();
        let state = lock(&self.state);
        let active_users = state
            .sessions
            .values()
            .filter(|session| !session.left && now - session.last_seen <= self.session_timeout_ms)
            .filter(|session| {
                filter
                    .country
                    .as_deref()
                    .is_none_or(|c| session.country.as_deref() == Some(c))
            })
            .filter(|session| {
                filter
                    .page
                    .as_deref()
                    .is_none_or(|page| session.journey.iter().any(|step| step.page == page))
            })
            .count();
        let mut per_second = vec![0u32; 300];
        let mut per_ten_seconds = vec![0u32; CHART_BUCKETS];
        let newest_bucket = now.div_euclid(CHART_BUCKET_MS);
        let (mut last_minute, mut last_5) = (0u64, 0u64);
        let mut pages: HashMap<&str, u64> = HashMap::new();
        let mut countries: HashMap<&str, u64> = HashMap::new();
        for event in state.events.iter().rev() {
            let age = now - event.at_ms;
            if filter.matches(event) {
                let buckets_back = newest_bucket - event.at_ms.div_euclid(CHART_BUCKET_MS);
                if let Some(slot) = usize::try_from(buckets_back)
                    .ok()
                    .and_then(|back| CHART_BUCKETS.checked_sub(1 + back))
                {
                    per_ten_seconds[slot] += 1;
                }
                if age < 60_000 {
                    last_minute += 1;
                }
                if age < LIVE_WINDOW_MS {
                    last_5 += 1;
                    if let Some(slot) = per_second
                        .len()
                        .checked_sub(1 + (age.max(0) / 1000) as usize)
                    {
                        per_second[slot] += 1;
                    }
                    *pages.entry(&event.page).or_default() += 1;
                    if let Some(country) = &event.country {
                        *countries.entry(country).or_default() += 1;
                    }
                }
            }
        }
        let recent_events = state
            .events
            .iter()
            .rev()
            .filter(|event| filter.matches(event))
            .take(RECENT_LISTED)
            .map(|event| RecentEvent {
                kind: event.kind,
                page: event.page.to_string(),
                session_id: event.session.to_string(),
                timestamp: iso8601(event.at_ms),
                country: event.country.as_deref().map(str::to_owned),
            })
            .collect();
        Summary {
            active_users,
            events_last_minute: last_minute,
            events_last_5_minutes: last_5,
            top_pages: top(pages),
            top_countries: top(countries),
            per_second,
            per_ten_seconds,
            totals: None,
            total_active: active_users,
            recent_events,
            ..Summary::default()
        }
    }

    /// Active sessions with their journeys, most recent first.
    pub fn sessions(&self, filter: &Filter) -> Vec<SessionInfo> {
        let now = self.clock.now_ms();
        let state = lock(&self.state);
        let mut sessions: Vec<SessionInfo> = state
            .sessions
            .iter()
            .filter(|(_, session)| {
                !session.left && now - session.last_seen <= self.session_timeout_ms
            })
            .filter(|(_, session)| {
                filter
                    .country
                    .as_deref()
                    .is_none_or(|c| session.country.as_deref() == Some(c))
            })
            .filter(|(_, session)| {
                filter
                    .page
                    .as_deref()
                    .is_none_or(|page| session.journey.iter().any(|step| step.page == page))
            })
            .filter(|(_, session)| filter.from.is_none_or(|from| session.last_seen >= from))
            .filter(|(_, session)| filter.to.is_none_or(|to| session.first_seen <= to))
            .map(|(id, session)| SessionInfo {
                session_id: id.to_string(),
                start_time: iso8601(session.first_seen),
                current_page: session
                    .journey
                    .last()
                    .map(|step| step.page.clone())
                    .unwrap_or_default(),
                duration: u64::try_from((session.last_seen - session.first_seen) / 1000)
                    .unwrap_or(0),
                country: session.country.as_deref().map(str::to_owned),
                device: session.device.as_deref().map(str::to_owned),
                referrer: session.referrer.as_deref().map(str::to_owned),
                first_seen: session.first_seen,
                last_seen: session.last_seen,
                events: session.events,
                journey: session
                    .journey
                    .iter()
                    .map(|step| step.page.clone())
                    .collect(),
                steps: session.journey.clone(),
            })
            .collect();
        sessions.sort_by_key(|session| std::cmp::Reverse(session.last_seen));
        sessions
    }

    /// The analytics clock's "now", ms since the epoch (ranges such as `range=24h` end here).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Events held in the live ring.
    pub fn n_events(&self) -> usize {
        lock(&self.state).events.len()
    }
}

/// Pages and countries listed in a summary.
const TOP_LISTED: usize = 10;

/// Pages and countries in the summary's today maps.
const TODAY_LISTED: usize = 50;

/// Events in the summary's `recentEvents`.
const RECENT_LISTED: usize = 20;

const DAY_MS: i64 = 86_400_000;

/// `ms` since the epoch as ISO-8601 in UTC with milliseconds (`2025-07-19T10:30:00.000Z`).
pub fn iso8601(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn counts(pairs: Vec<(String, u64)>) -> Vec<Count> {
    pairs
        .into_iter()
        .map(|(name, events)| Count { name, events })
        .collect()
}

fn intern(pages: &mut HashMap<String, Arc<str>>, page: &str) -> Arc<str> {
    if let Some(interned) = pages.get(page) {
        return interned.clone();
    }
    let page: Arc<str> = Arc::from(page);
    // Bounded: past this many distinct pages new ones are not shared, only stored.
    if pages.len() < 100_000 {
        pages.insert(page.to_string(), page.clone());
    }
    page
}

fn top(counts: HashMap<&str, u64>) -> Vec<Count> {
    let mut counts: Vec<Count> = counts
        .into_iter()
        .map(|(name, events)| Count {
            name: name.to_owned(),
            events,
        })
        .collect();
    counts.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.name.cmp(&b.name)));
    counts.truncate(TOP_LISTED);
    counts
}

/// Locks a mutex, taking over the data of a panicked holder: the live view stays usable,
/// and a half-folded event costs at most one live number until it ages out.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SqliteConfig, SqliteStore};
    use protocol::analytics::EventMetadata;
    use testkit::TempDir;

    fn event(kind: EventType, page: &str, session: &str, country: Option<&str>) -> TrackedEvent {
        TrackedEvent {
            kind,
            page: page.into(),
            session_id: session.into(),
            timestamp: None,
            seq: None,
            country: country.map(str::to_owned),
            metadata: EventMetadata::default(),
        }
    }

    impl Analytics {
        fn ingest_ok(&self, events: Vec<TrackedEvent>) {
            self.ingest(events).unwrap();
        }

        fn live(&self) -> Summary {
            self.summary(&Filter::default()).unwrap()
        }
    }

    /// A live view over a fresh SQLite store in a temporary folder (kept alive with it).
    struct Fixture {
        clock: Arc<ManualClock>,
        analytics: Analytics,
        _dir: TempDir,
    }

    fn with_store(max_events: usize, clock: Arc<ManualClock>) -> Fixture {
        let dir = TempDir::new("analytics-unit");
        let store = SqliteStore::open(&SqliteConfig::at(&dir.path().join("a.sqlite"))).unwrap();
        let analytics = Analytics::new(clock.clone(), Arc::new(store), max_events, 5 * 60_000);
        Fixture {
            clock,
            analytics,
            _dir: dir,
        }
    }

    fn fixture() -> Fixture {
        with_store(1000, Arc::new(ManualClock::at(1_000_000_000)))
    }

    #[test]
    fn remote_events_count_live_but_are_not_stored_and_resends_count_once() {
        let Fixture {
            clock, analytics, ..
        } = &fixture();
        analytics.ingest_ok(vec![event(EventType::Pageview, "/", "here", None)]);
        let at = clock.now_ms() - 1000;
        let remote = |seq| TrackedEvent {
            seq: Some(seq),
            timestamp: Some(at),
            ..event(EventType::Click, "/there", "there", Some("fr"))
        };
        analytics.fold_remote(vec![remote(1), remote(2)]);
        // The same committed events told again (a redelivery) are folded once.
        analytics.fold_remote(vec![remote(2)]);
        let live = analytics.live();
        assert_eq!(live.active_users, 2);
        assert_eq!(live.events_last_minute, 3);
        let stored = analytics
            .store()
            .events(
                Range::all(),
                &crate::Filter::default(),
                &crate::RawSelection::default(),
                100,
            )
            .unwrap();
        assert_eq!(stored.len(), 1, "only this renderer's own event is stored");
    }

    #[test]
    fn sessions_end_after_five_quiet_minutes() {
        let Fixture {
            clock, analytics, ..
        } = &fixture();
        analytics.ingest_ok(vec![event(EventType::Pageview, "/", "s1", Some("de"))]);
        assert_eq!(analytics.live().active_users, 1);
        clock.advance_ms(4 * 60_000);
        assert_eq!(analytics.live().active_users, 1);
        clock.advance_ms(60_001 + 1000);
        assert_eq!(analytics.live().active_users, 0);
        assert!(analytics.sessions(&Filter::default()).is_empty());
    }

    #[test]
    fn leaving_ends_a_session_until_the_visitor_returns() {
        let analytics = &fixture().analytics;
        analytics.ingest_ok(vec![event(EventType::Pageview, "/", "s1", None)]);
        analytics.ingest_ok(vec![event(EventType::Leave, "/", "s1", None)]);
        assert_eq!(analytics.live().active_users, 0);
        analytics.ingest_ok(vec![event(EventType::Pageview, "/next", "s1", None)]);
        assert_eq!(analytics.live().active_users, 1);
        // The hidden-tab beacon may overtake the leave beacon, or follow it.
        analytics.ingest_ok(vec![event(EventType::Leave, "/next", "s1", None)]);
        analytics.ingest_ok(vec![event(EventType::Visibility, "/next", "s1", None)]);
        assert_eq!(analytics.live().active_users, 0);
    }

    #[test]
    fn journeys_fold_repeats_and_keep_order() {
        let Fixture {
            clock, analytics, ..
        } = &fixture();
        for page in ["/", "/", "/pricing", "/", "/docs"] {
            analytics.ingest_ok(vec![event(EventType::Pageview, page, "s1", None)]);
            clock.advance_ms(1000);
        }
        let sessions = analytics.sessions(&Filter::default());
        let pages: Vec<&str> = sessions[0].journey.iter().map(String::as_str).collect();
        assert_eq!(pages, ["/", "/pricing", "/", "/docs"]);
        assert_eq!(sessions[0].events, 5);
    }

    #[test]
    fn summary_counts_windows_and_filters() {
        let Fixture {
            clock, analytics, ..
        } = &fixture();
        analytics.ingest_ok(vec![event(EventType::Pageview, "/a", "s1", Some("fr"))]);
        clock.advance_ms(2 * 60_000);
        analytics.ingest_ok(vec![
            event(EventType::Pageview, "/b", "s2", Some("de")),
            event(EventType::Custom, "/b", "s2", Some("de")),
        ]);
        let summary = analytics.live();
        assert_eq!(summary.events_last_minute, 2);
        assert_eq!(summary.events_last_5_minutes, 3);
        assert_eq!(
            summary.top_pages[0],
            Count {
                name: "/b".into(),
                events: 2
            }
        );
        assert_eq!(summary.top_countries[0].name, "DE");
        assert_eq!(
            summary
                .per_second
                .iter()
                .map(|&n| u64::from(n))
                .sum::<u64>(),
            3
        );
        assert_eq!(summary.per_second[299], 2, "the newest second is last");
        assert_eq!(summary.per_ten_seconds.len(), 60);
        assert_eq!(summary.per_ten_seconds[59], 2, "the current 10 s are last");
        assert_eq!(
            summary.per_ten_seconds[59 - 12],
            1,
            "two minutes back is twelve buckets back"
        );
        assert_eq!(summary.per_ten_seconds.iter().sum::<u32>(), 3);
        let german = Filter {
            country: Some("DE".into()),
            ..Filter::default()
        };
        assert_eq!(analytics.summary(&german).unwrap().events_last_5_minutes, 2);
        assert_eq!(analytics.summary(&german).unwrap().active_users, 1);
        let page_a = Filter {
            page: Some("/a".into()),
            ..Filter::default()
        };
        assert_eq!(analytics.sessions(&page_a).len(), 1);
        let pageviews = Filter {
            kind: Some(EventType::Pageview),
            ..Filter::default()
        };
        assert_eq!(
            analytics.summary(&pageviews).unwrap().events_last_5_minutes,
            2
        );
    }

    #[test]
    fn the_event_ring_is_bounded() {
        let fixture = with_store(10, Arc::new(ManualClock::at(1_000_000_000)));
        fixture.analytics.ingest_ok(
            (0..25)
                .map(|_| event(EventType::Custom, "/", "s", None))
                .collect(),
        );
        assert_eq!(fixture.analytics.n_events(), 10);
        let history = fixture
            .analytics
            .summary(&Filter {
                from: Some(0),
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(
            history.totals.map(|totals| totals.events),
            Some(25),
            "the store keeps what the ring drops"
        );
    }

    fn numbered(session: &str, seq: u64, at_ms: i64) -> TrackedEvent {
        TrackedEvent {
            seq: Some(seq),
            timestamp: Some(at_ms),
            ..event(EventType::Click, "/", session, None)
        }
    }

    #[test]
    fn a_resent_numbered_event_is_counted_once_in_memory_and_in_the_store() {
        let fixture = fixture();
        let now = fixture.clock.now_ms();
        let first = fixture
            .analytics
            .ingest(vec![numbered("s", 0, now), numbered("s", 1, now)])
            .unwrap();
        assert_eq!((first.stored, first.duplicates), (2, 0));
        let again = fixture
            .analytics
            .ingest(vec![numbered("s", 1, now), numbered("s", 2, now)])
            .unwrap();
        assert_eq!((again.stored, again.duplicates), (1, 1));
        assert_eq!(fixture.analytics.live().events_last_minute, 3);
        assert_eq!(fixture.analytics.sessions(&Filter::default())[0].events, 3);
    }

    #[test]
    fn the_live_view_is_rebuilt_from_the_store() {
        let dir = TempDir::new("analytics-restore");
        let path = dir.path().join("a.sqlite");
        let clock = Arc::new(ManualClock::at(1_000_000_000));
        let open =
            || -> Arc<dyn Store> { Arc::new(SqliteStore::open(&SqliteConfig::at(&path)).unwrap()) };
        let now = clock.now_ms();
        {
            let analytics = Analytics::new(clock.clone(), open(), 1000, 5 * 60_000);
            analytics.ingest_ok(vec![
                // An hour ago: history, not live.
                numbered("old", 0, now - 3_600_000),
                numbered("a", 0, now - 1000),
                event(EventType::Pageview, "/next", "a", None),
                event(EventType::Pageview, "/", "b", Some("fr")),
            ]);
        }
        let analytics = Analytics::new(clock.clone(), open(), 1000, 5 * 60_000);
        assert_eq!(analytics.restore().unwrap(), 3);
        let live = analytics.live();
        assert_eq!(live.active_users, 2);
        assert_eq!(live.events_last_minute, 3);
        let sessions = analytics.sessions(&Filter::default());
        let a = sessions.iter().find(|s| s.session_id == "a").unwrap();
        let pages: Vec<&str> = a.journey.iter().map(String::as_str).collect();
        assert_eq!(pages, ["/", "/next"]);
        // A resend after the restart is still recognised.
        analytics.ingest_ok(vec![numbered("a", 0, now - 1000)]);
        assert_eq!(analytics.live().events_last_minute, 3);
    }
}
