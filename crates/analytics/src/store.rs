//! The storage boundary: small and semantic, so each engine does its own best thing
//! behind it (SQLite and PostgreSQL share most SQL; a columnar engine would use its own
//! rollups).

use crate::error::StoreError;
use crate::event::Event;
use crate::query::{Filter, HeatmapCells, HeatmapQuery, Range, RawSelection, SessionRow, Totals};

/// What an ingest did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Events newly stored.
    pub stored: u64,
    /// Events already stored under the same `(session, seq)` and so not counted again.
    pub duplicates: u64,
}

/// A place where accepted events are kept for the retention period.
///
/// Every engine passes [`crate::conformance`] unchanged. Calls block: async callers run
/// them on a blocking thread.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a batch whole, with its aggregates, or nothing of it.
    ///
    /// Returns only once the batch is durable (committed); an event whose
    /// `(session, seq)` is already stored is a duplicate and changes nothing.
    ///
    /// # Errors
    /// Nothing of the batch is stored when this fails; [`StoreError::is_retryable`] tells
    /// whether the sender should try again later.
    fn ingest(&self, events: &[Event]) -> Result<Ingested, StoreError>;

    /// The heat cells of one page, kind and width bucket over a range, summed from the
    /// hourly aggregates (and raw events for partial hours at the range's ends).
    ///
    /// # Errors
    /// The engine's error.
    fn heatmap(&self, query: &HeatmapQuery) -> Result<HeatmapCells, StoreError>;

    /// Totals over a range, with the top `limit` pages and countries.
    ///
    /// # Errors
    /// The engine's error.
    fn totals(&self, range: Range, filter: &Filter, limit: usize) -> Result<Totals, StoreError>;

    /// Sessions with an event in the range, most recently active first, at most `limit`.
    ///
    /// # Errors
    /// The engine's error.
    fn sessions(
        &self,
        range: Range,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<SessionRow>, StoreError>;

    /// Raw events in the range that `filter` and `only` let through, oldest first, at
    /// most `limit` (journeys, exports, click insights, tests).
    ///
    /// # Errors
    /// The engine's error.
    fn events(
        &self,
        range: Range,
        filter: &Filter,
        only: &RawSelection,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// Deletes every event, aggregate and session older than `before_ms` (retention).
    /// Returns how many events went.
    ///
    /// # Errors
    /// The engine's error; what was deleted before it stays deleted.
    fn prune(&self, before_ms: i64) -> Result<u64, StoreError>;
}
