//! `conclave cluster ...`: node status and membership changes.

use std::collections::HashMap;

use clap::Subcommand;
use conclave_client::{
    normalize_endpoint, EndpointStatus, Member, MembershipResponse, Role, StatusResponse,
};
use serde_json::{json, Value};

use super::output;
use super::{CliError, CliResult, Globals};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show every node: role, term, leader, log positions, replication lag and revision.
    ///
    /// Asks every endpoint and every member named in any reachable node's membership; a node that
    /// does not answer is shown as `unreachable`. LAG is the leader's view (its last log index
    /// minus the index known to be on that node's disk). Exits 1 only if no node answers.
    Status,
    /// Create a new cluster from pristine nodes (once).
    ///
    /// Sent to the first endpoint, which must be one of the members. Without --member, creates the
    /// three local nodes of scripts/cluster.sh: 1=127.0.0.1:7001/127.0.0.1:7101,
    /// 2=127.0.0.1:7002/127.0.0.1:7102, 3=127.0.0.1:7003/127.0.0.1:7103. Exits 1 if the node is
    /// already initialized.
    Init {
        /// A voter as ID=API_ADDR/PEER_ADDR, e.g. 1=127.0.0.1:7001/127.0.0.1:7101; repeat for each.
        #[arg(long = "member", value_name = "ID=API/PEER", value_parser = parse_member)]
        members: Vec<Member>,
    },
    /// Add a non-voting member and wait until it has caught up with the leader's log.
    AddLearner {
        /// The new node's id (non-zero, unused).
        #[arg(long)]
        id: u64,
        /// The address clients use to reach it.
        #[arg(long, value_name = "HOST:PORT")]
        api_addr: String,
        /// The address Raft peers use to reach it.
        #[arg(long, value_name = "HOST:PORT")]
        peer_addr: String,
    },
    /// Make learners voters.
    Promote {
        /// Ids of learners to promote.
        #[arg(required = true, value_parser = clap::value_parser!(u64).range(1..))]
        ids: Vec<u64>,
    },
    /// Take nodes (voters or learners) out of the cluster.
    Remove {
        /// Ids of the nodes to remove.
        #[arg(required = true, value_parser = clap::value_parser!(u64).range(1..))]
        ids: Vec<u64>,
    },
    /// Ask the leader to hand leadership to a voter; exits 1 if it has not moved when the call
    /// returns.
    TransferLeader {
        /// The voter that should lead.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
    },
}

pub async fn run(command: ClusterCommand, globals: &Globals) -> CliResult {
    let json = globals.json;
    match command {
        ClusterCommand::Status => status(globals).await,
        ClusterCommand::Init { members } => {
            let members = if members.is_empty() {
                default_members()
            } else {
                members
            };
            let client = globals.client()?;
            client.initialize(members.clone()).await?;
            let ids: Vec<String> = members.iter().map(|m| m.node_id.to_string()).collect();
            if json {
                output::json_document(&json!({
                    "initialized": true,
                    "members": members.iter().map(member_json).collect::<Vec<_>>(),
                }))
            } else {
                output::line(&format!(
                    "initialized a cluster of voters {}",
                    ids.join(", ")
                ))
            }
        }
        ClusterCommand::AddLearner {
            id,
            api_addr,
            peer_addr,
        } => {
            let client = globals.client()?;
            let response = client.add_learner(id, &api_addr, &peer_addr).await?;
            print_membership(&format!("added node {id} as a learner"), &response, json)
        }
        ClusterCommand::Promote { ids } => {
            let client = globals.client()?;
            let response = client.promote(&ids).await?;
            print_membership(&format!("promoted {}", list(&ids)), &response, json)
        }
        ClusterCommand::Remove { ids } => {
            let client = globals.client()?;
            let response = client.remove(&ids).await?;
            print_membership(&format!("removed {}", list(&ids)), &response, json)
        }
        ClusterCommand::TransferLeader { id } => {
            let client = globals.client()?;
            let leader = client.transfer_leader(id).await?;
            if json {
                output::json_document(&json!({ "leader_id": leader }))?;
            } else if leader == id {
                output::line(&format!("node {leader} is the leader"))?;
            }
            if leader == id {
                Ok(())
            } else {
                Err(CliError::failed(format!(
                    "leadership did not move to node {id}; the leader is node {leader}"
                )))
            }
        }
    }
}

