//! Site analytics: tracked events, sessions and their journeys, held in memory.
//!
//! Events arrive through the relay's `POST /api/events`. Each is stamped with the server's
//! clock (a [`Clock`], so tests can move time by hand), kept in a bounded ring, and folded
//! into its session. A session ends after `--session-timeout-secs` without events.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use protocol::analytics::{Count, EventType, JourneyStep, SessionInfo, Summary, TrackedEvent};

use crate::event_log::EventLog;
use crate::store::lock;

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

/// One stored event: what the queries and heatmaps need, nothing more.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// What happened.
    pub kind: EventType,
    /// The page.
    pub page: Arc<str>,
    /// The session.
    pub session: Arc<str>,
    /// The country, if known.
    pub country: Option<Arc<str>>,
    /// When it happened, ms since the epoch: its own timestamp (clamped, see
    /// [`StoredEvent::received`]) or else when the server received it.
    pub at_ms: i64,
    /// Document position and sizes (0 when not given).
    pub x: f32,
    /// See `x`.
    pub y: f32,
    /// Viewport width.
    pub vw: f32,
    /// Document width.
    pub dw: f32,
    /// Document height.
    pub dh: f32,
    /// Scroll depth, 0 to 1.
    pub depth: f32,
    /// For clicks: the element's short CSS path, and where in it the click fell.
    pub path: Option<Arc<str>>,
    /// Offset inside the element, as a fraction of its width.
    pub ox: f32,
    /// Offset inside the element, as a fraction of its height.
    pub oy: f32,
    /// For visibility events: whether the page became visible.
    pub visible: bool,
}

impl StoredEvent {
    /// A validated event as received at `received_ms` (server clock).
    ///
    /// It is placed at its own `timestamp` when it has one (an import of yesterday's events
    /// lands in yesterday), but never later than [`MAX_CLOCK_SKEW_MS`] past the receive
    /// time: a sender's clock running fast must not push events into the future.
    pub fn received(event: TrackedEvent, received_ms: i64) -> Self {
        let at_ms = event
            .timestamp
            .map_or(received_ms, |at| at.min(received_ms + MAX_CLOCK_SKEW_MS));
        let meta = &event.metadata;
        StoredEvent {
            kind: event.kind,
            page: Arc::from(event.page.as_str()),
            session: Arc::from(event.session_id.as_str()),
            country: event
                .country
                .as_deref()
                .map(|code| Arc::from(code.to_ascii_uppercase())),
            at_ms,
            x: meta.x.unwrap_or(0.0) as f32,
            y: meta.y.unwrap_or(0.0) as f32,
            vw: meta.vw.unwrap_or(0.0) as f32,
            dw: meta.dw.unwrap_or(0.0) as f32,
            dh: meta.dh.unwrap_or(0.0) as f32,
            depth: meta.depth.unwrap_or(0.0) as f32,
            path: meta.path.as_deref().map(Arc::from),
            ox: meta.ox.unwrap_or(0.5) as f32,
            oy: meta.oy.unwrap_or(0.5) as f32,
            visible: meta.visible == Some(true),
        }
    }
}

/// Filters of the analytics queries; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this page.
    pub page: Option<String>,
    /// Only this event type.
    pub kind: Option<EventType>,
    /// Only events received at or after this time (ms since the epoch).
    pub from: Option<i64>,
    /// Only events received at or before this time.
    pub to: Option<i64>,
    /// Only this country.
    pub country: Option<String>,
}

impl Filter {
    fn matches(&self, event: &StoredEvent) -> bool {
        self.page.as_deref().is_none_or(|page| &*event.page == page)
            && self.kind.is_none_or(|kind| event.kind == kind)
            && self.from.is_none_or(|from| event.at_ms >= from)
            && self.to.is_none_or(|to| event.at_ms <= to)
            && self
                .country
                .as_deref()
                .is_none_or(|country| event.country.as_deref() == Some(country))
    }
}

#[derive(Debug)]
struct Session {
    /// The visitor left (a `leave` event) and has not come back since.
    left: bool,
    country: Option<Arc<str>>,
    first_seen: i64,
    last_seen: i64,
    events: u64,
    journey: Vec<JourneyStep>,
}

#[derive(Debug, Default)]
struct State {
    events: VecDeque<StoredEvent>,
    sessions: HashMap<Arc<str>, Session>,
    pages: HashMap<String, Arc<str>>,
}

/// All analytics state, behind one lock (ingest takes microseconds; queries a few ms).
#[derive(Debug)]
pub struct Analytics {
    clock: Arc<dyn Clock>,
    /// Where events are made durable; `None` keeps them in memory only.
    log: Option<EventLog>,
    max_events: usize,
    session_timeout_ms: i64,
    state: Mutex<State>,
}

