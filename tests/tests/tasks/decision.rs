//! A decision whose leader is killed mid-vote keeps its single outcome, on every node.

use std::time::Duration;

use anyhow::{ensure, Context as _};
use conclave_proto::v1::session_event::Kind;
use conclave_proto::v1::{
    DecisionRule, DecisionSpec, DecisionStatus, Electorate, GetDecisionRequest, ProposeRequest,
    ReadConsistency,
};
use conclave_tests::fleet::{decisions_client, Fleet, TestAgent};
use conclave_tests::poll::eventually;
use conclave_tests::{ClusterConfig, TestCluster};
use tonic::Code;

use crate::PUSH_TIMEOUT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_survives_leader_kill_mid_vote() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let followers = cluster.followers().await?;
    let mut fleet = Fleet::new(cluster.api_addrs());

    tracing::info!("three voters with the `review` capability, streaming from the followers");
    let mut voters = Vec::new();
    for (index, name) in ["ada", "grace", "linus"].into_iter().enumerate() {
        let mut agent = TestAgent::register(&fleet, name, &["review"], 1, 10_000).await?;
        agent.connect(followers[index % followers.len()]).await?;
        voters.push(agent);
    }

    tracing::info!("propose: majority of every live reviewer, options ship / hold");
    let request = ProposeRequest {
        request_id: Some(fleet.next_request_id()),
        decision: Some(DecisionSpec {
            question: "ship the release?".into(),
            options: vec!["ship".into(), "hold".into()],
            electorate: Some(Electorate {
                agents: Vec::new(),
                capability: "review".into(),
            }),
            rule: DecisionRule::Majority as i32,
            ..DecisionSpec::default()
        }),
    };
    let proposed = fleet
        .retry("propose", |addr| {
            let request = request.clone();
            async move {
                decisions_client(addr)
                    .propose(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await?
        .map_err(|status| anyhow::anyhow!(status).context("propose refused"))?;
    let decision = proposed.decision.context("no decision in the answer")?;
    ensure!(
        decision.voters.len() == 3,
        "electorate {:?}",
        decision.voters
    );

    tracing::info!("every voter receives its ballot on its stream");
    for voter in &mut voters {
        let ballot = voter
            .next_matching(PUSH_TIMEOUT, |event| match &event.kind {
                Some(Kind::Ballot(ballot)) => ballot.decision.clone(),
                _ => None,
            })
            .await?;
        ensure!(ballot.id == decision.id, "ballot for {:?}", ballot.id);
    }

    tracing::info!(
        leader,
        "one vote, then SIGKILL the leader, then the deciding vote"
    );
    voters[0]
        .vote(decision.id, "ship")
        .await?
        .map_err(|s| anyhow::anyhow!(s))?;
    cluster.kill(leader)?;
    let voted = voters[1]
        .vote(decision.id, "ship")
        .await?
        .map_err(|s| anyhow::anyhow!(s))?;
    let after = voted.decision.context("no decision in the vote answer")?;
    ensure!(
        after.status == DecisionStatus::Decided as i32 && after.outcome == "ship",
        "{after:?}"
    );

    tracing::info!("a late vote cannot change it, nor can a second vote by the same voter");
    let late = voters[2].vote(decision.id, "hold").await?;
    ensure!(
        late.as_ref()
            .err()
            .is_some_and(|s| s.code() == Code::FailedPrecondition),
        "{late:?}"
    );
    let twice = voters[0].vote(decision.id, "hold").await?;
    ensure!(
        twice
            .as_ref()
            .err()
            .is_some_and(|s| s.code() == Code::FailedPrecondition),
        "{twice:?}"
    );

    tracing::info!("the old leader comes back; every node reports the same single outcome");
    cluster.restart(leader).await?;
    cluster
        .wait_for_convergence(Duration::from_secs(30))
        .await?;
    for node in fleet.node_ids() {
        let read = decisions_client(fleet.addr(node))
            .get_decision(GetDecisionRequest {
                decision_id: decision.id,
                consistency: ReadConsistency::Serializable as i32,
            })
            .await?
            .into_inner()
            .decision
            .context("no decision")?;
        ensure!(
            read.status == DecisionStatus::Decided as i32,
            "node {node}: {read:?}"
        );
        ensure!(read.outcome == "ship", "node {node}: {read:?}");
        ensure!(read.votes.len() == 2, "node {node}: {:?}", read.votes);
    }
    let linearizable = eventually("a linearizable read of the decision", PUSH_TIMEOUT, || {
        fleet.get_decision(decision.id)
    })
    .await?;
    ensure!(linearizable.outcome == "ship");
    cluster.shutdown().await
}
