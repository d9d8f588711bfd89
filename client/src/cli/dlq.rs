//! `conclave dlq ...`: the dead-letter queue (DEAD_LETTERED and EXPIRED tasks).

use clap::Subcommand;
use conclave_client::{
    unix_ms_now, DeadLetterListOptions, DeadLetterReason, DeadLetterResult, DeadLetterSelector,
    ReadConsistency, Task, TaskPage,
};
use serde_json::json;

use super::output::{self, header_json};
use super::render::{clip, reason_name, state_text, task_json};
use super::when::format_relative;
use super::{CliError, CliResult, Globals};

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters: why each was dead-lettered, its attempts and its last error.
    ///
    /// Without --limit, pages through every dead letter.
    Ls {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Return at most this many (1..=1000), in one page.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
        /// Start after this task id.
        #[arg(long, value_name = "TASK_ID")]
        after: Option<u64>,
        /// Read the serving node's local state instead of confirming with a quorum; may be stale.
        #[arg(long)]
        serializable: bool,
    },
    /// Put dead letters back in their queues as new tasks (attempts reset, history kept).
    ///
    /// Give task ids, or --queue for every dead letter of a queue. Exits 1 when ids were given and
    /// none of them was a dead letter.
    #[command(override_usage = "conclave dlq redrive (<ID>... | --queue <QUEUE>)")]
    Redrive {
        #[arg(required_unless_present = "queue", conflicts_with = "queue")]
        ids: Vec<u64>,
        #[arg(long)]
        queue: Option<String>,
    },
    /// Forget dead letters for good.
    ///
    /// Give task ids, or --queue for every dead letter of a queue. Exits 1 when ids were given and
    /// none of them was a dead letter.
    #[command(override_usage = "conclave dlq purge (<ID>... | --queue <QUEUE>)")]
    Purge {
        #[arg(required_unless_present = "queue", conflicts_with = "queue")]
        ids: Vec<u64>,
        #[arg(long)]
        queue: Option<String>,
    },
}

pub async fn run(command: DlqCommand, globals: &Globals) -> CliResult {
    let client = globals.client()?;
    let json = globals.json;
    match command {
        DlqCommand::Ls {
            queue,
            limit,
            after,
            serializable,
        } => {
            let mut options = DeadLetterListOptions {
                queue: queue.unwrap_or_default(),
                limit: limit.unwrap_or(0),
                after_id: after.unwrap_or(0),
                consistency: if serializable {
                    ReadConsistency::Serializable
                } else {
                    ReadConsistency::Linearizable
                },
            };
            let mut tasks = Vec::new();
            let last: TaskPage = loop {
                let page = client.list_dead_letters(options.clone()).await?;
                let done = limit.is_some() || !page.more || page.next_after_id <= options.after_id;
                options.after_id = page.next_after_id;
                tasks.extend(page.tasks.iter().cloned());
                if done {
                    break page;
                }
            };
            let more = limit.is_some() && last.more;
            if json {
                return output::json_document(&json!({
                    "tasks": tasks.iter().map(task_json).collect::<Vec<_>>(),
                    "count": tasks.len(),
                    "more": more,
                    "next_after_id": last.next_after_id,
                }));
            }
            output::line(&dead_letter_table(&tasks, unix_ms_now()))?;
            if more {
                eprintln!(
                    "(more dead letters follow; continue with --after {})",
                    last.next_after_id
                );
            }
            Ok(())
        }
        DlqCommand::Redrive { ids, queue } => {
            let (selector, given_ids) = selector(ids, queue);
            let result = client.redrive(selector).await?;
            report("redriven", "redrive", &result, given_ids, json)
        }
        DlqCommand::Purge { ids, queue } => {
            let (selector, given_ids) = selector(ids, queue);
            let result = client.purge(selector).await?;
            report("purged", "purge", &result, given_ids, json)
        }
    }
}

fn selector(ids: Vec<u64>, queue: Option<String>) -> (DeadLetterSelector, bool) {
    match queue {
        Some(queue) => (DeadLetterSelector::Queue(queue), false),
        None => (DeadLetterSelector::Ids(ids), true),
    }
}

fn report(
    done: &str,
    verb: &str,
    result: &DeadLetterResult,
    given_ids: bool,
    json: bool,
) -> CliResult {
    if json {
        output::json_document(&json!({
            "header": header_json(&result.header),
            "count": result.count,
        }))?;
    }
    // Said once: the error alone when the ids named no dead letter.
    if given_ids && result.count == 0 {
        return Err(CliError::failed(format!(
            "nothing to {verb}: none of the given tasks is a dead letter"
        )));
    }
    if !json {
        let noun = if result.count == 1 {
            "dead letter"
        } else {
            "dead letters"
        };
        output::line(&format!("{done} {} {noun}", result.count))?;
    }
    Ok(())
}

/// The `dlq ls` table.
pub fn dead_letter_table(tasks: &[Task], now_ms: u64) -> String {
    let mut rows = vec![[
        "ID",
        "QUEUE",
        "STATE",
        "REASON",
        "ATTEMPTS",
        "UPDATED",
        "LAST ERROR",
    ]
    .map(String::from)
    .to_vec()];
    for task in tasks {
        let reason = match task.dead_letter_reason() {
            DeadLetterReason::Unspecified => "-".to_string(),
            reason => reason_name(reason),
        };
        rows.push(vec![
            task.id.to_string(),
            task.spec
                .as_ref()
                .map_or_else(String::new, |spec| spec.queue.clone()),
            state_text(task.state()),
            reason,
            task.attempts.to_string(),
            format_relative(task.updated_unix_ms, now_ms),
            if task.last_error.is_empty() {
                "-".to_string()
            } else {
                clip(&task.last_error, 70)
            },
        ]);
    }
    output::table(&rows)
}
