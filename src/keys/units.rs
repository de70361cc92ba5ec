//! LiteLLM's durations ("30s", "20m", "30h", "30d"), ISO 8601 timestamps, and the spend price helper.

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
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The price in USD of one request: tokens × price per million tokens, less the batch discount.
///
/// `batch_discount` is the fraction taken off for requests sent through the Batch API (OpenAI's is
/// `0.5`, half price); it is clamped to `0..=1` and ignored when `None`. Cache hits cost nothing: the
/// caller does not call this for them.
pub fn cost(
    usage_prompt: u64,
    usage_completion: u64,
    input_per_mtok: f64,
    output_per_mtok: f64,
    batch_discount: Option<f64>,
) -> f64 {
    let full = (usage_prompt as f64 * input_per_mtok + usage_completion as f64 * output_per_mtok)
        / 1_000_000.0;
    match batch_discount {
        Some(d) if d.is_finite() => full * (1.0 - d.clamp(0.0, 1.0)),
        _ => full,
    }
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
    fn cost_of_usage() {
        // 1000 prompt tokens at $2.50/M + 500 completion tokens at $10/M = 0.0025 + 0.005.
        let c = cost(1000, 500, 2.5, 10.0, None);
        assert!((c - 0.0075).abs() < 1e-15, "{c}");
        let b = cost(1000, 500, 2.5, 10.0, Some(0.5));
        assert!((b - 0.00375).abs() < 1e-15, "{b}");
        assert_eq!(cost(0, 0, 2.5, 10.0, Some(0.5)), 0.0);
        assert_eq!(cost(1_000_000, 0, 1.0, 0.0, Some(2.0)), 0.0);
        assert_eq!(cost(1_000_000, 0, 1.0, 0.0, Some(-1.0)), 1.0);
        assert_eq!(cost(1_000_000, 1_000_000, 1.0, 2.0, Some(f64::NAN)), 3.0);
    }
}
