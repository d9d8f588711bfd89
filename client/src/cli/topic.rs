//! `conclave topic ...`: topics (create, ls, get, delete), publish, tail (a subscription, or a
//! consumer group's member that acks what it prints), groups and their dead letters.

use std::io::Read;
use std::time::Duration;

use clap::Subcommand;
use conclave_client::{
    sorted_headers, unix_ms_now, Client, GroupInfo, GroupOptions, PublishMessage,
    PublishMessageExt, TopicInfo, TopicMessage, TopicOptions, TopicStart,
};
use futures::StreamExt;
use serde_json::{json, Value};

use super::output::{self, table};
use super::when::{format_duration, parse_duration, parse_when};
use super::{CliError, CliResult, Globals};

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic capturing --subjects (default NAME and NAME.>), with retention.
    Create {
        name: String,
        /// Subject patterns (`*` one token, `>` the rest), comma-separated.
        #[arg(long, value_delimiter = ',')]
        subjects: Vec<String>,
        /// Keep at most this many messages (0: no limit).
        #[arg(long, default_value = "0")]
        max_msgs: u64,
        /// Keep at most this many bytes of messages (0: no limit).
        #[arg(long, default_value = "0")]
        max_bytes: u64,
        /// Discard messages older than this (e.g. 24h; 0s: no limit).
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
        max_age: Duration,
    },
    /// List topics.
    Ls,
    /// Show a topic with its groups' positions and lag. Exits 1 when unknown.
    Get { name: String },
    /// Delete a topic with its messages, groups and dead letters.
    Delete { name: String },
    /// Publish one message to SUBJECT: DATA, @FILE, or - (stdin).
    Publish {
        subject: String,
        data: Option<String>,
        /// The message key (per-key order in groups).
        #[arg(long)]
        key: Option<String>,
        /// A header name=value (repeatable).
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// An idempotency key: a repeat within the duplicate window stores nothing.
        #[arg(long = "id")]
        idempotency_key: Option<String>,
    },
    /// Print the messages of SUBJECT (a pattern) as they come, like `nats sub`; with --group,
    /// fetch as a member of the group and ack each message once printed. Ctrl-C stops.
    Tail {
        subject: String,
        /// The topic, when the pattern alone does not name one.
        #[arg(long)]
        topic: Option<String>,
        /// Consume as a member of this group (created by `topic group create`).
        #[arg(long)]
        group: Option<String>,
        /// The member name (default: tail-<PID>).
        #[arg(long, requires = "group")]
        member: Option<String>,
        /// Start at this sequence.
        #[arg(long, conflicts_with_all = ["since", "all"])]
        from_seq: Option<u64>,
        /// Start at the first message published since (10m: ten minutes ago; or a time).
        #[arg(long, conflicts_with = "all")]
        since: Option<String>,
        /// Start at the oldest message kept (default: new messages only).
        #[arg(long)]
        all: bool,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Run COMMAND once per message of TOPIC's group GROUP, as one of its members: the data on
    /// stdin, the delivery in CONCLAVE_* variables; exit 0 acks, any other exit nacks (delivered
    /// again after --nack-delay). The ack wait is kept from passing while COMMAND runs; a lost
    /// delivery stops it. Ctrl-C stops between messages.
    Consume(super::topic_consume::Consume),
    /// Triggers: a task or a workflow per stored message, exactly once: create, ls, delete.
    #[command(subcommand)]
    Trigger(super::topic_trigger::TriggerCommand),
    /// Consumer groups: create, ls, get, delete.
    #[command(subcommand)]
    Group(GroupCommand),
    /// A group's dead letters: ls, redrive, purge.
    #[command(subcommand)]
    Dlq(TopicDlqCommand),
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a durable consumer group of TOPIC.
    Create {
        topic: String,
        group: String,
        /// Consume only subjects matching this pattern.
        #[arg(long, default_value = "")]
        filter: String,
        /// Start at this sequence (default: the oldest kept).
        #[arg(long, conflicts_with_all = ["since", "new"])]
        from_seq: Option<u64>,
        /// Start at the first message published since (10m ago, or a time).
        #[arg(long, conflicts_with = "new")]
        since: Option<String>,
        /// Start after the last message stored now.
        #[arg(long)]
        new: bool,
        /// Redeliver a message not acked within this (1s ..= 1h; default 30s).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ack_wait: Option<Duration>,
        /// Dead-letter a message after this many deliveries (1 ..= 100; default 5).
        #[arg(long)]
        max_deliveries: Option<u32>,
        /// Deliver keyed messages without per-key order.
        #[arg(long)]
        unordered: bool,
    },
    /// List TOPIC's groups with their positions.
    Ls { topic: String },
    /// Show one group's position.
    Get { topic: String, group: String },
    /// Delete a group with its deliveries and dead letters.
    Delete { topic: String, group: String },
}

