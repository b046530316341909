//! Errors of the renderer's core (rendering and writing images).

use std::path::PathBuf;

/// Why a render or a write failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested image has no points to show.
    #[error("the recording has no {0} to render")]
    NoPoints(protocol::HeatKind),
    /// Background mode was asked for, but the renderer has no screenshot.
    #[error("no background screenshot: start the renderer with --background FILE.png")]
    NoBackground,
    /// The background screenshot cannot be used.
    #[error("cannot use background {path}: {why}")]
    Background {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// plotters could not draw the legend or caption.
    #[error("cannot draw the legend: {0}")]
    Draw(String),
    /// The PNG encoder failed.
    #[error("cannot encode png: {0}")]
    Encode(#[from] std::io::Error),
    /// The output folder or file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or folder concerned.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The event store could not be opened (a damaged file, a newer schema, no space).
    #[error("cannot open the event store {path}: {source}")]
    Store {
        /// The database file.
        path: PathBuf,
        /// The store's error.
        source: ::analytics::StoreError,
    },
}
