//! Human-readable sizes and durations for TOML configs: `size = "256MiB"`,
//! `interval = "1s"`. Use with `#[serde(with = "augur_core::units::bytes")]` or
//! `#[serde(with = "augur_core::units::duration")]`.

use std::fmt;
use std::time::Duration;

/// Parses `"256MiB"`, `"1.5GiB"`, `"10MB"`, `"4096"` (bytes), `"64k"`.
pub fn parse_bytes(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| UnitError::Size(s.to_owned()))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "ti" | "tib" => 1 << 40,
        _ => return Err(UnitError::Size(s.to_owned())),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(UnitError::Size(s.to_owned()));
    }
    Ok(v as u64)
}

/// Formats bytes with a binary unit (`256MiB`), exact where it can be.
pub fn format_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (name, m) in UNITS {
        if b >= m && b.is_multiple_of(m) {
            return format!("{}{name}", b / m);
        }
    }
    format!("{b}B")
}

/// Parses `"1s"`, `"250ms"`, `"14d"`, `"1y"`, `"1h 30m"`.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    humantime::parse_duration(s.trim()).map_err(|_| UnitError::Duration(s.to_owned()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid size {0:?} (expected e.g. \"256MiB\", \"1GB\", \"4096\")")]
    Size(String),
    #[error("invalid duration {0:?} (expected e.g. \"1s\", \"250ms\", \"14d\")")]
    Duration(String),
}

/// Serde adapter for byte sizes: accepts `"256MiB"` or a plain integer.
pub mod bytes {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_bytes(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(n),
            Raw::S(s) => parse_bytes(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Serde adapter for durations: `"1s"`, `"14d"`.
pub mod duration {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// A duration that prints the way it is written in configs.
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes(" 64k "), Ok(64_000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-1MiB").is_err());
        assert!(parse_bytes("1PiB").is_err());
    }

    #[test]
    fn sizes_format_round_trip() {
        for b in [256u64 << 20, 1 << 30, 1000, 3 << 10] {
            assert_eq!(parse_bytes(&format_bytes(b)), Ok(b));
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("14d"), Ok(Duration::from_secs(14 * 86400)));
        assert!(parse_duration("soon").is_err());
    }
}
