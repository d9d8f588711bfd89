//! Fenced locks and elections on real nodes: contenders across a leader crash, a stale holder's
//! fenced write refused, and an election observer that sees every leader once.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use conclave_proto::v1::elections_client::ElectionsClient;
use conclave_proto::v1::locks_client::LocksClient;
use conclave_proto::v1::{
    lock_event, AcquireRequest, CampaignRequest, Fence, FenceKind, Holder, LockKind, PutRequest,
    ReleaseLockRequest, ResignRequest, WatchRequest,
};
use conclave_proto::{REASON_LOCK_LOST, REASON_METADATA};
use conclave_tests::channel::channel;
use conclave_tests::poll::retry_transient;
use conclave_tests::writer::RequestIds;
use conclave_tests::{ClusterConfig, TestCluster};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic::Code;

use crate::WRITE_TIMEOUT;

/// Long enough for a lock's queue to move through a leader change.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

fn locks(cluster: &TestCluster, id: u64) -> LocksClient<Channel> {
    LocksClient::new(channel(cluster.api_addr(id), Some(Duration::from_secs(40))))
}

fn lease(owner: &str, ttl_ms: u64) -> Option<Holder> {
    Some(Holder {
        session_id: 0,
        ttl_ms,
        owner: owner.into(),
    })
}

fn fence(name: &str, token: u64) -> Option<Fence> {
    Some(Fence {
        kind: FenceKind::Lock as i32,
        name: name.into(),
        token,
    })
}

/// Acquires `name` through the nodes in turn, retrying transient failures with the same request
/// id; returns the token.
async fn acquire(
    cluster: &TestCluster,
    ids: &mut RequestIds,
    name: &str,
    owner: &str,
) -> anyhow::Result<u64> {
    let request = AcquireRequest {
        request_id: Some(ids.next_id()),
        kind: LockKind::Lock as i32,
        name: name.into(),
        holder: lease(owner, 5_000),
        permits: 1,
        limit: 1,
        wait_ms: 20_000,
        lock_delay_ms: Some(500),
    };
    let clients: Vec<_> = cluster
        .node_ids()
        .into_iter()
        .map(|id| locks(cluster, id))
        .collect();
    let mut turn = 0;
    let answer = retry_transient("acquire", ACQUIRE_TIMEOUT, || {
        turn += 1;
        let mut client = clients[turn % clients.len()].clone();
        let request = request.clone();
        async move { client.acquire(request).await }
    })
    .await?
    .into_inner();
    ensure!(
        answer.acquired,
        "{owner} was not granted {name}: {answer:?}"
    );
    Ok(answer.token)
}

async fn put_fenced(
    cluster: &TestCluster,
    ids: &mut RequestIds,
    key: &str,
    fence: Option<Fence>,
) -> Result<(), tonic::Status> {
    let request = PutRequest {
        request_id: Some(ids.next_id()),
        key: key.into(),
        value: fence.as_ref().map_or(0, |f| f.token).to_be_bytes().to_vec(),
        session_id: 0,
        fence,
    };
    let clients: Vec<_> = cluster
        .node_ids()
        .into_iter()
        .map(|id| cluster.kv(id))
        .collect();
    let mut turn = 0;
    retry_transient("fenced put", WRITE_TIMEOUT, || {
        turn += 1;
        let mut client = clients[turn % clients.len()].clone();
        let request = request.clone();
        async move { client.put(request).await }
    })
    .await
    .map(|_| ())
}

async fn release(
    cluster: &TestCluster,
    ids: &mut RequestIds,
    name: &str,
    token: u64,
) -> anyhow::Result<()> {
    let request = ReleaseLockRequest {
        request_id: Some(ids.next_id()),
        kind: LockKind::Lock as i32,
        name: name.into(),
        token,
    };
    let clients: Vec<_> = cluster
        .node_ids()
        .into_iter()
        .map(|id| locks(cluster, id))
        .collect();
    let mut turn = 0;
    let released = retry_transient("release", WRITE_TIMEOUT, || {
        turn += 1;
        let mut client = clients[turn % clients.len()].clone();
        let request = request.clone();
        async move { client.release(request).await }
    })
    .await;
    match released {
        Ok(_) => Ok(()),
        // A retry after an unknown outcome may find it already released, or lost to the TTL.
        Err(status) if is_lock_lost(&status) => Ok(()),
        Err(status) => Err(status.into()),
    }
}

fn is_lock_lost(status: &tonic::Status) -> bool {
    status.code() == Code::FailedPrecondition
        && status
            .metadata()
            .get(REASON_METADATA)
            .is_some_and(|v| v.as_bytes() == REASON_LOCK_LOST.as_bytes())
}

