//! Kubernetes resource quantities as numbers: cores for cpu, bytes otherwise.
//! Precision beyond what f64 holds does not matter for policy bounds.

pub fn parse(q: &str) -> Result<f64, String> {
    let q = q.trim();
    if q.is_empty() {
        return Err("empty quantity".into());
    }
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    // Decimal exponent form, e.g. "1e3".
    let (num, suffix) = if let Some(rest) = suffix.strip_prefix(['e', 'E']) {
        if !rest.is_empty()
            && rest
                .trim_start_matches(['+', '-'])
                .chars()
                .all(|c| c.is_ascii_digit())
        {
            let exp: i32 = rest
                .parse()
                .map_err(|_| format!("invalid quantity {q:?}"))?;
            let n: f64 = num.parse().map_err(|_| format!("invalid quantity {q:?}"))?;
            return Ok(n * 10f64.powi(exp));
        }
        (num, suffix)
    } else {
        (num, suffix)
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid quantity {q:?}"))?;
    if n < 0.0 {
        return Err(format!("negative quantity {q:?}"));
    }
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        other => return Err(format!("invalid quantity {q:?}: unknown suffix {other:?}")),
    };
    Ok(n * mult)
}

/// Cores as a canonical quantity: whole cores when exact, else millicores.
pub fn format_cpu(cores: f64) -> String {
    let milli = (cores * 1000.0).round() as u64;
    if milli.is_multiple_of(1000) {
        format!("{}", milli / 1000)
    } else {
        format!("{milli}m")
    }
}

/// Bytes with the largest binary suffix that divides them exactly.
pub fn format_bytes(bytes: f64) -> String {
    let b = bytes.round() as u64;
    for (suffix, unit) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if b >= unit && b.is_multiple_of(unit) {
            return format!("{}{suffix}", b / unit);
        }
    }
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_forms() {
        assert_eq!(parse("500m").unwrap(), 0.5);
        assert_eq!(parse("2").unwrap(), 2.0);
        assert_eq!(parse("1Gi").unwrap(), 1073741824.0);
        assert_eq!(parse("512Mi").unwrap(), 536870912.0);
        assert_eq!(parse("1G").unwrap(), 1e9);
        assert_eq!(parse("1e3").unwrap(), 1000.0);
        assert!(parse("1gb").is_err());
        assert!(parse("").is_err());
        assert!(parse("-1").is_err());
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(format_cpu(0.5), "500m");
        assert_eq!(format_cpu(2.0), "2");
        assert_eq!(format_bytes(1073741824.0), "1Gi");
        assert_eq!(format_bytes(1536.0 * 1024.0 * 1024.0), "1536Mi");
        assert_eq!(format_bytes(1000.0), "1000");
    }
}
