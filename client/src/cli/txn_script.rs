//! The line format of `conclave kv txn` and `conclave txn`: one compare or op per line, one
//! parser for both.
//!
//! ```text
//! # A comment; blank lines are ignored too.
//! compare KEY REV                 holds when KEY's mod_revision is REV (0: KEY must not exist)
//! put KEY VALUE                   set KEY to VALUE
//! del KEY                         delete KEY
//! ```
//!
//! `conclave txn` also takes the cross-primitive lines (`kv txn` refuses them, naming the line):
//!
//! ```text
//! compare key KEY REV             the same as `compare KEY REV`
//! compare lock NAME TOKEN         holds while TOKEN is a current grant of lock NAME (also
//!                                 `compare semaphore ...`, `compare election ...`)
//! compare task ID STATE [TOKEN]   holds when task ID is in STATE (pending, assigned, ...) and,
//!                                 with TOKEN, its current lease has that fencing token
//! complete TASK_ID TOKEN RESULT   complete the task held under TOKEN with RESULT
//! submit QUEUE PAYLOAD [OPTION..] submit a task; options: priority=N, capability=C (repeat it),
//!                                 idempotency-key=K, max-attempts=N, lease-ms=N,
//!                                 content-type=T, correlation-id=C, label=K=V (repeat it)
//! workflow start @FILE [INPUT_JSON] [idempotency-key=K]
//!                                 start a workflow defined in FILE (YAML or JSON)
//! release lock NAME TOKEN         give the grant back (also `release semaphore|election ...`)
//! publish SUBJECT DATA [OPTION..] publish a message; options: key=K, header=NAME=VALUE (repeat
//!                                 it), idempotency-key=K
//! ```
//!
//! A token is a bare word (no whitespace, not starting with `"`) or a double-quoted string in which
//! `\"`, `\\`, `\n`, `\t`, `\r`, `\0` and `\xNN` (one byte in hex) are escapes. Compares and ops may
//! be interleaved; ops apply in the order given. `cmp` and `delete` are accepted as synonyms.

use std::collections::HashMap;

use conclave_client::{Compare, LockKind, PublishMessage, TaskSpec, TaskState, TxnOp};

use super::render::parse_state;

/// A parsed `kv txn` transaction.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TxnScript {
    pub compares: Vec<Compare>,
    pub ops: Vec<TxnOp>,
}

/// One line of a script.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    CompareKey {
        key: Vec<u8>,
        mod_revision: u64,
    },
    CompareLock {
        kind: LockKind,
        name: String,
        token: u64,
    },
    CompareTask {
        task_id: u64,
        state: TaskState,
        token: u64,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    Complete {
        task_id: u64,
        token: u64,
        result: Vec<u8>,
    },
    Submit(Box<TaskSpec>),
    StartWorkflow {
        file: String,
        input_json: String,
        idempotency_key: String,
    },
    Release {
        kind: LockKind,
        name: String,
        token: u64,
    },
    Publish(PublishMessage),
}

impl Item {
    /// Whether this line is a compare (the rest are ops).
    pub fn is_compare(&self) -> bool {
        matches!(
            self,
            Item::CompareKey { .. } | Item::CompareLock { .. } | Item::CompareTask { .. }
        )
    }
}

/// Parses a `kv txn` script: key compares, puts and deletes only.
pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<TxnScript, String> {
    let mut script = TxnScript::default();
    for (number, item) in parse_items(lines)? {
        match item {
            Item::CompareKey { key, mod_revision } => {
                script.compares.push(Compare { key, mod_revision })
            }
            Item::Put { key, value } => script.ops.push(TxnOp::Put { key, value }),
            Item::Delete { key } => script.ops.push(TxnOp::Delete { key }),
            _ => {
                return Err(format!(
                    "line {number}: only `conclave txn` takes this line; `kv txn` takes compare, \
                     put and del"
                ))
            }
        }
    }
    Ok(script)
}

