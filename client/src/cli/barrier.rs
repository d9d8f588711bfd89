//! `conclave barrier ...`: enter a barrier and wait for it, read one, list them.

use std::time::Duration;

use clap::Subcommand;
use conclave_client::{
    unix_ms_now, Barrier, BarrierOptions, BarrierStatus, LockListOptions, ReadConsistency,
};
use serde_json::{json, Value};

use super::output::{self, header_json, table};
use super::render::{enum_name, list_text};
use super::when::{format_relative, parse_duration};
use super::{CliError, CliResult, Globals};

#[derive(Debug, Subcommand)]
pub enum BarrierCommand {
    /// Arrive at a barrier of --parties and wait (--wait) until --quorum of them have arrived.
    ///
    /// The first to enter creates it with --parties, --quorum and --timeout (counted from that
    /// first arrival); later ones must give the same parties and quorum. Exits 0 when the barrier
    /// was released, 1 when it timed out (or was closed before this arrival counted), 3 when --wait
    /// passed with the barrier still waiting.
    Enter {
        name: String,
        /// N, the participants (1..=1000).
        #[arg(long)]
        parties: u32,
        /// k, the arrivals that release it (1..=N; default N).
        #[arg(long)]
        quorum: Option<u32>,
        /// The barrier times out this long after its first arrival (at most 24h).
        #[arg(long = "barrier-timeout", value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
        barrier_timeout: Duration,
        /// How long this command waits for the barrier to close (at most 5m); 0s: just arrive.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        wait: Duration,
        /// Who arrives (default: `pid-<PID>` of this process).
        #[arg(long = "as", value_name = "PARTICIPANT")]
        participant: Option<String>,
    },
    /// Show a barrier: status, parties, quorum, who arrived. Exits 1 when unknown.
    Get {
        name: String,
        #[arg(long)]
        serializable: bool,
    },
    /// List barriers in name order.
    Ls {
        /// Return at most this many (1..=1000), in one page.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
        /// Start after this name.
        #[arg(long, value_name = "NAME")]
        after: Option<String>,
        #[arg(long)]
        serializable: bool,
    },
}

pub async fn run(command: BarrierCommand, globals: &Globals) -> CliResult {
    let client = globals.client()?;
    let json = globals.json;
    match command {
        BarrierCommand::Enter {
            name,
            parties,
            quorum,
            barrier_timeout,
            wait,
            participant,
        } => {
            let participant = participant.unwrap_or_else(|| format!("pid-{}", std::process::id()));
            let options = BarrierOptions {
                parties,
                quorum: quorum.unwrap_or(0),
                timeout: barrier_timeout,
                wait,
            };
            let entry = client.enter_barrier(&name, &participant, &options).await?;
            if json {
                output::json_document(&json!({
                    "header": header_json(&entry.header),
                    "counted": entry.counted,
                    "barrier": entry.barrier.as_ref().map_or(Value::Null, barrier_json),
                }))?;
            }
            let Some(barrier) = entry.barrier else {
                return Err(CliError::failed(format!("barrier {name} is gone")));
            };
            if !json {
                output::line(&barrier_text(&barrier))?;
            }
            match (barrier.status(), entry.counted) {
                (BarrierStatus::Released, true) => Ok(()),
                (BarrierStatus::Released, false) => Err(CliError::failed(format!(
                    "barrier {name} had closed before {participant} arrived; not counted"
                ))),
                (BarrierStatus::TimedOut, _) => Err(CliError::failed(format!(
                    "barrier {name} timed out with {} of {} arrived",
                    barrier.arrived.len(),
                    barrier.quorum
                ))),
                (BarrierStatus::Waiting, _) => Err(CliError::unknown(format!(
                    "barrier {name} still waiting ({} of {} arrived) when the wait ended",
                    barrier.arrived.len(),
                    barrier.quorum
                ))),
            }
        }
        BarrierCommand::Get { name, serializable } => {
            let read = client
                .get_barrier_with(&name, consistency(serializable))
                .await?;
            if json {
                output::json_document(&json!({
                    "header": header_json(&read.header),
                    "barrier": barrier_json(&read.barrier),
                }))
            } else {
                output::line(&barrier_text(&read.barrier))
            }
        }
        BarrierCommand::Ls {
            limit,
            after,
            serializable,
        } => {
            let mut options = LockListOptions {
                after: after.unwrap_or_default(),
                limit: limit.unwrap_or(0),
                consistency: consistency(serializable),
            };
            let mut barriers: Vec<Barrier> = Vec::new();
            let (header, more) = loop {
                let page = client.list_barriers(options.clone()).await?;
                barriers.extend(page.barriers);
                let last = barriers.last().map(|barrier| barrier.name.clone());
                match (page.more, limit, last) {
                    (true, None, Some(last)) if last > options.after => options.after = last,
                    (more, _, _) => break (page.header, more),
                }
            };
            if json {
                return output::json_document(&json!({
                    "header": header_json(&header),
                    "barriers": barriers.iter().map(barrier_json).collect::<Vec<_>>(),
                    "count": barriers.len(),
                    "more": more,
                }));
            }
            if barriers.is_empty() {
                return Ok(());
            }
            let now = unix_ms_now();
            let mut rows = vec![vec![
                "NAME".to_string(),
                "STATUS".to_string(),
                "ARRIVED".to_string(),
                "DEADLINE".to_string(),
            ]];
            for barrier in &barriers {
                rows.push(vec![
                    barrier.name.clone(),
                    status_name(barrier.status()).to_ascii_uppercase(),
                    format!(
                        "{}/{} of {}",
                        barrier.arrived.len(),
                        barrier.quorum,
                        barrier.parties
                    ),
                    format_relative(barrier.deadline_ms, now),
                ]);
            }
            output::line(&table(&rows))?;
            if more {
                eprintln!(
                    "(more follow; continue with --after {})",
                    barriers.last().map_or("", |barrier| barrier.name.as_str())
                );
            }
            Ok(())
        }
    }
}

fn consistency(serializable: bool) -> ReadConsistency {
    if serializable {
        ReadConsistency::Serializable
    } else {
        ReadConsistency::Linearizable
    }
}

fn status_name(status: BarrierStatus) -> String {
    enum_name(status.as_str_name(), "BARRIER_STATUS_")
}

fn barrier_json(barrier: &Barrier) -> Value {
    json!({
        "name": barrier.name,
        "parties": barrier.parties,
        "quorum": barrier.quorum,
        "status": status_name(barrier.status()),
        "arrived": barrier.arrived,
        "created_ms": barrier.created_ms,
        "deadline_ms": barrier.deadline_ms,
        "closed_ms": barrier.closed_ms,
    })
}

fn barrier_text(barrier: &Barrier) -> String {
    let now = unix_ms_now();
    let when = match barrier.status() {
        BarrierStatus::Waiting => {
            format!("times out {}", format_relative(barrier.deadline_ms, now))
        }
        _ => format!("closed {}", format_relative(barrier.closed_ms, now)),
    };
    format!(
        "barrier {} {}: {} of {} arrived (quorum {}), {when}; arrived: {}",
        barrier.name,
        status_name(barrier.status()).to_ascii_uppercase(),
        barrier.arrived.len(),
        barrier.parties,
        barrier.quorum,
        list_text(&barrier.arrived)
    )
}