impl Analytics {
    /// An empty store keeping at most `max_events`, in memory only.
    pub fn new(clock: Arc<dyn Clock>, max_events: usize, session_timeout_ms: i64) -> Self {
        Self::with_log(clock, max_events, session_timeout_ms, None)
    }

    /// An empty store that writes through `log`.
    pub fn with_log(
        clock: Arc<dyn Clock>,
        max_events: usize,
        session_timeout_ms: i64,
        log: Option<EventLog>,
    ) -> Self {
        Analytics {
            clock,
            log,
            max_events: max_events.max(1),
            session_timeout_ms,
            state: Mutex::new(State::default()),
        }
    }

    /// Stores validated events, stamped with the server's clock: first in the event log
    /// (when there is one), then in memory.
    ///
    /// # Errors
    /// The event log's IO error; nothing is counted then.
    pub fn ingest(&self, events: Vec<TrackedEvent>) -> std::io::Result<()> {
        let now = self.clock.now_ms();
        let stored: Vec<StoredEvent> = events
            .into_iter()
            .map(|event| StoredEvent::received(event, now))
            .collect();
        if let Some(log) = &self.log {
            log.append(&stored)?;
        }
        let mut state = lock(&self.state);
        // Sessions that timed out are forgotten, which also bounds the map.
        let timeout = self.session_timeout_ms;
        if state.sessions.len() > 10_000 {
            state
                .sessions
                .retain(|_, session| now - session.last_seen <= timeout);
        }
        for event in stored {
            self.apply(&mut state, event);
        }
        Ok(())
    }

    /// Rebuilds events and sessions from the event log at start, oldest first.
    pub fn restore(&self, events: Vec<StoredEvent>) {
        let mut state = lock(&self.state);
        for event in events {
            self.apply(&mut state, event);
        }
    }

    /// Folds one event into its session and the ring, as of the event's own receive time.
    fn apply(&self, state: &mut State, mut event: StoredEvent) {
        let now = event.at_ms;
        let timeout = self.session_timeout_ms;
        event.page = intern(&mut state.pages, &event.page);
        if let Some((key, _)) = state.sessions.get_key_value(&*event.session) {
            event.session = key.clone();
        }
        let session = state
            .sessions
            .entry(event.session.clone())
            .or_insert_with(|| Session {
                left: false,
                country: event.country.clone(),
                first_seen: now,
                last_seen: now,
                events: 0,
                journey: Vec::new(),
            });
        if now - session.last_seen > timeout {
            // The same id after a long pause is a new visit.
            *session = Session {
                left: false,
                country: event.country.clone(),
                first_seen: now,
                last_seen: now,
                events: 0,
                journey: Vec::new(),
            };
        }
        session.last_seen = now;
        session.events += 1;
        // Only a sign of presence brings a visitor back: a tab being hidden (its beacon
        // may arrive after the leave's) or a custom event does not.
        match event.kind {
            EventType::Leave => session.left = true,
            EventType::Visibility if !event.visible => {}
            EventType::Custom => {}
            _ => session.left = false,
        }
        if session.country.is_none() {
            session.country = event.country.clone();
        }
        let new_page = session
            .journey
            .last()
            .is_none_or(|step| *step.page != *event.page);
        if new_page && session.journey.len() < MAX_JOURNEY {
            session.journey.push(JourneyStep {
                page: event.page.to_string(),
                at: now,
            });
        }
        state.events.push_back(event);
        if state.events.len() > self.max_events {
            state.events.pop_front();
        }
    }

    /// Active users, recent rates, top pages and countries.
    pub fn summary(&self, filter: &Filter) -> Summary {
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
        let (mut last_minute, mut last_5) = (0u64, 0u64);
        let mut pages: HashMap<&str, u64> = HashMap::new();
        let mut countries: HashMap<&str, u64> = HashMap::new();
        for event in state.events.iter().rev() {
            let age = now - event.at_ms;
            if filter.matches(event) {
                if age < 60_000 {
                    last_minute += 1;
                }
                if age < 300_000 {
                    last_5 += 1;
                    if let Some(slot) = per_second
                        .len()
                        .checked_sub(1 + (age.max(0) / 1000) as usize)
                    {
                        per_second[slot] += 1;
                    }
                }
                let in_window = filter.from.is_some() || filter.to.is_some() || age < 300_000;
                if in_window {
                    *pages.entry(&event.page).or_default() += 1;
                    if let Some(country) = &event.country {
                        *countries.entry(country).or_default() += 1;
                    }
                }
            }
        }
        Summary {
            active_users,
            events_last_minute: last_minute,
            events_last_5_minutes: last_5,
            top_pages: top(pages),
            top_countries: top(countries),
            per_second,
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
                country: session.country.as_deref().map(str::to_owned),
                first_seen: session.first_seen,
                last_seen: session.last_seen,
                events: session.events,
                journey: session.journey.clone(),
            })
            .collect();
        sessions.sort_by_key(|session| std::cmp::Reverse(session.last_seen));
        sessions
    }

    /// The events matching `filter`, oldest first (for heatmaps).
    pub fn events(&self, filter: &Filter) -> Vec<StoredEvent> {
        lock(&self.state)
            .events
            .iter()
            .filter(|event| filter.matches(event))
            .cloned()
            .collect()
    }

    /// The analytics clock's "now", ms since the epoch (ranges such as `range=24h` end here).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Events held.
    pub fn n_events(&self) -> usize {
        lock(&self.state).events.len()
    }
}