#[derive(Debug, Subcommand)]
pub enum TopicDlqCommand {
    /// List a group's dead letters.
    Ls { topic: String, group: String },
    /// Send dead letters back to the group: the sequences given, or --all.
    Redrive {
        topic: String,
        group: String,
        seqs: Vec<u64>,
        #[arg(long)]
        all: bool,
    },
    /// Forget dead letters: the sequences given, or --all.
    Purge {
        topic: String,
        group: String,
        seqs: Vec<u64>,
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(command: TopicCommand, globals: &Globals) -> CliResult {
    let client = globals.client()?;
    let json = globals.json;
    match command {
        TopicCommand::Create {
            name,
            subjects,
            max_msgs,
            max_bytes,
            max_age,
        } => {
            let options = TopicOptions {
                subjects,
                max_msgs,
                max_bytes,
                max_age,
            };
            let existing = client.create_topic(&name, &options).await?;
            let verb = if existing { "exists" } else { "created" };
            print(
                json,
                &json!({ "topic": name, "existing": existing }),
                &format!("topic {name} {verb}"),
            )
        }
        TopicCommand::Ls => list(&client, json).await,
        TopicCommand::Get { name } => {
            let topic = client.get_topic(&name).await?;
            if json {
                return output::json_document(&topic_json(&topic));
            }
            output::line(&topic_text(&topic))
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            print(
                json,
                &json!({ "deleted": name }),
                &format!("topic {name} deleted"),
            )
        }
        TopicCommand::Publish {
            subject,
            data,
            key,
            headers,
            idempotency_key,
        } => {
            let message = outgoing(subject, data, key, headers, idempotency_key)?;
            publish(&client, message, json).await
        }
        TopicCommand::Tail {
            subject,
            topic,
            group,
            member,
            from_seq,
            since,
            all,
            count,
        } => {
            let start = start(from_seq, since.as_deref(), all, !all)?;
            let limit = count.unwrap_or(u64::MAX);
            match group {
                Some(group) => {
                    let topic = topic.unwrap_or_else(|| subject.clone());
                    let member = member.unwrap_or_else(|| format!("tail-{}", std::process::id()));
                    tail_group(&client, (&topic, &group, &member), limit, json).await
                }
                None => {
                    let topic = topic.unwrap_or_default();
                    tail(&client, &subject, &topic, start, limit, json).await
                }
            }
        }
        TopicCommand::Consume(args) => super::topic_consume::run(&client, args).await,
        TopicCommand::Trigger(command) => super::topic_trigger::run(&client, command, json).await,
        TopicCommand::Group(command) => group(&client, command, json).await,
        TopicCommand::Dlq(command) => dlq(&client, command, json).await,
    }
}

/// The message `topic publish` sends.
fn outgoing(
    subject: String,
    data: Option<String>,
    key: Option<String>,
    headers: Vec<String>,
    idempotency_key: Option<String>,
) -> CliResult<PublishMessage> {
    let mut message = PublishMessage::new(subject, read_data(data)?);
    if let Some(key) = key {
        message = message.with_key(key.into_bytes());
    }
    for header in headers {
        let (name, value) = header
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--header {header:?}: expected NAME=VALUE")))?;
        message = message.with_header(name, value);
    }
    if let Some(id) = idempotency_key {
        message = message.with_idempotency_key(id);
    }
    Ok(message)
}

async fn publish(client: &Client, message: PublishMessage, json: bool) -> CliResult {
    let published = client.publish(vec![message]).await?;
    let result = published
        .results
        .first()
        .ok_or_else(|| CliError::failed("the server's answer lacks the message's result"))?;
    let text = format!(
        "published {} #{}{}",
        result.topic,
        result.seq,
        if result.duplicate { " (duplicate)" } else { "" }
    );
    let doc = json!({"topic": result.topic, "seq": result.seq, "duplicate": result.duplicate});
    print(json, &doc, &text)
}

fn print(json: bool, doc: &Value, text: &str) -> CliResult {
    if json {
        output::json_document(doc)
    } else {
        output::line(text)
    }
}

/// The data to publish: the argument, @FILE, or stdin for `-` (or nothing given).
fn read_data(data: Option<String>) -> CliResult<Vec<u8>> {
    match data.as_deref() {
        None | Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|error| CliError::failed(format!("reading stdin: {error}")))?;
            Ok(bytes)
        }
        Some(text) => match text.strip_prefix('@') {
            Some(path) => std::fs::read(path)
                .map_err(|error| CliError::usage(format!("reading {path}: {error}"))),
            None => Ok(text.as_bytes().to_vec()),
        },
    }
}

