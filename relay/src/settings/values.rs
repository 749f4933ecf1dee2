//! Value types of the configuration file: socket addresses, periods written
//! as text such as `30s`, and secrets that never serialize in clear.
//!
//! Each type's deserialization error ends in a fix that starts with
//! [`FIX_PREFIX`], which the loader rewrites to name the key. The loader
//! also adds the rejected value.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::config::parse_duration;

/// Start of the fix in a value error; the loader puts the key in place of "it".
pub(super) const FIX_PREFIX: &str = "set it to";

/// Replacement text for a secret in printed settings.
pub const REDACTED: &str = "<redacted>";

/// A socket address, written as `IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address(pub SocketAddr);

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.trim().parse().map(Address).map_err(|_| {
            de::Error::custom(format!(
                "not an address like 127.0.0.1:8443; {FIX_PREFIX} IP:PORT (port 0 picks a free port)"
            ))
        })
    }
}

/// A period, written as a number and a unit such as `30s`, `500ms`, `5m`,
/// `24h`, `7d`, `2w` or `6y`, or as a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub Duration);

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PeriodVisitor)
    }
}

struct PeriodVisitor;

impl Visitor<'_> for PeriodVisitor {
    type Value = Period;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a period such as 30s")
    }

    // A bare number could mean seconds to one reader and days to another,
    // and a retention period read the wrong way deletes data.
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Period, E> {
        Err(E::custom(period_fix("a number without a unit")))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Period, E> {
        Err(E::custom(period_fix("a number without a unit")))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Period, E> {
        parse_duration(text)
            .map(Period)
            .map_err(|_| E::custom(period_fix("not a period")))
    }
}

fn period_fix(problem: &str) -> String {
    format!(
        "{problem}; {FIX_PREFIX} a number and a unit: ms, s, m, h, d, w or y (a year is 366 days)"
    )
}

/// Writes a duration in the largest unit that divides it exactly, in the
/// form [`parse_duration`] reads back.
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() != 0 {
        return format!("{}ms", duration.as_millis());
    }
    let seconds = duration.as_secs();
    let units = [
        ("y", 366 * 24 * 60 * 60),
        ("d", 24 * 60 * 60),
        ("h", 60 * 60),
        ("m", 60),
    ];
    for (unit, size) in units {
        if seconds != 0 && seconds.is_multiple_of(size) {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// A secret given inline, such as a key or a URL with a password. It is
/// zeroized on drop and serializes and debug-prints as [`REDACTED`], so
/// printed settings never contain it.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Returns the secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|text| Secret(Zeroizing::new(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_in_largest_exact_unit() {
        let cases = [
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::ZERO, "0s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(86_400), "1d"),
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::from_secs(14 * 86_400), "14d"),
            (Duration::from_secs(6 * 366 * 86_400), "6y"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text).unwrap(), duration, "{text}");
        }
    }

    #[test]
    fn secret_never_prints() {
        let secret = Secret(Zeroizing::new("hunter2".into()));
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(
            serde_json::to_string(&secret).unwrap(),
            format!("\"{REDACTED}\"")
        );
    }
}
