//! `conclave bench lock`: contenders loop acquire (waiting) -> release on a few locks, and the
//! numbers: acquisitions per second, acquire latency, and hand-off latency.
//!
//! Hand-off is measured in this process on one monotonic clock, per lock: from the moment a
//! release is acknowledged to its holder to the moment the next grant of the same lock is
//! acknowledged to another contender. The cluster grants the next waiter when it applies the
//! release, so the two answers race; a grant acknowledged before the release it followed counts
//! as 0 (reported as "early").

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use conclave_client::{AcquireOptions, Client, ClientOptions, Error};
use serde_json::json;
use tokio::time::Instant;

use super::histogram::Histogram;
use super::when::parse_duration;
use super::{output, CliError, CliResult, Globals};

#[derive(Debug, Args)]
pub struct BenchLock {
    /// Contenders, each looping acquire (waiting) -> release.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    clients: u32,
    /// Locks contended for; contender i uses lock i mod M (1: all on one lock).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    locks: u32,
    /// Measured seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration: u64,
    /// Seconds run before measuring starts.
    #[arg(long, value_name = "SECONDS", default_value_t = 1)]
    warmup: u64,
    /// The lease TTL of each grant.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    ttl: Duration,
    /// How long one acquire may wait in the queue.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    wait: Duration,
    /// HTTP/2 connections per node.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
}

/// The last release and the last grant of one lock not yet paired with each other.
#[derive(Debug, Default)]
struct HandOff {
    /// (acknowledged at, by contender, release sent at).
    released: Option<(Instant, u32, Instant)>,
    /// (acknowledged at, to contender).
    granted: Option<(Instant, u32)>,
}

#[derive(Debug, Default)]
struct Report {
    acquire_us: Histogram,
    handoff_us: Histogram,
    early_handoffs: u64,
    not_granted: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.acquire_us.merge(&other.acquire_us);
        self.handoff_us.merge(&other.handoff_us);
        self.early_handoffs += other.early_handoffs;
        self.not_granted += other.not_granted;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn error(&mut self, error: &Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| error.to_string());
    }
}

