//! Site analytics storage: every accepted tracked-site event, kept for the retention
//! period in a real database, with the counts heatmaps and summaries need maintained at
//! ingest so a query's cost does not grow with the number of events.
//!
//! Read in this order:
//! - `event`: [`Event`], one stored event, and its idempotency key.
//! - `aggregate`: how an event maps to an hour and a heat cell (pure functions shared by
//!   every engine, so their aggregates agree to the cell).
//! - `query`: what can be asked ([`Range`], [`Filter`], [`HeatmapQuery`]) and the answers.
//! - `store`: the [`Store`] boundary every engine implements.
//! - `span`: how a range splits into whole days, whole hours and raw edges (shared by
//!   every engine, so their answers agree).
//! - `pending`: heat counts held in memory between writes of the heat tables, rebuilt
//!   from raw events after a restart.
//! - `sqlite`: [`SqliteStore`], the embedded default (one file, WAL, one transaction per
//!   batch covering the events and their page and session counts; heat counts written
//!   every [`SqliteConfig::heat_flush_events`] events).
//! - `postgres` (feature `postgres`): [`PostgresStore`], the shared engine for cluster
//!   mode (every aggregate written in the batch's own transaction, so any number of
//!   renderers can share it).
//! - [`pg_client`] (feature `postgres`): connections that come back after a server
//!   restart, shared with the renderer's recordings in PostgreSQL.
//! - `conformance`: the test suite every engine must pass unchanged.
//! - [`live`]: the live view over any store (active users, the last minutes, sessions and
//!   their journeys, the summary and sessions answers), fed only with what the store
//!   committed.
//!
//! **Invariant:** a batch is stored whole or not at all: its events are committed in one
//! transaction, so what [`Store::ingest`] acknowledged is there after a crash or a full
//! disk, and what it refused left nothing behind. Every answer counts exactly the
//! committed events: an aggregate is either committed with them or, if an engine writes it
//! later, derived from them (held in memory meanwhile and rebuilt from the events at open).
//! **Invariant:** no serde here; wire shapes live in `protocol`.

mod aggregate;
pub mod conformance;
mod error;
mod event;
pub mod live;
mod pending;
#[cfg(feature = "postgres")]
pub mod pg_client;
#[cfg(feature = "postgres")]
mod postgres;
mod query;
mod span;
mod sqlite;
mod store;

#[cfg(feature = "postgres")]
pub use self::postgres::{PostgresConfig, PostgresStore};
pub use aggregate::{hour_of, HEAT_COLUMNS, MAX_HEAT_ROWS};
pub use error::StoreError;
pub use event::{Event, Position};
pub use query::{
    Filter, HeatCell, HeatmapCells, HeatmapQuery, Range, RawSelection, SessionRow, Totals,
    WidthBucket,
};
pub use sqlite::{SqliteConfig, SqliteStore, DEFAULT_CACHE_MIB, DEFAULT_HEAT_FLUSH_EVENTS};
pub use store::{Ingested, Store};
