//! `conclave topic trigger create|ls|delete`: a topic's rules that submit a task or start a
//! workflow for each message stored (topics.proto `CreateTrigger`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use conclave_client::{load_definition, Client, TaskSpec, TopicTrigger, TriggerAction};
use serde_json::{json, Value};

use super::{output, CliResult};

#[derive(Debug, Subcommand)]
pub enum TriggerCommand {
    /// Add a trigger: for each message stored from now on whose subject matches --subject, submit
    /// a task to --queue (the message data as payload; labels conclave.topic, conclave.seq,
    /// conclave.subject, conclave.key) or start the workflow of --workflow (input: the message
    /// as JSON), exactly once per message.
    Create(Create),
    /// List a topic's triggers with what they did.
    Ls { topic: String },
    /// Remove a trigger.
    Delete { topic: String, name: String },
}

#[derive(Debug, Args)]
pub struct Create {
    pub topic: String,
    pub name: String,
    /// The subject pattern (within the topic) of the messages that fire it.
    #[arg(long)]
    pub subject: String,
    /// Submit a task to this queue per message.
    #[arg(
        long,
        conflicts_with = "workflow",
        required_unless_present = "workflow"
    )]
    pub queue: Option<String>,
    /// A capability the task requires (repeat it).
    #[arg(long = "capability", requires = "queue")]
    pub capabilities: Vec<String>,
    /// The task's priority (higher first).
    #[arg(long, default_value_t = 0, requires = "queue")]
    pub priority: i32,
    /// Attempts before the task is dead-lettered (0: the queue's default).
    #[arg(long, requires = "queue")]
    pub max_attempts: Option<u32>,
    /// Start the workflow defined in this file (YAML or JSON) per message.
    #[arg(long, value_name = "FILE")]
    pub workflow: Option<PathBuf>,
}

pub async fn run(client: &Client, command: TriggerCommand, json: bool) -> CliResult {
    match command {
        TriggerCommand::Create(args) => create(client, args, json).await,
        TriggerCommand::Ls { topic } => {
            let triggers = client.list_triggers(&topic).await?;
            if json {
                let all: Vec<Value> = triggers.iter().map(trigger_json).collect();
                return output::json_document(&json!({ "topic": topic, "triggers": all }));
            }
            for trigger in &triggers {
                output::line(&trigger_text(trigger))?;
            }
            Ok(())
        }
        TriggerCommand::Delete { topic, name } => {
            client.delete_trigger(&topic, &name).await?;
            let doc = json!({ "topic": topic, "trigger": name, "deleted": true });
            print(json, &doc, &format!("trigger {name} of {topic} deleted"))
        }
    }
}

async fn create(client: &Client, args: Create, json: bool) -> CliResult {
    let action = match (&args.queue, &args.workflow) {
        (Some(queue), _) => TriggerAction::Task(TaskSpec {
            queue: queue.clone(),
            capabilities: args.capabilities.clone(),
            priority: args.priority,
            max_attempts: args.max_attempts.unwrap_or(0),
            ..TaskSpec::default()
        }),
        (None, Some(path)) => TriggerAction::Workflow(load_definition(path)?),
        (None, None) => unreachable!("clap requires --queue or --workflow"),
    };
    let trigger = TopicTrigger {
        name: args.name.clone(),
        subject: args.subject.clone(),
        action: Some(action),
        ..TopicTrigger::default()
    };
    let existing = client.create_trigger(&args.topic, trigger).await?;
    let verb = if existing { "exists" } else { "created" };
    let doc = json!({ "topic": args.topic, "trigger": args.name, "existing": existing });
    print(
        json,
        &doc,
        &format!("trigger {} of {} {verb}", args.name, args.topic),
    )
}

fn print(json: bool, doc: &Value, text: &str) -> CliResult {
    if json {
        output::json_document(doc)
    } else {
        output::line(text)
    }
}

fn action_text(trigger: &TopicTrigger) -> String {
    match &trigger.action {
        Some(TriggerAction::Task(spec)) => format!("task to queue {}", spec.queue),
        Some(TriggerAction::Workflow(definition)) => format!("workflow {}", definition.name),
        None => "nothing".to_string(),
    }
}

fn trigger_text(trigger: &TopicTrigger) -> String {
    let mut text = format!(
        "{}  {}  {}  fired {}  failed {}",
        trigger.name,
        trigger.subject,
        action_text(trigger),
        trigger.fired,
        trigger.failed
    );
    if !trigger.last_error.is_empty() {
        text.push_str(&format!("  last error: {}", trigger.last_error));
    }
    text
}

fn trigger_json(trigger: &TopicTrigger) -> Value {
    json!({
        "name": trigger.name,
        "subject": trigger.subject,
        "action": action_text(trigger),
        "created_ms": trigger.created_ms,
        "fired": trigger.fired,
        "failed": trigger.failed,
        "last_error": trigger.last_error,
    })
}
