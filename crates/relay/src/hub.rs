//! Who is connected: page sessions by connection id, and the renderer link's state.
//!
//! The upstream task routes each renderer reply through [`Hub::deliver`]; sessions watch
//! [`Hub::link_state`] to tell their page about every change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use netkit::ErrorCounters;
use protocol::{encode, ConnId, LinkState, ServerMessage};
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
    /// Refused page messages by code.
    pub errors: ErrorCounters,
    /// Replies dropped because a page's queue was full (a page that stopped reading).
    pub replies_dropped: AtomicU64,
    /// Page connections accepted since start.
    pub sessions_total: AtomicU64,
    /// Page messages forwarded to the renderer.
    pub forwarded_total: AtomicU64,
    /// Page messages waiting for the renderer to come back.
    pub backlog_depth: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        let (link, _) = watch::channel(LinkState::Connecting);
        Hub {
            sessions: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            link,
            errors: ErrorCounters::default(),
            replies_dropped: AtomicU64::new(0),
            sessions_total: AtomicU64::new(0),
            forwarded_total: AtomicU64::new(0),
            backlog_depth: AtomicU64::new(0),
        }
    }
}

impl Hub {
    /// Registers a session and returns its connection id.
    pub fn register(&self, tx: mpsc::Sender<Message>) -> ConnId {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        lock(&self.sessions).insert(conn, tx);
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
        conn
    }

    /// Forgets a session.
    pub fn unregister(&self, conn: ConnId) {
        lock(&self.sessions).remove(&conn);
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
        let tx = lock(&self.sessions).get(&conn).cloned();
        if let Some(tx) = tx {
            if tx.try_send(Message::text(encode(msg))).is_err() {
                self.replies_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The current renderer link state.
    pub fn link_state(&self) -> LinkState {
        *self.link.borrow()
    }

    /// A receiver that wakes on every link state change.
    pub fn watch_link(&self) -> watch::Receiver<LinkState> {
        self.link.subscribe()
    }

    /// Sets the link state; sessions are woken only by an actual change.
    pub fn set_link_state(&self, state: LinkState) -> bool {
        self.link.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
