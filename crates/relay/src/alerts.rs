//! The seed's `alert`: the relay tells every dashboard when traffic spikes, so a site owner
//! hears of it with no dashboard of theirs having to judge the numbers itself.
//!
//! The rule is the dashboard's own spike banner's (the last 10 seconds against the 290
//! before them, over the summary's `per_second` series), judged once per analytics push;
//! an alert goes out when a spike begins, not on every push while it lasts.

use protocol::Alert;

/// Seconds at the end of the series that count as "now".
const RECENT_SECONDS: usize = 10;

/// Least rate, in events a second, that can be a spike: a quiet site's single event is not.
const MIN_SPIKE_RATE: f64 = 1.0;

/// Least baseline the factor is applied to, so a site silent until now still needs a
/// real burst to alert.
const MIN_BASELINE: f64 = 0.1;

/// The rate of the last [`RECENT_SECONDS`] and the average before them, if the one is above
/// `factor` times the other.
pub fn spike(per_second: &[u32], factor: f64) -> Option<(f64, f64)> {
    if per_second.len() <= RECENT_SECONDS {
        return None;
    }
    let (before, recent) = per_second.split_at(per_second.len() - RECENT_SECONDS);
    let mean =
        |values: &[u32]| values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
    let (rate, baseline) = (mean(recent), mean(before));
    (rate >= MIN_SPIKE_RATE && rate > factor * baseline.max(MIN_BASELINE))
        .then_some((rate, baseline))
}

/// Whether a spike is under way, so that one spike makes one alert.
#[derive(Debug, Default)]
pub struct SpikeWatch {
    spiking: bool,
}

impl SpikeWatch {
    /// Judges one push's series; returns the alert to send if a spike begins with it.
    pub fn observe(&mut self, per_second: &[u32], factor: f64) -> Option<Alert> {
        let found = spike(per_second, factor);
        let begins = found.is_some() && !self.spiking;
        self.spiking = found.is_some();
        let (rate, baseline) = found.filter(|_| begins)?;
        Some(Alert {
            kind: "traffic_spike".into(),
            severity: "warning".into(),
            message: format!(
                "traffic spike: {rate:.1} events/s in the last {RECENT_SECONDS} s, over {factor}x the {baseline:.2}/s before"
            ),
            rate,
            baseline,
            factor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(before: u32, recent: u32) -> Vec<u32> {
        let mut values = vec![before; 290];
        values.extend([recent; 10]);
        values
    }

    #[test]
    fn a_burst_over_the_factor_is_a_spike_and_a_steady_rate_is_not() {
        assert_eq!(spike(&series(1, 5), 3.0), Some((5.0, 1.0)));
        assert_eq!(spike(&series(2, 5), 3.0), None);
        assert_eq!(spike(&series(0, 0), 3.0), None, "silence is no spike");
        assert_eq!(spike(&[9; 10], 3.0), None, "too short a series to judge");
    }

    #[test]
    fn one_spike_alerts_once_and_the_next_one_alerts_again() {
        let mut watch = SpikeWatch::default();
        assert!(watch.observe(&series(1, 1), 3.0).is_none());
        let alert = watch.observe(&series(1, 6), 3.0).expect("the spike begins");
        assert_eq!(alert.kind, "traffic_spike");
        assert!(alert.message.contains("6.0 events/s"), "{}", alert.message);
        assert!(
            watch.observe(&series(1, 7), 3.0).is_none(),
            "still the same spike"
        );
        assert!(watch.observe(&series(1, 1), 3.0).is_none());
        assert!(watch.observe(&series(1, 8), 3.0).is_some(), "a new spike");
    }
}
