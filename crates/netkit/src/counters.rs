//! Error counters with one series per protocol error code.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use protocol::ErrorCode;

/// The label of an error series: the protocol's code, as on the wire.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// The error code.
    pub code: &'static str,
}

/// Counts refused messages by [`ErrorCode`], for `/healthz` and `/metrics` alike.
#[derive(Debug, Default, Clone)]
pub struct ErrorCounters {
    family: Family<ErrorLabel, Counter>,
}

impl ErrorCounters {
    /// Registers the counters as `<prefix>_errors_total{code="…"}`.
    pub fn register(&self, registry: &mut Registry, prefix: &str) {
        registry.register(
            format!("{prefix}_errors"),
            "Messages refused, by protocol error code",
            self.family.clone(),
        );
    }

    /// Counts one error of `code`.
    pub fn record(&self, code: ErrorCode) {
        self.family
            .get_or_create(&ErrorLabel {
                code: code.as_str(),
            })
            .inc();
    }

    /// How many errors of `code` were counted.
    pub fn get(&self, code: ErrorCode) -> u64 {
        self.family
            .get_or_create(&ErrorLabel {
                code: code.as_str(),
            })
            .get()
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
