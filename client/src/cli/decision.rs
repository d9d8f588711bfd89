//! `conclave decision ...`: propose a question to a quorum of agents, vote, follow the tally.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use conclave_client::{
    unix_ms_now, AgentConfig, Client, Code, Decision, DecisionListOptions, DecisionRule,
    DecisionSpec, DecisionStatus, Electorate, Error, ReadConsistency,
};
use futures::StreamExt;
use serde_json::json;

use super::output::{self, header_json};
use super::render::{
    clip, decision_json, decision_status_name, labels_text, list_text, parse_decision_status,
    parse_key_value, rule_name, tally_text,
};
use super::when::{format_relative, format_rfc3339, parse_duration, parse_when};
use super::{CliError, CliResult, Globals};

/// TTL of the short-lived session `decision vote` registers for a voter.
const VOTER_SESSION_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Subcommand)]
pub enum DecisionCommand {
    /// Put a question to a quorum vote of agents.
    ///
    /// The electorate is the named --voter agents, or every live agent with --capability at this
    /// moment. Each voter gets a ballot on its session. Prints the decision id; with --wait, waits
    /// for the outcome and exits 0 when an option won, 1 when the decision was rejected or ran out
    /// of time, 3 when --max-wait passed first.
    #[command(
        override_usage = "conclave decision propose <QUESTION> --option <A> --option <B>... (--voter <NAME>... | --capability <C>) [OPTIONS]"
    )]
    Propose(ProposeArgs),
    /// Cast an agent's vote.
    ///
    /// A vote comes from the voter's session: with --session-id, that one; otherwise the command
    /// registers a short-lived session for the voter NAME, votes and closes it (if NAME already has
    /// a live session, for example a running `agent run`, it votes through that session). Exits 1
    /// when the vote is refused (already voted, decision closed, not a voter).
    Vote {
        /// The decision.
        id: u64,
        /// The option voted for.
        choice: String,
        /// The voting agent's name.
        #[arg(
            long = "as",
            value_name = "NAME",
            required_unless_present = "session_id"
        )]
        voter: Option<String>,
        /// Vote through this live session instead.
        #[arg(long, value_name = "ID")]
        session_id: Option<u64>,
        /// Why, at most 4096 bytes.
        #[arg(long, default_value = "")]
        rationale: String,
    },
    /// Show a decision: question, options, rule, voters, votes, outcome.
    Get {
        id: u64,
        /// Read this node's local state instead of confirming with a quorum; may be stale.
        #[arg(long)]
        serializable: bool,
    },
    /// List decisions in id order.
    Ls {
        /// Only decisions in this status (open, decided, rejected, no_quorum); repeat for several.
        #[arg(long = "status", value_name = "STATUS", value_parser = parse_decision_status)]
        statuses: Vec<DecisionStatus>,
        /// Return at most this many (1..=1000), in one page.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
        /// Start after this decision id.
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
    },
    /// Print a decision's state now and after every vote, until its outcome.
    Watch { id: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Rule {
    /// An option with more than half of the electorate's votes wins.
    Majority,
    /// Every voter chose the same option.
    Unanimous,
    /// The first option to reach --k votes wins.
    AtLeast,
    /// An option whose voters' weights sum to more than half of the total weight wins.
    Weighted,
}

#[derive(Debug, Args)]
pub struct ProposeArgs {
    /// The question, at most 4096 bytes.
    pub question: String,
    /// An option; give 2..=32.
    #[arg(long = "option", value_name = "OPTION", required = true)]
    pub options: Vec<String>,
    /// A voting agent; repeat for each.
    #[arg(long = "voter", value_name = "NAME", conflicts_with = "capability")]
    pub voters: Vec<String>,
    /// Every agent live now with this capability votes.
    #[arg(long, value_name = "NAME", required_unless_present = "voters")]
    pub capability: Option<String>,
    /// How the votes decide.
    #[arg(long, value_enum, default_value_t = Rule::Majority)]
    pub rule: Rule,
    /// For --rule at-least: the votes an option needs.
    #[arg(long, value_name = "N")]
    pub k: Option<u32>,
    /// For --rule weighted: a voter's weight NAME=W (others weigh 1); repeat for several.
    #[arg(long = "weight", value_name = "NAME=W", value_parser = parse_weight)]
    pub weights: Vec<(String, u64)>,
    /// One vote for this option rejects the decision at once.
    #[arg(long, value_name = "OPTION")]
    pub veto: Option<String>,
    /// When it ends without quorum: a duration from now (10m), an RFC 3339 time or Unix
    /// milliseconds (default: one hour).
    #[arg(long, value_name = "WHEN")]
    pub deadline: Option<String>,
    /// A label KEY=VALUE; repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Print only the decision id (for scripts).
    #[arg(long, short = 'q', conflicts_with_all = ["wait", "json"])]
    pub quiet: bool,
    /// Wait for the outcome.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (exit 3).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "wait")]
    pub max_wait: Option<Duration>,
}

pub async fn run(command: DecisionCommand, globals: &Globals) -> CliResult {
    let client = globals.client()?;
    let json = globals.json;
    match command {
        DecisionCommand::Propose(args) => {
            let wait = args.wait;
            let quiet = args.quiet;
            let max_wait = args.max_wait;
            let spec = decision_spec(args, unix_ms_now())?;
            let proposed = client.propose(spec).await?;
            let decision = &proposed.decision;
            if wait {
                eprintln!(
                    "proposed decision {}; voters: {}; waiting for the outcome",
                    decision.id,
                    list_text(&decision.voters)
                );
                return follow(&client, decision.id, max_wait, json, true).await;
            }
            if json {
                return output::json_document(&json!({
                    "header": header_json(&proposed.header),
                    "decision": decision_json(decision),
                }));
            }
            if quiet {
                return output::line(&decision.id.to_string());
            }
            output::line(&format!(
                "proposed decision {}; voters: {}",
                decision.id,
                list_text(&decision.voters)
            ))
        }
        DecisionCommand::Vote {
            id,
            choice,
            voter,
            session_id,
            rationale,
        } => vote(&client, id, &choice, voter, session_id, &rationale, json).await,
        DecisionCommand::Get { id, serializable } => {
            let consistency = if serializable {
                ReadConsistency::Serializable
            } else {
                ReadConsistency::Linearizable
            };
            let read = not_found_is_failure(client.get_decision_with(id, consistency).await, id)?;
            if json {
                return output::json_document(&json!({
                    "header": header_json(&read.header),
                    "decision": decision_json(&read.decision),
                }));
            }
            print_decision(&read.decision)
        }
        DecisionCommand::Ls {
            statuses,
            limit,
            after,
        } => {
            let mut options = DecisionListOptions {
                statuses,
                limit: limit.unwrap_or(0),
                after_id: after.unwrap_or(0),
                consistency: ReadConsistency::Linearizable,
            };
            let mut decisions = Vec::new();
            let (more, next_after_id) = loop {
                let page = client.list_decisions(options.clone()).await?;
                decisions.extend(page.decisions);
                if limit.is_some() || !page.more || page.next_after_id <= options.after_id {
                    break (limit.is_some() && page.more, page.next_after_id);
                }
                options.after_id = page.next_after_id;
            };
            if json {
                return output::json_document(&json!({
                    "decisions": decisions.iter().map(decision_json).collect::<Vec<_>>(),
                    "count": decisions.len(),
                    "more": more,
                    "next_after_id": next_after_id,
                }));
            }
            output::line(&decisions_table(&decisions, unix_ms_now()))?;
            if more {
                eprintln!("(more decisions follow; continue with --after {next_after_id})");
            }
            Ok(())
        }
        DecisionCommand::Watch { id } => follow(&client, id, None, json, false).await,
    }
}

/// The spec the propose flags describe; times relative to `now_ms`.
pub fn decision_spec(args: ProposeArgs, now_ms: u64) -> CliResult<DecisionSpec> {
    let rule = match args.rule {
        Rule::Majority => DecisionRule::Majority,
        Rule::Unanimous => DecisionRule::Unanimous,
        Rule::AtLeast => DecisionRule::AtLeast,
        Rule::Weighted => DecisionRule::Weighted,
    };
    if rule == DecisionRule::AtLeast && args.k.is_none() {
        return Err(CliError::usage("--rule at-least needs --k"));
    }
    if rule != DecisionRule::AtLeast && args.k.is_some() {
        return Err(CliError::usage("--k applies to --rule at-least only"));
    }
    if rule != DecisionRule::Weighted && !args.weights.is_empty() {
        return Err(CliError::usage("--weight applies to --rule weighted only"));
    }
    let deadline_unix_ms = match &args.deadline {
        None => 0,
        Some(text) => parse_when(text, now_ms)
            .map_err(|error| CliError::usage(format!("--deadline: {error}")))?,
    };
    Ok(DecisionSpec {
        question: args.question,
        options: args.options,
        electorate: Some(Electorate {
            agents: args.voters,
            capability: args.capability.unwrap_or_default(),
        }),
        rule: rule.into(),
        k: args.k.unwrap_or(0),
        weights: args.weights.into_iter().collect(),
        veto_option: args.veto.unwrap_or_default(),
        deadline_unix_ms,
        labels: args.labels.into_iter().collect(),
    })
}

async fn vote(
    client: &Client,
    id: u64,
    choice: &str,
    voter: Option<String>,
    session_id: Option<u64>,
    rationale: &str,
    json: bool,
) -> CliResult {
    // The session to vote from, and whether this command opened it (and so must close it).
    let (session_id, opened) = match (session_id, voter.as_deref()) {
        (Some(session_id), _) => (session_id, false),
        (None, Some(name)) => {
            let mut config = AgentConfig::new(name);
            config.ttl = VOTER_SESSION_TTL;
            match client.register(&config).await {
                Ok(registration) => (registration.session_id, true),
                Err(Error::Rejected {
                    code: Code::AlreadyExists,
                    ..
                }) => {
                    let agent = client.get_agent(name).await?.agent;
                    eprintln!(
                        "agent {name} has a live session ({}); voting through it",
                        agent.session_id
                    );
                    (agent.session_id, false)
                }
                Err(error) => return Err(error.into()),
            }
        }
        (None, None) => unreachable!("clap requires --as or --session-id"),
    };
    let result = client.vote(session_id, id, choice, rationale).await;
    if opened {
        if let Err(error) = client.close_session(session_id).await {
            eprintln!("closing the voter's session {session_id}: {error} (it expires by itself)");
        }
    }
    let result = not_found_is_failure(result, id)?;
    let decision = &result.decision;
    if json {
        return output::json_document(&json!({
            "header": header_json(&result.header),
            "decision": decision_json(decision),
        }));
    }
    output::line(&format!(
        "voted {choice} in decision {id}: {}",
        status_line(decision)
    ))
}

/// Prints the decision's states until its outcome. With `exit_by_outcome`, a rejection or a missed
/// deadline exits 1.
async fn follow(
    client: &Client,
    id: u64,
    max_wait: Option<Duration>,
    json: bool,
    exit_by_outcome: bool,
) -> CliResult {
    let mut stream = not_found_is_failure(client.watch_decision(id).await, id)?;
    let until = max_wait.map(|wait| tokio::time::Instant::now() + wait);
    let mut last: Option<Decision> = None;
    loop {
        let next = match until {
            Some(until) => match tokio::time::timeout_at(until, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return Err(CliError::unknown(format!(
                        "decision {id} is still open after {}",
                        super::when::format_duration(max_wait.unwrap_or_default())
                    )))
                }
            },
            None => stream.next().await,
        };
        let Some(decision) = next else { break };
        let decision = decision?;
        if json {
            output::json_line(&decision_json(&decision))?;
        } else {
            output::line(&format!("decision {id}: {}", status_line(&decision)))?;
        }
        last = Some(decision);
    }
    let Some(decision) = last else {
        return Err(CliError::failed("the watch ended without a state"));
    };
    if !exit_by_outcome {
        return Ok(());
    }
    match decision.status() {
        DecisionStatus::Decided => Ok(()),
        DecisionStatus::Open => Err(CliError::failed(format!(
            "the watch of decision {id} ended while it was open"
        ))),
        status => Err(CliError::failed(format!(
            "decision {id} ended {}{}",
            decision_status_name(status).to_ascii_uppercase(),
            if decision.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", decision.reason)
            }
        ))),
    }
}

