//! The short suite: each scenario pairs workloads with the nemeses most likely to break them.
//! About 30 s each; the test harness runs two at a time.

use conclave_tests::jepsen::{self, Nemesis, RunConfig, RunVerdict};

use crate::run_and_expect_valid;

/// Linearizable registers while the network splits every way the proxies can split it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_under_partitions() -> anyhow::Result<()> {
    let config = RunConfig::short(
        "register-partitions",
        &["register"],
        &[
            Nemesis::IsolateOne,
            Nemesis::IsolateLeader,
            Nemesis::SplitMajority,
            Nemesis::Bridge,
            Nemesis::OneWay,
            Nemesis::Delay,
        ],
    );
    run_and_expect_valid(config).await?;
    Ok(())
}

/// No acknowledged add is lost when nodes die: one, the leader, a minority, all at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_under_kills() -> anyhow::Result<()> {
    let config = RunConfig::short(
        "set-kills",
        &["set"],
        &[
            Nemesis::KillOne,
            Nemesis::KillLeader,
            Nemesis::KillMinority,
            Nemesis::KillAll,
        ],
    );
    run_and_expect_valid(config).await?;
    Ok(())
}

/// Watchers see every change once, in order, while the leader or a follower freezes (SIGSTOP)
/// past the election timeout and while a node dies (watchers on it fail over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_under_pauses() -> anyhow::Result<()> {
    let config = RunConfig::short(
        "watch-pauses",
        &["watch"],
        &[
            Nemesis::PauseLeader,
            Nemesis::PauseFollower,
            Nemesis::KillOne,
        ],
    );
    run_and_expect_valid(config).await?;
    Ok(())
}

/// Registers and a set while voters are removed and re-added under faults, with snapshots every
/// 100 entries so that restarted and re-added nodes catch up by snapshot install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_set_under_membership_changes_and_snapshots() -> anyhow::Result<()> {
    let mut config = RunConfig::short(
        "membership-snapshots",
        &["register", "set"],
        &[Nemesis::Membership, Nemesis::KillOne, Nemesis::IsolateOne],
    );
    config.snapshot_logs = Some(100);
    config.snapshot_keep_logs = Some(10);
    config.clients_per_node = 2;
    let results = run_and_expect_valid(config).await?;
    let built: usize = results.nodes.iter().map(|node| node.snapshots_built).sum();
    assert!(
        built > 0,
        "no snapshot was built: the scenario proves less than it claims"
    );
    Ok(())
}

/// Five nodes, where a bridge, a 2/3 split and a two-node kill differ from isolating one node:
/// registers and watches while a majority exists only through one node, only on one side, or
/// only among three survivors, and while voters are removed and re-added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_under_bridges_splits_and_minority_kills() -> anyhow::Result<()> {
    let mut config = RunConfig::short(
        "five-nodes",
        &["register", "watch"],
        &[
            Nemesis::Bridge,
            Nemesis::SplitMajority,
            Nemesis::KillMinority,
            Nemesis::Membership,
        ],
    );
    config.nodes = 5;
    config.clients_per_node = 2;
    config.op_interval = std::time::Duration::from_millis(60);
    run_and_expect_valid(config).await?;
    Ok(())
}

/// The checkers can fail: nodes in `--unsafe-test-mode stale-reads` answer linearizable reads
/// from local state, and an isolated old leader (or a lagging follower) then serves stale values.
/// The register checker must call that history invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_mode_is_caught() -> anyhow::Result<()> {
    let mut config = RunConfig::short(
        "unsafe-stale-reads",
        &["register"],
        &[Nemesis::IsolateLeader],
    );
    config.unsafe_mode = Some("stale-reads".to_string());
    config.faults = std::time::Duration::from_secs(12);
    let results = jepsen::run(config).await?;
    assert_eq!(
        results.verdict,
        RunVerdict::Invalid,
        "stale reads went unnoticed (seed {}): {:?}; report: {}",
        results.seed,
        results.problems,
        results.dir.join("report.html").display()
    );
    assert!(
        results
            .problems
            .iter()
            .any(|p| p.contains("register") && p.contains("read")),
        "{:?}",
        results.problems
    );
    Ok(())
}

