//! The JSON a workflow builds in apply: step payloads, a fan-out's joined result, a decision's
//! result. Deterministic and integer-only: JSON from outside (the input, params, task results)
//! is checked and split with serde_json's `RawValue`, which validates the text without
//! converting a number, and is copied into the output as it is; everything else is written
//! here from integers and escaped strings.

use serde_json::value::RawValue;

use super::{BranchState, WorkflowId};

/// Whether `text` is one JSON value (surrounding whitespace allowed).
pub fn is_json(text: &str) -> bool {
    serde_json::from_str::<&RawValue>(text).is_ok()
}

/// The items of a JSON array, each as its own text; None when `text` is not an array.
pub fn array_items(text: &str) -> Option<Vec<&str>> {
    let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
    Some(items.into_iter().map(RawValue::get).collect())
}

/// A JSON string literal.
pub fn string(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serializes")
}

/// A task result as JSON: as it is when it is JSON, a string when it is other UTF-8, and
/// `{"base64":"..."}` otherwise; an empty result is null.
pub fn result_json(result: &[u8]) -> String {
    if result.is_empty() {
        return "null".into();
    }
    match std::str::from_utf8(result) {
        Ok(text) if is_json(text) => text.trim().to_string(),
        Ok(text) => string(text),
        Err(_) => format!("{{\"base64\":\"{}\"}}", base64(result)),
    }
}

/// A step task's payload (workflows.proto, "Payload").
pub struct Envelope<'a> {
    pub workflow_id: WorkflowId,
    pub workflow: &'a str,
    pub step: &'a str,
    /// JSON.
    pub input: &'a str,
    /// JSON.
    pub params: &'a str,
    /// (step name, its result as JSON; None for a skipped step).
    pub results: Vec<(&'a str, Option<&'a str>)>,
    /// A fan-out branch: its index, and its item for an `over` fan-out.
    pub branch: Option<(u32, Option<&'a str>)>,
    /// A compensation task: the step it undoes.
    pub compensating: Option<&'a str>,
}

impl Envelope<'_> {
    /// The payload's JSON text, fields in a fixed order.
    pub fn to_json(&self) -> String {
        let mut out = format!(
            "{{\"workflow_id\":{},\"workflow\":{},\"step\":{},\"input\":{},\"params\":{},\"results\":{{",
            self.workflow_id,
            string(self.workflow),
            string(self.step),
            self.input,
            self.params
        );
        for (i, (name, result)) in self.results.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&string(name));
            out.push(':');
            out.push_str(result.unwrap_or("null"));
        }
        out.push('}');
        if let Some((index, item)) = self.branch {
            out.push_str(&format!(",\"branch\":{{\"index\":{index}"));
            if let Some(item) = item {
                out.push_str(",\"item\":");
                out.push_str(item);
            }
            out.push('}');
        }
        if let Some(step) = self.compensating {
            out.push_str(",\"compensating\":");
            out.push_str(&string(step));
        }
        out.push('}');
        out
    }
}

/// One branch as a fan-out's joined result shows it.
pub struct BranchView<'a> {
    pub state: BranchState,
    pub item: Option<&'a str>,
    pub result: &'a str,
    pub error: &'a str,
}

/// A fan-out step's result: every branch with its state (and result or error), and the counts.
pub fn joined(branches: &[BranchView]) -> String {
    let mut out = String::from("{\"branches\":[");
    let mut counts = [0u64; 4];
    for (index, branch) in branches.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let (label, slot) = match branch.state {
            BranchState::Succeeded => ("succeeded", 0),
            BranchState::Failed => ("failed", 1),
            BranchState::TimedOut => ("timed_out", 2),
            BranchState::Canceled | BranchState::Pending | BranchState::Running => ("canceled", 3),
        };
        counts[slot] += 1;
        out.push_str(&format!("{{\"index\":{index},\"state\":\"{label}\""));
        if let Some(item) = branch.item {
            out.push_str(",\"item\":");
            out.push_str(item);
        }
        if branch.state == BranchState::Succeeded {
            out.push_str(",\"result\":");
            out.push_str(branch.result);
        } else if !branch.error.is_empty() {
            out.push_str(",\"error\":");
            out.push_str(&string(branch.error));
        }
        out.push('}');
    }
    out.push_str(&format!(
        "],\"succeeded\":{},\"failed\":{},\"timed_out\":{},\"canceled\":{}}}",
        counts[0], counts[1], counts[2], counts[3]
    ));
    out
}

/// A decision step's result.
pub fn decision(decision_id: u64, status: &str, outcome: Option<&str>) -> String {
    let outcome = outcome.map_or_else(|| "null".to_string(), string);
    format!(
        "{{\"decision_id\":{decision_id},\"status\":{},\"outcome\":{outcome}}}",
        string(status)
    )
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(word >> shift) as usize & 63]));
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
    fn results_become_json_without_touching_numbers() {
        assert_eq!(result_json(b""), "null");
        assert_eq!(
            result_json(b" {\"x\": 1.10000000000000000001e3} "),
            "{\"x\": 1.10000000000000000001e3}"
        );
        assert_eq!(result_json(b"plain text"), "\"plain text\"");
        assert_eq!(result_json(&[0xff, 0x00, 0x10]), "{\"base64\":\"/wAQ\"}");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"abc"), "YWJj");
    }

    #[test]
    fn arrays_split_into_their_items_as_written() {
        assert_eq!(
            array_items("[1.50, {\"a\":[2]}, \"x\"]"),
            Some(vec!["1.50", "{\"a\":[2]}", "\"x\""])
        );
        assert_eq!(array_items("{\"a\":1}"), None);
        assert_eq!(array_items("[]"), Some(vec![]));
    }

    #[test]
    fn the_envelope_is_exact_json() {
        let envelope = Envelope {
            workflow_id: 7,
            workflow: "content-pipeline",
            step: "write",
            input: "{\"topic\":\"raft\"}",
            params: "null",
            results: vec![("research", Some("[1,2]")), ("skipped", None)],
            branch: Some((2, Some("\"b\""))),
            compensating: None,
        };
        let json = envelope.to_json();
        assert_eq!(
            json,
            "{\"workflow_id\":7,\"workflow\":\"content-pipeline\",\"step\":\"write\",\
             \"input\":{\"topic\":\"raft\"},\"params\":null,\"results\":{\"research\":[1,2],\
             \"skipped\":null},\"branch\":{\"index\":2,\"item\":\"b\"}}"
        );
        assert!(is_json(&json));
        assert_eq!(
            decision(9, "decided", Some("yes")),
            "{\"decision_id\":9,\"status\":\"decided\",\"outcome\":\"yes\"}"
        );
    }
}
