//! `conclave txn FILE`: a cross-primitive transaction (transactions.proto) from a script in the
//! line format of `kv txn`, extended (`txn_script.rs`).

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use conclave_client::{
    load_definition, CompareFailure, Error, Found, OpOutcome, TransactionBuilder, TransactionResult,
};
use serde_json::{json, Value};

use super::kv::FenceArgs;
use super::output::{self, header_json};
use super::render::state_name;
use super::txn_script::{self, Item};
use super::{CliError, CliResult, Globals};

/// Run a transaction across keys, tasks, workflows, locks and topics: all of it or nothing.
///
/// FILE (`-`: stdin) holds one compare or op per line, as `conclave kv txn` takes them, plus:
///
///   compare key KEY REV             KEY's mod_revision is REV (0: absent); also `compare KEY REV`
///   compare lock NAME TOKEN         TOKEN is a current grant of lock NAME (also semaphore, election)
///   compare task ID STATE [TOKEN]   task ID is in STATE and, with TOKEN, leased under it
///   put KEY VALUE | del KEY         write or delete a key
///   complete TASK_ID TOKEN RESULT   complete a task with its fencing token
///   submit QUEUE PAYLOAD [OPTION..] submit a task (priority=N capability=C idempotency-key=K
///                                   max-attempts=N lease-ms=N content-type=T correlation-id=C
///                                   label=K=V)
///   workflow start @FILE [INPUT_JSON] [idempotency-key=K]
///                                   start a workflow (FILE relative to the script's directory)
///   release lock NAME TOKEN         give a grant back (also semaphore, election)
///   publish SUBJECT DATA [OPTION..] publish a message (key=K header=NAME=VALUE idempotency-key=K)
///
/// Prints what each op did (the revision, task ids, workflow ids, message sequences). Exits 1 with nothing applied
/// when a compare failed (each one listed with what it found) or an op was refused (which one and
/// why); 3 when the outcome is unknown.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct TxnArgs {
    /// The script; `-` reads stdin.
    file: PathBuf,
    #[command(flatten)]
    fence: FenceArgs,
}

pub async fn run(args: TxnArgs, globals: &Globals) -> CliResult {
    let (text, base) = read_script(&args.file)?;
    let items = txn_script::parse_items(text.lines()).map_err(CliError::usage)?;
    let client = globals.client()?;
    let mut transaction = client.transaction();
    if let Some(fence) = args.fence.fence() {
        transaction = transaction.fence(fence);
    }
    let mut ops = Vec::new();
    let mut compares = Vec::new();
    for (number, item) in items {
        if item.is_compare() {
            compares.push((number, item.clone()));
        } else {
            ops.push((number, item.clone()));
        }
        transaction = add(transaction, item, &base)
            .map_err(|error| CliError::usage(format!("line {number}: {error}")))?;
    }
    let result = match transaction.commit().await {
        Ok(result) => result,
        Err(Error::OpRefused { index, error }) => {
            let line = ops.get(index).map_or(0, |(number, _)| *number);
            return Err(CliError::failed(format!(
                "transaction not applied: the op on line {line} was refused: {error}"
            )));
        }
        Err(error) => return Err(error.into()),
    };
    if globals.json {
        output::json_document(&result_json(&result, &compares))?;
    } else if result.succeeded {
        print_results(&result, &ops)?;
    }
    if result.succeeded {
        return Ok(());
    }
    let failed: Vec<String> = result
        .failed_compares
        .iter()
        .map(|failure| describe_failure(failure, &compares))
        .collect();
    Err(CliError::failed(format!(
        "transaction not applied: {}",
        failed.join("; ")
    )))
}

/// The script's text and the directory its workflow files are relative to.
fn read_script(file: &Path) -> CliResult<(String, PathBuf)> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|error| CliError::failed(format!("reading stdin: {error}")))?;
        return Ok((text, PathBuf::from(".")));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|error| CliError::usage(format!("{}: {error}", file.display())))?;
    let base = file
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    Ok((text, base))
}

