//! Durations and points in time on the command line: parsing `500ms`, `30s`, `5m`, `1h30m`,
//! RFC 3339 times and Unix milliseconds, and printing them back for people.

use std::time::Duration;

/// Parses a duration: one or more `<number><unit>` with units `ms`, `s`, `m`, `h`, `d`, e.g.
/// `500ms`, `30s`, `1.5m`, `1h30m`. A bare number is refused, since seconds and milliseconds are
/// both plausible readings of it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let usage = || format!("{text:?} is not a duration (examples: 500ms, 30s, 5m, 1h30m)");
    if trimmed.is_empty() {
        return Err(usage());
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "{text:?} has no unit; write {trimmed}s or {trimmed}ms (units: ms, s, m, h, d)"
        ));
    }
    let mut rest = trimmed;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(usage)?;
        if number_len == 0 {
            return Err(usage());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| usage())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(usage()),
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    if !total.is_finite() || total > 100.0 * 365.0 * 86_400.0 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses a point in time as Unix milliseconds: a duration from `now_ms` (`10m`), an RFC 3339
/// time (`2030-01-31T12:00:00Z`, `2030-01-31T13:00:00+01:00`), or Unix milliseconds.
pub fn parse_when(text: &str, now_ms: u64) -> Result<u64, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = trimmed
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?;
        if ms < 100_000_000_000 {
            return Err(format!(
                "{text:?} looks like Unix seconds; give Unix milliseconds, a duration from now \
                 (10m) or an RFC 3339 time"
            ));
        }
        return Ok(ms);
    }
    if let Ok(duration) = parse_duration(trimmed) {
        return Ok(now_ms.saturating_add(duration.as_millis() as u64));
    }
    parse_rfc3339(trimmed).ok_or_else(|| {
        format!(
            "{text:?} is not a time: give a duration from now (10m), an RFC 3339 time \
             (2030-01-31T12:00:00Z) or Unix milliseconds"
        )
    })
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, want)| bytes[at] != want)
        || !matches!(bytes[10], b'T' | b't' | b' ')
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (hours * 60 + minutes)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    u64::try_from(seconds * 1000 + millis).ok()
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds: `2030-01-31T12:00:00.000Z`.
pub fn format_rfc3339(unix_ms: u64) -> String {
    let seconds = (unix_ms / 1000) as i64;
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        unix_ms % 1000
    )
}

/// A duration for people: `350ms`, `4.2s`, `3m05s`, `2h10m`, `3d4h`.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis() as u64;
    let seconds = ms / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if seconds < 60 {
        let text = format!("{:.1}", ms as f64 / 1000.0);
        format!("{}s", text.trim_end_matches(".0"))
    } else if seconds < 3600 {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    } else if seconds < 86_400 {
        format!("{}h{:02}m", seconds / 3600, seconds / 60 % 60)
    } else {
        format!("{}d{}h", seconds / 86_400, seconds / 3600 % 24)
    }
}

/// `unix_ms` relative to `now_ms`: `12s ago`, `in 4.5s`, `-` for 0 (not set).
pub fn format_relative(unix_ms: u64, now_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".to_string();
    }
    if unix_ms <= now_ms {
        format!(
            "{} ago",
            format_duration(Duration::from_millis(now_ms - unix_ms))
        )
    } else {
        format!(
            "in {}",
            format_duration(Duration::from_millis(unix_ms - now_ms))
        )
    }
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

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        let ok = [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("1.5s", 1_500),
            ("2d", 172_800_000),
            ("0s", 0),
            (" 10s ", 10_000),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in ["", "10", "1.5", "s", "10x", "ms10", "-5s", "1h-5m", "5 m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_duration("10").unwrap_err().contains("10s or 10ms"));
    }

    #[test]
    fn times_are_durations_rfc3339_or_unix_ms() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_when("10m", now), Ok(now + 600_000));
        assert_eq!(parse_when("1700000000123", now), Ok(1_700_000_000_123));
        assert!(parse_when("1700000000", now)
            .unwrap_err()
            .contains("seconds"));
        assert_eq!(
            parse_when("2023-11-14T22:13:20Z", now),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_when("2023-11-14T23:13:20.5+01:00", now),
            Ok(1_700_000_000_500)
        );
        assert_eq!(parse_when("1970-01-01T00:00:00Z", now), Ok(0));
        for bad in [
            "tomorrow",
            "2023-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14",
        ] {
            assert!(parse_when(bad, now).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
    }

    #[test]
    fn formatting_round_trips() {
        for ms in [0, 1_700_000_000_123, 951_782_400_000, 4_102_444_800_000] {
            let text = format_rfc3339(ms);
            assert_eq!(parse_rfc3339(&text), Some(ms), "{text}");
        }
        assert_eq!(
            format_rfc3339(1_700_000_000_000),
            "2023-11-14T22:13:20.000Z"
        );
    }

    #[test]
    fn durations_print_for_people() {
        assert_eq!(format_duration(Duration::from_millis(350)), "350ms");
        assert_eq!(format_duration(Duration::from_millis(4_200)), "4.2s");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(format_duration(Duration::from_secs(7_800)), "2h10m");
        assert_eq!(format_duration(Duration::from_secs(97_200)), "1d3h");
        assert_eq!(format_relative(0, 5), "-");
        assert_eq!(format_relative(1_000, 13_000), "12s ago");
        assert_eq!(format_relative(6_000, 1_500), "in 4.5s");
    }
}
