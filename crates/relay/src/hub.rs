//! Who is connected: page sessions by connection id, and the renderer link's state.
//!
//! The upstream task routes each renderer reply through [`Hub::deliver`]; sessions watch
//! [`Hub::link_state`] to tell their page about every change.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use protocol::{
    encode, Activity, AnalyticsUpdate, ConnId, Cursor, LinkLimits, LinkState, Member, RecordingId,
    ServerMessage, VisitorUpdate,
};

use crate::alerts::SpikeWatch;
use crate::metrics::RelayMetrics;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// Shared registry of sessions and the renderer link.
#[derive(Debug)]
pub(crate) struct Hub {
    /// Outgoing queue of each page session, by connection id.
    sessions: Mutex<HashMap<ConnId, mpsc::Sender<Message>>>,
    /// Source of connection ids; never reused during the relay's lifetime.
    next_conn: AtomicU64,
    /// The renderer link's state; every session holds a receiver.
    link: watch::Sender<LinkState>,
    /// Pages and dashboards connected, published at most once a second by the feed task.
    presence: watch::Sender<Presence>,
    /// Connections that asked for the live analytics feed.
    watchers: Mutex<HashSet<ConnId>>,
    /// Whether anyone watches, for the upstream task to tell the renderer (which pushes
    /// analytics only while someone does).
    watched: watch::Sender<bool>,
    /// The renderer's latest analytics update, so a dashboard that starts watching sees
    /// numbers at once rather than at the next push. Cleared when the link drops.
    latest_analytics: Mutex<Option<AnalyticsUpdate>>,
    /// Whether the live series shows a spike now, so one spike makes one `alert`.
    spikes: Mutex<SpikeWatch>,
    /// The latest cursor of each page that shares one, and whether any moved since the
    /// last broadcast.
    cursors: Mutex<CursorTable>,
    /// The bounds the renderer announced in its last `welcome` (`None` before the first
    /// link, or from a renderer that announces none).
    renderer_limits: Mutex<Option<LinkLimits>>,
    /// Pages that said `hello`, by connection id (ids grow, so the last entries are the
    /// most recent members), with their names. One short name per connection.
    members: Mutex<BTreeMap<ConnId, String>>,
    /// `--members-shown`: names listed, and the room size up to which joins, leaves and
    /// renames are announced one by one (set by `join`, which every member passes).
    members_shown: std::sync::atomic::AtomicUsize,
    /// Events stored since the last `session_activity`, bounded by what one message may list.
    activity: Mutex<ActivityQueue>,
    /// What the other relays' pages add (cluster mode, `live_bus`); empty otherwise, so a
    /// relay without `--bus` behaves exactly as before.
    remote: Mutex<RemoteView>,
    /// Whether accepted events are also queued for the other relays (set by `live_bus`).
    share_activity: std::sync::atomic::AtomicBool,
    /// Counters and gauges for `/metrics` and `/healthz`.
    pub metrics: RelayMetrics,
    /// When each forwarded batch left, by page and batch, to time its acknowledgement.
    /// Bounded by [`MAX_PENDING_ACKS`]; cleared if a page never gets its acks.
    pending_acks: Mutex<HashMap<(ConnId, RecordingId, u64), Instant>>,
}

/// How many pages are connected, and how many of them are dashboards (sent `watch`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Presence {
    /// Every page socket: recorders and dashboards.
    pub online: usize,
    /// Connections watching the analytics feed.
    pub dashboards: usize,
}

/// What this relay's own pages add up to (see [`Hub::local_live`]).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalLive {
    /// Page sockets here.
    pub online: usize,
    /// Dashboards here.
    pub dashboards: usize,
    /// Members here.
    pub n_members: usize,
    /// The most recent of them, newest first.
    pub recent: Vec<Member>,
}

/// Stored events waiting for the next `session_activity`: the newest `cap`, and how many
/// older ones were left out.
#[derive(Debug, Default)]
struct ActivityQueue {
    pending: VecDeque<Activity>,
    dropped: u64,
    /// This relay's own accepted events waiting for `live_bus` to share them (only while
    /// sharing is on), bounded like `pending`.
    outgoing: VecDeque<Activity>,
    outgoing_dropped: u64,
}