/// The three local nodes of scripts/cluster.sh.
fn default_members() -> Vec<Member> {
    (1..=3)
        .map(|id| Member {
            node_id: id,
            api_addr: format!("127.0.0.1:{}", 7000 + id),
            peer_addr: format!("127.0.0.1:{}", 7100 + id),
            voter: true,
        })
        .collect()
}

/// Parses `ID=API/PEER`.
fn parse_member(text: &str) -> Result<Member, String> {
    let usage = || format!("{text:?}: expected ID=API_ADDR/PEER_ADDR");
    let (id, addresses) = text.split_once('=').ok_or_else(usage)?;
    let (api_addr, peer_addr) = addresses.split_once('/').ok_or_else(usage)?;
    let node_id: u64 = id.trim().parse().map_err(|_| usage())?;
    if node_id == 0 {
        return Err(format!("{text:?}: node id 0 is reserved"));
    }
    let api_addr = normalize_endpoint(api_addr).map_err(|error| error.to_string())?;
    let peer_addr = normalize_endpoint(peer_addr).map_err(|error| error.to_string())?;
    Ok(Member {
        node_id,
        api_addr,
        peer_addr,
        voter: true,
    })
}

fn list(ids: &[u64]) -> String {
    let ids: Vec<String> = ids.iter().map(|id| format!("node {id}")).collect();
    ids.join(", ")
}

fn member_json(member: &Member) -> Value {
    json!({
        "id": member.node_id,
        "api_addr": member.api_addr,
        "peer_addr": member.peer_addr,
        "voter": member.voter,
    })
}

fn print_membership(done: &str, response: &MembershipResponse, json: bool) -> CliResult {
    if json {
        return output::json_document(&json!({
            "log_index": response.log_index,
            "members": response.members.iter().map(member_json).collect::<Vec<_>>(),
        }));
    }
    let members: Vec<String> = response
        .members
        .iter()
        .map(|m| {
            let kind = if m.voter { "voter" } else { "learner" };
            format!("{} ({kind})", m.node_id)
        })
        .collect();
    output::line(&format!(
        "{done}; membership committed at log index {}: {}",
        response.log_index,
        members.join(", ")
    ))
}

/// One row of `cluster status`.
#[derive(Debug)]
struct NodeRow {
    id: Option<u64>,
    api_addr: String,
    peer_addr: String,
    status: Result<StatusResponse, String>,
    lag: Option<String>,
}

async fn status(globals: &Globals) -> CliResult {
    let client = globals.client()?;
    let answers = client.status_all().await;
    let rows = status_rows(answers);
    if rows.iter().all(|row| row.status.is_err()) {
        if globals.json {
            output::json_document(
                &json!({ "nodes": rows.iter().map(row_json).collect::<Vec<_>>() }),
            )?;
        } else {
            output::line(&output::table(&status_table(&rows)))?;
        }
        return Err(CliError::failed("no node answered"));
    }
    if globals.json {
        output::json_document(&json!({ "nodes": rows.iter().map(row_json).collect::<Vec<_>>() }))
    } else {
        output::line(&output::table(&status_table(&rows)))
    }
}

