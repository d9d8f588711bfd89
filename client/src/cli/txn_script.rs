//! The line format `conclave kv txn` reads: one compare or op per line.
//!
//! ```text
//! # A comment; blank lines are ignored too.
//! compare KEY REV     holds when KEY's mod_revision is REV (0: KEY must not exist)
//! put KEY VALUE       set KEY to VALUE
//! del KEY             delete KEY
//! ```
//!
//! A token is a bare word (no whitespace, not starting with `"`) or a double-quoted string in which
//! `\"`, `\\`, `\n`, `\t`, `\r`, `\0` and `\xNN` (one byte in hex) are escapes. Compares and ops may
//! be interleaved; ops apply in the order given. `cmp` and `delete` are accepted as synonyms.

use conclave_client::{Compare, TxnOp};

/// A parsed transaction.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TxnScript {
    pub compares: Vec<Compare>,
    pub ops: Vec<TxnOp>,
}

/// Parses a script; the error names the line (1-based) and what is wrong with it.
pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<TxnScript, String> {
    let mut script = TxnScript::default();
    for (number, line) in lines.into_iter().enumerate() {
        let number = number + 1;
        let tokens = tokenize(line).map_err(|error| format!("line {number}: {error}"))?;
        let Some((verb, arguments)) = tokens.split_first() else {
            continue;
        };
        let wrong = |usage: &str| format!("line {number}: expected `{usage}`, got {line:?}");
        match (verb.as_slice(), arguments) {
            (b"compare" | b"cmp", [key, revision]) => {
                let revision = std::str::from_utf8(revision)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| {
                        format!(
                            "line {number}: revision {:?} is not a number",
                            String::from_utf8_lossy(revision)
                        )
                    })?;
                script.compares.push(Compare {
                    key: key.clone(),
                    mod_revision: revision,
                });
            }
            (b"compare" | b"cmp", _) => return Err(wrong("compare KEY REV")),
            (b"put", [key, value]) => script.ops.push(TxnOp::Put {
                key: key.clone(),
                value: value.clone(),
            }),
            (b"put", _) => return Err(wrong("put KEY VALUE")),
            (b"del" | b"delete", [key]) => script.ops.push(TxnOp::Delete { key: key.clone() }),
            (b"del" | b"delete", _) => return Err(wrong("del KEY")),
            (other, _) => {
                return Err(format!(
                    "line {number}: unknown command {:?} (expected compare, put or del)",
                    String::from_utf8_lossy(other)
                ))
            }
        }
    }
    if script.compares.is_empty() && script.ops.is_empty() {
        return Err("the transaction is empty".to_string());
    }
    Ok(script)
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
}
