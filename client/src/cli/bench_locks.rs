//! `conclave bench lock`: contenders loop acquire (waiting) -> release on a few locks, and the
//! numbers: acquisitions per second, acquire latency, hand-off latency and the cycle per lock.
//!
//! Every instant is read in this process on one monotonic clock ([`Instant`]):
//! - **acquire latency**: an Acquire sent -> its grant returned (queueing included);
//! - **hand-off latency**: a holder sends its Release -> the next grant of that lock returns to
//!   another contender that was already waiting (its Acquire sent before the Release was). The
//!   cluster grants the next waiter in the very log entry that applies the release, so the
//!   waiter's answer usually comes back before the releaser's own acknowledgement: measuring
//!   from that acknowledgement gives nothing (it was <= 0). From the send, it is the Release's
//!   trip to the leader, one commit and apply, and the grant's trip back ([`pair_steps`]);
//! - **cycle**: the time from one grant of a lock to the next grant of the same lock; its mean is
//!   the measured duration divided by that lock's grants, the rate one contended lock sustains.

use std::sync::Arc;
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

/// What one contender did to one lock, at `at_us` (microseconds since the bench started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Step {
    lock: u32,
    contender: u32,
    at_us: u64,
    kind: StepKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StepKind {
    /// A grant returned (at `at_us`) to an Acquire sent at `sent_us`.
    Granted { sent_us: u64 },
    /// A Release sent (at `at_us`) that the cluster then acknowledged.
    ReleaseSent,
}

/// The hand-offs and cycles [`pair_steps`] found in the measured window, in microseconds.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pairing {
    /// Grants returned in the window.
    grants: u64,
    handoffs_us: Vec<u64>,
    cycles_us: Vec<u64>,
    /// Grants in the window that were no hand-off: the lock was free, or retaken by the contender
    /// that had just released it.
    grants_not_handed_off: u64,
}

/// Pairs each grant with the Release of the same lock sent last before the grant returned, and
/// each grant with the lock's grant before it. A lock has one holder at a time and a holder
/// sends its Release only after its own grant returned, so the Release sent last before a grant
/// returned is the one that freed the lock for it. That pair is a hand-off when another
/// contender released and the grantee's Acquire was sent before that Release was: it was
/// waiting. A Release is paired at most once. Only pairs wholly inside `window` (from, to) in
/// microseconds are kept. Sorts `steps`.
fn pair_steps(steps: &mut [Step], (from_us, to_us): (u64, u64)) -> Pairing {
    // At one instant a grant comes before the Release its holder sends after it.
    steps.sort_by_key(|step| {
        let release = step.kind == StepKind::ReleaseSent;
        (step.lock, step.at_us, release)
    });
    let in_window = |start: u64, end: u64| start >= from_us && end <= to_us;
    let mut pairing = Pairing::default();
    let mut lock = None;
    // Of the current lock: the last Release not yet paired (by, sent at), the last grant.
    let mut released: Option<(u32, u64)> = None;
    let mut last_grant_us: Option<u64> = None;
    for step in steps.iter() {
        if lock != Some(step.lock) {
            lock = Some(step.lock);
            released = None;
            last_grant_us = None;
        }
        match step.kind {
            StepKind::ReleaseSent => released = Some((step.contender, step.at_us)),
            StepKind::Granted { sent_us } => {
                if in_window(step.at_us, step.at_us) {
                    pairing.grants += 1;
                }
                if let Some(previous) = last_grant_us.filter(|&p| in_window(p, step.at_us)) {
                    pairing.cycles_us.push(step.at_us - previous);
                }
                last_grant_us = Some(step.at_us);
                let handoff = released
                    .take()
                    .filter(|&(by, release_us)| by != step.contender && sent_us <= release_us);
                match handoff {
                    Some((_, release_us)) => {
                        if in_window(release_us, step.at_us) {
                            pairing.handoffs_us.push(step.at_us - release_us);
                        }
                    }
                    None => {
                        if in_window(step.at_us, step.at_us) {
                            pairing.grants_not_handed_off += 1;
                        }
                    }
                }
            }
        }
    }
    pairing
}