/// `OPEN, 1 of 3 voted (yes 1, no 0)` or `DECIDED yes (yes 2, no 0)`.
fn status_line(decision: &Decision) -> String {
    let tally = tally_text(decision);
    match decision.status() {
        DecisionStatus::Open => format!(
            "OPEN, {} of {} voted ({tally})",
            decision.votes.len(),
            decision.voters.len()
        ),
        DecisionStatus::Decided => format!("DECIDED {} ({tally})", decision.outcome),
        status => format!(
            "{} ({tally}){}",
            decision_status_name(status).to_ascii_uppercase(),
            if decision.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", decision.reason)
            }
        ),
    }
}

/// The `decision ls` table.
pub fn decisions_table(decisions: &[Decision], now_ms: u64) -> String {
    let mut rows = vec![[
        "ID", "STATUS", "OUTCOME", "RULE", "VOTES", "TALLY", "DEADLINE", "QUESTION",
    ]
    .map(String::from)
    .to_vec()];
    for decision in decisions {
        let spec = decision.spec.clone().unwrap_or_default();
        rows.push(vec![
            decision.id.to_string(),
            decision_status_name(decision.status()).to_ascii_uppercase(),
            if decision.outcome.is_empty() {
                "-".to_string()
            } else {
                decision.outcome.clone()
            },
            rule_name(spec.rule()),
            format!("{}/{}", decision.votes.len(), decision.voters.len()),
            tally_text(decision),
            if decision.status() == DecisionStatus::Open {
                format_relative(spec.deadline_unix_ms, now_ms)
            } else {
                "-".to_string()
            },
            clip(&spec.question, 50),
        ]);
    }
    output::table(&rows)
}