/// The other relays' pages as this relay shows them, merged by `live_bus`: counts and
/// members, with ids already made unique on this relay (their cursors are kept with the
/// local ones, in `CursorTable::remote`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RemoteView {
    /// Page sockets on the other relays.
    pub online: usize,
    /// Dashboards on the other relays.
    pub dashboards: usize,
    /// Members on the other relays (all of them, not only those listed).
    pub n_members: usize,
    /// The other relays' most recent members, as far as they are kept here.
    pub members: Vec<Member>,
}

/// A cursor that has not moved for this long disappears from the others' pages.
const CURSOR_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Most pages sharing cursors before live cursors switch off.
const MAX_CURSOR_PAGES: usize = 50;

/// Latest cursor per page.
#[derive(Debug, Default)]
struct CursorTable {
    latest: HashMap<ConnId, (f32, f32, Instant)>,
    changed: bool,
    /// The other relays' cursors (cluster mode), each relay's replaced as it reports.
    remote: Vec<Cursor>,
}

/// Most forwarded batches timed at once (about 8 MB of keys at worst).
const MAX_PENDING_ACKS: usize = 100_000;

impl Default for Hub {
    fn default() -> Self {
        let (link, _) = watch::channel(LinkState::Connecting);
        let (presence, _) = watch::channel(Presence::default());
        let (watched, _) = watch::channel(false);
        Hub {
            sessions: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            link,
            presence,
            watchers: Mutex::new(HashSet::new()),
            watched,
            latest_analytics: Mutex::new(None),
            spikes: Mutex::default(),
            cursors: Mutex::new(CursorTable::default()),
            renderer_limits: Mutex::new(None),
            activity: Mutex::new(ActivityQueue::default()),
            remote: Mutex::new(RemoteView::default()),
            share_activity: std::sync::atomic::AtomicBool::new(false),
            members: Mutex::new(BTreeMap::new()),
            members_shown: std::sync::atomic::AtomicUsize::new(0),
            metrics: RelayMetrics::default(),
            pending_acks: Mutex::new(HashMap::new()),
        }
    }
}

impl Hub {
    /// Registers a session and returns its connection id.
    pub fn register(&self, tx: mpsc::Sender<Message>) -> ConnId {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        lock(&self.sessions).insert(conn, tx);
        self.metrics.sessions_total.inc();
        self.metrics.sessions_open.inc();
        conn
    }

    /// Forgets a session.
    pub fn unregister(&self, conn: ConnId) {
        if lock(&self.sessions).remove(&conn).is_some() {
            self.metrics.sessions_open.dec();
        }
        let left_dashboards = {
            let mut watchers = lock(&self.watchers);
            let was_dashboard = watchers.remove(&conn);
            self.watched.send_if_modified(|watched| {
                std::mem::replace(watched, !watchers.is_empty()) != *watched
            });
            was_dashboard.then(|| watchers.iter().copied().collect::<Vec<_>>())
        };
        if let Some(dashboards) = left_dashboards {
            let msg = ServerMessage::UserDisconnected {
                dashboards: dashboards.len().saturating_add(self.remote_dashboards()),
            };
            for dashboard in dashboards {
                self.deliver(dashboard, &msg);
            }
        }
        {
            let mut cursors = lock(&self.cursors);
            if cursors.latest.remove(&conn).is_some() {
                cursors.changed = true;
            }
        }
        let remote_members = lock(&self.remote).n_members;
        let left = {
            let mut members = lock(&self.members);
            let shown = self.members_shown.load(Ordering::Relaxed);
            members
                .remove(&conn)
                .filter(|_| members.len().saturating_add(remote_members) < shown)
                .map(|name| {
                    let others: Vec<ConnId> = members.keys().copied().collect();
                    (name, others)
                })
        };
        if let Some((name, others)) = left {
            let msg = ServerMessage::UserLeave {
                member: Member { id: conn, name },
                count: others.len().saturating_add(remote_members),
            };
            for other in others {
                self.deliver(other, &msg);
            }
        }
    }

