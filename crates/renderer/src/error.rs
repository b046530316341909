//! Errors of the renderer's core (rendering and writing images, opening the event store).

use std::path::PathBuf;

/// Why a render or a write failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Drawing the image failed (no points, no usable background, legend or encoding).
    #[error(transparent)]
    Render(#[from] heatmap::Error),
    /// The output folder or file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or folder concerned.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The event store could not be opened (a damaged file, a newer schema, no space, a
    /// database server that cannot be reached).
    #[error("cannot open the event store {path}: {source}")]
    Store {
        /// The database file, or the database's URL without its password.
        path: String,
        /// The store's error.
        source: ::analytics::StoreError,
    },
    /// `--store` names a store this renderer cannot open (an unknown scheme, or PostgreSQL
    /// in a build without the `cluster` feature).
    #[error("--store {url}: {why}")]
    StoreUrl {
        /// The URL without its password.
        url: String,
        /// What is wrong and what to do.
        why: String,
    },
}