/// Parses a script into its lines (with their 1-based numbers); the error names the line and what
/// is wrong with it.
pub fn parse_items<'a>(
    lines: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<(usize, Item)>, String> {
    let mut items = Vec::new();
    for (number, line) in lines.into_iter().enumerate() {
        let number = number + 1;
        let tokens = tokenize(line).map_err(|error| format!("line {number}: {error}"))?;
        let Some((verb, arguments)) = tokens.split_first() else {
            continue;
        };
        let item = parse_line(verb, arguments).map_err(|error| match error {
            LineError::Usage(usage) => {
                format!("line {number}: expected `{usage}`, got {line:?}")
            }
            LineError::Other(message) => format!("line {number}: {message}"),
        })?;
        items.push((number, item));
    }
    if items.is_empty() {
        return Err("the transaction is empty".to_string());
    }
    Ok(items)
}

enum LineError {
    /// The line does not have the shape of its verb: its usage.
    Usage(&'static str),
    Other(String),
}

impl From<String> for LineError {
    fn from(message: String) -> Self {
        LineError::Other(message)
    }
}

fn parse_line(verb: &[u8], arguments: &[Vec<u8>]) -> Result<Item, LineError> {
    use LineError::Usage;
    Ok(match (verb, arguments) {
        (b"compare" | b"cmp", [key, revision]) => Item::CompareKey {
            key: key.clone(),
            mod_revision: number("revision", revision)?,
        },
        (b"compare" | b"cmp", [kind, rest @ ..]) if !rest.is_empty() => compare(kind, rest)?,
        (b"compare" | b"cmp", _) => return Err(Usage("compare KEY REV")),
        (b"put", [key, value]) => Item::Put {
            key: key.clone(),
            value: value.clone(),
        },
        (b"put", _) => return Err(Usage("put KEY VALUE")),
        (b"del" | b"delete", [key]) => Item::Delete { key: key.clone() },
        (b"del" | b"delete", _) => return Err(Usage("del KEY")),
        (b"complete", [task_id, token, result]) => Item::Complete {
            task_id: number("task id", task_id)?,
            token: number("token", token)?,
            result: result.clone(),
        },
        (b"complete", _) => return Err(Usage("complete TASK_ID TOKEN RESULT")),
        (b"submit", [queue, payload, options @ ..]) => {
            Item::Submit(Box::new(submit(queue, payload, options)?))
        }
        (b"submit", _) => return Err(Usage("submit QUEUE PAYLOAD [OPTION...]")),
        (b"workflow", [start, file, rest @ ..]) if start == b"start" => workflow_start(file, rest)?,
        (b"workflow", _) => {
            return Err(Usage(
                "workflow start @FILE [INPUT_JSON] [idempotency-key=K]",
            ))
        }
        (b"release", [kind, name, token]) => Item::Release {
            kind: lock_kind(kind).ok_or(Usage("release lock|semaphore|election NAME TOKEN"))?,
            name: word("name", name)?,
            token: number("token", token)?,
        },
        (b"release", _) => return Err(Usage("release lock|semaphore|election NAME TOKEN")),
        (b"publish", [subject, data, options @ ..]) => {
            Item::Publish(publish(subject, data, options)?)
        }
        (b"publish", _) => return Err(Usage("publish SUBJECT DATA [OPTION...]")),
        (other, _) => {
            return Err(LineError::Other(format!(
                "unknown command {:?} (expected compare, put, del, complete, submit, workflow, \
                 release or publish)",
                String::from_utf8_lossy(other)
            )))
        }
    })
}

/// `compare key|lock|semaphore|election|task ...` (after `compare`).
fn compare(kind: &[u8], rest: &[Vec<u8>]) -> Result<Item, LineError> {
    let usage = "compare key KEY REV | compare lock|semaphore|election NAME TOKEN | \
                 compare task ID STATE [TOKEN]";
    Ok(match (kind, rest) {
        (b"key", [key, revision]) => Item::CompareKey {
            key: key.clone(),
            mod_revision: number("revision", revision)?,
        },
        (b"task", [task_id, state, token @ ..]) if token.len() <= 1 => Item::CompareTask {
            task_id: number("task id", task_id)?,
            state: parse_state(&word("state", state)?)?,
            token: token
                .first()
                .map(|token| number("token", token))
                .transpose()?
                .unwrap_or(0),
        },
        (kind, [name, token]) => Item::CompareLock {
            kind: lock_kind(kind).ok_or(LineError::Usage(usage))?,
            name: word("name", name)?,
            token: number("token", token)?,
        },
        _ => return Err(LineError::Usage(usage)),
    })
}

fn submit(queue: &[u8], payload: &[u8], options: &[Vec<u8>]) -> Result<TaskSpec, String> {
    let mut spec = TaskSpec {
        queue: word("queue", queue)?,
        payload: payload.to_vec(),
        ..TaskSpec::default()
    };
    let mut labels = HashMap::new();
    for option in options {
        let option = word("option", option)?;
        let (name, value) = option
            .split_once('=')
            .ok_or_else(|| format!("submit option {option:?} is not NAME=VALUE"))?;
        let value = value.to_string();
        match name {
            "priority" => spec.priority = parse_number(name, &value)?,
            "capability" => spec.capabilities.push(value),
            "idempotency-key" => spec.idempotency_key = value,
            "max-attempts" => spec.max_attempts = parse_number(name, &value)?,
            "lease-ms" => spec.lease_ms = parse_number(name, &value)?,
            "content-type" => spec.content_type = value,
            "correlation-id" => spec.correlation_id = value,
            "label" => {
                let (key, value) = value
                    .split_once('=')
                    .ok_or_else(|| format!("label {value:?} is not KEY=VALUE"))?;
                labels.insert(key.to_string(), value.to_string());
            }
            other => {
                return Err(format!(
                    "unknown submit option {other:?} (priority, capability, idempotency-key, \
                     max-attempts, lease-ms, content-type, correlation-id, label)"
                ))
            }
        }
    }
    spec.labels = labels;
    Ok(spec)
}

fn publish(subject: &[u8], data: &[u8], options: &[Vec<u8>]) -> Result<PublishMessage, String> {
    let mut message = PublishMessage {
        subject: word("subject", subject)?,
        data: data.to_vec(),
        ..PublishMessage::default()
    };
    for option in options {
        let option = word("option", option)?;
        let (name, value) = option
            .split_once('=')
            .ok_or_else(|| format!("publish option {option:?} is not NAME=VALUE"))?;
        match name {
            "key" => message.key = Some(value.as_bytes().to_vec()),
            "idempotency-key" => message.idempotency_key = value.to_string(),
            "header" => {
                let (name, value) = value
                    .split_once('=')
                    .ok_or_else(|| format!("header {value:?} is not NAME=VALUE"))?;
                message.headers.insert(name.to_string(), value.to_string());
            }
            other => {
                return Err(format!(
                    "unknown publish option {other:?} (key, header, idempotency-key)"
                ))
            }
        }
    }
    Ok(message)
}

fn workflow_start(file: &[u8], rest: &[Vec<u8>]) -> Result<Item, LineError> {
    let usage = "workflow start @FILE [INPUT_JSON] [idempotency-key=K]";
    let file = word("file", file)?;
    let file = file
        .strip_prefix('@')
        .ok_or(LineError::Usage(usage))?
        .to_string();
    let (mut input_json, mut idempotency_key) = (String::new(), String::new());
    for argument in rest {
        let argument = word("argument", argument)?;
        match argument.strip_prefix("idempotency-key=") {
            Some(key) if idempotency_key.is_empty() => idempotency_key = key.to_string(),
            None if input_json.is_empty() => input_json = argument,
            _ => return Err(LineError::Usage(usage)),
        }
    }
    Ok(Item::StartWorkflow {
        file,
        input_json,
        idempotency_key,
    })
}

fn lock_kind(word: &[u8]) -> Option<LockKind> {
    match word {
        b"lock" => Some(LockKind::Lock),
        b"semaphore" => Some(LockKind::Semaphore),
        b"election" => Some(LockKind::Election),
        _ => None,
    }
}

fn word(what: &str, bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

fn number<T: std::str::FromStr>(what: &str, bytes: &[u8]) -> Result<T, String> {
    parse_number(what, &String::from_utf8_lossy(bytes))
}

fn parse_number<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{what} {text:?} is not a number"))
}

/// Splits a line into tokens; a `#` at the start of a token begins a comment.
fn tokenize(line: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => return Ok(tokens),
            Some('"') => {
                chars.next();
                tokens.push(quoted(&mut chars)?);
            }
            Some(_) => {
                let mut word = String::new();
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    word.push(c);
                }
                tokens.push(word.into_bytes());
            }
        }
        if chars.peek().is_some_and(|c| !c.is_whitespace()) {
            return Err("expected whitespace after a quoted string".to_string());
        }
    }
}

