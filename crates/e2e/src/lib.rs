//! Test-only crate: the one place that sees both the relay and the renderer.
//!
//! The tests live in `tests/`; this library is empty on purpose, so that no production
//! crate depends on both servers.
