//! `conclave kv ...`: read and write keys from the command line.

use std::io::Read;
use std::path::PathBuf;

use clap::Subcommand;
use clap::{Args, ValueEnum};
use conclave_client::{
    CasAction, Event, EventType, Fence, ListOptions, LockKind, PutOptions, ReadConsistency,
    WatchOptions, WatchResponse,
};
use futures::StreamExt;
use serde_json::{json, Value};

use super::output::{self, header_json, kv_json, optional_kv_json, text};
use super::{txn_script, CliError, CliResult, Globals};

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Set a key to a value, creating it if absent.
    ///
    /// The value is the VALUE argument, or the contents of --file (`--file -` or a VALUE of `-`
    /// reads stdin). Prints the revision the write created. Exit code 3 means the write's outcome
    /// is unknown.
    #[command(override_usage = "conclave kv put [OPTIONS] <KEY> (<VALUE> | --file <PATH>)")]
    Put {
        /// The key to write.
        key: String,
        /// The value; `-` reads it from stdin.
        #[arg(required_unless_present = "file")]
        value: Option<String>,
        /// Read the value from this file (`-`: stdin), byte for byte.
        #[arg(long, value_name = "PATH", conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Attach the key to this live agent session: it is deleted when the session ends. Exits 1
        /// (nothing written) when the session is not live.
        #[arg(long, value_name = "ID")]
        session_id: Option<u64>,
        #[command(flatten)]
        fence: FenceArgs,
    },
    /// Read one key (linearizable unless --serializable).
    ///
    /// Prints `KEY = VALUE` and the key's revisions, or with --value-only the value's bytes
    /// unchanged. Exits 1 when the key does not exist.
    Get {
        /// The key to read.
        key: String,
        /// Read this node's local state at once instead of confirming with a quorum; may be stale.
        #[arg(long)]
        serializable: bool,
        /// Print only the value, byte for byte, without a trailing newline.
        #[arg(long, conflicts_with = "json")]
        value_only: bool,
    },
    /// Delete one key. Deleting an absent key succeeds and changes nothing (no new revision).
    Del {
        /// The key to delete.
        key: String,
        #[command(flatten)]
        fence: FenceArgs,
    },
    /// List keys with a prefix, in byte order.
    ///
    /// Without --limit, pages through every matching key. Prints `KEY = VALUE` per key, or only
    /// keys with --keys-only.
    Ls {
        /// Only keys starting with this prefix (default: every key).
        prefix: Option<String>,
        /// Return at most this many keys (1..=1000), in one page.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
        /// Start strictly after this key.
        #[arg(long, value_name = "KEY")]
        start_after: Option<String>,
        /// Leave out the values.
        #[arg(long)]
        keys_only: bool,
        /// Read the serving node's local state instead of confirming with a quorum; may be stale.
        #[arg(long)]
        serializable: bool,
    },
    /// Compare-and-swap: write (or delete) a key only if its mod_revision is as expected.
    ///
    /// --expect-revision 0 means "create only if absent". Exits 1, naming the key's current
    /// mod_revision, when the compare does not hold.
    #[command(
        override_usage = "conclave kv cas [OPTIONS] <KEY> --expect-revision <R> (<VALUE> | --delete)"
    )]
    Cas {
        /// The key to compare and write.
        key: String,
        /// The mod_revision the key must have (0: the key must not exist).
        #[arg(long, value_name = "R")]
        expect_revision: u64,
        /// The value to write when the compare holds.
        #[arg(required_unless_present = "delete")]
        value: Option<String>,
        /// Delete the key when the compare holds.
        #[arg(long, conflicts_with = "value")]
        delete: bool,
        #[command(flatten)]
        fence: FenceArgs,
    },
    /// Apply puts and deletes atomically if every compare holds
    ///
    /// Each argument is one line; without arguments, lines are read from stdin:
    ///
    ///   compare KEY REV     holds when KEY's mod_revision is REV (0: KEY must not exist)
    ///   put KEY VALUE       set KEY to VALUE
    ///   del KEY             delete KEY
    ///
    /// `#` starts a comment. Tokens are bare words or "double-quoted" strings with escapes \" \\ \n
    /// \t \r \0 \xNN. Ops apply in order, at one revision. Example:
    ///
    ///   conclave kv txn 'compare lock 0' 'put lock "owner 7"' 'del queue/7'
    ///
    /// Exits 1, listing the compares that failed, when the transaction was not applied.
    #[command(verbatim_doc_comment)]
    Txn {
        /// Script lines (default: read stdin).
        lines: Vec<String>,
        #[command(flatten)]
        fence: FenceArgs,
    },
    /// Print changes to a key or prefix as they happen.
    ///
    /// Each event prints as `REVISION PUT KEY = VALUE` or `REVISION DELETE KEY` (with --json, one
    /// JSON document per line). The watch survives node failures: it reconnects to another node and
    /// resumes after the last revision printed, without gaps or repeats. Exits 1 if the history it
    /// needs was compacted.
    Watch {
        /// The key, or the prefix with --prefix.
        key: String,
        /// Watch every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Start with the changes at this revision (default: changes from now on).
        #[arg(long, value_name = "R")]
        from_revision: Option<u64>,
        /// Exit after printing this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

/// A fence on a write: apply it only while the named grant is current.
#[derive(Debug, Args)]
pub struct FenceArgs {
    /// Apply the write only while this lock (or semaphore, election: --fence-kind) is held under
    /// --fence-token; otherwise exit 1 (lock lost) with nothing written.
    #[arg(long, value_name = "NAME", requires = "fence_token")]
    fence_lock: Option<String>,
    /// The fencing token of the grant (`lock acquire` prints it; `lock run` sets
    /// CONCLAVE_FENCING_TOKEN).
    #[arg(long, value_name = "TOKEN", requires = "fence_lock")]
    fence_token: Option<u64>,
    /// What --fence-lock names (default: lock).
    #[arg(long, value_enum, value_name = "KIND", requires = "fence_lock")]
    fence_kind: Option<FenceKindArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FenceKindArg {
    Lock,
    Semaphore,
    Election,
}

impl FenceArgs {
    pub(super) fn fence(&self) -> Option<Fence> {
        let kind = match self.fence_kind.unwrap_or(FenceKindArg::Lock) {
            FenceKindArg::Lock => LockKind::Lock,
            FenceKindArg::Semaphore => LockKind::Semaphore,
            FenceKindArg::Election => LockKind::Election,
        };
        let name = self.fence_lock.as_ref()?;
        Some(conclave_client::fence(
            kind,
            name,
            self.fence_token.unwrap_or(0),
        ))
    }
}

pub async fn run(command: KvCommand, globals: &Globals) -> CliResult {
    let client = globals.client()?;
    let json = globals.json;
    match command {
        KvCommand::Put {
            key,
            value,
            file,
            session_id,
            fence,
        } => {
            let value = read_value(value, file)?;
            let options = PutOptions {
                session_id: session_id.unwrap_or(0),
                fence: fence.fence(),
            };
            let result = client.put_with_options(key, value, options).await?;
            if json {
                output::json_document(&json!({
                    "header": header_json(&result.header),
                    "previous": optional_kv_json(result.previous.as_ref()),
                }))
            } else {
                output::line(&format!("OK revision {}", result.header.revision))
            }
        }
        KvCommand::Get {
            key,
            serializable,
            value_only,
        } => {
            let result = client
                .get_with(key.clone(), consistency(serializable))
                .await?;
            if json {
                output::json_document(&json!({
                    "header": header_json(&result.header),
                    "kv": optional_kv_json(result.kv.as_ref()),
                }))?;
            }
            let Some(kv) = result.kv else {
                return Err(CliError::failed(format!(
                    "key {:?} not found",
                    text(key.as_bytes())
                )));
            };
            if json {
                Ok(())
            } else if value_only {
                output::raw(&kv.value)
            } else {
                output::line(&format!("{} = {}", text(&kv.key), text(&kv.value)))?;
                output::line(&format!(
                    "  mod_revision {}, create_revision {}, version {}; read at revision {} ({}, node {})",
                    kv.mod_revision,
                    kv.create_revision,
                    kv.version,
                    result.header.revision,
                    output::consistency_name(result.header.consistency),
                    result.header.node_id,
                ))
            }
        }
        KvCommand::Del { key, fence } => {
            let result = match fence.fence() {
                Some(fence) => client.delete_fenced(key, &fence).await?,
                None => client.delete(key).await?,
            };
            if json {
                output::json_document(&json!({
                    "header": header_json(&result.header),
                    "deleted": result.deleted,
                    "previous": optional_kv_json(result.previous.as_ref()),
                }))
            } else if result.deleted {
                output::line(&format!("deleted, revision {}", result.header.revision))
            } else {
                output::line(&format!(
                    "not found (nothing deleted), revision {}",
                    result.header.revision
                ))
            }
        }
        KvCommand::Ls {
            prefix,
            limit,
            start_after,
            keys_only,
            serializable,
        } => {
            let options = ListOptions {
                prefix: prefix.unwrap_or_default().into_bytes(),
                limit: limit.unwrap_or(0),
                start_after: start_after.unwrap_or_default().into_bytes(),
                keys_only,
                consistency: consistency(serializable),
            };
            let (kvs, header, more, next_start_after) = if limit.is_some() {
                let page = client.list(options).await?;
                (page.kvs, page.header, page.more, page.next_start_after)
            } else {
                let all = client.list_all(options).await?;
                (all.kvs, all.header, false, Vec::new())
            };
            if json {
                let mut document = json!({
                    "header": header_json(&header),
                    "kvs": kvs.iter().map(kv_json).collect::<Vec<_>>(),
                    "count": kvs.len(),
                    "more": more,
                });
                if more {
                    let mut object = serde_json::Map::new();
                    output::insert_bytes(&mut object, "next_start_after", &next_start_after);
                    if let Value::Object(fields) = &mut document {
                        fields.extend(object);
                    }
                }
                return output::json_document(&document);
            }
            for kv in &kvs {
                if keys_only {
                    output::line(&text(&kv.key))?;
                } else {
                    output::line(&format!("{} = {}", text(&kv.key), text(&kv.value)))?;
                }
            }
            if more {
                eprintln!(
                    "(more keys follow; continue with --start-after {})",
                    text(&next_start_after)
                );
            }
            Ok(())
        }
        KvCommand::Cas {
            key,
            expect_revision,
            value,
            delete,
            fence,
        } => {
            let action = match (value, delete) {
                (_, true) => CasAction::Delete,
                (Some(value), false) => CasAction::Put(value.into_bytes()),
                (None, false) => unreachable!("clap requires a value or --delete"),
            };
            let result = match fence.fence() {
                Some(fence) => {
                    client
                        .compare_and_swap_fenced(key.clone(), expect_revision, action, &fence)
                        .await?
                }
                None => {
                    client
                        .compare_and_swap(key.clone(), expect_revision, action)
                        .await?
                }
            };
            if json {
                output::json_document(&json!({
                    "header": header_json(&result.header),
                    "succeeded": result.succeeded,
                    "current": optional_kv_json(result.current.as_ref()),
                }))?;
            } else if result.succeeded {
                output::line(&format!("OK revision {}", result.header.revision))?;
            }
            if result.succeeded {
                return Ok(());
            }
            let current = result.current.as_ref().map_or(0, |kv| kv.mod_revision);
            Err(CliError::failed(format!(
                "compare failed: key {:?} has mod_revision {current}{}, expected {expect_revision}",
                text(key.as_bytes()),
                if current == 0 { " (absent)" } else { "" },
            )))
        }
        KvCommand::Txn { lines, fence } => {
            let script_text = if lines.is_empty() {
                let mut input = String::new();
                std::io::stdin()
                    .read_to_string(&mut input)
                    .map_err(|error| CliError::failed(format!("reading stdin: {error}")))?;
                input
            } else {
                lines.join("\n")
            };
            let script = txn_script::parse(script_text.lines()).map_err(CliError::usage)?;
            let keys: Vec<Vec<u8>> = script.compares.iter().map(|c| c.key.clone()).collect();
            let expected: Vec<u64> = script.compares.iter().map(|c| c.mod_revision).collect();
            let result = match fence.fence() {
                Some(fence) => {
                    client
                        .txn_fenced(script.compares, script.ops, &fence)
                        .await?
                }
                None => client.txn(script.compares, script.ops).await?,
            };
            let failures: Vec<(String, u64, u64)> = result
                .failed_compares
                .iter()
                .map(|failed| {
                    let key = keys
                        .get(failed.index)
                        .map_or_else(String::new, |key| text(key));
                    let expected = expected.get(failed.index).copied().unwrap_or(0);
                    (key, expected, failed.current_mod_revision)
                })
                .collect();
            if json {
                output::json_document(&json!({
                    "header": header_json(&result.header),
                    "succeeded": result.succeeded,
                    "failed_compares": result.failed_compares.iter().zip(&failures).map(|(failed, (key, expected, current))| json!({
                        "index": failed.index,
                        "key": key,
                        "expected_mod_revision": expected,
                        "current_mod_revision": current,
                    })).collect::<Vec<_>>(),
                }))?;
            } else if result.succeeded {
                output::line(&format!("OK revision {}", result.header.revision))?;
            }
            if result.succeeded {
                return Ok(());
            }
            let described: Vec<String> = failures
                .iter()
                .map(|(key, expected, current)| {
                    format!("{key:?} has mod_revision {current}, expected {expected}")
                })
                .collect();
            Err(CliError::failed(format!(
                "transaction not applied: {}",
                if described.is_empty() {
                    "a compare failed".to_string()
                } else {
                    described.join("; ")
                }
            )))
        }
        KvCommand::Watch {
            key,
            prefix,
            from_revision,
            count,
        } => {
            let options = WatchOptions {
                prefix,
                start_revision: from_revision.unwrap_or(0),
            };
            let mut stream = client.watch(key, options).await?;
            tracing::info!(
                start_revision = stream.start_revision(),
                "watch established"
            );
            let mut printed = 0u64;
            if count == Some(0) {
                return Ok(());
            }
            while let Some(response) = stream.next().await {
                let response: WatchResponse = response?;
                for event in &response.events {
                    print_event(response.revision, event, json)?;
                    printed += 1;
                    if count.is_some_and(|count| printed >= count) {
                        return Ok(());
                    }
                }
            }
            Err(CliError::failed("the watch ended"))
        }
    }
}

fn print_event(revision: u64, event: &Event, json: bool) -> CliResult {
    let kind = EventType::try_from(event.r#type).unwrap_or(EventType::Put);
    let kv = event.kv.clone().unwrap_or_default();
    if json {
        return output::json_line(&json!({
            "revision": revision,
            "type": match kind { EventType::Put => "put", EventType::Delete => "delete" },
            "kv": kv_json(&kv),
        }));
    }
    match kind {
        EventType::Put => output::line(&format!(
            "{revision} PUT {} = {}",
            text(&kv.key),
            text(&kv.value)
        )),
        EventType::Delete => output::line(&format!("{revision} DELETE {}", text(&kv.key))),
    }
}

fn consistency(serializable: bool) -> ReadConsistency {
    if serializable {
        ReadConsistency::Serializable
    } else {
        ReadConsistency::Linearizable
    }
}

/// The bytes to put: the argument, or a file, or stdin for `-`.
fn read_value(value: Option<String>, file: Option<PathBuf>) -> CliResult<Vec<u8>> {
    let read_stdin = || {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|error| CliError::failed(format!("reading stdin: {error}")))?;
        Ok(bytes)
    };
    match (value, file) {
        (Some(value), None) if value == "-" => read_stdin(),
        (Some(value), None) => Ok(value.into_bytes()),
        (None, Some(path)) if path.as_os_str() == "-" => read_stdin(),
        (None, Some(path)) => std::fs::read(&path)
            .map_err(|error| CliError::usage(format!("reading {}: {error}", path.display()))),
        _ => Err(CliError::usage("give either VALUE or --file, not both")),
    }
}