fn add<'a>(
    transaction: TransactionBuilder<'a>,
    item: Item,
    base: &Path,
) -> Result<TransactionBuilder<'a>, Error> {
    Ok(match item {
        Item::CompareKey { key, mod_revision } => transaction.compare_key(key, mod_revision),
        Item::CompareLock { kind, name, token } => transaction.compare_lock(kind, &name, token),
        Item::CompareTask {
            task_id,
            state,
            token,
        } => transaction.compare_task(task_id, state, token),
        Item::Put { key, value } => transaction.put(key, value),
        Item::Delete { key } => transaction.delete(key),
        Item::Complete {
            task_id,
            token,
            result,
        } => transaction.complete_task(task_id, token, result),
        Item::Submit(spec) => transaction.submit(*spec),
        Item::StartWorkflow {
            file,
            input_json,
            idempotency_key,
        } => {
            let definition = load_definition(&base.join(file))?;
            transaction.start_workflow(definition, &input_json, &idempotency_key, None)
        }
        Item::Release { kind, name, token } => transaction.release_lock(kind, &name, token),
        Item::Publish(message) => transaction.publish(message),
    })
}

fn print_results(result: &TransactionResult, ops: &[(usize, Item)]) -> CliResult {
    output::line(&format!("OK revision {}", result.header.revision))?;
    for (outcome, (number, _)) in result.results.iter().zip(ops) {
        let text = match outcome {
            OpOutcome::TaskCompleted { task_id } => format!("completed task {task_id}"),
            OpOutcome::Put => "put".to_string(),
            OpOutcome::Deleted { existed: true } => "deleted".to_string(),
            OpOutcome::Deleted { existed: false } => "deleted (there was no key)".to_string(),
            OpOutcome::TaskSubmitted { task_id, existing } => format!(
                "submitted task {task_id}{}",
                if *existing { " (existing)" } else { "" }
            ),
            OpOutcome::WorkflowStarted {
                workflow_id,
                existed,
            } => format!(
                "started workflow {workflow_id}{}",
                if *existed { " (existing)" } else { "" }
            ),
            OpOutcome::LockReleased => "released".to_string(),
            OpOutcome::Published {
                topic,
                seq,
                duplicate,
            } => format!(
                "published to {topic} as sequence {seq}{}",
                if *duplicate { " (duplicate)" } else { "" }
            ),
        };
        output::line(&format!("line {number}: {text}"))?;
    }
    Ok(())
}

fn describe_failure(failure: &CompareFailure, compares: &[(usize, Item)]) -> String {
    let line = compares.get(failure.index).map_or(0, |(number, _)| *number);
    let found = match &failure.found {
        Found::ModRevision(0) => "the key is absent".to_string(),
        Found::ModRevision(revision) => format!("the key has mod_revision {revision}"),
        Found::Grants(tokens) if tokens.is_empty() => "nobody holds it".to_string(),
        Found::Grants(tokens) => format!("it is held under token(s) {tokens:?}"),
        Found::Task { state: None, .. } => "the task does not exist".to_string(),
        Found::Task {
            state: Some(state),
            fencing_token: 0,
        } => format!("the task is {}", state_name(*state)),
        Found::Task {
            state: Some(state),
            fencing_token,
        } => format!(
            "the task is {} under token {fencing_token}",
            state_name(*state)
        ),
    };
    format!("the compare on line {line} failed: {found}")
}

fn result_json(result: &TransactionResult, compares: &[(usize, Item)]) -> Value {
    let results: Vec<Value> = result
        .results
        .iter()
        .map(|outcome| match outcome {
            OpOutcome::TaskCompleted { task_id } => json!({"completed_task_id": task_id}),
            OpOutcome::Put => json!({"put": true}),
            OpOutcome::Deleted { existed } => json!({"deleted": existed}),
            OpOutcome::TaskSubmitted { task_id, existing } => {
                json!({"submitted_task_id": task_id, "existing": existing})
            }
            OpOutcome::WorkflowStarted {
                workflow_id,
                existed,
            } => json!({"started_workflow_id": workflow_id, "existed": existed}),
            OpOutcome::LockReleased => json!({"released": true}),
            OpOutcome::Published {
                topic,
                seq,
                duplicate,
            } => json!({"published": {"topic": topic, "seq": seq, "duplicate": duplicate}}),
        })
        .collect();
    let failed: Vec<Value> = result
        .failed_compares
        .iter()
        .map(|failure| {
            let line = compares.get(failure.index).map_or(0, |(number, _)| *number);
            let found = match &failure.found {
                Found::ModRevision(revision) => json!({"mod_revision": revision}),
                Found::Grants(tokens) => json!({"tokens": tokens}),
                Found::Task {
                    state,
                    fencing_token,
                } => json!({
                    "state": state.map(state_name),
                    "fencing_token": fencing_token,
                }),
            };
            json!({"index": failure.index, "line": line, "found": found})
        })
        .collect();
    json!({
        "header": header_json(&result.header),
        "succeeded": result.succeeded,
        "results": results,
        "failed_compares": failed,
    })
}
