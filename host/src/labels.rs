//! Kubernetes name and label rules, checked before any API call so a bad
//! value gets an error that names it, and the labels Berth puts on objects.

use std::collections::BTreeMap;

const MAX_LABEL_VALUE: usize = 63;

/// The rules below as JSON Schema patterns, for the OpenAPI document. The
/// validators here enforce exactly these (with messages that say which rule
/// failed); `tests::patterns_agree_with_the_validators` holds them together.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A non-empty label value.
pub const VALUE_PATTERN: &str = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
/// A label value, possibly empty.
pub const OPTIONAL_VALUE_PATTERN: &str = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$";
pub const KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// The schema of a label map: keys and values as Kubernetes takes them.
pub fn label_map_schema() -> utoipa::openapi::Object {
    label_map(0)
}

/// A label map with at least one entry: what a selector needs.
pub fn label_selector_schema() -> utoipa::openapi::Object {
    label_map(1)
}

fn label_map(min: usize) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .min_properties((min > 0).then_some(min))
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(KEY_PATTERN))
                .max_length(Some(317)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(OPTIONAL_VALUE_PATTERN))
                .max_length(Some(MAX_LABEL_VALUE)),
        ))
        .build()
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// A label value: empty, or at most 63 characters of `[A-Za-z0-9_.-]`,
/// alphanumeric at both ends.
pub fn validate_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    if v.len() > MAX_LABEL_VALUE {
        return Err(format!(
            "{v:?} is {} characters long; label values may have at most 63",
            v.len()
        ));
    }
    if !v
        .chars()
        .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{v:?} may contain only letters, digits, '-', '_' and '.'"
        ));
    }
    if !v.starts_with(is_alnum) || !v.ends_with(is_alnum) {
        return Err(format!("{v:?} must start and end with a letter or digit"));
    }
    Ok(())
}

/// A label key: optional DNS-subdomain prefix and `/`, then a name part with
/// the value rules (non-empty).
pub fn validate_label_key(k: &str) -> Result<(), String> {
    let name = match k.split_once('/') {
        Some((prefix, name)) => {
            validate_dns_subdomain(prefix).map_err(|e| format!("label key {k:?}: prefix {e}"))?;
            name
        }
        None => k,
    };
    if name.is_empty() {
        return Err(format!("label key {k:?} has an empty name"));
    }
    validate_label_value(name).map_err(|e| format!("label key {k:?}: {e}"))
}

/// An RFC 1123 label: what namespaces and container names must be.
pub fn validate_dns_label(v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 63 {
        return Err(format!("{v:?} must be 1 to 63 characters"));
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "{v:?} may contain only lower-case letters, digits and '-'"
        ));
    }
    if v.starts_with('-') || v.ends_with('-') {
        return Err(format!("{v:?} must start and end with a letter or digit"));
    }
    Ok(())
}

/// An RFC 1123 subdomain: what Pod and PVC names must be.
/// A Kubernetes object name (RFC 1123 subdomain as Kubernetes checks it:
/// up to 253 characters, no limit per dot-separated part).
pub fn validate_dns_subdomain(v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 253 {
        return Err(format!("{v:?} must be 1 to 253 characters"));
    }
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    if !v.split('.').all(part_ok) {
        return Err(format!(
            "{v:?} is not a valid Kubernetes name (lower-case letters, digits, '-' and '.', alphanumeric at both ends)"
        ));
    }
    Ok(())
}

pub fn validate_label_prefix(p: &str) -> Result<(), String> {
    validate_dns_subdomain(p).map(|_| ())
}

/// Berth's label keys, Bay's names: `<prefix>.<name>`.
pub struct LabelKeys {
    prefix: String,
}

impl LabelKeys {
    pub fn new(prefix: &str) -> LabelKeys {
        LabelKeys {
            prefix: prefix.to_string(),
        }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    pub fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }
    pub fn managed(&self) -> String {
        self.key("managed")
    }
}

/// Checks caller-given labels, naming the first bad key or value.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in labels {
        validate_label_key(k)?;
        validate_label_value(v).map_err(|e| format!("label {k}: {e}"))?;
    }
    Ok(())
}

/// A label selector string from exact matches, every part validated.
pub fn selector(labels: &BTreeMap<String, String>) -> Result<String, String> {
    validate_labels(labels)?;
    Ok(labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values() {
        assert!(validate_label_value("sess-1.a_b").is_ok());
        assert!(validate_label_value("").is_ok());
        assert!(
            validate_label_value("alice@example.com")
                .unwrap_err()
                .contains("alice@example.com")
        );
        assert!(
            validate_label_value(&"a".repeat(64))
                .unwrap_err()
                .contains("64 characters")
        );
        assert!(validate_label_value("-a").is_err());
    }

    #[test]
    fn patterns_agree_with_the_validators() {
        let name = regex::Regex::new(NAME_PATTERN).unwrap();
        let value = regex::Regex::new(OPTIONAL_VALUE_PATTERN).unwrap();
        let key = regex::Regex::new(KEY_PATTERN).unwrap();
        for v in [
            "a",
            "a.b",
            "a-b",
            "A",
            "a_b",
            "-a",
            "a-",
            "a..b",
            "a.-b",
            "",
            "é",
            "a b",
            "a/b",
            "bay.owner",
            "example.com/x",
            "x/",
            "/x",
            "Ab.c_d-e",
            &"a".repeat(63),
            &"a".repeat(64),
            &format!("bay-session-{}", "a".repeat(63)),
            &"a".repeat(253),
            &"a".repeat(254),
        ] {
            assert_eq!(
                name.is_match(v) && v.len() <= 253,
                validate_dns_subdomain(v).is_ok(),
                "name {v:?}"
            );
            assert_eq!(
                value.is_match(v),
                validate_label_value(v).is_ok(),
                "value {v:?}"
            );
            assert_eq!(key.is_match(v), validate_label_key(v).is_ok(), "key {v:?}");
        }
    }

    #[test]
    fn names() {
        assert!(validate_dns_subdomain("bay-session-s1").is_ok());
        // A 63-character session id (the most a label value holds) makes a
        // 75-character Pod name, which Kubernetes accepts.
        assert!(validate_dns_subdomain(&format!("bay-session-{}", "a".repeat(63))).is_ok());
        assert!(validate_dns_subdomain("Bay").is_err());
        assert!(validate_dns_label("a.b").is_err());
        assert!(validate_label_key("bay.session_id").is_ok());
        assert!(validate_label_key("example.com/x").is_ok());
        assert!(validate_label_key("bad key").is_err());
    }
}