    /// Adds a page to the members list under a generated name (once; a second `hello`
    /// changes nothing), tells it the list (the `shown` most recent names), and tells the
    /// others it joined.
    ///
    /// Joins, leaves and renames are announced one by one only while the room holds at
    /// most `shown` members: each costs a message to every member, so a large room's churn
    /// would cost n² messages; past it, a page learns the count from `presence`.
    pub fn join(&self, conn: ConnId, shown: usize) {
        self.members_shown.store(shown, Ordering::Relaxed);
        let remote = lock(&self.remote).clone();
        let (me, recent, others) = {
            let mut members = lock(&self.members);
            if members.contains_key(&conn) {
                return;
            }
            let name = generated_name(conn);
            members.insert(conn, name.clone());
            // This relay's members first (its newest first), then the other relays'.
            let recent: Vec<Member> = members
                .iter()
                .rev()
                .map(|(&id, name)| Member {
                    id,
                    name: name.clone(),
                })
                .chain(remote.members.iter().cloned())
                .take(shown)
                .collect();
            let others: Vec<ConnId> = members.keys().copied().collect();
            (Member { id: conn, name }, recent, others)
        };
        let count = others.len().saturating_add(remote.n_members);
        self.deliver(
            conn,
            &ServerMessage::Members {
                you: me.clone(),
                count,
                recent,
            },
        );
        if count > shown {
            return;
        }
        let msg = ServerMessage::UserJoin { member: me, count };
        for other in others.into_iter().filter(|other| *other != conn) {
            self.deliver(other, &msg);
        }
    }

    /// Renames a member and tells every member (itself included) with a `user_join` of the
    /// known id. `false` if the page has not joined (sent no `hello`).
    pub fn rename(&self, conn: ConnId, name: &str) -> bool {
        let remote_members = lock(&self.remote).n_members;
        let everyone = {
            let mut members = lock(&self.members);
            match members.get_mut(&conn) {
                Some(current) => *current = name.to_owned(),
                None => return false,
            }
            if members.len().saturating_add(remote_members)
                > self.members_shown.load(Ordering::Relaxed)
            {
                return true;
            }
            members.keys().copied().collect::<Vec<_>>()
        };
        let msg = ServerMessage::UserJoin {
            member: Member {
                id: conn,
                name: name.to_owned(),
            },
            count: everyone.len().saturating_add(remote_members),
        };
        for member in everyone {
            self.deliver(member, &msg);
        }
        true
    }

    /// Notes where a page's pointer is.
    pub fn move_cursor(&self, conn: ConnId, x: f32, y: f32) {
        let mut cursors = lock(&self.cursors);
        cursors.latest.insert(conn, (x, y, Instant::now()));
        cursors.changed = true;
    }

    /// If any cursor moved since the last call, sends every sharing page the others'
    /// cursors (never its own). Cursors idle for [`CURSOR_IDLE`] are dropped; with more
    /// than [`MAX_CURSOR_PAGES`] pages sharing, nothing is sent (the cost grows as n²).
    pub fn broadcast_cursors(&self) {
        let (snapshot, remote): (Vec<Cursor>, Vec<Cursor>) = {
            let mut cursors = lock(&self.cursors);
            let before = cursors.latest.len();
            cursors
                .latest
                .retain(|_, (_, _, at)| at.elapsed() < CURSOR_IDLE);
            if !cursors.changed && cursors.latest.len() == before {
                return;
            }
            cursors.changed = false;
            let local = cursors
                .latest
                .iter()
                .map(|(&id, &(x, y, _))| Cursor { id, x, y })
                .collect();
            (local, cursors.remote.clone())
        };
        if snapshot.len() + remote.len() > MAX_CURSOR_PAGES {
            return;
        }
        for recipient in &snapshot {
            let others: Vec<Cursor> = snapshot
                .iter()
                .filter(|cursor| cursor.id != recipient.id)
                .chain(&remote)
                .copied()
                .collect();
            self.deliver(recipient.id, &ServerMessage::Cursors { cursors: others });
        }
    }

