//! LiteLLM's durations ("30s", "20m", "30h", "30d") and ISO 8601 timestamps and dates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses a LiteLLM duration: a whole number followed by `s`, `m`, `h` or `d` ("30s", "20m", "30h",
/// "30d"). Zero and anything else is `None`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let num = &s[..s.len() - unit.len_utf8()];
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return None,
    };
    let secs = n.checked_mul(mult)?;
    // Beyond ~292 billion years arithmetic on unix seconds would overflow i64.
    if secs == 0 || secs > i64::MAX as u64 / 4 {
        return None;
    }
    Some(Duration::from_secs(secs))
}

/// The inverse of [`parse_duration`], in the largest unit that divides evenly ("30d", "90m").
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s % 86400 == 0 {
        format!("{}d", s / 86400)
    } else if s > 0 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s > 0 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC) for unix seconds.
pub fn iso8601(secs: i64) -> String {
    let rem = secs.rem_euclid(86400);
    let (year, month, day) = civil_from_days(secs.div_euclid(86400));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month, day) of the proleptic Gregorian calendar for a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) for unix milliseconds.
pub fn iso8601_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let frac = ms.rem_euclid(1000);
    let s = iso8601(secs);
    format!("{}.{frac:03}Z", &s[..s.len() - 1])
}

/// `YYYY-MM-DD` for a day number (days since the Unix epoch).
pub fn date_of_day(day: i64) -> String {
    iso8601(day.saturating_mul(86400))[..10].to_string()
}

/// Unix seconds of a date or time a caller wrote: `YYYY-MM-DD` (midnight UTC),
/// `YYYY-MM-DDTHH:MM:SS` with an optional fraction and `Z` (UTC only), or a number of unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = 0;
    if b.len() > 10 {
        if !(b[10] == b'T' || b[10] == b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
        let rest = &s[19..];
        let rest = rest.strip_suffix('Z').unwrap_or(rest);
        let frac_ok = rest.is_empty()
            || (rest.starts_with('.')
                && rest.len() > 1
                && rest[1..].bytes().all(|c| c.is_ascii_digit()));
        if !frac_ok {
            return None;
        }
        secs = hh * 3600 + mm * 60 + ss;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_litellm_format() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("20m"), Some(Duration::from_secs(1200)));
        assert_eq!(parse_duration("30h"), Some(Duration::from_secs(108_000)));
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration(" 1d "), Some(Duration::from_secs(86400)));
        for bad in [
            "",
            "s",
            "30",
            "30x",
            "-1d",
            "1.5h",
            "0s",
            "30 d",
            "d30",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        for s in ["30s", "20m", "30h", "30d", "90m", "61s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(format_duration(d), s);
        }
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn iso8601_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn times_written_by_callers() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_time("2023-11-14 22:13:20.5"), Some(1_700_000_000));
        assert_eq!(parse_time("2000-02-29"), Some(951_782_400));
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000));
        for bad in [
            "",
            "2023-13-01",
            "2023-1-01",
            "yesterday",
            "2023-11-14T22:13",
            "2023-11-14T22:13:20+02:00",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(iso8601_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(date_of_day(19_675), "2023-11-14");
    }
}
