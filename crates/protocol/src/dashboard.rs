//! The seed's dashboard messages: the filters of `request_detailed_stats` and the actions of
//! `track_dashboard_action`, with the checks that keep them bounded.
//!
//! They live apart from [`crate::page`] because they speak the seed's vocabulary (country
//! names, free-form action names) and need their own normalisation before the relay acts.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::analytics::{EventType, RecentEvent, Summary, MAX_PAGE_LEN};
use crate::country::country_code;
use crate::error::{Error, ErrorCode};

/// Longest `action` name accepted from `track_dashboard_action`, in bytes.
///
/// Action names only label a counter and are echoed once, so a short bound costs nothing
/// and keeps a page from making the relay echo kilobytes.
pub const MAX_ACTION_LEN: usize = 64;

/// The action names counted under their own label; any other counts as `other`.
///
/// A fixed list rather than whatever pages send: every label is a time series in
/// Prometheus, so a page must not be able to create them at will.
pub const DASHBOARD_ACTIONS: &[&str] = &[
    "filter_change",
    "view_session",
    "export",
    "refresh",
    "range_change",
    "toggle_sound",
    "view_heatmap",
];

/// What a dashboard narrows its detailed stats to, as the seed sends it.
///
/// Missing, `null`, empty and `"all"` mean "no filter", since the seed's select boxes send
/// one of those for their first entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsFilters {
    /// A two-letter code or a country name (`"DE"`, `"Germany"`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "country_text"
    )]
    pub country: Option<String>,
    /// A page path starting with `/`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "page_text"
    )]
    pub page: Option<String>,
}

/// The seed's `alert`, sent to every dashboard when the relay sees traffic spike.
///
/// Judged by the relay on the renderer's live series (`relay --spike-factor`), so every
/// dashboard hears of a spike once, whatever its own banner's setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What happened: `traffic_spike`.
    pub kind: String,
    /// `warning`.
    pub severity: String,
    /// A sentence for people, with the figures.
    pub message: String,
    /// Events a second over the last 10 seconds.
    pub rate: f64,
    /// Events a second over the minutes before them.
    pub baseline: f64,
    /// How many times the baseline counts as a spike.
    pub factor: f64,
}

/// The seed's `visitor_update`: its own fields of the live summary, sent to dashboards
/// beside every `analytics` push, plus the number of dashboards connected.
///
/// A subset rather than the whole summary: the seed's dashboard reads only these, and the
/// 300-entry `per_second` series would double what every push costs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorUpdate {
    /// Sessions with an event within the session timeout.
    #[serde(rename = "totalActive")]
    pub total_active: usize,
    /// Visitors (sessions) with an event today (UTC).
    #[serde(rename = "totalToday")]
    pub total_today: u64,
    /// Page views today per page.
    #[serde(rename = "pagesVisited")]
    pub pages_visited: BTreeMap<String, u64>,
    /// Events today per country code.
    pub countries: BTreeMap<String, u64>,
    /// The latest events, newest first.
    #[serde(rename = "recentEvents")]
    pub recent_events: Vec<RecentEvent>,
    /// Dashboards connected to the relay now.
    pub dashboards: usize,
}

impl VisitorUpdate {
    /// The seed's fields of `summary`, with the relay's dashboard count.
    pub fn from_summary(summary: &Summary, dashboards: usize) -> Self {
        VisitorUpdate {
            total_active: summary.total_active,
            total_today: summary.total_today,
            pages_visited: summary.pages_visited.clone(),
            countries: summary.countries.clone(),
            recent_events: summary.recent_events.clone(),
            dashboards,
        }
    }
}

/// One event just stored, as `session_activity` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// The visitor's session.
    #[serde(rename = "sessionId")]
    pub session_id: String,
    /// The page.
    pub page: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
}

/// Longest member name accepted from `set_name`, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// A page in the members list: the relay's number for it and its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The relay's number for the page (the same as its live cursor's `id`).
    pub id: u64,
    /// `User-417` until the page sets one with `set_name`.
    pub name: String,
}