/// A start position from the flags; `since` is a duration back from now or a time.
fn start(
    from_seq: Option<u64>,
    since: Option<&str>,
    all: bool,
    new: bool,
) -> CliResult<TopicStart> {
    if let Some(seq) = from_seq {
        return Ok(TopicStart::Sequence(seq));
    }
    if let Some(since) = since {
        let now = unix_ms_now();
        let at = match parse_duration(since) {
            Ok(ago) => now.saturating_sub(ago.as_millis() as u64),
            Err(_) => {
                parse_when(since, now).map_err(|e| CliError::usage(format!("--since: {e}")))?
            }
        };
        return Ok(TopicStart::Time(at));
    }
    Ok(if all || !new {
        TopicStart::All
    } else {
        TopicStart::New
    })
}

async fn list(client: &Client, json: bool) -> CliResult {
    let mut topics: Vec<TopicInfo> = Vec::new();
    let mut after = String::new();
    loop {
        let page = client.list_topics(&after, 0).await?;
        topics.extend(page.topics);
        match topics.last() {
            Some(last) if page.more && last.name > after => after = last.name.clone(),
            _ => break,
        }
    }
    if json {
        let all: Vec<Value> = topics.iter().map(topic_json).collect();
        return output::json_document(&json!({ "topics": all, "count": topics.len() }));
    }
    if topics.is_empty() {
        return Ok(());
    }
    let mut rows = vec![["NAME", "SUBJECTS", "MESSAGES", "BYTES", "LAST", "GROUPS"]
        .map(String::from)
        .to_vec()];
    for topic in &topics {
        let subjects = topic
            .config
            .as_ref()
            .map_or(String::new(), |c| c.subjects.join(","));
        rows.push(vec![
            topic.name.clone(),
            subjects,
            topic.messages.to_string(),
            topic.bytes.to_string(),
            topic.last_seq.to_string(),
            topic.groups.len().to_string(),
        ]);
    }
    output::line(&table(&rows))
}

fn topic_json(topic: &TopicInfo) -> Value {
    let config = topic.config.clone().unwrap_or_default();
    json!({
        "name": topic.name,
        "subjects": config.subjects,
        "max_msgs": config.max_msgs,
        "max_bytes": config.max_bytes,
        "max_age_ms": config.max_age_ms,
        "first_seq": topic.first_seq,
        "last_seq": topic.last_seq,
        "messages": topic.messages,
        "bytes": topic.bytes,
        "discarded": topic.discarded,
        "groups": topic.groups.iter().map(group_json).collect::<Vec<_>>(),
    })
}

fn group_json(group: &GroupInfo) -> Value {
    json!({
        "name": group.name,
        "filter": group.filter,
        "ack_wait_ms": group.ack_wait_ms,
        "max_deliveries": group.max_deliveries,
        "ordered_keys": group.ordered_keys,
        "ack_floor": group.ack_floor,
        "last_delivered": group.last_delivered,
        "in_flight": group.in_flight,
        "waiting": group.waiting,
        "redeliveries": group.redeliveries,
        "acked": group.acked,
        "dead_letters": group.dead_letters,
        "lag": group.lag,
        "members": group.members,
    })
}

