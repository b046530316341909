//! Heatmaps from pointer positions: a pure library, no async runtime and no network.
//!
//! Points go in as 16-bit fixed-point fractions of their viewport; PNG bytes come out. The
//! renderer calls this on blocking threads; the benchmarks call it directly. Keeping the
//! pixel work out of the server lets it be built, tested and optimised without one.
//!
//! Modules, in reading order:
//! - `render`: the pipeline from points to PNG bytes ([`render::render_png`]), its
//!   settings, and live preview frames.
//! - `grid`: the density grid ([`grid::Grid`]) points accumulate into.
//! - `density`: points to a smoothed density, at half resolution when the bandwidth allows.
//! - `blur`: Gaussian smoothing by three box blurs.
//! - `colormap`: colour tables, scales and the alpha ramp.
//! - `palette`: the heat's colours fitted into a PNG palette, within a known tolerance.
//! - `encode`: PNG encoding (indexed or RGB), bands of rows filtered and compressed in parallel.
//! - `deflate`: DEFLATE in independent bands that join into one zlib stream.
//! - `background`: the screenshot drawn under the heat in background mode.
//! - `scratch`: a bounded pool of reused buffers (first-touch page faults were a third of a render).
//! - `synthetic`: deterministic pointer-like data for benchmarks.
//! - `error`: what rendering can fail on ([`Error`]).

pub mod background;
pub mod blur;
mod colormap;
mod deflate;
pub mod density;
pub mod encode;
mod error;
pub mod grid;
mod palette;
pub mod render;
mod scratch;
pub mod synthetic;

pub use error::Error;