#[derive(Debug, Default)]
struct Report {
    acquire_us: Histogram,
    steps: Vec<Step>,
    not_granted: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Report {
    fn merge(&mut self, mut other: Report) {
        self.acquire_us.merge(&other.acquire_us);
        self.steps.append(&mut other.steps);
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
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    let since_start = move |instant: Instant| instant.duration_since(started).as_micros() as u64;
    let acquire = AcquireOptions::lease(args.ttl)
        .waiting(args.wait)
        .owned_by(tag.clone());
    let workers: Vec<_> = (0..args.clients)
        .map(|me| {
            let client = client.clone();
            let names = Arc::clone(&names);
            let acquire = acquire.clone();
            tokio::spawn(async move {
                let lock = me % names.len() as u32;
                let name = &names[lock as usize];
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
                    if sent >= measure_from && granted_at <= end {
                        report
                            .acquire_us
                            .record(granted_at.duration_since(sent).as_micros() as u64);
                    }
                    report.steps.push(Step {
                        lock,
                        contender: me,
                        at_us: since_start(granted_at),
                        kind: StepKind::Granted {
                            sent_us: since_start(sent),
                        },
                    });
                    let release_sent = Instant::now();
                    match client
                        .release_lock(acquired.kind, name, acquired.token)
                        .await
                    {
                        Ok(_) => report.steps.push(Step {
                            lock,
                            contender: me,
                            at_us: since_start(release_sent),
                            kind: StepKind::ReleaseSent,
                        }),
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
    let window = (since_start(measure_from), since_start(end));
    let pairing = pair_steps(&mut total.steps, window);
    print_report(&args, &total, &pairing, globals.json)?;
    if pairing.grants == 0 {
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

/// Most contenders on one lock: contender i uses lock i mod `locks`.
fn contenders_per_lock(args: &BenchLock) -> u32 {
    args.clients.div_ceil(args.locks)
}

fn print_report(args: &BenchLock, total: &Report, pairing: &Pairing, json: bool) -> CliResult {
    // Grants returned in the window, also to Acquires sent before it (those are left out of the
    // acquire latency, which needs the send in the window too).
    let acquisitions = pairing.grants;
    let throughput = acquisitions as f64 / args.duration as f64;
    let acquire = &total.acquire_us;
    let histogram = |values: &[u64]| {
        let mut histogram = Histogram::default();
        values.iter().for_each(|&value| histogram.record(value));
        histogram
    };
    let handoff = histogram(&pairing.handoffs_us);
    let cycle = histogram(&pairing.cycles_us);
    // The duration over the grants of one lock, averaged over the locks in use.
    let locks_used = u64::from(args.locks.min(args.clients));
    let cycle_mean_us = (args.duration * 1_000_000 * locks_used)
        .checked_div(acquisitions)
        .unwrap_or(0);
    let contenders = contenders_per_lock(args);
    if json {
        return output::json_document(&json!({
            "clients": args.clients,
            "locks": args.locks,
            "contenders_per_lock": contenders,
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
                "p50": handoff.quantile(0.50),
                "p99": handoff.quantile(0.99),
                "max": handoff.max(),
            },
            "grants_not_handed_off": pairing.grants_not_handed_off,
            "cycle_us": {
                "mean": cycle_mean_us,
                "p50": cycle.quantile(0.50),
                "p99": cycle.quantile(0.99),
                "max": cycle.max(),
            },
            "not_granted": total.not_granted,
            "errors": total.errors,
            "first_error": total.first_error,
        }));
    }
    let ms = |us: u64| format!("{:.2}ms", us as f64 / 1000.0);
    output::line(&format!(
        "bench lock: clients={} locks={} ({contenders} contender{} per lock) ttl={:?} duration={}s (after {}s warm-up, not counted)",
        args.clients,
        args.locks,
        if contenders == 1 { "" } else { "s" },
        args.ttl,
        args.duration,
        args.warmup
    ))?;
    output::line(&format!("acquisitions  {acquisitions}"))?;
    output::line(&format!("throughput    {throughput:.1} acquisitions/s"))?;
    output::line(&format!(
        "acquire       p50 {}  p99 {}  max {}  (Acquire sent -> granted)",
        ms(acquire.quantile(0.50)),
        ms(acquire.quantile(0.99)),
        ms(acquire.max())
    ))?;
    if handoff.count() == 0 {
        output::line(&format!(
            "hand-off      none: no grant went to a waiting contender ({} grants to a free lock)",
            pairing.grants_not_handed_off
        ))?;
    } else {
        output::line(&format!(
            "hand-off      p50 {}  p99 {}  max {}  (Release sent -> next waiter granted; {} hand-offs, {} grants to a free lock)",
            ms(handoff.quantile(0.50)),
            ms(handoff.quantile(0.99)),
            ms(handoff.max()),
            handoff.count(),
            pairing.grants_not_handed_off
        ))?;
    }
    output::line(&format!(
        "cycle         mean {}  p50 {}  p99 {}  max {}  (grant -> next grant of the same lock; mean = duration / grants per lock)",
        ms(cycle_mean_us),
        ms(cycle.quantile(0.50)),
        ms(cycle.quantile(0.99)),
        ms(cycle.max())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(lock: u32, contender: u32, sent_us: u64, at_us: u64) -> Step {
        Step {
            lock,
            contender,
            at_us,
            kind: StepKind::Granted { sent_us },
        }
    }

    fn release(lock: u32, contender: u32, at_us: u64) -> Step {
        Step {
            lock,
            contender,
            at_us,
            kind: StepKind::ReleaseSent,
        }
    }

    const ALL: (u64, u64) = (0, u64::MAX);

    #[test]
    fn a_waiter_granted_after_a_release_is_a_hand_off_from_the_release_sent() {
        // 1 holds; 2 waits from 15; 1 sends its Release at 100 and 2 is granted at 130, before
        // 1's acknowledgement (which the steps do not even carry): a 30 us hand-off.
        let mut steps = vec![
            granted(0, 1, 0, 10),
            granted(0, 2, 15, 130),
            release(0, 1, 100),
        ];
        let pairing = pair_steps(&mut steps, ALL);
        assert_eq!(pairing.handoffs_us, vec![30]);
        assert_eq!(pairing.cycles_us, vec![120]);
        assert_eq!(pairing.grants_not_handed_off, 1, "the first grant");
    }

    #[test]
    fn each_grant_pairs_with_the_release_of_its_own_lock_sent_last_before_it() {
        // Lock 0: 1 releases at 100, 2 (waiting) granted at 150, 2 releases at 200, 3 (waiting
        // since 120) granted at 260. Lock 1 interleaved: 4 releases at 140, 5 granted at 145.
        let mut steps = vec![
            granted(0, 1, 0, 50),
            release(0, 1, 100),
            granted(0, 2, 10, 150),
            release(0, 2, 200),
            granted(0, 3, 120, 260),
            granted(1, 4, 0, 60),
            release(1, 4, 140),
            granted(1, 5, 20, 145),
        ];
        steps.reverse();
        let pairing = pair_steps(&mut steps, ALL);
        assert_eq!(pairing.handoffs_us, vec![50, 60, 5]);
        assert_eq!(pairing.cycles_us, vec![100, 110, 85]);
        assert_eq!(pairing.grants_not_handed_off, 2);
        assert_eq!(pairing.grants, 5);
    }

    #[test]
    fn a_lock_retaken_or_taken_while_free_is_no_hand_off() {
        // 1 releases at 100 and takes the lock again at 180 (its own release); 1 releases at 200
        // and 2, whose Acquire was sent only at 250 when the lock was free, is granted at 260.
        let mut steps = vec![
            granted(0, 1, 0, 10),
            release(0, 1, 100),
            granted(0, 1, 150, 180),
            release(0, 1, 200),
            granted(0, 2, 250, 260),
        ];
        let pairing = pair_steps(&mut steps, ALL);
        assert!(pairing.handoffs_us.is_empty(), "{pairing:?}");
        assert_eq!(pairing.grants_not_handed_off, 3);
        assert_eq!(pairing.cycles_us, vec![170, 80]);
    }

    #[test]
    fn a_release_pairs_with_one_grant_at_most() {
        // 1 releases at 100; 2 granted at 130 (hand-off); 2's Release failed (no step), and 3 is
        // granted at 400 after 2's lease ran out: not a hand-off of 1's release again.
        let mut steps = vec![
            granted(0, 1, 0, 10),
            release(0, 1, 100),
            granted(0, 2, 20, 130),
            granted(0, 3, 30, 400),
        ];
        let pairing = pair_steps(&mut steps, ALL);
        assert_eq!(pairing.handoffs_us, vec![30]);
        assert_eq!(pairing.grants_not_handed_off, 2);
    }

    #[test]
    fn a_grant_and_its_holders_release_at_the_same_instant_are_ordered_grant_first() {
        // 2 is granted at 100 and sends its Release at 100 (the clock did not tick); 3, waiting,
        // is granted at 140: 2's release handed off to 3, and 2's grant was 1's hand-off.
        let mut steps = vec![
            release(0, 2, 100),
            granted(0, 3, 5, 140),
            granted(0, 2, 5, 100),
            release(0, 1, 50),
            granted(0, 1, 0, 10),
        ];
        let pairing = pair_steps(&mut steps, ALL);
        assert_eq!(pairing.handoffs_us, vec![50, 40]);
    }

    #[test]
    fn only_pairs_inside_the_window_count() {
        // Window 100..=300: the hand-off from the release at 50 (warm-up) is left out, the one
        // from 200 to 230 is in, the one from 290 to 310 ends after the window.
        let mut steps = vec![
            granted(0, 1, 0, 10),
            release(0, 1, 50),
            granted(0, 2, 5, 120),
            release(0, 2, 200),
            granted(0, 1, 60, 230),
            release(0, 1, 290),
            granted(0, 2, 210, 310),
        ];
        let pairing = pair_steps(&mut steps, (100, 300));
        assert_eq!(pairing.handoffs_us, vec![30]);
        assert_eq!(pairing.cycles_us, vec![110]);
        assert_eq!(pairing.grants_not_handed_off, 0);
        assert_eq!(pairing.grants, 2, "the grants at 120 and 230");
    }
}
