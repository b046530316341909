//! Checks that a decoded message means something the tiers can act on.
//!
//! Decoding proves the shape; validation proves the values: finite coordinates inside
//! their viewport, a sane viewport, a batch within the size limit. Both the relay (at the
//! edge, so the sender learns quickly) and the renderer (its own server, so it trusts no
//! peer) run these checks.

use crate::error::{Error, ErrorCode};
use crate::limits::{Limits, MAX_VIEWPORT_SIDE};
use crate::page::{PageMessage, PointsBatch, Viewport};

/// Checks a page message against `limits`.
///
/// # Errors
/// [`ErrorCode::OutOfRange`] for a bad viewport or coordinate, [`ErrorCode::TooLarge`] for
/// a batch over the point limit.
pub fn validate_page(msg: &PageMessage, limits: &Limits) -> Result<(), Error> {
    match msg {
        PageMessage::Hello { .. }
        | PageMessage::Stop { .. }
        | PageMessage::Preview(_)
        | PageMessage::Watch => Ok(()),
        PageMessage::Generate(generate) => generate.options.validate(),
        PageMessage::Cursor { x, y } => {
            let inside = |value: &f32| value.is_finite() && (0.0..=1.0).contains(value);
            if inside(x) && inside(y) {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorCode::OutOfRange,
                    format!("cursor ({x}, {y}) is not within 0..=1"),
                ))
            }
        }
        PageMessage::Start { viewport, .. } => validate_viewport(viewport),
        PageMessage::RequestDetailedStats { filters } => match filters {
            Some(filters) => filters.normalized().map(drop),
            None => Ok(()),
        },
        PageMessage::SetName { name } => crate::dashboard::validate_name(name),
        PageMessage::TrackDashboardAction { action, .. } => {
            crate::dashboard::validate_action(action)
        }
        PageMessage::Points(batch) => validate_batch(batch, limits),
    }
}

/// Checks a viewport's sides are 1 ..= [`MAX_VIEWPORT_SIDE`].
///
/// # Errors
/// [`ErrorCode::OutOfRange`] naming the bad side.
pub fn validate_viewport(viewport: &Viewport) -> Result<(), Error> {
    for (side, value) in [("width", viewport.width), ("height", viewport.height)] {
        if value == 0 || value > MAX_VIEWPORT_SIDE {
            return Err(Error::new(
                ErrorCode::OutOfRange,
                format!("viewport {side} {value} is outside 1..={MAX_VIEWPORT_SIDE}"),
            ));
        }
    }
    Ok(())
}

/// Checks a batch: its size, its viewport and every point.
///
/// A batch is accepted whole or refused whole, so a page never has to guess which of its
/// points counted.
///
/// # Errors
/// [`ErrorCode::TooLarge`] or [`ErrorCode::OutOfRange`] naming the first bad point.
pub fn validate_batch(batch: &PointsBatch, limits: &Limits) -> Result<(), Error> {
    if batch.points.len() > limits.max_points_per_batch {
        return Err(Error::new(
            ErrorCode::TooLarge,
            format!(
                "batch has {} points, the limit is {}",
                batch.points.len(),
                limits.max_points_per_batch
            ),
        ));
    }
    validate_viewport(&batch.viewport)?;
    let width = batch.viewport.width as f32;
    let height = batch.viewport.height as f32;
    for (point_idx, point) in batch.points.iter().enumerate() {
        let x_ok = point.x.is_finite() && (0.0..=width).contains(&point.x);
        let y_ok = point.y.is_finite() && (0.0..=height).contains(&point.y);
        if !(x_ok && y_ok) {
            return Err(Error::new(
                ErrorCode::OutOfRange,
                format!(
                    "point {point_idx} ({}, {}) is outside the {}x{} viewport",
                    point.x, point.y, batch.viewport.width, batch.viewport.height
                ),
            ));
        }
    }
    Ok(())
}
