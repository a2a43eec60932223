//! Integers in request bodies, read the way JSON Schema defines them: a
//! number with no fractional part is an integer, so `4096.0` is `4096`.
//! serde's integer types refuse it, and clients that hold every number as a
//! float (JavaScript, some Python serialisers) send it that way.

use serde::Deserialize;
use serde::de::{Deserializer, Error};

fn integral<'de, D: Deserializer<'de>>(
    d: D,
    what: &str,
    min: u64,
    max: u64,
) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    let v = if let Some(v) = n.as_u64() {
        Some(v)
    } else if let Some(f) = n.as_f64() {
        // Exactly representable and whole: 2^53 bounds every value accepted.
        (f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&f)).then_some(f as u64)
    } else {
        None
    };
    match v {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(D::Error::custom(format!(
            "{what} must be a whole number within {min}..={max}, got {n}"
        ))),
    }
}

/// A TCP port, 1..=65535.
pub fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    integral(d, "a port", 1, 65535).map(|v| v as u16)
}

/// An optional TCP port (`null` or absent is `None`).
pub fn opt_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => port(n).map(Some).map_err(D::Error::custom),
    }
}

/// A size in MiB, 1 MiB to 1 PiB.
pub fn size_mb<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    integral(d, "a size in MiB", 1, 1 << 30)
}

/// An optional size in MiB.
pub fn opt_size_mb<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => size_mb(n).map(Some).map_err(D::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize, Debug)]
    struct T {
        #[serde(deserialize_with = "super::port")]
        p: u16,
    }

    fn parse(v: &str) -> Result<u16, String> {
        serde_json::from_str::<T>(&format!(r#"{{"p":{v}}}"#))
            .map(|t| t.p)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers() {
        assert_eq!(parse("8123"), Ok(8123));
        assert_eq!(parse("8123.0"), Ok(8123));
        assert_eq!(parse("8.123e3"), Ok(8123));
        assert!(parse("8123.5").unwrap_err().contains("whole number"));
        assert!(parse("0").unwrap_err().contains("1..=65535"));
        assert!(parse("65536").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("\"80\"").is_err());
    }
}
