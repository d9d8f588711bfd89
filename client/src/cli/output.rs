//! How results are printed: text for people, JSON for programs, aligned tables, and bytes in both.
//!
//! Keys and values are bytes. In JSON they appear as a string under their own name (`"key"`) when
//! they are valid UTF-8, and otherwise as standard base64 under `"<name>_base64"`. In text they
//! appear as UTF-8 when valid, otherwise with non-printable bytes escaped (`\xNN`).

use std::io::Write;

use conclave_client::{Header, KeyValue, ReadConsistency};
use serde_json::{json, Map, Value};

use super::{CliError, CliResult};

/// Writes `text` and a newline to stdout. A closed stdout (`conclave kv watch | head -1`) ends the
/// process quietly with success: the reader has what it wanted.
pub fn line(text: &str) -> CliResult {
    let mut stdout = std::io::stdout().lock();
    let result = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match result {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => Err(CliError::failed(format!("writing to stdout: {error}"))),
    }
}

/// Writes raw bytes to stdout, unchanged.
pub fn raw(bytes: &[u8]) -> CliResult {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => Err(CliError::failed(format!("writing to stdout: {error}"))),
    }
}

/// Prints one JSON document on one line.
pub fn json_line(value: &Value) -> CliResult {
    line(&value.to_string())
}

/// Prints one JSON document, indented for reading.
pub fn json_document(value: &Value) -> CliResult {
    let text = serde_json::to_string_pretty(value).expect("a serde_json::Value always serializes");
    line(&text)
}

/// Bytes for people: UTF-8 when valid, escaped otherwise.
pub fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_string(),
        _ => bytes.escape_ascii().to_string(),
    }
}

/// Adds `bytes` to a JSON object as `name` (UTF-8) or `name_base64`.
pub fn insert_bytes(object: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(name.to_string(), Value::String(text.to_string())),
        Err(_) => object.insert(format!("{name}_base64"), Value::String(base64(bytes))),
    };
}

pub fn kv_json(kv: &KeyValue) -> Value {
    let mut object = Map::new();
    insert_bytes(&mut object, "key", &kv.key);
    insert_bytes(&mut object, "value", &kv.value);
    object.insert("create_revision".into(), kv.create_revision.into());
    object.insert("mod_revision".into(), kv.mod_revision.into());
    object.insert("version".into(), kv.version.into());
    Value::Object(object)
}

pub fn optional_kv_json(kv: Option<&KeyValue>) -> Value {
    kv.map_or(Value::Null, kv_json)
}

pub fn header_json(header: &Header) -> Value {
    json!({
        "revision": header.revision,
        "node_id": header.node_id,
        "raft_term": header.raft_term,
        "consistency": consistency_name(header.consistency),
    })
}

pub fn consistency_name(consistency: ReadConsistency) -> &'static str {
    match consistency {
        ReadConsistency::Linearizable => "linearizable",
        ReadConsistency::Serializable => "serializable",
    }
}

/// Rows of cells as columns aligned on the widest cell, separated by two spaces.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            widths[column] = widths[column].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if column + 1 < row.len() {
                let padding = widths[column] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', padding));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.pop();
    out
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn bytes_are_text_when_they_can_be() {
        assert_eq!(text(b"hello world"), "hello world");
        assert_eq!(text(b"a\nb"), "a\\nb");
        assert_eq!(text(&[0x61, 0xff]), "a\\xff");
        let mut object = Map::new();
        insert_bytes(&mut object, "key", b"k");
        insert_bytes(&mut object, "value", &[0xff]);
        assert_eq!(
            Value::Object(object),
            json!({"key": "k", "value_base64": "/w=="})
        );
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["ID".to_string(), "ROLE".to_string(), "TERM".to_string()],
            vec!["1".to_string(), "leader".to_string(), "12".to_string()],
            vec!["10".to_string(), "unreachable".to_string(), "-".to_string()],
        ];
        assert_eq!(
            table(&rows),
            "ID  ROLE         TERM\n1   leader       12\n10  unreachable  -"
        );
    }
}
