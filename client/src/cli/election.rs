//! `conclave election ...`: campaign for leadership and hold it, proclaim, resign, ask who leads,
//! observe.

use std::ffi::OsString;

use clap::Subcommand;
use conclave_client::{HeldLock, ReadConsistency};
use serde_json::{json, Value};

use super::agent_run::Signals;
use super::hold::{self, acquire_in_rounds, check_command, HoldArgs};
use super::lock::{finish, grant_json, holder_text, lock_json, print_events};
use super::output::{self, header_json, text};
use super::when::format_duration;
use super::{CliError, CliResult, Globals};

#[derive(Debug, Subcommand)]
pub enum ElectionCommand {
    /// Campaign to lead an election publishing VALUE, and hold leadership until SIGINT/SIGTERM.
    ///
    /// Waits to be elected (--wait; default: until elected), prints the term's fencing token,
    /// keeps the lease alive, and resigns on SIGINT/SIGTERM. Exits 1 if leadership is lost. With
    /// `-- COMMAND...`, runs the command while leading instead, as `lock run` does (CONCLAVE_LOCK,
    /// CONCLAVE_FENCING_TOKEN in its environment; stopped when leadership is lost; exits with the
    /// command's code).
    #[command(
        override_usage = "conclave election campaign <NAME> <VALUE> [OPTIONS] [-- <COMMAND>...]"
    )]
    Campaign {
        name: String,
        /// The value published while leading (at most 4096 bytes).
        value: String,
        #[command(flatten)]
        hold: HoldArgs,
        /// A command to run while leading, after `--`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Replace the leader's value. Exits 1 (lock lost) when TOKEN no longer leads.
    Proclaim {
        name: String,
        token: u64,
        value: String,
    },
    /// Give leadership up (the next candidate leads at once). Exits 1 when TOKEN no longer leads.
    Resign { name: String, token: u64 },
    /// Show who leads: token, holder, value. Exits 1 when nobody leads.
    Leader {
        name: String,
        #[arg(long)]
        serializable: bool,
    },
    /// Print the leadership now, then every change of leader or value.
    Observe {
        name: String,
        /// Exit after printing this many events (the first is the state now).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

pub async fn run(command: ElectionCommand, globals: &Globals) -> CliResult {
    let client = globals.client()?;
    let json = globals.json;
    match command {
        ElectionCommand::Campaign {
            name,
            value,
            hold,
            command,
        } => {
            if !command.is_empty() {
                check_command(&command)?;
            }
            let mut signals = Signals::new()?;
            let ttl = hold.ttl;
            let held = acquire_in_rounds(hold.wait, &mut signals, |wait| {
                HeldLock::campaign(&client, &name, value.clone().into_bytes(), ttl, wait)
            })
            .await?;
            let Some(held) = held else {
                return Err(CliError::failed(format!(
                    "not elected in {name} within {}",
                    format_duration(hold.wait.unwrap_or_default())
                )));
            };
            if !command.is_empty() {
                eprintln!("elected in {name}, fencing token {}", held.token());
                let endpoints = client.endpoints().join(",");
                let ended =
                    hold::supervise(&held, &command, hold.kill_grace, &endpoints, &mut signals)
                        .await?;
                return finish(held, ended).await;
            }
            if json {
                output::json_line(
                    &json!({ "elected": true, "election": name, "token": held.token() }),
                )?;
            } else {
                output::line(&format!(
                    "elected in {name}; fencing token {}; holding until SIGINT/SIGTERM",
                    held.token()
                ))?;
            }
            tokio::select! {
                loss = held.lost() => Err(CliError::failed(format!(
                    "leadership of {name} lost ({loss})"
                ))),
                () = signals.recv() => {
                    let header = held.release().await?;
                    if json {
                        output::json_line(&json!({ "resigned": true, "header": header_json(&header) }))
                    } else {
                        output::line(&format!("resigned, revision {}", header.revision))
                    }
                }
            }
        }
        ElectionCommand::Proclaim { name, token, value } => {
            let header = client.proclaim(&name, token, value.into_bytes()).await?;
            if json {
                output::json_document(&json!({ "header": header_json(&header) }))
            } else {
                output::line(&format!("proclaimed, revision {}", header.revision))
            }
        }
        ElectionCommand::Resign { name, token } => {
            let header = client.resign(&name, token).await?;
            if json {
                output::json_document(&json!({ "header": header_json(&header) }))
            } else {
                output::line(&format!("resigned, revision {}", header.revision))
            }
        }
        ElectionCommand::Leader { name, serializable } => {
            let consistency = if serializable {
                ReadConsistency::Serializable
            } else {
                ReadConsistency::Linearizable
            };
            let read = client.election_leader_with(&name, consistency).await?;
            if json {
                output::json_document(&json!({
                    "header": header_json(&read.header),
                    "leader": read.leader.as_ref().map_or(Value::Null, grant_json),
                    "election": read.election.as_ref().map_or(Value::Null, lock_json),
                }))?;
            }
            let Some(leader) = read.leader else {
                return Err(CliError::failed(format!("nobody leads {name} now")));
            };
            if json {
                return Ok(());
            }
            output::line(&format!(
                "{name}: led by {} with token {}; value {}",
                holder_text(&leader),
                leader.token,
                text(&leader.value)
            ))
        }
        ElectionCommand::Observe { name, count } => {
            let stream = client.observe(&name).await?;
            print_events(stream, count, json).await
        }
    }
}
