//! Heatmap file names: built by the renderer alone, accepted by shape alone.
//!
//! A request path or message field never chooses a file path: the relay and the renderer
//! serve a file only if its name has exactly the shape `heatmap_YYYY-MM-DD_HH-MM-SS.png`
//! or `heatmap_YYYY-MM-DD_HH-MM-SS-N.png`, which has no separator, no dot-dot and no
//! room for anything else.
//!
//! The cluster's bus names (JetStream streams and consumers) are checked here too, so the
//! relay and the renderer refuse the same names at start with the same rule.

/// Longest name the shape allows (with a generous collision suffix).
const MAX_NAME_LEN: usize = 48;

/// Builds the file name for a local time stamp `YYYY-MM-DD_HH-MM-SS` and a collision
/// counter (0 for the first try, then `-1`, `-2`, …).
pub fn heatmap_file_name(stamp: &str, attempt: u32) -> String {
    if attempt == 0 {
        format!("heatmap_{stamp}.png")
    } else {
        format!("heatmap_{stamp}-{attempt}.png")
    }
}

/// Whether `name` has exactly the shape of a heatmap file name.
pub fn is_heatmap_name(name: &str) -> bool {
    if name.len() > MAX_NAME_LEN {
        return false;
    }
    let Some(rest) = name.strip_prefix("heatmap_") else {
        return false;
    };
    let Some(rest) = rest.strip_suffix(".png") else {
        return false;
    };
    let bytes = rest.as_bytes();
    // "YYYY-MM-DD_HH-MM-SS" is 19 bytes; digits everywhere but the separators.
    const STAMP_LEN: usize = 19;
    if bytes.len() < STAMP_LEN {
        return false;
    }
    let (stamp, suffix) = bytes.split_at(STAMP_LEN);
    let stamp_ok = stamp.iter().enumerate().all(|(idx, byte)| match idx {
        4 | 7 | 13 | 16 => *byte == b'-',
        10 => *byte == b'_',
        _ => byte.is_ascii_digit(),
    });
    let suffix_ok = match suffix.split_first() {
        None => true,
        Some((b'-', digits)) => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    stamp_ok && suffix_ok
}

/// Longest stream or consumer name the bus flags accept.
pub const MAX_BUS_NAME_LEN: usize = 64;

/// Whether `name` can name a JetStream stream or consumer: 1 to [`MAX_BUS_NAME_LEN`]
/// letters, digits, `-` or `_`. JetStream refuses `.`, `*`, `>` and spaces, and a
/// stream's name also prefixes its subjects, so anything else is refused at start
/// instead of on the first publish.
pub fn is_bus_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_BUS_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// [`is_bus_name`] as a command-line value parser, so both tiers' `--bus-stream` and
/// `--bus-consumer` flags refuse a bad name with the same message.
///
/// # Errors
/// The rule, when `text` breaks it.
pub fn parse_bus_name(text: &str) -> Result<String, String> {
    if is_bus_name(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "a stream or consumer name is 1 to {MAX_BUS_NAME_LEN} letters, digits, '-' or '_'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_names_are_letters_digits_dashes_and_underscores() {
        for good in [
            "heatmap",
            "renderers",
            "a-b_C9",
            &"x".repeat(MAX_BUS_NAME_LEN),
        ] {
            assert_eq!(parse_bus_name(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "a.b",
            "a*",
            "a>",
            "a b",
            "é",
            &"x".repeat(MAX_BUS_NAME_LEN + 1),
        ] {
            assert!(parse_bus_name(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn built_names_are_accepted() {
        assert!(is_heatmap_name(&heatmap_file_name(
            "2026-11-29_19-30-05",
            0
        )));
        assert!(is_heatmap_name(&heatmap_file_name(
            "2026-11-29_19-30-05",
            12
        )));
    }

    #[test]
    fn anything_else_is_refused() {
        for name in [
            "",
            "heatmap_.png",
            "../heatmap_2026-11-29_19-30-05.png",
            "heatmap_2026-11-29_19-30-05.png/..",
            "heatmap_2026-11-29_19-30-05-.png",
            "heatmap_2026-11-29_19-30-05-1a.png",
            "heatmap_2026-11-29T19-30-05.png",
            "heatmap_2026-11-29_19-30-05.PNG",
            "heatmap_2026/11-29_19-30-05.png",
            "heatmap_2026-11-29_19-30-05-99999999999999999999999.png",
        ] {
            assert!(!is_heatmap_name(name), "{name:?} should be refused");
        }
    }
}
