//! The rules of the wire contract for single fields, written once: the node answers a request
//! that breaks one with INVALID_ARGUMENT, and the client refuses it before sending. Every message
//! starts with the field it is about (`field: ...`) and names the limit that was passed.
//!
//! Only rules on a field's own value live here; what depends on other fields, defaults or the
//! node's state is checked where that is known.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::limits::{
    MAX_CAPABILITIES, MAX_ID_STRING_BYTES, MAX_KEY_BYTES, MAX_LABELS, MAX_LABEL_VALUE_BYTES,
    MAX_MESSAGE_BYTES, MAX_NAME_BYTES, MAX_PRIORITY, MAX_SHORT_STRING_BYTES, MAX_VALUE_BYTES,
};

/// A broken rule, described for people: the field, what is wrong, and the limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

impl From<Invalid> for String {
    fn from(invalid: Invalid) -> String {
        invalid.0
    }
}

pub type Result<T = ()> = std::result::Result<T, Invalid>;

fn refuse<T>(message: String) -> Result<T> {
    Err(Invalid(message))
}

/// At most `limit` bytes; `limit_name` is the constant in [`crate::limits`].
pub fn max_bytes(field: &str, value: &[u8], limit: usize, limit_name: &str) -> Result {
    if value.len() > limit {
        return refuse(format!(
            "{field}: {} bytes exceeds the limit of {limit} ({limit_name})",
            value.len()
        ));
    }
    Ok(())
}

fn non_empty(field: &str, value: &[u8]) -> Result {
    if value.is_empty() {
        return refuse(format!("{field}: must not be empty"));
    }
    Ok(())
}

/// A queue or agent name: 1 ..= MAX_NAME_BYTES bytes of `[A-Za-z0-9._:/-]`.
pub fn name(field: &str, value: &str) -> Result {
    non_empty(field, value.as_bytes())?;
    max_bytes(field, value.as_bytes(), MAX_NAME_BYTES, "MAX_NAME_BYTES")?;
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-')))
    {
        return refuse(format!(
            "{field}: {value:?} contains {c:?}; names are made of [A-Za-z0-9._:/-]"
        ));
    }
    Ok(())
}

/// A capability, content type, label key, option or choice: 1 ..= MAX_SHORT_STRING_BYTES bytes.
pub fn short_string(field: &str, value: &str) -> Result {
    non_empty(field, value.as_bytes())?;
    max_bytes(
        field,
        value.as_bytes(),
        MAX_SHORT_STRING_BYTES,
        "MAX_SHORT_STRING_BYTES",
    )
}

/// A free-form message (error, cancel reason, question, rationale): at most MAX_MESSAGE_BYTES.
pub fn message(field: &str, value: &str) -> Result {
    max_bytes(
        field,
        value.as_bytes(),
        MAX_MESSAGE_BYTES,
        "MAX_MESSAGE_BYTES",
    )
}

/// A progress message or checkpoint: at most MAX_LABEL_VALUE_BYTES.
pub fn progress_text(field: &str, value: &str) -> Result {
    max_bytes(
        field,
        value.as_bytes(),
        MAX_LABEL_VALUE_BYTES,
        "MAX_LABEL_VALUE_BYTES",
    )
}

/// An idempotency key or correlation id: at most MAX_ID_STRING_BYTES.
pub fn id_string(field: &str, value: &str) -> Result {
    max_bytes(
        field,
        value.as_bytes(),
        MAX_ID_STRING_BYTES,
        "MAX_ID_STRING_BYTES",
    )
}

/// At most MAX_CAPABILITIES capabilities, each a short string (`field[i]`).
pub fn capabilities(field: &str, values: &[String]) -> Result {
    if values.len() > MAX_CAPABILITIES {
        return refuse(format!(
            "{field}: {} capabilities exceeds the limit of {MAX_CAPABILITIES} (MAX_CAPABILITIES)",
            values.len()
        ));
    }
    for (i, value) in values.iter().enumerate() {
        short_string(&format!("{field}[{i}]"), value)?;
    }
    Ok(())
}