pub async fn run(args: BenchLock, globals: &Globals) -> CliResult {
    let options = ClientOptions {
        channels_per_endpoint: args.connections as usize,
        ..globals.client_options()
    };
    let client = Client::connect_with(&globals.endpoints, options)?;
    let leader = client.find_leader().await?;
    tracing::info!(leader = leader.node_id, "sending to the leader");
    let tag = format!("bench-{:08x}", rand::random::<u32>());
    let names: Arc<Vec<String>> = Arc::new(
        (0..args.locks)
            .map(|index| format!("{tag}/{index}"))
            .collect(),
    );
    let handoffs: Arc<Vec<Mutex<HandOff>>> =
        Arc::new((0..args.locks).map(|_| Mutex::default()).collect());
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    let acquire = AcquireOptions::lease(args.ttl)
        .waiting(args.wait)
        .owned_by(tag.clone());
    let workers: Vec<_> = (0..args.clients)
        .map(|me| {
            let client = client.clone();
            let names = Arc::clone(&names);
            let handoffs = Arc::clone(&handoffs);
            let acquire = acquire.clone();
            tokio::spawn(async move {
                let lock = (me % names.len() as u32) as usize;
                let name = &names[lock];
                let mut report = Report::default();
                while Instant::now() < end {
                    let sent = Instant::now();
                    let acquired = match client.acquire_lock(name, &acquire).await {
                        Ok(acquired) => acquired,
                        Err(error) => {
                            report.error(&error);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let granted_at = Instant::now();
                    if !acquired.acquired {
                        report.not_granted += 1;
                        continue;
                    }
                    let measured = sent >= measure_from && granted_at <= end;
                    if measured {
                        report
                            .acquire_us
                            .record(granted_at.duration_since(sent).as_micros() as u64);
                    }
                    {
                        let mut slot = handoffs[lock].lock().expect("not poisoned");
                        match slot.released.take() {
                            Some((released_at, by, _)) if by != me => {
                                if measured {
                                    record_handoff(&mut report, released_at, granted_at);
                                }
                            }
                            _ => slot.granted = Some((granted_at, me)),
                        }
                    }
                    let release_sent = Instant::now();
                    match client
                        .release_lock(acquired.kind, name, acquired.token)
                        .await
                    {
                        Ok(_) => {
                            let released_at = Instant::now();
                            let mut slot = handoffs[lock].lock().expect("not poisoned");
                            match slot.granted {
                                // Another contender's grant already came back: it followed this
                                // release (it was granted after the release was sent).
                                Some((granted_at, to))
                                    if to != me && granted_at >= release_sent =>
                                {
                                    slot.granted = None;
                                    if released_at >= measure_from && granted_at <= end {
                                        record_handoff(&mut report, released_at, granted_at);
                                    }
                                }
                                _ => {
                                    slot.granted = None;
                                    slot.released = Some((released_at, me, release_sent));
                                }
                            }
                        }
                        Err(error) => report.error(&error),
                    }
                }
                report
            })
        })
        .collect();
    let mut total = Report::default();
    for worker in workers {
        total.merge(
            worker
                .await
                .map_err(|error| CliError::failed(format!("a contender panicked: {error}")))?,
        );
    }
    print_report(&args, &total, globals.json)?;
    if total.acquire_us.count() == 0 {
        return Err(CliError::failed(format!(
            "no acquisition succeeded{}",
            total
                .first_error
                .map(|error| format!(": {error}"))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

fn record_handoff(report: &mut Report, released_at: Instant, granted_at: Instant) {
    if granted_at < released_at {
        report.early_handoffs += 1;
    }
    report.handoff_us.record(
        granted_at
            .saturating_duration_since(released_at)
            .as_micros() as u64,
    );
}

fn print_report(args: &BenchLock, total: &Report, json: bool) -> CliResult {
    let acquisitions = total.acquire_us.count();
    let throughput = acquisitions as f64 / args.duration as f64;
    let acquire = &total.acquire_us;
    let handoff = &total.handoff_us;
    if json {
        return output::json_document(&json!({
            "clients": args.clients,
            "locks": args.locks,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "acquisitions": acquisitions,
            "acquisitions_per_s": throughput,
            "acquire_latency_us": {
                "p50": acquire.quantile(0.50),
                "p99": acquire.quantile(0.99),
                "max": acquire.max(),
            },
            "handoff_latency_us": {
                "count": handoff.count(),
                "early": total.early_handoffs,
                "p50": handoff.quantile(0.50),
                "p99": handoff.quantile(0.99),
                "max": handoff.max(),
            },
            "not_granted": total.not_granted,
            "errors": total.errors,
            "first_error": total.first_error,
        }));
    }
    let ms = |us: u64| format!("{:.2}ms", us as f64 / 1000.0);
    output::line(&format!(
        "bench lock: clients={} locks={} ttl={:?} duration={}s (after {}s warm-up, not counted)",
        args.clients, args.locks, args.ttl, args.duration, args.warmup
    ))?;
    output::line(&format!("acquisitions  {acquisitions}"))?;
    output::line(&format!("throughput    {throughput:.1} acquisitions/s"))?;
    output::line(&format!(
        "acquire       p50 {}  p99 {}  max {}",
        ms(acquire.quantile(0.50)),
        ms(acquire.quantile(0.99)),
        ms(acquire.max())
    ))?;
    output::line(&format!(
        "hand-off      p50 {}  p99 {}  max {}  ({} hand-offs, {} acknowledged before the release: 0)",
        ms(handoff.quantile(0.50)),
        ms(handoff.quantile(0.99)),
        ms(handoff.max()),
        handoff.count(),
        total.early_handoffs
    ))?;
    output::line(&format!(
        "other         {} not granted within the wait, {} errors",
        total.not_granted, total.errors
    ))?;
    if let Some(error) = &total.first_error {
        output::line(&format!("first error   {error}"))?;
    }
    Ok(())
}