    /// Adds a connection to the live analytics feed, gives it the latest numbers, and, the
    /// first time it watches, tells every dashboard (itself included) how many there are now.
    pub fn watch_analytics(&self, conn: ConnId) {
        let new_dashboards = {
            let mut watchers = lock(&self.watchers);
            watchers
                .insert(conn)
                .then(|| watchers.iter().copied().collect::<Vec<_>>())
        };
        self.watched
            .send_if_modified(|watched| !std::mem::replace(watched, true));
        if let Some(dashboards) = new_dashboards {
            let msg = ServerMessage::UserConnected {
                dashboards: dashboards.len().saturating_add(self.remote_dashboards()),
            };
            for dashboard in dashboards {
                self.deliver(dashboard, &msg);
            }
        }
        let latest = lock(&self.latest_analytics).clone();
        if let Some(update) = latest {
            let dashboards = lock(&self.watchers)
                .len()
                .saturating_add(self.remote_dashboards());
            let visitors = VisitorUpdate::from_summary(&update.summary, dashboards);
            self.deliver(conn, &ServerMessage::Analytics(update));
            self.deliver(conn, &ServerMessage::VisitorUpdate(visitors));
        }
    }

    /// Whether any dashboard watches now, here or (cluster mode) on another relay (cheap;
    /// read on every stored event request).
    pub fn is_watched(&self) -> bool {
        *self.watched.borrow() || self.remote_dashboards() > 0
    }

    /// Queues events just stored for the next `session_activity`, keeping the newest
    /// `cap` and counting the rest, and the `skipped` ones never queued, as dropped.
    pub fn note_activity(
        &self,
        events: impl IntoIterator<Item = Activity>,
        skipped: u64,
        cap: usize,
    ) {
        let share = self.share_activity.load(Ordering::Relaxed);
        let mut activity = lock(&self.activity);
        activity.dropped += skipped;
        if share {
            activity.outgoing_dropped += skipped;
        }
        for event in events {
            if share {
                activity.outgoing.push_back(event.clone());
                if activity.outgoing.len() > cap {
                    activity.outgoing.pop_front();
                    activity.outgoing_dropped += 1;
                }
            }
            activity.pending.push_back(event);
            if activity.pending.len() > cap {
                activity.pending.pop_front();
                activity.dropped += 1;
            }
        }
    }

    /// Sends the queued events to every dashboard as one `session_activity`, if any.
    pub fn flush_activity(&self) {
        let (events, dropped) = {
            let mut activity = lock(&self.activity);
            if activity.pending.is_empty() {
                return;
            }
            let dropped = std::mem::take(&mut activity.dropped);
            (activity.pending.drain(..).collect::<Vec<_>>(), dropped)
        };
        let msg = ServerMessage::SessionActivity { events, dropped };
        let watchers: Vec<ConnId> = lock(&self.watchers).iter().copied().collect();
        for conn in watchers {
            self.deliver(conn, &msg);
        }
    }

    /// Whether anyone watches the analytics feed, as it changes.
    pub fn watch_watched(&self) -> watch::Receiver<bool> {
        self.watched.subscribe()
    }

    /// Sends the renderer's analytics update to every watcher of the feed, and an `alert`
    /// when a spike (over `spike_factor`) begins with it.
    pub fn deliver_analytics(&self, update: AnalyticsUpdate, spike_factor: f64) {
        *lock(&self.latest_analytics) = Some(update.clone());
        let watchers: Vec<ConnId> = lock(&self.watchers).iter().copied().collect();
        let alert = lock(&self.spikes).observe(&update.summary.per_second, spike_factor);
        if let Some(alert) = alert {
            self.metrics.alerts.inc();
            let msg = ServerMessage::Alert(alert);
            for &conn in &watchers {
                self.deliver(conn, &msg);
            }
        }
        let visitors = ServerMessage::VisitorUpdate(VisitorUpdate::from_summary(
            &update.summary,
            watchers.len().saturating_add(self.remote_dashboards()),
        ));
        let msg = ServerMessage::Analytics(update);
        for conn in watchers {
            self.deliver(conn, &msg);
            self.deliver(conn, &visitors);
        }
    }

    /// Forgets the latest analytics, whose renderer link is gone.
    pub fn forget_analytics(&self) {
        *lock(&self.latest_analytics) = None;
    }

