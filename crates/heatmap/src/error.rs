//! What drawing a heatmap can fail on, kept apart from serving so callers choose the answer.

use std::path::PathBuf;

/// Why a render failed.
///
/// Callers map these to their own answers: the renderer tells a page `no_points` for
/// [`Error::NoPoints`] and `render_failed` for the rest.
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
}