/// Reads a quoted string after its opening quote, through its closing one.
fn quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    loop {
        let c = chars.next().ok_or("unterminated quoted string")?;
        match c {
            '"' => return Ok(bytes),
            '\\' => {
                let escaped = chars.next().ok_or("unterminated escape")?;
                match escaped {
                    '"' => bytes.push(b'"'),
                    '\\' => bytes.push(b'\\'),
                    'n' => bytes.push(b'\n'),
                    't' => bytes.push(b'\t'),
                    'r' => bytes.push(b'\r'),
                    '0' => bytes.push(0),
                    'x' => {
                        let hex: String =
                            [chars.next(), chars.next()].into_iter().flatten().collect();
                        let byte = u8::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == 2)
                            .ok_or_else(|| format!("bad escape \\x{hex}"))?;
                        bytes.push(byte);
                    }
                    other => return Err(format!("unknown escape \\{other}")),
                }
            }
            other => {
                let mut buffer = [0; 4];
                bytes.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &[u8]) -> TxnOp {
        TxnOp::Put {
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn parses_compares_and_ops_in_order() {
        let script = parse([
            "# move a job from queue to running",
            "",
            "compare queue/7 12",
            "cmp running/7 0",
            "del queue/7",
            "put running/7 \"worker 3\"",
            "  put  note   x  # trailing comment",
            "delete old",
        ])
        .expect("valid script");
        assert_eq!(
            script.compares,
            vec![
                Compare {
                    key: b"queue/7".to_vec(),
                    mod_revision: 12
                },
                Compare {
                    key: b"running/7".to_vec(),
                    mod_revision: 0
                },
            ]
        );
        assert_eq!(
            script.ops,
            vec![
                TxnOp::Delete {
                    key: b"queue/7".to_vec()
                },
                put("running/7", b"worker 3"),
                put("note", b"x"),
                TxnOp::Delete {
                    key: b"old".to_vec()
                },
            ]
        );
    }

    #[test]
    fn quoted_strings_have_escapes() {
        let script = parse([r#"put "a key" "line\n\"q\" \\ \x00\xff é""#]).expect("valid");
        assert_eq!(
            script.ops,
            vec![put(
                "a key",
                &[
                    b'l', b'i', b'n', b'e', b'\n', b'"', b'q', b'"', b' ', b'\\', b' ', 0, 0xff,
                    b' ', 0xc3, 0xa9
                ]
            )]
        );
        assert_eq!(
            parse([r#"put k """#]).expect("empty value").ops,
            vec![put("k", b"")]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (vec!["put k"], "line 1: expected `put KEY VALUE`"),
            (
                vec!["put k v", "compare k"],
                "line 2: expected `compare KEY REV`",
            ),
            (
                vec!["compare k x"],
                "line 1: revision \"x\" is not a number",
            ),
            (vec!["del a b"], "line 1: expected `del KEY`"),
            (vec!["get k"], "line 1: unknown command \"get\""),
            (vec![r#"put "k v"#], "line 1: unterminated quoted string"),
            (vec![r#"put "k"v x"#], "line 1: expected whitespace"),
            (vec![r#"put k "\q""#], "line 1: unknown escape \\q"),
            (vec![r#"put k "\x4""#], "line 1: bad escape \\x4"),
            (vec!["# nothing", ""], "the transaction is empty"),
        ];
        for (lines, expected) in cases {
            let error = parse(lines.iter().copied()).expect_err("invalid script");
            assert!(error.starts_with(expected), "{lines:?}: {error}");
        }
    }

    #[test]
    fn parses_the_cross_primitive_lines() {
        let items = parse_items([
            "compare key config 7",
            "compare lock deploy 42",
            "compare semaphore gpus 43",
            "compare task 9 assigned 12",
            "compare task 10 succeeded",
            "complete 9 12 \"all done\"",
            "submit review results/9 priority=5 capability=gpu capability=ssd label=team=infra idempotency-key=r9",
            "workflow start @flows/review.yaml {\"doc\":9} idempotency-key=wf9",
            "release election primary 44",
            "publish research.done results/9 key=doc-9 header=kind=draft idempotency-key=p9",
        ])
        .expect("valid script");
        let items: Vec<Item> = items.into_iter().map(|(_, item)| item).collect();
        assert_eq!(
            items[..5],
            [
                Item::CompareKey {
                    key: b"config".to_vec(),
                    mod_revision: 7
                },
                Item::CompareLock {
                    kind: LockKind::Lock,
                    name: "deploy".into(),
                    token: 42
                },
                Item::CompareLock {
                    kind: LockKind::Semaphore,
                    name: "gpus".into(),
                    token: 43
                },
                Item::CompareTask {
                    task_id: 9,
                    state: TaskState::Assigned,
                    token: 12
                },
                Item::CompareTask {
                    task_id: 10,
                    state: TaskState::Succeeded,
                    token: 0
                },
            ]
        );
        assert_eq!(
            items[5],
            Item::Complete {
                task_id: 9,
                token: 12,
                result: b"all done".to_vec()
            }
        );
        let Item::Submit(spec) = &items[6] else {
            panic!("a submit: {:?}", items[6]);
        };
        assert_eq!(
            (spec.queue.as_str(), spec.payload.as_slice(), spec.priority),
            ("review", &b"results/9"[..], 5)
        );
        assert_eq!(spec.capabilities, ["gpu", "ssd"]);
        assert_eq!(spec.labels.get("team").map(String::as_str), Some("infra"));
        assert_eq!(spec.idempotency_key, "r9");
        assert_eq!(
            items[7],
            Item::StartWorkflow {
                file: "flows/review.yaml".into(),
                input_json: "{\"doc\":9}".into(),
                idempotency_key: "wf9".into()
            }
        );
        assert_eq!(
            items[8],
            Item::Release {
                kind: LockKind::Election,
                name: "primary".into(),
                token: 44
            }
        );
        let Item::Publish(message) = &items[9] else {
            panic!("a publish: {:?}", items[9]);
        };
        assert_eq!(
            (message.subject.as_str(), message.data.as_slice()),
            ("research.done", &b"results/9"[..])
        );
        assert_eq!(message.key.as_deref(), Some(&b"doc-9"[..]));
        assert_eq!(
            message.headers.get("kind").map(String::as_str),
            Some("draft")
        );
        assert_eq!(message.idempotency_key, "p9");
        assert!(items[4].is_compare() && !items[5].is_compare());
    }

    #[test]
    fn kv_txn_refuses_the_cross_primitive_lines_and_errors_name_them() {
        let error = parse(["put a 1", "complete 9 12 done"]).expect_err("kv txn");
        assert!(error.starts_with("line 2: only `conclave txn`"), "{error}");
        let cases = [
            (
                "compare task 9 running",
                "line 1: \"running\" is not a task state",
            ),
            ("compare mutex m 1", "line 1: expected `compare key KEY REV"),
            ("complete 9 x done", "line 1: token \"x\" is not a number"),
            (
                "complete 9 12",
                "line 1: expected `complete TASK_ID TOKEN RESULT`",
            ),
            ("submit q", "line 1: expected `submit QUEUE PAYLOAD"),
            (
                "submit q p speed=9",
                "line 1: unknown submit option \"speed\"",
            ),
            (
                "workflow start flow.yaml",
                "line 1: expected `workflow start @FILE",
            ),
            (
                "release mutex m 1",
                "line 1: expected `release lock|semaphore|election",
            ),
        ];
        for (line, expected) in cases {
            let error = parse_items([line]).expect_err("invalid line");
            assert!(error.starts_with(expected), "{line:?}: {error}");
        }
    }
}