fn topic_text(topic: &TopicInfo) -> String {
    let config = topic.config.clone().unwrap_or_default();
    let limit = |n: u64| {
        if n == 0 {
            "unlimited".to_string()
        } else {
            n.to_string()
        }
    };
    let age = if config.max_age_ms == 0 {
        "unlimited".to_string()
    } else {
        format_duration(Duration::from_millis(config.max_age_ms))
    };
    let mut text = format!(
        "topic {}\n  subjects   {}\n  messages   {} ({} bytes), sequences {}..{}, {} discarded\n  retention  max msgs {}, max bytes {}, max age {}",
        topic.name,
        config.subjects.join(", "),
        topic.messages,
        topic.bytes,
        topic.first_seq,
        topic.last_seq,
        topic.discarded,
        limit(config.max_msgs),
        limit(config.max_bytes),
        age,
    );
    if !topic.groups.is_empty() {
        text.push('\n');
        text.push_str(&groups_table(&topic.groups));
    }
    text
}

fn groups_table(groups: &[GroupInfo]) -> String {
    let mut rows = vec![[
        "GROUP",
        "FILTER",
        "ACK FLOOR",
        "DELIVERED",
        "IN FLIGHT",
        "REDELIVERED",
        "DEAD",
        "LAG",
    ]
    .map(String::from)
    .to_vec()];
    for g in groups {
        rows.push(vec![
            g.name.clone(),
            if g.filter.is_empty() {
                "*".into()
            } else {
                g.filter.clone()
            },
            g.ack_floor.to_string(),
            g.last_delivered.to_string(),
            g.in_flight.to_string(),
            g.redeliveries.to_string(),
            g.dead_letters.to_string(),
            g.lag.to_string(),
        ]);
    }
    table(&rows)
}

/// One message as a line: `#SEQ SUBJECT [key=K] [name=value ...] DATA`.
fn message_text(message: &TopicMessage) -> String {
    let mut text = format!("#{} {}", message.seq, message.subject);
    if let Some(key) = &message.key {
        text.push_str(&format!(" key={}", output::text(key)));
    }
    for (name, value) in sorted_headers(&message.headers) {
        text.push_str(&format!(" {name}={value}"));
    }
    text.push(' ');
    text.push_str(&output::text(&message.data));
    text
}

fn message_json(message: &TopicMessage) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("topic".into(), json!(message.topic));
    object.insert("seq".into(), json!(message.seq));
    object.insert("subject".into(), json!(message.subject));
    if let Some(key) = &message.key {
        output::insert_bytes(&mut object, "key", key);
    }
    object.insert("headers".into(), json!(sorted_headers(&message.headers)));
    output::insert_bytes(&mut object, "data", &message.data);
    object.insert("published_ms".into(), json!(message.published_ms));
    Value::Object(object)
}

fn print_message(message: &TopicMessage, json: bool) -> CliResult {
    if json {
        output::json_line(&message_json(message))
    } else {
        output::line(&message_text(message))
    }
}