/// Turns the answers into one row per node: nodes that answered under two addresses appear once,
/// and unreachable nodes take their id and peer address from the membership others reported.
fn status_rows(answers: Vec<EndpointStatus>) -> Vec<NodeRow> {
    let mut members: HashMap<String, Member> = HashMap::new();
    for answer in &answers {
        if let Ok(status) = &answer.status {
            for member in &status.members {
                if let Ok(address) = normalize_endpoint(&member.api_addr) {
                    members.entry(address).or_insert_with(|| member.clone());
                }
            }
        }
    }
    // The leader with the highest term knows the replication progress.
    let leader = answers
        .iter()
        .filter_map(|answer| answer.status.as_ref().ok())
        .filter(|status| status.role == Role::Leader as i32)
        .max_by_key(|status| (status.term, !status.replication.is_empty()));
    let lags: HashMap<u64, String> = leader
        .map(|leader| {
            leader
                .replication
                .iter()
                .map(|progress| {
                    let lag = match progress.matched_index {
                        Some(_) => progress.lag.to_string(),
                        None => "?".to_string(),
                    };
                    (progress.node_id, lag)
                })
                .chain(std::iter::once((leader.node_id, "0".to_string())))
                .collect()
        })
        .unwrap_or_default();

    let mut rows: Vec<NodeRow> = Vec::new();
    for answer in answers {
        match answer.status {
            Ok(status) => {
                if rows.iter().any(|row| row.id == Some(status.node_id)) {
                    continue;
                }
                rows.push(NodeRow {
                    id: Some(status.node_id),
                    api_addr: if status.api_addr.is_empty() {
                        answer.endpoint
                    } else {
                        status.api_addr.clone()
                    },
                    peer_addr: status.peer_addr.clone(),
                    lag: lags.get(&status.node_id).cloned(),
                    status: Ok(status),
                });
            }
            Err(error) => {
                let member = members.get(&answer.endpoint);
                let id = member.map(|m| m.node_id);
                if id.is_some() && rows.iter().any(|row| row.id == id) {
                    continue;
                }
                rows.push(NodeRow {
                    id,
                    api_addr: answer.endpoint,
                    peer_addr: member.map(|m| m.peer_addr.clone()).unwrap_or_default(),
                    lag: id.and_then(|id| lags.get(&id).cloned()),
                    status: Err(error.to_string()),
                });
            }
        }
    }
    rows.sort_by_key(|row| (row.id.is_none(), row.id));
    rows
}

fn role_name(role: i32) -> &'static str {
    match Role::try_from(role).unwrap_or(Role::Unknown) {
        Role::Unknown => "unknown",
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Learner => "learner",
        Role::Shutdown => "shutdown",
    }
}

fn status_table(rows: &[NodeRow]) -> Vec<Vec<String>> {
    let dash = || "-".to_string();
    let index = |value: Option<u64>| value.map_or_else(dash, |value| value.to_string());
    let mut table = vec![[
        "ID",
        "API",
        "PEER",
        "ROLE",
        "TERM",
        "LEADER",
        "LAST_INDEX",
        "COMMITTED",
        "APPLIED",
        "SNAPSHOT",
        "LAG",
        "REVISION",
    ]
    .map(String::from)
    .to_vec()];
    for row in rows {
        let id = row.id.map_or_else(|| "?".to_string(), |id| id.to_string());
        let peer = if row.peer_addr.is_empty() {
            dash()
        } else {
            row.peer_addr.clone()
        };
        let lag = row.lag.clone().unwrap_or_else(dash);
        match &row.status {
            Ok(status) => table.push(vec![
                id,
                row.api_addr.clone(),
                peer,
                role_name(status.role).to_string(),
                status.term.to_string(),
                index(status.leader_id),
                index(status.last_log_index),
                index(status.committed_index),
                index(status.applied_index),
                index(status.snapshot_index),
                lag,
                status.revision.to_string(),
            ]),
            Err(_) => {
                let mut cells = vec![id, row.api_addr.clone(), peer, "unreachable".to_string()];
                cells.extend(std::iter::repeat_n(dash(), 6));
                cells.push(lag);
                cells.push(dash());
                table.push(cells);
            }
        }
    }
    table
}