fn intern(pages: &mut HashMap<String, Arc<str>>, page: &Arc<str>) -> Arc<str> {
    if let Some(interned) = pages.get(&**page) {
        return interned.clone();
    }
    // Bounded: past this many distinct pages new ones are not shared, only stored.
    if pages.len() < 100_000 {
        pages.insert(page.to_string(), page.clone());
    }
    page.clone()
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
    counts.truncate(10);
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::analytics::EventMetadata;

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
    }

    fn analytics() -> (Arc<ManualClock>, Analytics) {
        let clock = Arc::new(ManualClock::at(1_000_000_000));
        let analytics = Analytics::new(clock.clone(), 1000, 5 * 60_000);
        (clock, analytics)
    }

    #[test]
    fn sessions_end_after_five_quiet_minutes() {
        let (clock, analytics) = analytics();
        analytics.ingest_ok(vec![event(EventType::Pageview, "/", "s1", Some("de"))]);
        assert_eq!(analytics.summary(&Filter::default()).active_users, 1);
        clock.advance_ms(4 * 60_000);
        assert_eq!(analytics.summary(&Filter::default()).active_users, 1);
        clock.advance_ms(60_001 + 1000);
        assert_eq!(analytics.summary(&Filter::default()).active_users, 0);
        assert!(analytics.sessions(&Filter::default()).is_empty());
    }

    #[test]
    fn leaving_ends_a_session_until_the_visitor_returns() {
        let (_, analytics) = analytics();
        analytics.ingest_ok(vec![event(EventType::Pageview, "/", "s1", None)]);
        analytics.ingest_ok(vec![event(EventType::Leave, "/", "s1", None)]);
        assert_eq!(analytics.summary(&Filter::default()).active_users, 0);
        analytics.ingest_ok(vec![event(EventType::Pageview, "/next", "s1", None)]);
        assert_eq!(analytics.summary(&Filter::default()).active_users, 1);
        // The hidden-tab beacon may overtake the leave beacon, or follow it.
        analytics.ingest_ok(vec![event(EventType::Leave, "/next", "s1", None)]);
        analytics.ingest_ok(vec![event(EventType::Visibility, "/next", "s1", None)]);
        assert_eq!(analytics.summary(&Filter::default()).active_users, 0);
    }

    #[test]
    fn journeys_fold_repeats_and_keep_order() {
        let (clock, analytics) = analytics();
        for page in ["/", "/", "/pricing", "/", "/docs"] {
            analytics.ingest_ok(vec![event(EventType::Pageview, page, "s1", None)]);
            clock.advance_ms(1000);
        }
        let sessions = analytics.sessions(&Filter::default());
        let pages: Vec<&str> = sessions[0]
            .journey
            .iter()
            .map(|step| step.page.as_str())
            .collect();
        assert_eq!(pages, ["/", "/pricing", "/", "/docs"]);
        assert_eq!(sessions[0].events, 5);
    }

    #[test]
    fn summary_counts_windows_and_filters() {
        let (clock, analytics) = analytics();
        analytics.ingest_ok(vec![event(EventType::Pageview, "/a", "s1", Some("fr"))]);
        clock.advance_ms(2 * 60_000);
        analytics.ingest_ok(vec![
            event(EventType::Pageview, "/b", "s2", Some("de")),
            event(EventType::Custom, "/b", "s2", Some("de")),
        ]);
        let summary = analytics.summary(&Filter::default());
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
        let german = Filter {
            country: Some("DE".into()),
            ..Filter::default()
        };
        assert_eq!(analytics.summary(&german).events_last_5_minutes, 2);
        assert_eq!(analytics.summary(&german).active_users, 1);
        let page_a = Filter {
            page: Some("/a".into()),
            ..Filter::default()
        };
        assert_eq!(analytics.sessions(&page_a).len(), 1);
        let pageviews = Filter {
            kind: Some(EventType::Pageview),
            ..Filter::default()
        };
        assert_eq!(analytics.summary(&pageviews).events_last_5_minutes, 2);
    }

    #[test]
    fn the_event_ring_is_bounded() {
        let clock = Arc::new(ManualClock::at(0));
        let analytics = Analytics::new(clock, 10, 60_000);
        analytics.ingest_ok(
            (0..25)
                .map(|_| event(EventType::Custom, "/", "s", None))
                .collect(),
        );
        assert_eq!(analytics.n_events(), 10);
    }
}
