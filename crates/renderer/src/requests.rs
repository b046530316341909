//! Generate requests by the page's number, so that a resent Generate draws no second image.
//!
//! A Generate can reach the renderer twice: the relay replays one that was unanswered when
//! its link dropped, and the page resends its pending one after a reconnect. Each request
//! with a number gets one cell here; the first arrival renders into it, and every later
//! arrival waits for the same answer. Only images are remembered: an error is forgotten at
//! once, so a resend tries again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use protocol::{RecordingId, ServerMessage};
use tokio::sync::OnceCell;

/// A request's identity: the recording and the page's number for the request.
pub(crate) type RequestKey = (RecordingId, u64);

/// One request's answer, filled once by whichever arrival renders it.
pub(crate) type AnswerCell = Arc<OnceCell<ServerMessage>>;

/// The most recent Generate requests, bounded by `--remembered-generates` (oldest forgotten).
#[derive(Debug)]
pub(crate) struct GenerateRequests {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each remembered request's cell, with the generation it was created in.
    cells: HashMap<RequestKey, (u64, AnswerCell)>,
    /// Requests in the order they arrived; an entry whose generation no longer matches was
    /// forgotten (and perhaps asked again) and is skipped when it leaves.
    order: VecDeque<(RequestKey, u64)>,
    /// Source of generations.
    next_generation: u64,
}

impl GenerateRequests {
    /// Remembers up to `capacity` requests; 0 remembers none (every Generate renders).
    pub fn new(capacity: usize) -> Self {
        GenerateRequests {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The cell for `key`: a new one for a new request, the same one for a repeat.
    pub fn cell(&self, key: &RequestKey) -> AnswerCell {
        if self.capacity == 0 {
            return AnswerCell::default();
        }
        let mut inner = lock(&self.inner);
        if let Some((_, cell)) = inner.cells.get(key) {
            return cell.clone();
        }
        let generation = inner.next_generation;
        inner.next_generation += 1;
        let cell = AnswerCell::default();
        inner.cells.insert(key.clone(), (generation, cell.clone()));
        inner.order.push_back((key.clone(), generation));
        while inner.order.len() > self.capacity {
            let Some((old_key, old_generation)) = inner.order.pop_front() else {
                break;
            };
            if inner
                .cells
                .get(&old_key)
                .is_some_and(|(current, _)| *current == old_generation)
            {
                inner.cells.remove(&old_key);
            }
        }
        cell
    }

    /// Forgets `key` if it still maps to `cell`, so the next arrival renders afresh.
    pub fn forget(&self, key: &RequestKey, cell: &AnswerCell) {
        let mut inner = lock(&self.inner);
        if inner
            .cells
            .get(key)
            .is_some_and(|(_, current)| Arc::ptr_eq(current, cell))
        {
            inner.cells.remove(key);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(request: u64) -> RequestKey {
        (RecordingId::try_from("r-1").unwrap(), request)
    }

    #[test]
    fn a_repeat_gets_the_same_cell_and_a_new_request_another() {
        let requests = GenerateRequests::new(4);
        let first = requests.cell(&key(1));
        assert!(Arc::ptr_eq(&first, &requests.cell(&key(1))));
        assert!(!Arc::ptr_eq(&first, &requests.cell(&key(2))));
    }

    #[test]
    fn the_oldest_requests_are_forgotten_past_the_capacity() {
        let requests = GenerateRequests::new(2);
        let first = requests.cell(&key(1));
        requests.cell(&key(2));
        requests.cell(&key(3));
        assert!(!Arc::ptr_eq(&first, &requests.cell(&key(1))));
        assert!(lock(&requests.inner).cells.len() <= 2);
    }

    #[test]
    fn a_forgotten_request_renders_afresh_and_stale_order_entries_do_not_evict_it() {
        let requests = GenerateRequests::new(2);
        let first = requests.cell(&key(1));
        requests.forget(&key(1), &first);
        let second = requests.cell(&key(1));
        assert!(!Arc::ptr_eq(&first, &second));
        // The stale entry for the first cell leaves the order first; the live one stays.
        requests.cell(&key(2));
        assert!(Arc::ptr_eq(&second, &requests.cell(&key(1))));
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let requests = GenerateRequests::new(0);
        assert!(!Arc::ptr_eq(
            &requests.cell(&key(1)),
            &requests.cell(&key(1))
        ));
    }
}