/// Labels or metadata: at most MAX_LABELS entries, keys short strings, values at most
/// MAX_LABEL_VALUE_BYTES. Entries are checked in key order, so the first one named is the same
/// on every run.
pub fn labels(field: &str, values: &HashMap<String, String>) -> Result {
    if values.len() > MAX_LABELS {
        return refuse(format!(
            "{field}: {} entries exceeds the limit of {MAX_LABELS} (MAX_LABELS)",
            values.len()
        ));
    }
    let sorted: BTreeMap<&String, &String> = values.iter().collect();
    for (key, value) in sorted {
        short_string(&format!("{field} key {key:?}"), key)?;
        max_bytes(
            &format!("{field}[{key:?}]"),
            value.as_bytes(),
            MAX_LABEL_VALUE_BYTES,
            "MAX_LABEL_VALUE_BYTES",
        )?;
    }
    Ok(())
}

/// A W3C Trace Context `traceparent`, version 00: `00-` 32 lowercase hex digits (the trace id,
/// not all zero) `-` 16 (the parent id, not all zero) `-` 2 (the flags), 55 bytes in all.
pub fn traceparent(field: &str, value: &str) -> Result {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |part: &str| part.bytes().all(|b| b == b'0');
    let valid = value.len() == 55
        && parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && !zero(parts[1])
        && hex(parts[2], 16)
        && !zero(parts[2])
        && hex(parts[3], 2);
    if !valid {
        let shown: String = value.chars().take(64).collect();
        return refuse(format!(
            "{field}: {shown:?} is not a W3C traceparent (00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>, lowercase, ids not all zero)"
        ));
    }
    Ok(())
}

/// A task priority: within -MAX_PRIORITY ..= MAX_PRIORITY.
pub fn priority(field: &str, value: i32) -> Result {
    if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&value) {
        return refuse(format!(
            "{field}: {value} is outside the allowed range -{MAX_PRIORITY} ..= {MAX_PRIORITY} (MAX_PRIORITY)"
        ));
    }
    Ok(())
}

/// An id or count that 0 cannot be.
pub fn non_zero(field: &str, value: u64) -> Result {
    if value == 0 {
        return refuse(format!("{field}: must be non-zero"));
    }
    Ok(())
}

/// Within `min ..= max`.
pub fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result {
    if value < min || value > max {
        return refuse(format!(
            "{field}: {value} is outside the allowed range {min} ..= {max}"
        ));
    }
    Ok(())
}

/// 0 (the server's default), or within `min ..= max`.
pub fn in_range_or_default(field: &str, value: u64, min: u64, max: u64) -> Result {
    if value == 0 {
        return Ok(());
    }
    in_range(field, value, min, max)
}

/// `value` with 0 meaning `default`, within `min ..= max`: the value the server goes on with.
pub fn defaulted(field: &str, value: u64, default: u64, min: u64, max: u64) -> Result<u64> {
    let value = if value == 0 { default } else { value };
    in_range(field, value, min, max)?;
    Ok(value)
}

/// A key: 1 ..= MAX_KEY_BYTES bytes.
pub fn key(field: &str, key: &[u8]) -> Result {
    non_empty(field, key)?;
    key_prefix(field, key)
}

/// A key prefix (or where a listing starts after): may be empty, at most MAX_KEY_BYTES bytes.
pub fn key_prefix(field: &str, prefix: &[u8]) -> Result {
    if prefix.len() > MAX_KEY_BYTES {
        return refuse(format!(
            "{field}: {} bytes is longer than the limit of {MAX_KEY_BYTES} bytes (MAX_KEY_BYTES)",
            prefix.len()
        ));
    }
    Ok(())
}

/// A value: at most MAX_VALUE_BYTES bytes.
pub fn value(field: &str, value: &[u8]) -> Result {
    if value.len() > MAX_VALUE_BYTES {
        return refuse(format!(
            "{field}: {} bytes is larger than the limit of {MAX_VALUE_BYTES} bytes (MAX_VALUE_BYTES)",
            value.len()
        ));
    }
    Ok(())
}