/// Every value ever written to `key`, in revision order, from the retained history.
async fn history(cluster: &TestCluster, node: u64, key: &str) -> anyhow::Result<Vec<u64>> {
    let mut client = cluster.watch_kv(node);
    let request = WatchRequest {
        key: key.into(),
        start_revision: 1,
        ..WatchRequest::default()
    };
    let mut stream = client.watch(request).await?.into_inner();
    let mut values = Vec::new();
    // The replay comes first and at once; a second of silence means it is over.
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(1), stream.next()).await
    {
        for event in message?.events {
            let kv = event.kv.context("event without kv")?;
            let bytes: [u8; 8] = kv.value.as_slice().try_into().context("8-byte token")?;
            values.push(u64::from_be_bytes(bytes));
        }
    }
    Ok(values)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_contenders_on_one_lock_while_the_leader_is_killed() -> anyhow::Result<()> {
    const ROUNDS: usize = 6;
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let mut contenders = Vec::new();
    for c in 0..5 {
        let view = ClusterView::new(&cluster);
        contenders.push(tokio::spawn(async move { view.contend(c, ROUNDS).await }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tracing::info!(leader, "kill the leader while five contenders take turns");
    cluster.kill(leader)?;
    let mut tokens = Vec::new();
    for contender in contenders {
        tokens.extend(contender.await??);
    }
    ensure!(
        tokens.len() == 5 * ROUNDS,
        "every acquisition was granted: {tokens:?}"
    );
    let unique: BTreeSet<u64> = tokens.iter().copied().collect();
    ensure!(
        unique.len() == tokens.len(),
        "tokens are never granted twice: {tokens:?}"
    );
    let survivor = cluster.leader().await?;
    let written = history(&cluster, survivor, "locks/contended").await?;
    ensure!(
        written.windows(2).all(|w| w[0] <= w[1]),
        "fenced writes applied in token order: {written:?}"
    );
    for token in &tokens {
        ensure!(
            written.contains(token),
            "the write under token {token} was acknowledged and kept: {written:?}"
        );
    }
    cluster.shutdown().await
}

/// What one contender needs: the nodes' addresses, not the harness (which stays with the test).
#[derive(Clone)]
struct ClusterView {
    locks: Vec<LocksClient<Channel>>,
    kv: Vec<conclave_proto::v1::kv_client::KvClient<Channel>>,
}

impl ClusterView {
    fn new(cluster: &TestCluster) -> Self {
        let ids = cluster.node_ids();
        ClusterView {
            locks: ids.iter().map(|id| locks(cluster, *id)).collect(),
            kv: ids.iter().map(|id| cluster.kv(*id)).collect(),
        }
    }

    async fn contend(self, contender: usize, rounds: usize) -> anyhow::Result<Vec<u64>> {
        let mut ids = RequestIds::new();
        let mut tokens = Vec::new();
        let owner = format!("contender-{contender}");
        for _ in 0..rounds {
            let request = AcquireRequest {
                request_id: Some(ids.next_id()),
                kind: LockKind::Lock as i32,
                name: "contended".into(),
                holder: lease(&owner, 5_000),
                permits: 1,
                limit: 1,
                wait_ms: 20_000,
                lock_delay_ms: Some(500),
            };
            let mut turn = contender;
            let granted = retry_transient("acquire", ACQUIRE_TIMEOUT, || {
                turn += 1;
                let mut client = self.locks[turn % self.locks.len()].clone();
                let request = request.clone();
                async move { client.acquire(request).await }
            })
            .await?
            .into_inner();
            if !granted.acquired {
                continue;
            }
            let token = granted.token;
            let put = PutRequest {
                request_id: Some(ids.next_id()),
                key: b"locks/contended".to_vec(),
                value: token.to_be_bytes().to_vec(),
                session_id: 0,
                fence: fence("contended", token),
            };
            let written = retry_transient("fenced put", WRITE_TIMEOUT, || {
                turn += 1;
                let mut client = self.kv[turn % self.kv.len()].clone();
                let request = put.clone();
                async move { client.put(request).await }
            })
            .await;
            match written {
                Ok(_) => tokens.push(token),
                // Lost to its TTL during the election: not an acquisition that counted.
                Err(status) if is_lock_lost(&status) => {}
                Err(status) => return Err(status.into()),
            }
            let release = ReleaseLockRequest {
                request_id: Some(ids.next_id()),
                kind: LockKind::Lock as i32,
                name: "contended".into(),
                token,
            };
            let released = retry_transient("release", WRITE_TIMEOUT, || {
                turn += 1;
                let mut client = self.locks[turn % self.locks.len()].clone();
                let request = release.clone();
                async move { client.release(request).await }
            })
            .await;
            if let Err(status) = released {
                ensure!(is_lock_lost(&status), "release failed: {status}");
            }
        }
        // Rounds lost to the election are taken again, so that every contender counts `rounds`.
        while tokens.len() < rounds {
            let extra = Box::pin(self.clone().contend(contender, rounds - tokens.len())).await?;
            tokens.extend(extra);
        }
        Ok(tokens)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holders_write_is_refused_after_it_lost_the_lock() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    cluster.leader().await?;
    let mut ids = RequestIds::new();
    let stale = acquire(&cluster, &mut ids, "report", "slow").await?;
    put_fenced(&cluster, &mut ids, "locks/report", fence("report", stale))
        .await
        .context("the holder writes under its token")?;
    tracing::info!(
        stale,
        "the holder stops keeping its lease alive; another takes the lock"
    );
    let fresh = acquire(&cluster, &mut ids, "report", "fresh").await?;
    ensure!(
        fresh > stale,
        "the next grant has a larger token: {fresh} after {stale}"
    );
    let refused = put_fenced(&cluster, &mut ids, "locks/report", fence("report", stale)).await;
    match refused {
        Err(status) if is_lock_lost(&status) => {}
        other => {
            anyhow::bail!("the stale holder's write must be refused as lock-lost, got {other:?}")
        }
    }
    put_fenced(&cluster, &mut ids, "locks/report", fence("report", fresh)).await?;
    let leader = cluster.leader().await?;
    let written = history(&cluster, leader, "locks/report").await?;
    ensure!(
        written == vec![stale, fresh],
        "only current holders wrote: {written:?}"
    );
    release(&cluster, &mut ids, "report", fresh).await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_observer_sees_every_leader_once() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    let leader = cluster.leader().await?;
    let observer_node = cluster.followers().await?[0];
    let mut observer = ElectionsClient::new(channel(cluster.api_addr(observer_node), None));
    let request = conclave_proto::v1::ObserveRequest {
        election: "primary".into(),
    };
    let mut stream = observer.observe(request).await?.into_inner();
    let mut ids = RequestIds::new();
    let mut elected = Vec::new();
    for (round, candidate) in ["a", "b", "c"].into_iter().enumerate() {
        if round == 1 {
            tracing::info!(
                leader,
                "kill the raft leader between two terms of the election"
            );
            cluster.kill(leader)?;
        }
        let clients: Vec<_> = cluster
            .running_node_ids()
            .into_iter()
            .map(|id| {
                ElectionsClient::new(channel(cluster.api_addr(id), Some(Duration::from_secs(40))))
            })
            .collect();
        let campaign = CampaignRequest {
            request_id: Some(ids.next_id()),
            election: "primary".into(),
            holder: lease(candidate, 10_000),
            value: candidate.as_bytes().to_vec(),
            wait_ms: 20_000,
            lock_delay_ms: Some(0),
        };
        let mut turn = 0;
        let answer = retry_transient("campaign", ACQUIRE_TIMEOUT, || {
            turn += 1;
            let mut client = clients[turn % clients.len()].clone();
            let request = campaign.clone();
            async move { client.campaign(request).await }
        })
        .await?
        .into_inner();
        ensure!(
            answer.elected,
            "{candidate} is elected once the election is free"
        );
        elected.push(answer.token);
        let resign = ResignRequest {
            request_id: Some(ids.next_id()),
            election: "primary".into(),
            token: answer.token,
        };
        retry_transient("resign", WRITE_TIMEOUT, || {
            turn += 1;
            let mut client = clients[turn % clients.len()].clone();
            let request = resign.clone();
            async move { client.resign(request).await }
        })
        .await?;
    }
    let mut granted = Vec::new();
    while granted.len() < elected.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .context("the observer saw every leader in time")?
            .context("the observe stream ended")??;
        if event.kind == lock_event::Kind::Granted as i32 {
            granted.push(event.token);
        }
    }
    ensure!(
        granted == elected,
        "each leader once, in order: saw {granted:?}, elected {elected:?}"
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_holder_is_told_it_lost_its_lock_when_the_session_ends() -> anyhow::Result<()> {
    use conclave_client::{AcquireOptions, AgentConfig, AgentEvent, AgentSession, Client};

    let mut cluster = TestCluster::start_initialized(ClusterConfig::new(3)).await?;
    cluster.leader().await?;
    let endpoints: Vec<String> = cluster
        .node_ids()
        .into_iter()
        .map(|id| cluster.api_addr(id).to_string())
        .collect();
    let client = Client::connect(endpoints)?;
    let mut config = AgentConfig::new("holder");
    config.replace = true;
    let (session, mut events) = AgentSession::register(&client, &config).await?;
    let held = client
        .acquire_lock("by-session", &AcquireOptions::session(session.session_id()))
        .await?;
    ensure!(held.acquired, "the session holds the lock: {held:?}");
    // Closed through the client, not `session.close()`, which stops following the stream at once:
    // the session's own stream then carries the loss and the close, in that order.
    client.close_session(session.session_id()).await?;
    let mut lost = None;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
        match event {
            AgentEvent::HoldLost(hold) => lost = Some(hold),
            AgentEvent::Closed { .. } => break,
            _ => {}
        }
    }
    let lost = lost.context("HoldLost arrived before the session's Closed")?;
    ensure!(
        lost.name == "by-session" && lost.token == held.token,
        "the lost grant is named: {lost:?}"
    );
    let refused = put_fenced(
        &cluster,
        &mut RequestIds::new(),
        "locks/by-session",
        fence("by-session", held.token),
    )
    .await;
    ensure!(
        matches!(&refused, Err(status) if is_lock_lost(status)),
        "the ended session's token fences nothing: {refused:?}"
    );
    cluster.shutdown().await
}