/// Tasks under leader kills and partitions: tasks in three queues with random priorities, some
/// delayed, some with short deadlines, some poison or flaky; raw-API agents with short session
/// TTLs complete, fail, give back, abandon and complete too late, their streams moving between
/// nodes; operators cancel tasks, redrive dead letters and gate tasks on decisions the agents vote
/// on; after the heal the agents drain the queues. Nothing acknowledged is lost, nothing appears
/// twice, at most one completion per task is accepted (with the token of its one successful
/// attempt), tokens strictly increase, no canceled task completes, nothing is assigned before its
/// not-before or after its deadline, dead letters stay until redriven, gated tasks run only when
/// their decision matches, every task ends terminal and every node agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_under_leader_kills_and_partitions() -> anyhow::Result<()> {
    let config = RunConfig::short(
        "tasks-kills-partitions",
        &["tasks"],
        &[
            Nemesis::KillLeader,
            Nemesis::KillOne,
            Nemesis::IsolateLeader,
            Nemesis::SplitMajority,
        ],
    );
    run_and_expect_valid(config).await?;
    Ok(())
}

/// Decisions under leader pauses and partitions: proposals under every rule with deadlines of a
/// few seconds, voters voting on the ballots pushed to them (and voting twice, or from outside
/// the electorate, to be refused). Every decision has one outcome, every node and every reader
/// agrees on it, and it is what the rule gives for the votes the cluster accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_under_leader_pauses_and_partitions() -> anyhow::Result<()> {
    let config = RunConfig::short(
        "decisions-pauses-partitions",
        &["decisions"],
        &[
            Nemesis::PauseLeader,
            Nemesis::IsolateLeader,
            Nemesis::OneWay,
            Nemesis::SplitMajority,
        ],
    );
    run_and_expect_valid(config).await?;
    Ok(())
}

/// Tasks and decisions while one node's wall clock is 2-10 s off, forward or back (libfaketime),
/// often the leader's, so the skew reaches the stamps cluster time is made of: a forward skew on
/// the leader expires every session, lease and deadline at once, a backward one holds cluster
/// time still. Fencing tokens, one accepted completion per task and one outcome per decision must
/// not depend on clocks; a killed leader adds a leader change to a skewed cluster time. Fails,
/// naming the package, where libfaketime is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_decisions_under_clock_skew() -> anyhow::Result<()> {
    let config = RunConfig::short(
        "clock-skew",
        &["tasks", "decisions"],
        &[Nemesis::ClockSkew, Nemesis::KillLeader],
    );
    run_and_expect_valid(config).await?;
    Ok(())
}

/// Fenced locks and leader elections under leader kills, an isolated leader and pauses: holders
/// (leases of 1-2.5 s, never kept alive) now and then sleep past their TTL and then write under
/// their stale token. Along each lock's and election's key the tokens of the applied writes never
/// decrease (the fence refuses stale holders), refused writes are absent and acknowledged ones
/// present, tokens are unique and follow real time, one holder per term, observers and Leader
/// reads never go back. Also asserts that stale holders were refused as lock-lost (the fence was
/// exercised, not merely never needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_and_elections_under_kills_pauses_and_partitions() -> anyhow::Result<()> {
    let mut config = RunConfig::short(
        "locks-elections",
        &["locks", "elections"],
        &[
            Nemesis::KillLeader,
            Nemesis::PauseLeader,
            Nemesis::IsolateLeader,
            Nemesis::KillOne,
        ],
    );
    config.clients_per_node = 2;
    let results = run_and_expect_valid(config).await?;
    let refused: u64 = results
        .checks
        .iter()
        .filter_map(|check| check.stats["stale_writes_lock_lost"].as_u64())
        .sum();
    assert!(
        refused > 0,
        "no stale holder was refused as lock-lost: the scenario proves less than it claims"
    );
    Ok(())
}

/// The lock checker can fail: nodes in `--unsafe-test-mode skip-fence` drop the fences of fenced
/// writes, so a holder that slept past its TTL writes after the next holder did. Without faults
/// (so nothing but the unsafe mode can explain it), with 15% of the holds stale (each one then
/// writes 0.5-1.2 s after its successor was granted), the locks checker must find a token that
/// went back along a lock's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_skip_fence_is_caught() -> anyhow::Result<()> {
    let mut config = RunConfig::short("unsafe-skip-fence", &["locks"], &[]);
    config.unsafe_mode = Some("skip-fence".to_string());
    config.faults = std::time::Duration::from_secs(12);
    let results = jepsen::run(config).await?;
    assert_eq!(
        results.verdict,
        RunVerdict::Invalid,
        "stale holders' writes went unnoticed (seed {}): {:?}; report: {}",
        results.seed,
        results.problems,
        results.dir.join("report.html").display()
    );
    assert!(
        results
            .problems
            .iter()
            .any(|p| p.contains("locks") && p.contains("stale holder wrote")),
        "{:?}",
        results.problems
    );
    Ok(())
}

