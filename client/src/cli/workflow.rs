//! `conclave workflow ...`: workflow definitions. `check` validates a definition file locally, by
//! the rules the node applies; starting and following workflows come with the node's service.

use std::path::PathBuf;

use clap::Subcommand;
use conclave_client::{human_millis, load_definition, step_summaries, WorkflowDefinition};
use serde_json::{json, Value};

use super::output;
use super::{CliResult, Globals};

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Validate a definition file (YAML, or JSON for a .json file) without contacting the
    /// cluster, and print one line per step: its kind, what it follows, its join, its condition
    /// and its compensation. Exits 2 with a one-line error naming the step and the field (and the
    /// line, for a YAML shape error) when the definition is broken.
    Check {
        /// The definition file.
        file: PathBuf,
    },
}

pub async fn run(command: WorkflowCommand, globals: &Globals) -> CliResult {
    match command {
        WorkflowCommand::Check { file } => {
            let definition = load_definition(&file)?;
            if globals.json {
                output::json_document(&definition_json(&definition))
            } else {
                output::line(&headline(&definition))?;
                for line in step_summaries(&definition) {
                    output::line(&format!("  {line}"))?;
                }
                Ok(())
            }
        }
    }
}

fn headline(definition: &WorkflowDefinition) -> String {
    let deadline = match definition.deadline_ms {
        0 => String::new(),
        ms => format!(", deadline {}", human_millis(ms)),
    };
    format!(
        "{} v{}: {} steps{deadline}",
        definition.name,
        definition.version,
        definition.steps.len()
    )
}

fn definition_json(definition: &WorkflowDefinition) -> Value {
    let steps: Vec<Value> = definition
        .steps
        .iter()
        .zip(step_summaries(definition))
        .map(|(step, summary)| {
            json!({
                "name": step.name,
                "after": step.after,
                "summary": summary.trim_start_matches(step.name.as_str()).trim(),
            })
        })
        .collect();
    json!({
        "valid": true,
        "name": definition.name,
        "version": definition.version,
        "deadline_ms": definition.deadline_ms,
        "steps": steps,
    })
}