    /// Publishes the number of pages and dashboards connected, waking sessions only on a
    /// change.
    pub fn publish_presence(&self) {
        let remote = {
            let remote = lock(&self.remote);
            (remote.online, remote.dashboards)
        };
        let online = Presence {
            online: self.n_sessions().saturating_add(remote.0),
            dashboards: lock(&self.watchers).len().saturating_add(remote.1),
        };
        self.presence.send_if_modified(|current| {
            let changed = *current != online;
            *current = online;
            changed
        });
    }

    /// A receiver that wakes when the number of pages or dashboards changes.
    pub fn watch_presence(&self) -> watch::Receiver<Presence> {
        self.presence.subscribe()
    }

    /// The counts last published, for a page that has just said hello: it would otherwise
    /// show none until they next change, which may be never in a quiet room (one page
    /// leaving as it arrives, or the count published just before it subscribed).
    pub fn presence_now(&self) -> Presence {
        *self.presence.borrow()
    }

    /// Dashboards on the other relays (cluster mode; 0 otherwise).
    fn remote_dashboards(&self) -> usize {
        lock(&self.remote).dashboards
    }

    /// Notes that a batch left for the renderer, to time its acknowledgement.
    pub fn batch_forwarded(&self, conn: ConnId, recording: &RecordingId, seq: u64) {
        let mut pending = lock(&self.pending_acks);
        if pending.len() >= MAX_PENDING_ACKS {
            pending.clear();
        }
        pending.insert((conn, recording.clone(), seq), Instant::now());
    }

    /// Sessions open now.
    pub fn n_sessions(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Queues a message for one page without waiting.
    ///
    /// Never blocks: the upstream task serves every page, so one page that stops reading
    /// must not stall the others. A full queue drops the reply and counts it; the page
    /// resends unacknowledged batches, so a dropped ack costs a duplicate, not data.
    pub fn deliver(&self, conn: ConnId, msg: &ServerMessage) {
        if let ServerMessage::Ack { recording, seq, .. } = msg {
            let sent = lock(&self.pending_acks).remove(&(conn, recording.clone(), *seq));
            if let Some(sent) = sent {
                self.metrics
                    .ack_latency
                    .observe(sent.elapsed().as_secs_f64());
            }
        }
        let tx = lock(&self.sessions).get(&conn).cloned();
        if let Some(tx) = tx {
            if tx.try_send(Message::text(encode(msg))).is_err() {
                self.metrics.replies_dropped.inc();
            } else {
                self.metrics.replies.inc();
            }
        }
    }

    /// The current renderer link state.
    pub fn link_state(&self) -> LinkState {
        *self.link.borrow()
    }

    /// Remembers the bounds the renderer announced on the current link.
    pub fn set_renderer_limits(&self, limits: Option<LinkLimits>) {
        *lock(&self.renderer_limits) = limits;
    }

    /// The bounds the renderer announced on the current link, if any.
    pub fn renderer_limits(&self) -> Option<LinkLimits> {
        *lock(&self.renderer_limits)
    }

    /// A receiver that wakes on every link state change.
    pub fn watch_link(&self) -> watch::Receiver<LinkState> {
        self.link.subscribe()
    }

    /// Sets the link state; sessions are woken only by an actual change.
    pub fn set_link_state(&self, state: LinkState) -> bool {
        self.metrics.set_link_state(state);
        self.link.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        })
    }
}

/// The hooks `live_bus` uses in cluster builds: this relay's own pages for the other
/// relays, and the other relays' pages for this one.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
impl Hub {
    /// What this relay's own pages add up to, for `live_bus` to tell the other relays:
    /// sockets, dashboards, members and the `shown` most recent of them.
    pub fn local_live(&self, shown: usize) -> LocalLive {
        let (n_members, recent) = {
            let members = lock(&self.members);
            let recent = members
                .iter()
                .rev()
                .take(shown)
                .map(|(&id, name)| Member {
                    id,
                    name: name.clone(),
                })
                .collect();
            (members.len(), recent)
        };
        LocalLive {
            online: self.n_sessions(),
            dashboards: lock(&self.watchers).len(),
            n_members,
            recent,
        }
    }

