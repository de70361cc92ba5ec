//! Exact money: amounts in integer micro-dollars, prices in integer micro-dollars per million tokens,
//! fractions in parts per million, and the decimal text they are written in.
//!
//! A price of `$X per million tokens` is `X × 10⁶` micro-dollars per million tokens, which is also
//! `X × 10⁶` pico-dollars per token: multiplying a token count by it gives pico-dollars exactly, with
//! no division until the single rounding to micro-dollars in [`super::cost`].

use std::fmt;

/// Micro-dollars (10⁻⁶ USD) in one dollar.
pub const MICROS_PER_USD: u64 = 1_000_000;

/// An amount of money in US micro-dollars. Sums saturate instead of wrapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub u64);

impl Micros {
    pub const ZERO: Micros = Micros(0);

    /// The amount as a float of dollars, for sinks that only take floats (a Prometheus counter's
    /// `inc_by`). Convert each amount as it is exported; never add these floats up.
    pub fn as_usd_f64(self) -> f64 {
        self.0 as f64 / MICROS_PER_USD as f64
    }
}

impl std::ops::Add for Micros {
    type Output = Micros;
    fn add(self, rhs: Micros) -> Micros {
        Micros(self.0.saturating_add(rhs.0))
    }
}

impl std::ops::AddAssign for Micros {
    fn add_assign(&mut self, rhs: Micros) {
        *self = *self + rhs;
    }
}

impl std::iter::Sum for Micros {
    fn sum<I: Iterator<Item = Micros>>(iter: I) -> Micros {
        iter.fold(Micros::ZERO, |a, b| a + b)
    }
}

/// `$1.234567`: dollars with all six decimal places, so equal amounts always print alike.
impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "${}.{:06}",
            self.0 / MICROS_PER_USD,
            self.0 % MICROS_PER_USD
        )
    }
}

/// A price in micro-dollars per million tokens (numerically: pico-dollars per token).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PerMtok(pub u64);

impl PerMtok {
    /// Parse a price written in USD per million tokens, e.g. `"0.0375"` → `PerMtok(37_500)`.
    pub fn parse_usd(text: &str) -> Result<PerMtok, DecimalError> {
        parse_decimal(text).map(PerMtok)
    }
}

/// `$2.50`, `$0.0375`: dollars per million tokens with at least two and at most six decimals.
impl fmt::Display for PerMtok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        write_trimmed(f, self.0, 2)
    }
}

/// A fraction between 0 and 1 in parts per million (`0.5` is `Ppm(500_000)`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ppm(pub u32);

impl Ppm {
    pub const ONE: Ppm = Ppm(1_000_000);

    /// Parse a fraction written as a decimal between 0 and 1, e.g. `"0.5"`.
    pub fn parse(text: &str) -> Result<Ppm, DecimalError> {
        let v = parse_decimal(text)?;
        if v > u64::from(Ppm::ONE.0) {
            return Err(DecimalError::AboveOne);
        }
        u32::try_from(v)
            .map(Ppm)
            .map_err(|_| DecimalError::AboveOne)
    }
}

/// `50%`, `12.5%`.
impl fmt::Display for Ppm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Percent with four decimals is ppm / 10⁴.
        let (whole, frac) = (self.0 / 10_000, self.0 % 10_000);
        if frac == 0 {
            return write!(f, "{whole}%");
        }
        let digits = format!("{frac:04}");
        write!(f, "{whole}.{}%", digits.trim_end_matches('0'))
    }
}

/// `micros` as a dollar amount with at least `min_decimals` and at most six decimal places.
fn write_trimmed(f: &mut fmt::Formatter<'_>, micros: u64, min_decimals: usize) -> fmt::Result {
    let digits = format!("{:06}", micros % MICROS_PER_USD);
    let trimmed = digits.trim_end_matches('0');
    let keep = trimmed.len().max(min_decimals);
    write!(f, "{}.{}", micros / MICROS_PER_USD, &digits[..keep])
}

/// Why a decimal could not be read as an exact number of millionths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalError {
    /// Not a plain non-negative decimal (digits, an optional point, an optional exponent).
    NotDecimal,
    Negative,
    /// More than six decimal places: not a whole number of millionths.
    TooPrecise,
    TooLarge,
    /// A fraction above 1.
    AboveOne,
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecimalError::NotDecimal => "expected a decimal number, e.g. 2.50",
            DecimalError::Negative => "must not be negative",
            DecimalError::TooPrecise => {
                "at most 6 decimal places (prices are kept in micro-dollars)"
            }
            DecimalError::TooLarge => "too large",
            DecimalError::AboveOne => "must be between 0 and 1",
        })
    }
}

impl std::error::Error for DecimalError {}

