//! Quantities typed on the command line: rates (`500K`, `2M`), durations
//! (`90s`, `2h`, `1h30m`) and ratios (`1.5`). Each parser returns a
//! one-line error naming what was wrong.

use std::fmt;
use std::time::Duration;

/// Why a quantity was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitError {
    /// Empty text.
    Empty,
    /// A rate that is not a number with an optional K, M or G suffix.
    BadRate(String),
    /// A size that is not a number with an optional K, M or G suffix.
    BadSize(String),
    /// A duration that is not numbers each followed by s, m, h or d.
    BadDuration(String),
    /// A ratio that is not a finite number at least 0.
    BadRatio(String),
    /// A value too large to represent.
    TooLarge(String),
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitError::Empty => write!(f, "empty value"),
            UnitError::BadRate(s) => write!(
                f,
                "bad rate {s:?}: expected bytes per second, like 500000, 500K, 1.5M or 2G"
            ),
            UnitError::BadSize(s) => write!(
                f,
                "bad size {s:?}: expected bytes, like 262144, 256K or 16M"
            ),
            UnitError::BadDuration(s) => write!(
                f,
                "bad duration {s:?}: expected seconds or a number with s, m, h or d, like 90s, 2h, 1h30m"
            ),
            UnitError::BadRatio(s) => {
                write!(f, "bad ratio {s:?}: expected a number at least 0, like 1.5")
            }
            UnitError::TooLarge(s) => write!(f, "{s:?} is too large"),
        }
    }
}

impl std::error::Error for UnitError {}

/// Parses a rate in bytes per second: a number (decimals allowed) with an
/// optional suffix K, M or G (powers of 1024, case ignored, an optional
/// trailing `B` or `iB` accepted: `1.5M`, `512KiB`, `2g`). `0` means no
/// limit to the caller.
pub fn parse_rate(s: &str) -> Result<u64, UnitError> {
    parse_scaled(s, UnitError::BadRate)
}

/// Parses a size in bytes, with the same suffixes as [`parse_rate`]
/// (`262144`, `256K`, `16M`).
pub fn parse_bytes(s: &str) -> Result<u64, UnitError> {
    parse_scaled(s, UnitError::BadSize)
}

fn parse_scaled(s: &str, bad_kind: fn(String) -> UnitError) -> Result<u64, UnitError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(UnitError::Empty);
    }
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (num, mult) = match body.char_indices().last() {
        Some((i, 'k')) => (&body[..i], 1u64 << 10),
        Some((i, 'm')) => (&body[..i], 1u64 << 20),
        Some((i, 'g')) => (&body[..i], 1u64 << 30),
        _ => (body, 1),
    };
    let bad = || bad_kind(s.to_string());
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(UnitError::TooLarge(s.to_string()));
    }
    Ok(bytes.round() as u64)
}

/// Parses a duration: a bare number of seconds (`90`), or numbers each
/// followed by a unit s, m, h or d (`90s`, `2h`, `1h30m`, `1d`).
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim().to_ascii_lowercase();
    if t.is_empty() {
        return Err(UnitError::Empty);
    }
    let bad = || UnitError::BadDuration(s.to_string());
    let big = || UnitError::TooLarge(s.to_string());
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map(Duration::from_secs).map_err(|_| big());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        if num.is_empty() {
            return Err(bad());
        }
        let n: u64 = num.parse().map_err(|_| big())?;
        let secs = n.checked_mul(unit).ok_or_else(big)?;
        total = total.checked_add(secs).ok_or_else(big)?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(bad()); // a number without a unit after others with one
    }
    Ok(Duration::from_secs(total))
}

/// Parses a share ratio: a finite number at least 0 (`0`, `1`, `2.5`).
pub fn parse_ratio(s: &str) -> Result<f64, UnitError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(UnitError::Empty);
    }
    match t.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(UnitError::BadRatio(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_take_binary_suffixes() {
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("123456"), Ok(123_456));
        assert_eq!(parse_rate("500K"), Ok(500 * 1024));
        assert_eq!(parse_rate("500k"), Ok(500 * 1024));
        assert_eq!(parse_rate("1.5M"), Ok(1024 * 1024 * 3 / 2));
        assert_eq!(parse_rate("2G"), Ok(2 << 30));
        assert_eq!(parse_rate("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_rate("1MB"), Ok(1 << 20));
        assert_eq!(parse_rate(" 64K "), Ok(64 * 1024));
    }

    #[test]
    fn sizes_share_the_grammar_and_name_themselves() {
        assert_eq!(parse_bytes("256K"), Ok(256 * 1024));
        let e = parse_bytes("big").unwrap_err().to_string();
        assert!(e.starts_with("bad size"), "{e}");
    }

    #[test]
    fn bad_rates_are_refused_with_the_text() {
        for s in ["", "K", "fast", "-5", "1.2.3M", "5T", "1e3", "K5"] {
            assert!(parse_rate(s).is_err(), "{s:?}");
        }
        let e = parse_rate("fast").unwrap_err().to_string();
        assert!(e.contains("\"fast\"") && !e.contains('\n'), "{e}");
        assert!(matches!(
            parse_rate("99999999999999999999G"),
            Err(UnitError::TooLarge(_))
        ));
    }

    #[test]
    fn durations_take_units_and_bare_seconds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2H"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn bad_durations_are_refused() {
        for s in ["", "s", "10x", "1h30", "h1", "-5s", "1.5h"] {
            assert!(parse_duration(s).is_err(), "{s:?}");
        }
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(UnitError::TooLarge(_))
        ));
        assert!(matches!(
            parse_duration("999999999999999999d"),
            Err(UnitError::TooLarge(_))
        ));
    }

    #[test]
    fn ratios_are_finite_and_not_negative() {
        assert_eq!(parse_ratio("1.5"), Ok(1.5));
        assert_eq!(parse_ratio("0"), Ok(0.0));
        for s in ["", "-1", "inf", "NaN", "x"] {
            assert!(parse_ratio(s).is_err(), "{s:?}");
        }
    }
}