pub mod topic;
pub mod workflow;

#[cfg(test)]
mod tests {
    use super::*;

    fn message_of(result: Result) -> String {
        result.expect_err("expected a broken rule").0
    }

    #[test]
    fn names_are_checked() {
        assert!(name("queue", "research").is_ok());
        assert!(name("queue", "a.b_c:d/e-1").is_ok());
        assert_eq!(message_of(name("queue", "")), "queue: must not be empty");
        assert_eq!(
            message_of(name("queue", "has space")),
            "queue: \"has space\" contains ' '; names are made of [A-Za-z0-9._:/-]"
        );
        assert!(name("queue", "ünï").is_err());
        assert!(name("queue", &"q".repeat(MAX_NAME_BYTES)).is_ok());
        assert_eq!(
            message_of(name("queue", &"q".repeat(MAX_NAME_BYTES + 1))),
            "queue: 129 bytes exceeds the limit of 128 (MAX_NAME_BYTES)"
        );
    }

    #[test]
    fn labels_and_capabilities_are_bounded() {
        let mut labels_ = HashMap::new();
        labels_.insert("k".to_string(), "v".to_string());
        assert!(labels("labels", &labels_).is_ok());
        labels_.insert(String::new(), "v".to_string());
        assert_eq!(
            message_of(labels("labels", &labels_)),
            "labels key \"\": must not be empty"
        );
        let many: HashMap<String, String> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(message_of(labels("labels", &many)).contains("(MAX_LABELS)"));
        assert!(capabilities("capabilities", &["gpu".to_string()]).is_ok());
        assert_eq!(
            message_of(capabilities("capabilities", &["gpu".into(), String::new()])),
            "capabilities[1]: must not be empty"
        );
        assert!(
            capabilities("capabilities", &vec!["c".to_string(); MAX_CAPABILITIES + 1]).is_err()
        );
    }

    #[test]
    fn keys_and_values_are_bounded() {
        assert_eq!(message_of(key("key", b"")), "key: must not be empty");
        assert!(key("key", &vec![b'k'; MAX_KEY_BYTES]).is_ok());
        assert_eq!(
            message_of(key("ops[2].key", &vec![b'k'; MAX_KEY_BYTES + 1])),
            "ops[2].key: 4097 bytes is longer than the limit of 4096 bytes (MAX_KEY_BYTES)"
        );
        assert!(key_prefix("prefix", b"").is_ok());
        assert!(value("value", b"").is_ok());
        assert!(value("value", &vec![0; MAX_VALUE_BYTES]).is_ok());
        assert!(message_of(value("value", &vec![0; MAX_VALUE_BYTES + 1]))
            .ends_with("(MAX_VALUE_BYTES)"));
    }

    #[test]
    fn ranges_fill_in_the_default() {
        assert_eq!(defaulted("lease_ms", 0, 30_000, 1_000, 60_000), Ok(30_000));
        assert!(in_range_or_default("lease_ms", 0, 1_000, 60_000).is_ok());
        assert!(in_range_or_default("lease_ms", 10, 1_000, 60_000).is_err());
        assert!(in_range("attempts", 0, 1, 10).is_err());
        assert_eq!(
            message_of(in_range("lease_ms", 10, 1_000, 60_000)),
            "lease_ms: 10 is outside the allowed range 1000 ..= 60000"
        );
        assert!(priority("priority", -MAX_PRIORITY).is_ok());
        assert!(priority("priority", MAX_PRIORITY + 1).is_err());
    }

    #[test]
    fn traceparent_is_the_w3c_version_00_format() {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert!(traceparent("traceparent", good).is_ok());
        for bad in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333x-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
        ] {
            let error = traceparent("traceparent", bad).expect_err(bad);
            assert!(error.to_string().contains("traceparent"), "{error}");
        }
    }
}