/// Parse decimal text into millionths, exactly: `"2.5"` → `2_500_000`, `"0.0375"` → `37_500`,
/// `"1e-6"` → `1`. Accepts digits with an optional decimal point and an optional exponent (the form
/// a YAML number takes when printed back); refuses signs other than a leading `+`, and any value that
/// is not a whole number of millionths. No floating point is involved.
pub fn parse_decimal(text: &str) -> Result<u64, DecimalError> {
    let s = text.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(DecimalError::Negative);
    }
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => {
            let exp: i32 = s[i + 1..].parse().map_err(|_| DecimalError::NotDecimal)?;
            (&s[..i], exp)
        }
        None => (s, 0),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return Err(DecimalError::NotDecimal);
    }
    // The digits as one integer, and the power of ten that scales it to millionths.
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err(DecimalError::TooLarge);
    }
    let mut value: u128 = 0;
    for b in digits.bytes() {
        value = value * 10 + u128::from(b - b'0');
    }
    let frac_len = i32::try_from(frac_part.len()).map_err(|_| DecimalError::TooPrecise)?;
    let scale = exponent
        .checked_add(6)
        .and_then(|e| e.checked_sub(frac_len))
        .ok_or(DecimalError::NotDecimal)?;
    if value == 0 {
        return Ok(0);
    }
    let scaled = if scale >= 0 {
        let pow = 10u128
            .checked_pow(scale.unsigned_abs())
            .ok_or(DecimalError::TooLarge)?;
        value.checked_mul(pow).ok_or(DecimalError::TooLarge)?
    } else {
        let pow = 10u128
            .checked_pow(scale.unsigned_abs())
            .ok_or(DecimalError::TooPrecise)?;
        if value % pow != 0 {
            return Err(DecimalError::TooPrecise);
        }
        value / pow
    };
    u64::try_from(scaled).map_err(|_| DecimalError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_become_exact_millionths() {
        let ok = [
            ("0", 0),
            ("0.0", 0),
            ("2.5", 2_500_000),
            ("2.50", 2_500_000),
            ("10", 10_000_000),
            ("10.", 10_000_000),
            (".5", 500_000),
            ("0.0375", 37_500),
            ("0.00875", 8_750),
            ("0.000001", 1),
            ("1.2500000", 1_250_000),
            ("1e-6", 1),
            ("3.75E2", 375_000_000),
            ("+1", 1_000_000),
            (" 0.1 ", 100_000),
            ("000.30", 300_000),
        ];
        for (text, want) in ok {
            assert_eq!(parse_decimal(text), Ok(want), "{text}");
        }
        let bad = [
            ("", DecimalError::NotDecimal),
            (".", DecimalError::NotDecimal),
            ("abc", DecimalError::NotDecimal),
            ("1.2.3", DecimalError::NotDecimal),
            ("1,5", DecimalError::NotDecimal),
            ("1e", DecimalError::NotDecimal),
            ("-0.5", DecimalError::Negative),
            ("0.0000001", DecimalError::TooPrecise),
            ("1e-7", DecimalError::TooPrecise),
            ("99999999999999999999", DecimalError::TooLarge),
            ("1e40", DecimalError::TooLarge),
        ];
        for (text, want) in bad {
            assert_eq!(parse_decimal(text), Err(want), "{text}");
        }
    }

    #[test]
    fn fractions() {
        assert_eq!(Ppm::parse("0.5"), Ok(Ppm(500_000)));
        assert_eq!(Ppm::parse("1"), Ok(Ppm::ONE));
        assert_eq!(Ppm::parse("0"), Ok(Ppm(0)));
        assert_eq!(Ppm::parse("1.01"), Err(DecimalError::AboveOne));
        assert_eq!(Ppm(500_000).to_string(), "50%");
        assert_eq!(Ppm(125_000).to_string(), "12.5%");
        assert_eq!(Ppm(0).to_string(), "0%");
    }

    #[test]
    fn display() {
        assert_eq!(Micros(1_234_567).to_string(), "$1.234567");
        assert_eq!(Micros(5).to_string(), "$0.000005");
        assert_eq!(PerMtok(2_500_000).to_string(), "$2.50");
        assert_eq!(PerMtok(37_500).to_string(), "$0.0375");
        assert_eq!(PerMtok(8_750).to_string(), "$0.00875");
        assert_eq!(PerMtok(0).to_string(), "$0.00");
        assert_eq!(PerMtok(75_000_000).to_string(), "$75.00");
    }

    #[test]
    fn sums_saturate() {
        let total: Micros = [Micros(u64::MAX), Micros(1)].into_iter().sum();
        assert_eq!(total, Micros(u64::MAX));
        let mut m = Micros(1);
        m += Micros(2);
        assert_eq!(m, Micros(3));
        assert_eq!(Micros(1_500_000).as_usd_f64(), 1.5);
    }
}
