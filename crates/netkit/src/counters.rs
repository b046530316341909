//! Error counters with one slot per protocol error code.

use std::sync::atomic::{AtomicU64, Ordering};

use protocol::ErrorCode;

/// Counts refused messages by [`ErrorCode`], lock-free, for `/healthz` and later `/metrics`.
#[derive(Debug, Default)]
pub struct ErrorCounters {
    counts: [AtomicU64; ErrorCode::ALL.len()],
}

impl ErrorCounters {
    /// Counts one error of `code`.
    pub fn record(&self, code: ErrorCode) {
        self.counts[code.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// How many errors of `code` were counted.
    pub fn get(&self, code: ErrorCode) -> u64 {
        self.counts[code.index()].load(Ordering::Relaxed)
    }

    /// Every non-zero counter as a JSON object `{"code": n, …}`.
    pub fn to_json(&self) -> String {
        let fields: Vec<String> = ErrorCode::ALL
            .iter()
            .filter(|code| self.get(**code) > 0)
            .map(|code| format!("\"{}\":{}", code.as_str(), self.get(*code)))
            .collect();
        format!("{{{}}}", fields.join(","))
    }
}
