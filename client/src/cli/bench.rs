//! `conclave bench kv`: a closed-loop load generator that prints throughput and latency.
//!
//! Each worker keeps one request outstanding. Workers share one client whose requests are spread
//! over several HTTP/2 connections per node and sent straight to the leader; each worker records
//! latencies into its own fixed-size histogram, merged at the end.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use conclave_client::{Client, ClientOptions, Error, ReadConsistency};
use serde_json::json;
use tokio::time::Instant;

use super::histogram::Histogram;
use super::{output, CliError, CliResult, Globals};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Drive puts and/or gets against the cluster and report throughput and latency.
    ///
    /// Runs --clients workers, each with one request outstanding, for --warmup seconds (not
    /// measured) and then --duration seconds (measured). Keys are `bench/00000000` ..
    /// `bench/<keys - 1>`, chosen uniformly at random; for `get` and `mixed` every key is written
    /// once before the run. Puts carry request ids like every other write. Reports successful
    /// operations, throughput, p50/p90/p99/max latency, and errors split into rejected (nothing
    /// applied), indeterminate (outcome unknown) and unavailable (a read found no node).
    Kv(BenchKv),
    /// Run in-process agents that complete every task at once, submit tasks, and report
    /// end-to-end throughput and the submit->assign and assign->complete latencies.
    ///
    /// The agents (--agents, each holding up to --concurrency tasks) get a fresh capability that
    /// only they have. Tasks go in SubmitBatch requests of --batch-size (or one Submit each with
    /// --submit single), --submitters requests at a time. Throughput is tasks completed per
    /// second from the first submit to the last completion. Latencies are measured in this
    /// process on one monotonic clock: submit->assign from the submit's acknowledgement to the
    /// assignment's arrival at an agent, assign->complete from there to the completion's
    /// acknowledgement. --idle submits one task at a time, so the agents are idle when it arrives.
    Tasks(super::bench_tasks::BenchTasks),
    /// Contend for locks: --clients contenders each loop acquire (waiting) -> release on one of
    /// --locks locks (contender i on lock i mod --locks; 1: all on one lock), and report
    /// acquisitions/s, acquire latency, hand-off latency and the cycle per lock, p50 and p99.
    ///
    /// Every instant is read in this process, on one monotonic clock. Acquire latency: an
    /// Acquire sent -> its grant returned (queueing included). Hand-off latency: a holder sends
    /// its Release -> the next grant of that lock returns to another contender that was already
    /// waiting (its Acquire sent before that Release); the cluster grants the waiter in the log
    /// entry that applies the release, so this is the Release's trip to the leader, one commit
    /// and the grant's trip back. Grants to a free lock, or back to the contender that released
    /// it, are not hand-offs (counted apart; with one contender per lock no grant is one). Cycle: one
    /// grant of a lock -> the next grant of the same lock; its mean is the duration divided by
    /// the grants per lock, the rate one contended lock sustains.
    Lock(super::bench_locks::BenchLock),
    /// Run in-process agents that complete every step task at once, start --workflows workflows
    /// of one --shape, and report workflows/s and the step hand-off latency.
    ///
    /// Shapes: pipeline3 (steps a -> b -> c, each task's payload carrying the previous step's
    /// result) and fanout10 (ten branches joined by ALL, then an aggregator step). The agents
    /// (--agents, each holding up to --concurrency tasks) get a fresh capability that only they
    /// have; --starters Start requests are in flight at once. Throughput is the workflows that
    /// SUCCEEDED per second, from the first Start sent to the last workflow seen terminal by a
    /// watch of every workflow; the command fails unless every workflow succeeded. Hand-off: a
    /// step's last completion acknowledged -> the next step's task arriving at an agent, on this
    /// process's monotonic clock (the agents learn the workflow and step from the task's
    /// correlation id, `workflow/<id>/<step>/<branch>`).
    Workflow(super::bench_workflow::BenchWorkflow),
    /// Publish to a fresh topic and, with --consumers, fetch and ack in one consumer group; report
    /// messages published per second, the Publish latency and the publish->delivery latency.
    ///
    /// --publishers publishers each keep one Publish of --batch messages (one log entry) of
    /// --size bytes outstanding, as fast as they can or, with --rate, at that many messages per
    /// second in all (open loop, for latency below saturation). The --consumers members of one
    /// group fetch up to --fetch-max messages at a time and ack each at once. Every instant is
    /// read in this process on one monotonic clock: a message's data carries the time its
    /// Publish was sent, and publish->delivery ends when the Fetch that leased it returned.
    /// After the measured window the consumers drain the group (up to 10 s) and the topic is
    /// deleted.
    Topic(super::bench_topic::BenchTopic),
}

