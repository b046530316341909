//! ISO-8601 (RFC 3339) date-times to milliseconds since the Unix epoch, without a date
//! library: the event API and its filters take `2025-07-19T10:30:00Z` as well as numbers.

/// Milliseconds since the epoch of an RFC 3339 date-time (`2025-07-19T10:30:00Z`,
/// `2025-07-19T10:30:00.250+05:30`, a space instead of `T`, or a bare date `2025-07-19`
/// meaning midnight UTC).
///
/// `None` when the text is not such a date-time or names an impossible one.
pub fn parse_iso8601_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let bytes = text.as_bytes();
    let digits = |from: usize, len: usize| -> Option<i64> {
        let part = bytes.get(from..from + len)?;
        part.iter().all(u8::is_ascii_digit).then(|| {
            part.iter()
                .fold(0i64, |acc, digit| acc * 10 + i64::from(digit - b'0'))
        })
    };
    let year = digits(0, 4)?;
    let month = digits(5, 2)?;
    let day = digits(8, 2)?;
    if bytes.get(4) != Some(&b'-') || bytes.get(7) != Some(&b'-') {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if bytes.len() == 10 {
        return Some(days * 86_400_000);
    }
    if !matches!(bytes.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let hour = digits(11, 2)?;
    let minute = digits(14, 2)?;
    if bytes.get(13) != Some(&b':') {
        return None;
    }
    let (second, mut at) = if bytes.get(16) == Some(&b':') {
        (digits(17, 2)?, 19)
    } else {
        (0, 16)
    };
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut millis = 0i64;
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let fraction = &text[start..at];
        if fraction.is_empty() {
            return None;
        }
        let padded: String = fraction.chars().chain("000".chars()).take(3).collect();
        millis = padded.parse().ok()?;
    }
    let offset_minutes = match bytes.get(at) {
        None => 0, // No zone: read as UTC, the only sensible default for a server.
        Some(b'Z' | b'z') if at + 1 == bytes.len() => 0,
        Some(sign @ (b'+' | b'-')) => {
            let hours = digits(at + 1, 2)?;
            let (minutes, end) = match bytes.get(at + 3) {
                Some(b':') => (digits(at + 4, 2)?, at + 6),
                _ => (
                    digits(at + 3, 2).unwrap_or(0),
                    if bytes.len() > at + 3 { at + 5 } else { at + 3 },
                ),
            };
            if end != bytes.len() || hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 60 + minutes;
            if *sign == b'+' {
                offset
            } else {
                -offset
            }
        }
        _ => return None,
    };
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_forms_parse_to_epoch_milliseconds() {
        assert_eq!(parse_iso8601_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_iso8601_ms("2025-07-19T10:30:00Z"),
            Some(1_752_921_000_000)
        );
        assert_eq!(
            parse_iso8601_ms("2025-07-19T10:30:00.250Z"),
            Some(1_752_921_000_250)
        );
        assert_eq!(
            parse_iso8601_ms("2025-07-19T16:00:00+05:30"),
            Some(1_752_921_000_000)
        );
        assert_eq!(
            parse_iso8601_ms("2025-07-19T05:30:00-05:00"),
            Some(1_752_921_000_000)
        );
        assert_eq!(
            parse_iso8601_ms("2025-07-19 10:30:00"),
            Some(1_752_921_000_000)
        );
        assert_eq!(
            parse_iso8601_ms("2025-07-19T10:30Z"),
            Some(1_752_921_000_000)
        );
        assert_eq!(parse_iso8601_ms("2025-07-19"), Some(1_752_883_200_000));
        assert_eq!(
            parse_iso8601_ms("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
    }

    #[test]
    fn impossible_or_malformed_dates_are_refused() {
        for text in [
            "",
            "yesterday",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-07-19T25:00:00Z",
            "2025-07-19T10:30:00Q",
            "2025/07/19",
            "2025-07-19T10:30:00.Z",
            "2025-07-19T10:30:00+5",
        ] {
            assert_eq!(parse_iso8601_ms(text), None, "{text}");
        }
    }
}