fn print_decision(decision: &Decision) -> CliResult {
    let now = unix_ms_now();
    let spec = decision.spec.clone().unwrap_or_default();
    let when = |ms: u64| {
        if ms == 0 {
            "-".to_string()
        } else {
            format!("{} ({})", format_rfc3339(ms), format_relative(ms, now))
        }
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |name: &str, value: String| rows.push(vec![name.to_string(), value]);
    row("decision", decision.id.to_string());
    row("question", spec.question.clone());
    row("options", list_text(&spec.options));
    let mut rule = rule_name(spec.rule());
    if spec.rule() == DecisionRule::AtLeast {
        rule.push_str(&format!(" (k = {})", spec.k));
    }
    if !spec.weights.is_empty() {
        let weights = spec
            .weights
            .iter()
            .map(|(voter, weight)| (voter.clone(), weight.to_string()))
            .collect();
        rule.push_str(&format!(" (weights {})", labels_text(&weights)));
    }
    row("rule", rule);
    if !spec.veto_option.is_empty() {
        row("veto option", spec.veto_option.clone());
    }
    row("voters", list_text(&decision.voters));
    row("status", status_line(decision));
    row("proposed", when(decision.proposed_unix_ms));
    if decision.status() == DecisionStatus::Open {
        row("deadline", when(spec.deadline_unix_ms));
    } else {
        row("closed", when(decision.closed_unix_ms));
    }
    if !spec.labels.is_empty() {
        row("labels", labels_text(&spec.labels));
    }
    output::line(&output::table(&rows))?;
    if decision.votes.is_empty() {
        return Ok(());
    }
    let mut votes = vec![["VOTER", "CHOICE", "CAST", "RATIONALE"]
        .map(String::from)
        .to_vec()];
    for vote in &decision.votes {
        votes.push(vec![
            vote.voter.clone(),
            vote.choice.clone(),
            format_relative(vote.cast_unix_ms, now),
            if vote.rationale.is_empty() {
                "-".to_string()
            } else {
                clip(&vote.rationale, 80)
            },
        ]);
    }
    output::line("")?;
    output::line(&output::table(&votes))
}

fn not_found_is_failure<T>(result: conclave_client::Result<T>, id: u64) -> CliResult<T> {
    match result {
        Err(error) if error.is_not_found() => {
            Err(CliError::failed(format!("decision {id} not found")))
        }
        other => Ok(other?),
    }
}

fn parse_weight(text: &str) -> Result<(String, u64), String> {
    let (name, weight) = parse_key_value(text)?;
    let weight: u64 = weight
        .parse()
        .map_err(|_| format!("{text:?}: the weight must be a whole number"))?;
    Ok((name, weight))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn propose_args(args: &[&str]) -> Result<ProposeArgs, clap::Error> {
        let mut line = vec!["conclave", "decision", "propose"];
        line.extend_from_slice(args);
        match Cli::try_parse_from(line)?.command {
            Command::Decision(DecisionCommand::Propose(args)) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn propose_flags_make_a_spec() {
        let args = propose_args(&[
            "publish?",
            "--option",
            "yes",
            "--option",
            "no",
            "--voter",
            "a",
            "--voter",
            "b",
            "--voter",
            "c",
            "--rule",
            "at-least",
            "--k",
            "2",
            "--veto",
            "no",
            "--deadline",
            "5m",
        ])
        .expect("parses");
        let spec = decision_spec(args, 1_000).expect("valid");
        assert_eq!(spec.options, ["yes", "no"]);
        assert_eq!(
            spec.electorate.as_ref().expect("set").agents,
            ["a", "b", "c"]
        );
        assert_eq!(spec.rule(), DecisionRule::AtLeast);
        assert_eq!(spec.k, 2);
        assert_eq!(spec.veto_option, "no");
        assert_eq!(spec.deadline_unix_ms, 301_000);

        let args = propose_args(&[
            "q",
            "--option",
            "x",
            "--option",
            "y",
            "--capability",
            "review",
            "--rule",
            "weighted",
            "--weight",
            "a=3",
        ])
        .expect("parses");
        let spec = decision_spec(args, 0).expect("valid");
        assert_eq!(spec.electorate.as_ref().expect("set").capability, "review");
        assert_eq!(spec.weights.get("a"), Some(&3));
    }

    #[test]
    fn inconsistent_propose_flags_are_refused() {
        assert!(propose_args(&["q", "--option", "x", "--option", "y"]).is_err());
        assert!(
            propose_args(&["q", "--option", "x", "--voter", "a", "--capability", "c"]).is_err()
        );
        let at_least = propose_args(&[
            "q", "--option", "x", "--option", "y", "--voter", "a", "--rule", "at-least",
        ])
        .expect("parses");
        assert!(decision_spec(at_least, 0).is_err());
        let stray_k = propose_args(&[
            "q", "--option", "x", "--option", "y", "--voter", "a", "--k", "1",
        ])
        .expect("parses");
        assert!(decision_spec(stray_k, 0).is_err());
    }

    #[test]
    fn votes_need_a_voter_or_a_session() {
        assert!(Cli::try_parse_from(["conclave", "decision", "vote", "1", "yes"]).is_err());
        assert!(
            Cli::try_parse_from(["conclave", "decision", "vote", "1", "yes", "--as", "a"]).is_ok()
        );
        assert!(Cli::try_parse_from([
            "conclave",
            "decision",
            "vote",
            "1",
            "yes",
            "--session-id",
            "4"
        ])
        .is_ok());
    }

    #[test]
    fn status_lines_show_the_tally() {
        let decision = Decision {
            id: 3,
            spec: Some(DecisionSpec {
                options: vec!["yes".into(), "no".into()],
                ..DecisionSpec::default()
            }),
            voters: vec!["a".into(), "b".into(), "c".into()],
            status: DecisionStatus::Open.into(),
            votes: vec![conclave_client::Vote {
                voter: "a".into(),
                choice: "yes".into(),
                ..Default::default()
            }],
            ..Decision::default()
        };
        assert_eq!(status_line(&decision), "OPEN, 1 of 3 voted (yes 1, no 0)");
        let decided = Decision {
            status: DecisionStatus::Decided.into(),
            outcome: "yes".into(),
            ..decision
        };
        assert_eq!(status_line(&decided), "DECIDED yes (yes 1, no 0)");
    }
}