#[derive(Debug, Args)]
pub struct BenchKv {
    /// Concurrent workers, each with one request outstanding.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    clients: u32,
    /// Measured seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration: u64,
    /// Seconds run before measuring starts, to open connections and warm caches.
    #[arg(long, value_name = "SECONDS", default_value_t = 1)]
    warmup: u64,
    /// Bytes per value written.
    #[arg(long, value_name = "BYTES", default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    value_size: u32,
    /// What each request does: put, get, or mixed (50% get, 50% put, chosen per request).
    #[arg(long, value_enum, default_value_t = BenchOp::Put)]
    op: BenchOp,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    keys: u32,
    /// HTTP/2 connections per node; workers' requests are spread over them.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
    /// Serve gets from the node's local state instead of linearizably.
    #[arg(long)]
    serializable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchOp {
    /// Every request is a put.
    Put,
    /// Every request is a get.
    Get,
    /// 50% gets, 50% puts.
    Mixed,
}

/// What one worker saw during the measured window.
#[derive(Debug, Default)]
struct WorkerReport {
    latency_us: Histogram,
    rejected: u64,
    indeterminate: u64,
    unavailable: u64,
    /// The first error seen, to show what went wrong.
    first_error: Option<String>,
}

pub async fn run(command: BenchCommand, globals: &Globals) -> CliResult {
    match command {
        BenchCommand::Kv(args) => kv(args, globals).await,
        BenchCommand::Tasks(args) => super::bench_tasks::run(args, globals).await,
        BenchCommand::Lock(args) => super::bench_locks::run(args, globals).await,
        BenchCommand::Workflow(args) => super::bench_workflow::run(args, globals).await,
        BenchCommand::Topic(args) => super::bench_topic::run(args, globals).await,
    }
}

async fn kv(args: BenchKv, globals: &Globals) -> CliResult {
    let options = ClientOptions {
        channels_per_endpoint: args.connections as usize,
        ..globals.client_options()
    };
    let client = Client::connect_with(&globals.endpoints, options)?;
    let leader = client.find_leader().await?;
    tracing::info!(leader = leader.node_id, address = %leader.api_addr, "sending to the leader");

    let keys: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..args.keys)
            .map(|i| format!("bench/{i:08}").into_bytes())
            .collect(),
    );
    let value: Arc<Vec<u8>> = Arc::new(vec![b'x'; args.value_size as usize]);
    if args.op != BenchOp::Put {
        preload(&client, &keys, &value, args.clients as usize).await?;
    }

    let started = Instant::now();
    let measure_from = started + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    let consistency = if args.serializable {
        ReadConsistency::Serializable
    } else {
        ReadConsistency::Linearizable
    };
    let workers: Vec<_> = (0..args.clients)
        .map(|worker| {
            let client = client.clone();
            let keys = Arc::clone(&keys);
            let value = Arc::clone(&value);
            let op = args.op;
            tokio::spawn(async move {
                let mut random = XorShift::new(u64::from(worker) + 1);
                let mut report = WorkerReport::default();
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        return report;
                    }
                    let key = keys[random.below(keys.len())].clone();
                    let put = match op {
                        BenchOp::Put => true,
                        BenchOp::Get => false,
                        BenchOp::Mixed => random.next() & 1 == 0,
                    };
                    let result = if put {
                        client.put(key, value.as_slice()).await.map(drop)
                    } else {
                        client.get_with(key, consistency).await.map(drop)
                    };
                    let done = Instant::now();
                    if sent < measure_from || done > end {
                        continue;
                    }
                    match result {
                        Ok(()) => report
                            .latency_us
                            .record(done.duration_since(sent).as_micros() as u64),
                        Err(error) => {
                            match error {
                                Error::Indeterminate { .. } => report.indeterminate += 1,
                                Error::Unavailable { .. } => report.unavailable += 1,
                                _ => report.rejected += 1,
                            }
                            report.first_error.get_or_insert_with(|| error.to_string());
                        }
                    }
                }
            })
        })
        .collect();

    let mut total = WorkerReport::default();
    for worker in workers {
        let report = worker
            .await
            .map_err(|error| CliError::failed(format!("a worker panicked: {error}")))?;
        total.latency_us.merge(&report.latency_us);
        total.rejected += report.rejected;
        total.indeterminate += report.indeterminate;
        total.unavailable += report.unavailable;
        if total.first_error.is_none() {
            total.first_error = report.first_error;
        }
    }
    print_report(&args, &total, globals.json)?;
    if total.latency_us.count() == 0 {
        return Err(CliError::failed(format!(
            "no operation succeeded{}",
            total
                .first_error
                .map(|error| format!(": {error}"))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// Writes every key once, so that gets find values.
async fn preload(
    client: &Client,
    keys: &Arc<Vec<Vec<u8>>>,
    value: &Arc<Vec<u8>>,
    workers: usize,
) -> CliResult {
    let workers = workers.clamp(1, keys.len());
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let client = client.clone();
            let keys = Arc::clone(keys);
            let value = Arc::clone(value);
            tokio::spawn(async move {
                for key in keys.iter().skip(worker).step_by(workers) {
                    client.put(key.clone(), value.as_slice()).await?;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .map_err(|error| CliError::failed(format!("a preload worker panicked: {error}")))??;
    }
    Ok(())
}

fn print_report(args: &BenchKv, total: &WorkerReport, json: bool) -> CliResult {
    let operations = total.latency_us.count();
    let throughput = operations as f64 / args.duration as f64;
    let op = match args.op {
        BenchOp::Put => "put",
        BenchOp::Get => "get",
        BenchOp::Mixed => "mixed",
    };
    let latency = &total.latency_us;
    if json {
        return output::json_document(&json!({
            "op": op,
            "clients": args.clients,
            "connections": args.connections,
            "value_size": args.value_size,
            "keys": args.keys,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "operations": operations,
            "throughput_ops_per_s": throughput,
            "latency_us": {
                "p50": latency.quantile(0.50),
                "p90": latency.quantile(0.90),
                "p99": latency.quantile(0.99),
                "max": latency.max(),
            },
            "errors": {
                "rejected": total.rejected,
                "indeterminate": total.indeterminate,
                "unavailable": total.unavailable,
                "first": total.first_error,
            },
        }));
    }
    let ms = |us: u64| format!("{:.2}ms", us as f64 / 1000.0);
    output::line(&format!(
        "bench kv: op={op} clients={} connections={} value_size={}B keys={} duration={}s (after {}s warm-up, not counted)",
        args.clients, args.connections, args.value_size, args.keys, args.duration, args.warmup
    ))?;
    output::line(&format!("operations  {operations}"))?;
    output::line(&format!("throughput  {throughput:.1} ops/s"))?;
    output::line(&format!(
        "latency     p50 {}  p90 {}  p99 {}  max {}",
        ms(latency.quantile(0.50)),
        ms(latency.quantile(0.90)),
        ms(latency.quantile(0.99)),
        ms(latency.max())
    ))?;
    output::line(&format!(
        "errors      {} rejected, {} indeterminate, {} unavailable",
        total.rejected, total.indeterminate, total.unavailable
    ))?;
    if let Some(error) = &total.first_error {
        output::line(&format!("first error {error}"))?;
    }
    Ok(())
}

/// A tiny xorshift64* generator: the benchmark needs cheap, reproducible choices, not security.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}
