//! Checks of requests against the limits of tasks.proto, agents.proto and decisions.proto, made
//! before sending so that obvious mistakes fail at once, naming the field. The server checks them again and is the
//! authority; these checks only ever refuse what it would refuse too.

use std::collections::HashMap;

use conclave_proto::limits::{
    MAX_CAPABILITIES, MAX_ID_STRING_BYTES, MAX_LABELS, MAX_LABEL_VALUE_BYTES, MAX_MESSAGE_BYTES,
    MAX_NAME_BYTES, MAX_SHORT_STRING_BYTES,
};

use crate::error::{Error, Result};

/// A queue or agent name: 1 ..= 128 bytes of `[A-Za-z0-9._:/-]`.
pub(crate) fn check_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_input(format!("{field} is empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid_input(format!(
            "{field} is {} bytes; the limit is {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-')))
    {
        return Err(Error::invalid_input(format!(
            "{field} {name:?} contains {bad:?}; names use only A-Z a-z 0-9 . _ : / -"
        )));
    }
    Ok(())
}

/// At most `max` bytes.
pub(crate) fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::invalid_input(format!(
            "{field} is {} bytes; the limit is {max}",
            value.len()
        )));
    }
    Ok(())
}

/// A message (error, reason, question, rationale): at most 4096 bytes.
pub(crate) fn check_message(field: &str, value: &str) -> Result<()> {
    check_len(field, value, MAX_MESSAGE_BYTES)
}

/// An idempotency key or correlation id: at most 256 bytes.
pub(crate) fn check_id_string(field: &str, value: &str) -> Result<()> {
    check_len(field, value, MAX_ID_STRING_BYTES)
}

/// At most 32 capabilities, each 1 ..= 128 bytes.
pub(crate) fn check_capabilities(capabilities: &[String]) -> Result<()> {
    if capabilities.len() > MAX_CAPABILITIES {
        return Err(Error::invalid_input(format!(
            "{} capabilities; the limit is {MAX_CAPABILITIES}",
            capabilities.len()
        )));
    }
    for capability in capabilities {
        if capability.is_empty() {
            return Err(Error::invalid_input("empty capability"));
        }
        check_len("capability", capability, MAX_SHORT_STRING_BYTES)?;
    }
    Ok(())
}

/// At most 32 labels (or metadata entries), keys 1 ..= 128 bytes, values at most 1024 bytes.
pub(crate) fn check_labels(field: &str, labels: &HashMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid_input(format!(
            "{} {field}; the limit is {MAX_LABELS}",
            labels.len()
        )));
    }
    for (key, value) in labels {
        if key.is_empty() {
            return Err(Error::invalid_input(format!("{field}: empty key")));
        }
        check_len(&format!("{field} key {key:?}"), key, MAX_SHORT_STRING_BYTES)?;
        check_len(
            &format!("{field} value of {key:?}"),
            value,
            MAX_LABEL_VALUE_BYTES,
        )?;
    }
    Ok(())
}

/// A value within `range`, or 0 (the server's default) when `zero_means_default`.
pub(crate) fn check_range_u64(
    field: &str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
    zero_means_default: bool,
) -> Result<()> {
    if (zero_means_default && value == 0) || range.contains(&value) {
        return Ok(());
    }
    Err(Error::invalid_input(format!(
        "{field} is {value}; it must be within {} ..= {}{}",
        range.start(),
        range.end(),
        if zero_means_default {
            " (or 0 for the default)"
        } else {
            ""
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("queue", "research").is_ok());
        assert!(check_name("queue", "a.b_c:d/e-1").is_ok());
        assert!(check_name("queue", "").is_err());
        assert!(check_name("queue", "has space").is_err());
        assert!(check_name("queue", "ünï").is_err());
        assert!(check_name("queue", &"q".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(check_name("queue", &"q".repeat(MAX_NAME_BYTES + 1)).is_err());
    }

    #[test]
    fn labels_and_capabilities_are_bounded() {
        let mut labels = HashMap::new();
        labels.insert("k".to_string(), "v".to_string());
        assert!(check_labels("labels", &labels).is_ok());
        labels.insert(String::new(), "v".to_string());
        assert!(check_labels("labels", &labels).is_err());
        let many: HashMap<String, String> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(check_labels("labels", &many).is_err());
        assert!(check_capabilities(&["gpu".to_string()]).is_ok());
        assert!(check_capabilities(&[String::new()]).is_err());
        assert!(check_capabilities(&vec!["c".to_string(); MAX_CAPABILITIES + 1]).is_err());
    }

    #[test]
    fn ranges_allow_the_default() {
        assert!(check_range_u64("lease_ms", 0, 1_000..=10_000, true).is_ok());
        assert!(check_range_u64("lease_ms", 0, 1..=10, false).is_err());
        assert!(check_range_u64("lease_ms", 11, 1..=10, true).is_err());
    }
}