    /// This relay's own pages' cursors that are not idle, for `live_bus`.
    pub fn local_cursors(&self) -> Vec<Cursor> {
        let cursors = lock(&self.cursors);
        let mut local: Vec<Cursor> = cursors
            .latest
            .iter()
            .filter(|(_, (_, _, at))| at.elapsed() < CURSOR_IDLE)
            .map(|(&id, &(x, y, _))| Cursor { id, x, y })
            .collect();
        local.sort_by_key(|cursor| cursor.id);
        local
    }

    /// A fresh id for a page on another relay, from the same counter as this relay's own
    /// connections, so no two pages a page sees share an id.
    pub fn next_alias(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// From now on, accepted events are also queued for the other relays
    /// ([`Hub::take_shared_activity`]).
    pub fn share_activity(&self) {
        self.share_activity.store(true, Ordering::Relaxed);
    }

    /// This relay's accepted events queued since the last call, and how many were left
    /// out; `None` if there are none.
    pub fn take_shared_activity(&self) -> Option<(Vec<Activity>, u64)> {
        let mut activity = lock(&self.activity);
        if activity.outgoing.is_empty() && activity.outgoing_dropped == 0 {
            return None;
        }
        let dropped = std::mem::take(&mut activity.outgoing_dropped);
        Some((activity.outgoing.drain(..).collect(), dropped))
    }

    /// Queues another relay's accepted events for this relay's dashboards (if any watch),
    /// within the same `cap` as its own; never shared again.
    pub fn note_remote_activity(&self, events: Vec<Activity>, dropped: u64, cap: usize) {
        if !*self.watched.borrow() {
            return;
        }
        let mut activity = lock(&self.activity);
        activity.dropped += dropped;
        for event in events {
            activity.pending.push_back(event);
            if activity.pending.len() > cap {
                activity.pending.pop_front();
                activity.dropped += 1;
            }
        }
    }

    /// Replaces the other relays' cursors; pages sharing one hear of it at the next tick.
    pub fn set_remote_cursors(&self, remote: Vec<Cursor>) {
        let mut cursors = lock(&self.cursors);
        if cursors.remote != remote {
            cursors.remote = remote;
            cursors.changed = true;
        }
    }

    /// Replaces what the other relays' pages add, and tells this relay's pages what
    /// changed as if it happened here: members joining, renamed or leaving (while the
    /// whole room is within `--members-shown`), dashboards arriving or leaving, and the
    /// presence counts.
    pub fn set_remote(&self, view: RemoteView) {
        let old = {
            let mut remote = lock(&self.remote);
            if *remote == view {
                return;
            }
            std::mem::replace(&mut *remote, view.clone())
        };
        let local_members: Vec<ConnId> = lock(&self.members).keys().copied().collect();
        let room = local_members.len().saturating_add(view.n_members);
        if room <= self.members_shown.load(Ordering::Relaxed) {
            let joined = view
                .members
                .iter()
                .filter(|member| !old.members.contains(member))
                .map(|member| ServerMessage::UserJoin {
                    member: member.clone(),
                    count: room,
                });
            let left = old
                .members
                .iter()
                .filter(|member| view.members.iter().all(|now| now.id != member.id))
                .map(|member| ServerMessage::UserLeave {
                    member: member.clone(),
                    count: room,
                });
            for msg in joined.chain(left).collect::<Vec<_>>() {
                for &member in &local_members {
                    self.deliver(member, &msg);
                }
            }
        }
        if view.dashboards != old.dashboards {
            let watchers: Vec<ConnId> = lock(&self.watchers).iter().copied().collect();
            let dashboards = watchers.len().saturating_add(view.dashboards);
            let msg = if view.dashboards > old.dashboards {
                ServerMessage::UserConnected { dashboards }
            } else {
                ServerMessage::UserDisconnected { dashboards }
            };
            for conn in watchers {
                self.deliver(conn, &msg);
            }
        }
        self.publish_presence();
    }
}

/// `User-417`: a three-digit name from the connection id, scattered so neighbours differ.
fn generated_name(conn: ConnId) -> String {
    format!(
        "User-{}",
        100 + conn.wrapping_mul(7919).wrapping_add(311) % 900
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
