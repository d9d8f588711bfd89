//! The rules of topics' subjects and messages (topics.proto), written once: the node refuses a
//! broken one with INVALID_ARGUMENT and the client before sending.
//!
//! A subject is dot-separated tokens (`research.papers.new`): 1 ..= TOPIC_SUBJECT_TOKENS_MAX
//! non-empty tokens of printable ASCII other than `.`, `*`, `>` and space, at most
//! TOPIC_SUBJECT_BYTES_MAX bytes in all. A pattern may also have `*` as a whole token (any one
//! token) and `>` as its last token (one or more tokens).

use std::collections::BTreeMap;

use super::{id_string, max_bytes, refuse, Result};
use crate::limits::{
    TOPIC_HEADERS_MAX, TOPIC_HEADER_BYTES_MAX, TOPIC_MESSAGE_DATA_BYTES_MAX,
    TOPIC_MESSAGE_KEY_BYTES_MAX, TOPIC_NAME_BYTES_MAX, TOPIC_SUBJECT_BYTES_MAX,
    TOPIC_SUBJECT_TOKENS_MAX,
};

/// A subject a message is published to: no wildcards.
pub fn subject(field: &str, value: &str) -> Result {
    tokens(field, value, false)
}

/// A subject pattern: `*` tokens anywhere, `>` as the last token.
pub fn pattern(field: &str, value: &str) -> Result {
    tokens(field, value, true)
}

/// A topic name: a subject of at most TOPIC_NAME_BYTES_MAX bytes (its default patterns are
/// `NAME` and `NAME.>`).
pub fn topic_name(field: &str, value: &str) -> Result {
    max_bytes(
        field,
        value.as_bytes(),
        TOPIC_NAME_BYTES_MAX,
        "TOPIC_NAME_BYTES_MAX",
    )?;
    subject(field, value)
}

fn tokens(field: &str, value: &str, wildcards: bool) -> Result {
    if value.is_empty() {
        return refuse(format!("{field}: must not be empty"));
    }
    max_bytes(
        field,
        value.as_bytes(),
        TOPIC_SUBJECT_BYTES_MAX,
        "TOPIC_SUBJECT_BYTES_MAX",
    )?;
    let tokens: Vec<&str> = value.split('.').collect();
    if tokens.len() > TOPIC_SUBJECT_TOKENS_MAX {
        return refuse(format!(
            "{field}: {} tokens exceeds the limit of {TOPIC_SUBJECT_TOKENS_MAX} (TOPIC_SUBJECT_TOKENS_MAX)",
            tokens.len()
        ));
    }
    let last = tokens.len() - 1;
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return refuse(format!(
                "{field}: {value:?} has an empty token; tokens are separated by single dots"
            ));
        }
        let wildcard = *token == "*" || (*token == ">" && i == last);
        if wildcard && wildcards {
            continue;
        }
        if let Some(c) = token
            .chars()
            .find(|c| !c.is_ascii_graphic() || matches!(c, '*' | '>'))
        {
            let what = if wildcards {
                "patterns use `*` as a whole token and `>` as the last token only"
            } else {
                "a subject has no wildcards"
            };
            return refuse(format!("{field}: {value:?} contains {c:?}; {what}"));
        }
    }
    Ok(())
}

/// A message's key, headers, data and idempotency key.
pub fn message(
    field: &str,
    key: &[u8],
    headers: &BTreeMap<String, String>,
    data: &[u8],
    idempotency_key: &str,
) -> Result {
    max_bytes(
        &format!("{field}.key"),
        key,
        TOPIC_MESSAGE_KEY_BYTES_MAX,
        "TOPIC_MESSAGE_KEY_BYTES_MAX",
    )?;
    max_bytes(
        &format!("{field}.data"),
        data,
        TOPIC_MESSAGE_DATA_BYTES_MAX,
        "TOPIC_MESSAGE_DATA_BYTES_MAX",
    )?;
    if headers.len() > TOPIC_HEADERS_MAX {
        return refuse(format!(
            "{field}.headers: {} headers exceeds the limit of {TOPIC_HEADERS_MAX} (TOPIC_HEADERS_MAX)",
            headers.len()
        ));
    }
    let bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > TOPIC_HEADER_BYTES_MAX {
        return refuse(format!(
            "{field}.headers: {bytes} bytes of names and values exceeds the limit of {TOPIC_HEADER_BYTES_MAX} (TOPIC_HEADER_BYTES_MAX)"
        ));
    }
    if headers.keys().any(String::is_empty) {
        return refuse(format!("{field}.headers: a header name must not be empty"));
    }
    if !idempotency_key.is_empty() {
        id_string(&format!("{field}.idempotency_key"), idempotency_key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_patterns() {
        assert!(subject("s", "research.papers.new").is_ok());
        assert!(subject("s", "research.*").is_err());
        assert!(subject("s", "research..new").is_err());
        assert!(subject("s", "").is_err());
        assert!(subject("s", "a b").is_err());
        assert!(pattern("p", "research.*.new").is_ok());
        assert!(pattern("p", "research.>").is_ok());
        assert!(pattern("p", ">").is_ok());
        assert!(pattern("p", "research.>.new").is_err());
        assert!(pattern("p", "research.a*").is_err());
        let long = vec!["a"; TOPIC_SUBJECT_TOKENS_MAX + 1].join(".");
        assert!(subject("s", &long)
            .unwrap_err()
            .0
            .contains("TOPIC_SUBJECT_TOKENS_MAX"));
    }
}