fn row_json(row: &NodeRow) -> Value {
    match &row.status {
        Ok(status) => json!({
            "id": row.id,
            "api_addr": row.api_addr,
            "peer_addr": row.peer_addr,
            "reachable": true,
            "role": role_name(status.role),
            "term": status.term,
            "leader_id": status.leader_id,
            "leader_api_addr": status.leader_api_addr,
            "last_log_index": status.last_log_index,
            "committed_index": status.committed_index,
            "applied_index": status.applied_index,
            "snapshot_index": status.snapshot_index,
            "purged_index": status.purged_index,
            "replication_lag": row.lag,
            "revision": status.revision,
            "initialized": status.initialized,
            "version": status.version,
            "state_digest": status.state_digest,
            "millis_since_quorum_ack": status.millis_since_quorum_ack,
            "wall_clock_ms": status.wall_clock_ms,
            "cluster_time_ms": status.cluster_time_ms,
            "members": status.members.iter().map(member_json).collect::<Vec<_>>(),
        }),
        Err(error) => json!({
            "id": row.id,
            "api_addr": row.api_addr,
            "peer_addr": row.peer_addr,
            "reachable": false,
            "role": "unreachable",
            "replication_lag": row.lag,
            "error": error,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_client::{Error, ReplicationProgress};

    #[test]
    fn members_parse_as_id_api_peer() {
        assert_eq!(
            parse_member("4=127.0.0.1:7004/127.0.0.1:7104"),
            Ok(Member {
                node_id: 4,
                api_addr: "127.0.0.1:7004".to_string(),
                peer_addr: "127.0.0.1:7104".to_string(),
                voter: true,
            })
        );
        for bad in [
            "4=127.0.0.1:7004",
            "x=a:1/b:2",
            "0=a:1/b:2",
            "4=a/b:2",
            "a:1/b:2",
        ] {
            assert!(parse_member(bad).is_err(), "{bad}");
        }
        assert_eq!(default_members().len(), 3);
        assert_eq!(default_members()[2].peer_addr, "127.0.0.1:7103");
    }

    fn node(id: u64, role: Role, members: &[Member]) -> StatusResponse {
        StatusResponse {
            node_id: id,
            api_addr: format!("127.0.0.1:700{id}"),
            peer_addr: format!("127.0.0.1:710{id}"),
            role: role as i32,
            term: 3,
            leader_id: Some(1),
            members: members.to_vec(),
            ..StatusResponse::default()
        }
    }

    #[test]
    fn status_rows_merge_answers_membership_and_lag() {
        let members = default_members();
        let mut leader = node(1, Role::Leader, &members);
        leader.replication = vec![
            ReplicationProgress {
                node_id: 2,
                matched_index: Some(10),
                lag: 2,
            },
            ReplicationProgress {
                node_id: 3,
                matched_index: None,
                lag: 12,
            },
        ];
        let answers = vec![
            EndpointStatus {
                endpoint: "127.0.0.1:7002".to_string(),
                status: Ok(node(2, Role::Follower, &members)),
            },
            EndpointStatus {
                endpoint: "127.0.0.1:7001".to_string(),
                status: Ok(leader),
            },
            EndpointStatus {
                endpoint: "127.0.0.1:7003".to_string(),
                status: Err(Error::Unavailable {
                    message: "refused".to_string(),
                }),
            },
            EndpointStatus {
                endpoint: "localhost:7001".to_string(),
                status: Ok(node(1, Role::Leader, &members)),
            },
        ];
        let rows = status_rows(answers);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].id, Some(1));
        assert_eq!(rows[0].lag.as_deref(), Some("0"));
        assert_eq!(rows[1].lag.as_deref(), Some("2"));
        assert_eq!(rows[2].id, Some(3));
        assert_eq!(rows[2].peer_addr, "127.0.0.1:7103");
        assert_eq!(rows[2].lag.as_deref(), Some("?"));
        let table = status_table(&rows);
        assert_eq!(table[3][3], "unreachable");
        assert_eq!(table[1][3], "leader");
    }
}