/// How many writes of a run's `workload` came after a newer token's write to the same key was
/// acknowledged: the stale writes the fence had to refuse (`writes_after_a_newer_token`).
fn writes_after_a_newer_token(results: &jepsen::Results, workload: &str) -> u64 {
    results
        .checks
        .iter()
        .filter(|check| check.workload == workload)
        .filter_map(|check| check.stats["writes_after_a_newer_token"].as_u64())
        .sum()
}

/// The elections checker can fail, and not by chance: the elections workload's scripted
/// deposals (`elections.rs`, `deposal`) elect a leader, let its term run out while it says
/// nothing, elect a successor, have the successor's fenced write acknowledged, and only then let
/// the deposed leader write under its old token. With `--unsafe-test-mode skip-fence` that write
/// is applied after the successor's, so every round that got that far (one every ~2 s; the run
/// has ~15 s of clients, no faults) puts a smaller token behind a larger one on the key, and
/// `tokens_never_decrease` must say so. The order is the script's, not a race's, so the catch
/// does not depend on timing; the assertion on `writes_after_a_newer_token` shows rounds ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_skip_fence_is_caught_by_elections() -> anyhow::Result<()> {
    let mut config = RunConfig::short("unsafe-skip-fence-elections", &["elections"], &[]);
    config.unsafe_mode = Some("skip-fence".to_string());
    config.faults = std::time::Duration::from_secs(10);
    let results = jepsen::run(config).await?;
    let exposed = writes_after_a_newer_token(&results, "elections");
    assert!(
        exposed > 0,
        "no deposed leader wrote after its successor (seed {}): the scenario proves nothing; {:?}",
        results.seed,
        results.problems
    );
    assert_eq!(
        results.verdict,
        RunVerdict::Invalid,
        "{exposed} deposed leaders' writes went unnoticed (seed {}): {:?}; report: {}",
        results.seed,
        results.problems,
        results.dir.join("report.html").display()
    );
    assert!(
        results
            .problems
            .iter()
            .any(|p| p.contains("elections") && p.contains("stale holder wrote")),
        "{:?}",
        results.problems
    );
    Ok(())
}

/// The same run with the fence in place: every deposed leader's write, sent after its
/// successor's was acknowledged, is refused as lock-lost, and the run is valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposed_leaders_are_refused_by_the_fence() -> anyhow::Result<()> {
    let mut config = RunConfig::short("elections-deposals", &["elections"], &[]);
    config.faults = std::time::Duration::from_secs(10);
    let results = run_and_expect_valid(config).await?;
    let exposed = writes_after_a_newer_token(&results, "elections");
    assert!(
        exposed > 0,
        "no deposed leader wrote after its successor: the scenario proves less than it claims"
    );
    Ok(())
}

/// How many step completions of a run's workflows workload were sent after a newer token of
/// their task had been pushed to an agent, how many of those were refused as lease lost, and how
/// many accepted (the rest have unknown outcomes).
fn stale_step_completions(results: &jepsen::Results) -> (u64, u64, u64) {
    let stats = results
        .checks
        .iter()
        .find(|check| check.workload == "workflows")
        .map(|check| check.stats.clone())
        .unwrap_or_default();
    (
        stats["completions_after_a_newer_token"]
            .as_u64()
            .unwrap_or(0),
        stats["completions_after_a_newer_token_refused"]
            .as_u64()
            .unwrap_or(0),
        stats["completions_after_a_newer_token_accepted"]
            .as_u64()
            .unwrap_or(0),
    )
}

/// Workflows run by the cluster through a killed and a paused leader and an isolated one:
/// pipelines, fan-outs joined by 3 of 5 and cancels in the middle, their step tasks taken by
/// agents that stall past their leases and freeze past their sessions. Every started workflow
/// ends terminal, no step starts before the steps it follows (cluster times, watch order, and
/// the history's real time), every recorded step result is the one the task's current lease
/// produced, every join fires once with at least 3 results, canceled workflows leave no running
/// task. Also asserts that stale completions were sent and refused (the scripted deposals of
/// `workflows.rs`): the fence was exercised, not merely never needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_under_leader_kills_pauses_and_partitions() -> anyhow::Result<()> {
    let config = RunConfig::short(
        "workflows-kills-pauses",
        &["workflows"],
        &[
            Nemesis::KillLeader,
            Nemesis::PauseLeader,
            Nemesis::IsolateLeader,
        ],
    );
    let results = run_and_expect_valid(config).await?;
    let (stale, refused, _) = stale_step_completions(&results);
    assert!(
        refused > 0,
        "{stale} stale step completions, {refused} refused: the scenario proves less than it claims"
    );
    Ok(())
}

