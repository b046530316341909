//! Errors of the renderer's core (rendering and writing images).

use std::path::PathBuf;

/// Why a render or a write failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested image has no points to show.
    #[error("recording has no points to render")]
    NoPoints,
    /// plotters could not draw the legend or caption.
    #[error("cannot draw the legend: {0}")]
    Draw(String),
    /// The PNG encoder failed.
    #[error("cannot encode png: {0}")]
    Encode(#[from] png::EncodingError),
    /// The output folder or file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or folder concerned.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}