/// Checks a `set_name` name: 1 to [`MAX_NAME_CHARS`] characters after trimming, no
/// control characters (it is shown to every page).
///
/// # Errors
/// [`ErrorCode::BadField`] naming `name`.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let trimmed = name.trim();
    if trimmed.is_empty()
        || trimmed.chars().count() > MAX_NAME_CHARS
        || trimmed.chars().any(char::is_control)
    {
        return Err(Error::new(
            ErrorCode::BadField,
            format!("name: must be 1 to {MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    Ok(())
}

/// `filters.country` as text or null, refused with its name otherwise (serde's own
/// message would not say which field held the number).
fn country_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    text_or_null(deserializer, "filters.country")
}

/// `filters.page` as text or null, refused with its name otherwise.
fn page_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    text_or_null(deserializer, "filters.page")
}

/// `action` as text, refused with its name otherwise.
pub(crate) fn action_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    text_or_null(deserializer, "action")?
        .ok_or_else(|| D::Error::custom("action: expected a string, found null"))
}

/// `name` as text, refused with its name otherwise.
pub(crate) fn name_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    text_or_null(deserializer, "name")?
        .ok_or_else(|| D::Error::custom("name: expected a string, found null"))
}

fn text_or_null<'de, D: Deserializer<'de>>(
    deserializer: D,
    field: &str,
) -> Result<Option<String>, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(text) => Ok(Some(text)),
        other => {
            let found = match other {
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::Array(_) => "an array",
                _ => "an object",
            };
            Err(D::Error::custom(format!(
                "{field}: expected a string or null, found {found}"
            )))
        }
    }
}

impl StatsFilters {
    /// The filters with blanks dropped and the country as its two-letter code, which is
    /// what the store filters on and what the answer echoes.
    ///
    /// # Errors
    /// [`ErrorCode::BadField`] naming `filters.country` or `filters.page`.
    pub fn normalized(&self) -> Result<StatsFilters, Error> {
        let given = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|value| !value.is_empty() && !value.eq_ignore_ascii_case("all"))
                .map(str::to_owned)
        };
        let country = given(&self.country)
            .map(|country| {
                country_code(&country).ok_or_else(|| {
                    Error::new(
                        ErrorCode::BadField,
                        format!("filters.country: {country:?} is neither a two-letter code nor a country name"),
                    )
                })
            })
            .transpose()?;
        let page = given(&self.page);
        if let Some(page) = &page {
            if !page.starts_with('/') || page.len() > MAX_PAGE_LEN {
                return Err(Error::new(
                    ErrorCode::BadField,
                    format!("filters.page: must be a path starting with / of at most {MAX_PAGE_LEN} bytes"),
                ));
            }
        }
        Ok(StatsFilters { country, page })
    }
}

/// Checks a `track_dashboard_action` name: 1 to [`MAX_ACTION_LEN`] bytes, no control
/// characters (it is echoed and may be logged).
///
/// # Errors
/// [`ErrorCode::BadField`] naming `action`.
pub fn validate_action(action: &str) -> Result<(), Error> {
    if action.is_empty() || action.len() > MAX_ACTION_LEN || action.chars().any(char::is_control) {
        return Err(Error::new(
            ErrorCode::BadField,
            format!("action: must be 1 to {MAX_ACTION_LEN} bytes without control characters"),
        ));
    }
    Ok(())
}

/// The metric label an action counts under: itself if listed in [`DASHBOARD_ACTIONS`],
/// else `other`.
pub fn action_label(action: &str) -> &'static str {
    DASHBOARD_ACTIONS
        .iter()
        .find(|known| **known == action)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_normalised_and_bad_ones_named() {
        let filters = StatsFilters {
            country: Some("Germany".into()),
            page: Some("/pricing".into()),
        };
        assert_eq!(
            filters.normalized().unwrap(),
            StatsFilters {
                country: Some("DE".into()),
                page: Some("/pricing".into())
            }
        );
        let blank = StatsFilters {
            country: Some("all".into()),
            page: Some(String::new()),
        };
        assert_eq!(blank.normalized().unwrap(), StatsFilters::default());
        let bad_country = StatsFilters {
            country: Some("Gondor".into()),
            page: None,
        };
        let err = bad_country.normalized().unwrap_err();
        assert!(
            err.message.starts_with("filters.country:"),
            "{}",
            err.message
        );
        let bad_page = StatsFilters {
            country: None,
            page: Some("pricing".into()),
        };
        let err = bad_page.normalized().unwrap_err();
        assert!(err.message.starts_with("filters.page:"), "{}", err.message);
    }

    #[test]
    fn actions_are_bounded_and_labelled() {
        assert!(validate_action("export").is_ok());
        assert!(validate_action("").is_err());
        assert!(validate_action(&"x".repeat(MAX_ACTION_LEN + 1)).is_err());
        assert!(validate_action("a\nb").is_err());
        assert_eq!(action_label("export"), "export");
        assert_eq!(action_label("something_new"), "other");
    }
}
