//! `conclave topic consume TOPIC GROUP -- COMMAND...`: a consumer group's member that runs COMMAND
//! once per message, like `agent run` does per task: the message's data on stdin, what it is in
//! the environment, exit 0 acks it, any other exit nacks it (redelivered after --nack-delay, to
//! this member or another, until the group's max deliveries sends it to the dead letters).
//!
//! While the command runs the member keeps the delivery's ack wait from passing (InProgress at
//! half of what is left); when the delivery is lost anyway (its token went stale: the ack wait
//! passed during a pause, the group was deleted) the command's process group is stopped and the
//! message left to its next delivery. The environment names the delivery so the command can make
//! its own writes conditional on it: CONCLAVE_TOPIC, CONCLAVE_GROUP, CONCLAVE_SEQ,
//! CONCLAVE_SUBJECT, CONCLAVE_KEY (when UTF-8), CONCLAVE_DELIVERY_TOKEN, CONCLAVE_DELIVERIES, and
//! CONCLAVE_HEADER_<NAME> per header (upper case, `-` as `_`).

use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use conclave_client::{unix_ms_now, Client, Delivery, Error, TopicMessage};
use tokio::io::AsyncWriteExt as _;

use super::process_group::{die_with_agent, signal_group, SIGKILL, SIGTERM};
use super::when::parse_duration;
use super::{output, CliError, CliResult};

/// How long a Fetch waits for a message before asking again.
const FETCH_WAIT: Duration = Duration::from_secs(5);
/// How long a stopped command has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct Consume {
    pub topic: String,
    pub group: String,
    /// The member name (default: consume-<PID>).
    #[arg(long)]
    pub member: Option<String>,
    /// Stop after this many messages were handled (acked or nacked).
    #[arg(long)]
    pub count: Option<u64>,
    /// How long a nacked message waits before it is delivered again.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub nack_delay: Duration,
    /// The command run per message, after `--`.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// What became of one delivery.
enum Handled {
    Acked,
    Nacked(String),
    Lost(String),
}

pub async fn run(client: &Client, args: Consume) -> CliResult {
    let member = args
        .member
        .clone()
        .unwrap_or_else(|| format!("consume-{}", std::process::id()));
    let limit = args.count.unwrap_or(u64::MAX);
    let mut handled = 0;
    while handled < limit {
        let fetched = tokio::select! {
            fetched = client.fetch(&args.topic, &args.group, &member, 1, FETCH_WAIT) => fetched?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        for delivery in fetched {
            let Some(message) = delivery.message.clone() else {
                continue;
            };
            let outcome = handle(client, &args, &member, &delivery, &message).await?;
            let what = match outcome {
                Handled::Acked => "acked".to_string(),
                Handled::Nacked(why) => format!("nacked ({why})"),
                Handled::Lost(why) => format!("delivery lost ({why}); left to its next delivery"),
            };
            output::line(&format!(
                "{member}: {} seq {} ({}, delivery {}): {what}",
                args.topic, message.seq, message.subject, delivery.deliveries
            ))?;
            handled += 1;
        }
    }
    Ok(())
}

/// Runs the command on one delivery and acks or nacks it.
async fn handle(
    client: &Client,
    args: &Consume,
    member: &str,
    delivery: &Delivery,
    message: &TopicMessage,
) -> CliResult<Handled> {
    let (topic, group, seq, token) = (&args.topic, &args.group, message.seq, delivery.token);
    let mut child = spawn(args, member, delivery, message)?;
    let pgid = child.id().unwrap_or(0);
    if let Some(mut stdin) = child.stdin.take() {
        let data = message.data.clone();
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
        });
    }
    let mut deadline_ms = delivery.deadline_ms;
    let status = loop {
        let left = deadline_ms.saturating_sub(unix_ms_now());
        let extend_in = Duration::from_millis((left / 2).max(200));
        tokio::select! {
            status = child.wait() => break status.map_err(|e| CliError::failed(format!("waiting for the command: {e}")))?,
            () = tokio::time::sleep(extend_in) => match client.in_progress(topic, group, seq, token).await {
                Ok(deadline) => deadline_ms = deadline,
                Err(Error::LeaseLost { message }) => {
                    stop(&mut child, pgid).await;
                    return Ok(Handled::Lost(message));
                }
                Err(error) => tracing::warn!(%error, "could not extend the ack wait; trying again"),
            },
        }
    };
    let verdict = if status.success() {
        client
            .ack(topic, group, seq, token)
            .await
            .map(|_| Handled::Acked)
    } else {
        let why = format!("the command exited with {status}");
        let nacked = client
            .nack(topic, group, (seq, token), args.nack_delay)
            .await;
        nacked.map(|_| Handled::Nacked(why))
    };
    match verdict {
        Ok(handled) => Ok(handled),
        Err(Error::LeaseLost { message }) => Ok(Handled::Lost(message)),
        Err(error) => Err(error.into()),
    }
}

/// Starts the command as the leader of its own process group, with the delivery in its
/// environment.
fn spawn(
    args: &Consume,
    member: &str,
    delivery: &Delivery,
    message: &TopicMessage,
) -> CliResult<tokio::process::Child> {
    let mut command = tokio::process::Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .stdin(Stdio::piped())
        .process_group(0)
        .env("CONCLAVE_TOPIC", &args.topic)
        .env("CONCLAVE_GROUP", &args.group)
        .env("CONCLAVE_MEMBER", member)
        .env("CONCLAVE_SEQ", message.seq.to_string())
        .env("CONCLAVE_SUBJECT", &message.subject)
        .env("CONCLAVE_DELIVERY_TOKEN", delivery.token.to_string())
        .env("CONCLAVE_DELIVERIES", delivery.deliveries.to_string());
    if let Some(key) = message
        .key
        .as_ref()
        .and_then(|k| std::str::from_utf8(k).ok())
    {
        command.env("CONCLAVE_KEY", key);
    }
    for (name, value) in &message.headers {
        let name = name.to_uppercase().replace('-', "_");
        command.env(format!("CONCLAVE_HEADER_{name}"), value);
    }
    die_with_agent(&mut command);
    command.spawn().map_err(|error| {
        CliError::failed(format!("could not start {:?}: {error}", args.command[0]))
    })
}

/// Stops the command's process group: SIGTERM, then SIGKILL after [`STOP_GRACE`].
async fn stop(child: &mut tokio::process::Child, pgid: u32) {
    let _ = signal_group(pgid, SIGTERM);
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = signal_group(pgid, SIGKILL);
        let _ = child.wait().await;
    }
}
