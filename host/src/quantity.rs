//! The few quantity conversions the host needs: Bay's memory strings and
//! storage sizes.

/// What `bay_memory_to_k8s` takes, as a JSON Schema pattern for the API
/// document: a positive decimal and one of Bay's or Kubernetes' units.
pub const MEMORY_PATTERN: &str = r"^([1-9][0-9]*(\.[0-9]+)?|0\.[0-9]*[1-9][0-9]*)(k|K|kb|KB|m|M|mb|MB|g|G|gb|GB|t|T|Ki|Mi|Gi|Ti)?$";

static MEMORY: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(MEMORY_PATTERN).expect("valid pattern"));

/// Bay writes memory as "1g", "512m" or Kubernetes form ("1Gi"); Kubernetes
/// reads "512m" as 0.512 bytes, so Bay's driver maps them to binary units.
pub fn bay_memory_to_k8s(m: &str) -> Result<String, String> {
    if !MEMORY.is_match(m) {
        return Err(format!(
            "memory {m:?} is not a size like \"512m\", \"1g\" or \"1Gi\""
        ));
    }
    let digits = m.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = match &m[digits.len()..] {
        "k" | "K" | "kb" | "KB" => "Ki",
        "m" | "M" | "mb" | "MB" => "Mi",
        "g" | "G" | "gb" | "GB" => "Gi",
        "t" | "T" => "Ti",
        other => other, // "", or already Ki/Mi/Gi/Ti: the pattern allows no other
    };
    Ok(format!("{digits}{unit}"))
}

/// Bytes of a Kubernetes storage quantity ("1Gi", "500M", "1073741824").
pub fn parse_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let digits = q.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: f64 = digits.parse().ok()?;
    let mult: f64 = match &q[digits.len()..] {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        _ => return None,
    };
    (n >= 0.0 && n.is_finite()).then_some((n * mult) as u64)
}

/// Cores as a quantity, in millicores when fractional ("0.5" → "500m").
pub fn cpu(cores: f64) -> String {
    // Never 0 for a positive amount: a zero limit means no limit at all.
    let milli = ((cores * 1000.0).round() as u64).max(1);
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_cpu_amount_is_one_millicore_not_unlimited() {
        assert_eq!(cpu(0.0001), "1m");
        assert_eq!(cpu(0.5), "500m");
        assert_eq!(cpu(2.0), "2");
    }

    #[test]
    fn bay_memory() {
        assert_eq!(bay_memory_to_k8s("1g").unwrap(), "1Gi");
        assert_eq!(bay_memory_to_k8s("512m").unwrap(), "512Mi");
        assert_eq!(bay_memory_to_k8s("1Gi").unwrap(), "1Gi");
        assert!(bay_memory_to_k8s("lots").is_err());
        assert!(bay_memory_to_k8s("1q").is_err());
        assert_eq!(bay_memory_to_k8s("0.5g").unwrap(), "0.5Gi");
        for bad in ["", "0g", "0", " 1g", "1e5", "-1g", "1.g"] {
            assert!(bay_memory_to_k8s(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bytes_and_cpu() {
        assert_eq!(parse_bytes("1Gi"), Some(1 << 30));
        assert_eq!(parse_bytes("x"), None);
        assert_eq!(cpu(0.5), "500m");
        assert_eq!(cpu(2.0), "2");
    }
}