/// Follows a subscription until ctrl-c or `limit` messages.
async fn tail(
    client: &Client,
    subject: &str,
    topic: &str,
    start: TopicStart,
    limit: u64,
    json: bool,
) -> CliResult {
    let mut subscription = client.subscribe(subject, topic, start).await?;
    let mut seen = 0;
    while seen < limit {
        let next = tokio::select! {
            next = subscription.next() => next,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match next {
            Some(Ok(message)) => {
                print_message(&message, json)?;
                seen += 1;
            }
            Some(Err(error)) => return Err(error.into()),
            None => return Ok(()),
        }
    }
    Ok(())
}

/// Fetches as a member of a group, prints and acks each message, until ctrl-c or `limit`.
async fn tail_group(
    client: &Client,
    (topic, group, member): (&str, &str, &str),
    limit: u64,
    json: bool,
) -> CliResult {
    let mut seen = 0;
    while seen < limit {
        let max = (limit - seen).min(64) as u32;
        let fetched = tokio::select! {
            fetched = client.fetch(topic, group, member, max, Duration::from_secs(5)) => fetched?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        for delivery in fetched {
            let Some(message) = &delivery.message else {
                continue;
            };
            print_message(message, json)?;
            client
                .ack(topic, group, message.seq, delivery.token)
                .await?;
            seen += 1;
        }
    }
    Ok(())
}

async fn group(client: &Client, command: GroupCommand, json: bool) -> CliResult {
    match command {
        GroupCommand::Create {
            topic,
            group,
            filter,
            from_seq,
            since,
            new,
            ack_wait,
            max_deliveries,
            unordered,
        } => {
            let options = GroupOptions {
                filter,
                start: start(from_seq, since.as_deref(), !new, new)?,
                ack_wait: ack_wait.unwrap_or_default(),
                max_deliveries: max_deliveries.unwrap_or(0),
                unordered,
            };
            let existing = client.create_group(&topic, &group, &options).await?;
            let verb = if existing { "exists" } else { "created" };
            let doc = json!({ "topic": topic, "group": group, "existing": existing });
            print(json, &doc, &format!("group {group} of {topic} {verb}"))
        }
        GroupCommand::Ls { topic } => {
            let info = client.get_topic(&topic).await?;
            if json {
                let groups: Vec<Value> = info.groups.iter().map(group_json).collect();
                return output::json_document(&json!({ "groups": groups }));
            }
            if info.groups.is_empty() {
                return Ok(());
            }
            output::line(&groups_table(&info.groups))
        }
        GroupCommand::Get { topic, group } => {
            let info = client.get_group(&topic, &group).await?;
            if json {
                return output::json_document(&group_json(&info));
            }
            output::line(&groups_table(std::slice::from_ref(&info)))
        }
        GroupCommand::Delete { topic, group } => {
            client.delete_group(&topic, &group).await?;
            let doc = json!({ "deleted": group });
            print(json, &doc, &format!("group {group} of {topic} deleted"))
        }
    }
}

fn seqs_or_all(seqs: Vec<u64>, all: bool) -> CliResult<Vec<u64>> {
    match (seqs.is_empty(), all) {
        (true, true) => Ok(Vec::new()),
        (false, false) => Ok(seqs),
        (true, false) => Err(CliError::usage("name the sequences, or give --all")),
        (false, true) => Err(CliError::usage("give the sequences or --all, not both")),
    }
}

async fn dlq(client: &Client, command: TopicDlqCommand, json: bool) -> CliResult {
    match command {
        TopicDlqCommand::Ls { topic, group } => {
            let (dead, more) = client.list_topic_dead_letters(&topic, &group, 0, 0).await?;
            if json {
                let all: Vec<Value> = dead
                    .iter()
                    .map(|d| {
                        json!({
                            "message": d.message.as_ref().map_or(Value::Null, message_json),
                            "reason": d.reason,
                            "deliveries": d.deliveries,
                            "dead_ms": d.dead_ms,
                        })
                    })
                    .collect();
                return output::json_document(&json!({ "dead_letters": all, "more": more }));
            }
            for d in &dead {
                let message = d.message.as_ref().map_or(String::new(), message_text);
                output::line(&format!(
                    "{message}\n  {} ({} deliveries)",
                    d.reason, d.deliveries
                ))?;
            }
            if more {
                eprintln!("(more follow)");
            }
            Ok(())
        }
        TopicDlqCommand::Redrive {
            topic,
            group,
            seqs,
            all,
        } => {
            let seqs = seqs_or_all(seqs, all)?;
            let (redriven, discarded) = client
                .redrive_topic_dead_letters(&topic, &group, &seqs)
                .await?;
            let doc = json!({ "redriven": redriven, "discarded": discarded });
            let text = format!(
                "redriven {redriven}; {discarded} left (their message was discarded by retention)"
            );
            print(json, &doc, &text)
        }
        TopicDlqCommand::Purge {
            topic,
            group,
            seqs,
            all,
        } => {
            let seqs = seqs_or_all(seqs, all)?;
            let purged = client
                .purge_topic_dead_letters(&topic, &group, &seqs)
                .await?;
            print(
                json,
                &json!({ "purged": purged }),
                &format!("purged {purged}"),
            )
        }
    }
}