/// The workflows checker can fail, and not by chance: with `--unsafe-test-mode
/// stale-step-result` the leader gives a step task's Complete that carries a stale token the
/// task's current token, so the workflows workload's scripted deposals (the worker of a
/// pipeline's step `b` stays silent until the task is assigned again, then completes with its
/// old token before the new holder does) record the stale attempt's result as the step's. The
/// checker must report a result that came from a token other than the successful attempt's and a
/// completion accepted after a newer token was pushed. No faults: nothing else explains it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_stale_step_result_is_caught_by_workflows() -> anyhow::Result<()> {
    let mut config = RunConfig::short("unsafe-stale-step-result", &["workflows"], &[]);
    config.unsafe_mode = Some("stale-step-result".to_string());
    config.faults = std::time::Duration::from_secs(10);
    let results = jepsen::run(config).await?;
    let (stale, refused, accepted) = stale_step_completions(&results);
    assert!(
        accepted > 0,
        "no stale step completion was accepted (seed {}; {stale} sent, {refused} refused): the \
         scenario proves nothing; {:?}",
        results.seed,
        results.problems
    );
    assert_eq!(
        results.verdict,
        RunVerdict::Invalid,
        "stale step results went unnoticed (seed {}): {:?}; report: {}",
        results.seed,
        results.problems,
        results.dir.join("report.html").display()
    );
    assert!(
        results
            .problems
            .iter()
            .any(|p| p.contains("workflows") && p.contains("a stale lease's result")),
        "{:?}",
        results.problems
    );
    Ok(())
}

/// The transactions checker's stats of a run.
fn transaction_stats(results: &jepsen::Results) -> serde_json::Value {
    results
        .checks
        .iter()
        .find(|check| check.workload == "transactions")
        .map(|check| check.stats.clone())
        .unwrap_or_default()
}

/// Cross-primitive transactions (the transactional outbox: complete the task, write its result
/// key and a counter compared by revision, submit a follow-up) through SIGKILL of the leader, a
/// SIGSTOPped leader, an isolated leader and a majority/minority split: every read sees each
/// transaction whole or not at all (result key, task state, follow-up, counter revision), the
/// final state holds every acknowledged transaction whole and nothing of a refused one, no
/// transaction applied twice, revisions in real-time order. Asserts that stale-token
/// transactions were sent and refused and that compares failed: the refusals were exercised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_under_kills_pauses_and_partitions() -> anyhow::Result<()> {
    let config = RunConfig::short(
        "transactions-faults",
        &["transactions"],
        &[
            Nemesis::KillLeader,
            Nemesis::PauseLeader,
            Nemesis::IsolateLeader,
            Nemesis::SplitMajority,
        ],
    );
    let results = run_and_expect_valid(config).await?;
    let stats = transaction_stats(&results);
    let (ok, stale_refused, compare_failed) = (
        stats["txns_ok"].as_u64().unwrap_or(0),
        stats["stale_refused"].as_u64().unwrap_or(0),
        stats["txns_compare_failed"].as_u64().unwrap_or(0),
    );
    assert!(
        ok > 0 && stale_refused > 0 && compare_failed > 0,
        "{stats}: the scenario proves less than it claims"
    );
    Ok(())
}

/// The transactions checker can fail, on every run: with `--unsafe-test-mode txn-partial` the
/// leader proposes a transaction's ops but the last as one entry and the last alone as another,
/// so every fourth assignment's stale-token transaction (its completion last, refused as lease
/// lost) still writes its keys and submits its follow-up. No faults: nothing else explains it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_txn_partial_is_caught_by_transactions() -> anyhow::Result<()> {
    let mut config = RunConfig::short("unsafe-txn-partial", &["transactions"], &[]);
    config.unsafe_mode = Some("txn-partial".to_string());
    config.faults = std::time::Duration::from_secs(10);
    let results = jepsen::run(config).await?;
    let stats = transaction_stats(&results);
    assert!(
        stats["stale_refused"].as_u64().unwrap_or(0) > 0,
        "no stale-token transaction was refused (seed {}): the scenario proves nothing; {stats}",
        results.seed
    );
    assert_eq!(
        results.verdict,
        RunVerdict::Invalid,
        "partial transactions went unnoticed (seed {}): {:?}; report: {}",
        results.seed,
        results.problems,
        results.dir.join("report.html").display()
    );
    assert!(
        results
            .problems
            .iter()
            .any(|p| p.contains("transactions") && p.contains("a refused transaction left a trace")),
        "{:?}",
        results.problems
    );
    Ok(())
}

/// The topics workload's counts of acks sent after a newer delivery of their message had been
/// fetched: (sent, refused, accepted).
fn stale_acks(results: &jepsen::Results) -> (u64, u64, u64) {
    let stats = results
        .checks
        .iter()
        .find(|check| check.workload == "topics")
        .map(|check| check.stats.clone())
        .unwrap_or_default();
    let count = |name: &str| stats[name].as_u64().unwrap_or(0);
    (
        count("acks_after_a_newer_delivery"),
        count("acks_after_a_newer_delivery_refused"),
        count("acks_after_a_newer_delivery_accepted"),
    )
}

/// Topics through a killed, a paused and an isolated leader: keyed publishes (batched, resent
/// with their idempotency keys while unknown), two consumer groups whose members stall past the
/// ack wait and nack, a subscriber that resumes on another node. No acknowledged publish is
/// lost or stored twice, every message is acked by each group or dead-lettered, no stale ack is
/// accepted, each key's messages go out in order and one at a time, the subscriber sees every
/// sequence once, every node agrees. Also asserts that stale acks were sent and refused (the
/// scripted ones of `topics.rs`): the fence was exercised, not merely never needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_under_leader_kills_pauses_and_partitions() -> anyhow::Result<()> {
    let config = RunConfig::short(
        "topics-kills-pauses",
        &["topics"],
        &[
            Nemesis::KillLeader,
            Nemesis::PauseLeader,
            Nemesis::IsolateLeader,
        ],
    );
    let results = run_and_expect_valid(config).await?;
    let (sent, refused, _) = stale_acks(&results);
    assert!(
        refused > 0,
        "{sent} stale acks, {refused} refused: the scenario proves less than it claims"
    );
    Ok(())
}

/// The topics checker catches an accepted stale ack, and not by chance: with `--unsafe-test-mode
/// topic-stale-ack` the leader gives an Ack with a stale token the current delivery's token, so
/// the scripted stale acks (a member stays silent until another one fetched its message under a
/// newer token, then acks with its old one) are accepted. No faults: nothing else explains it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_topic_stale_ack_is_caught() -> anyhow::Result<()> {
    let mut config = RunConfig::short("unsafe-topic-stale-ack", &["topics"], &[]);
    config.unsafe_mode = Some("topic-stale-ack".to_string());
    config.faults = std::time::Duration::from_secs(10);
    let results = jepsen::run(config).await?;
    let (sent, refused, accepted) = stale_acks(&results);
    assert!(
        accepted > 0,
        "no stale ack was accepted (seed {}; {sent} sent, {refused} refused): the scenario \
         proves nothing; {:?}",
        results.seed,
        results.problems
    );
    assert_eq!(
        results.verdict,
        RunVerdict::Invalid,
        "stale acks went unnoticed (seed {}): {:?}",
        results.seed,
        results.problems
    );
    assert!(
        results
            .problems
            .iter()
            .any(|p| p.contains("topics") && p.contains("with the stale token")),
        "{:?}",
        results.problems
    );
    Ok(())
}

/// The topics checker catches lost per-key order: with `--unsafe-test-mode topic-unordered` the
/// leader creates the groups without per-key order, so a Fetch of several messages gets two of
/// one key at once (four keys, batches of up to four), and members ack the earlier one after
/// the later one went out. No faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_topic_unordered_is_caught() -> anyhow::Result<()> {
    let mut config = RunConfig::short("unsafe-topic-unordered", &["topics"], &[]);
    config.unsafe_mode = Some("topic-unordered".to_string());
    config.faults = std::time::Duration::from_secs(10);
    let results = jepsen::run(config).await?;
    assert_eq!(
        results.verdict,
        RunVerdict::Invalid,
        "unordered keys went unnoticed (seed {}): {:?}",
        results.seed,
        results.problems
    );
    assert!(
        results
            .problems
            .iter()
            .any(|p| p.contains("topics") && p.contains("key")),
        "{:?}",
        results.problems
    );
    Ok(())
}
