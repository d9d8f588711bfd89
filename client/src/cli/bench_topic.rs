//! `conclave bench topic`: publishers publish to a fresh topic (one message or a batch per
//! Publish), an optional consumer group of --consumers members fetches and acks, and the numbers:
//! messages published per second, the Publish latency, and the publish -> delivery latency.
//!
//! Every instant is read in this process on one monotonic clock ([`Instant`]): each message's
//! data starts with the microseconds since the bench started at which its Publish was sent, so a
//! consumer computes publish -> delivery as (fetch returned) - (publish sent). Acks of one fetch
//! are sent at once; a fetch waits up to a second for messages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use conclave_client::{
    Client, ClientOptions, Error, GroupOptions, PublishMessage, PublishMessageExt, TopicOptions,
    TopicStart,
};
use serde_json::json;
use tokio::time::Instant;

use super::histogram::Histogram;
use super::{output, CliError, CliResult, Globals};

/// The group the consumers share.
const GROUP: &str = "bench";
/// How long one Fetch waits for messages.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// How long the consumers keep draining after the publishers stop.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct BenchTopic {
    /// Concurrent publishers, each with one Publish outstanding.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    publishers: u32,
    /// Messages per Publish (one log entry, all or nothing).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    batch: u32,
    /// Bytes of data per message (at least 8: the send time).
    #[arg(long, value_name = "BYTES", default_value_t = 256, value_parser = clap::value_parser!(u32).range(8..=1_048_576))]
    size: u32,
    /// Members of one consumer group that fetch and ack (0: no consumers).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    consumers: u32,
    /// Most messages one Fetch leases.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256))]
    fetch_max: u32,
    /// Messages per second over all publishers (0: as fast as they can, closed loop). A fixed
    /// rate measures latency below saturation.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 0)]
    rate: u32,
    /// Distinct message keys (0: unkeyed). Keyed messages are delivered in key order, one in
    /// flight per key and group.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    keys: u32,
    /// Measured seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration: u64,
    /// Seconds run before measuring starts.
    #[arg(long, value_name = "SECONDS", default_value_t = 1)]
    warmup: u64,
    /// HTTP/2 connections per node.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
}

/// The run's clock: when it started, when measuring starts and ends.
#[derive(Clone, Copy)]
struct Clock {
    started: Instant,
    from: Instant,
    to: Instant,
}

impl Clock {
    fn micros(&self, at: Instant) -> u64 {
        at.duration_since(self.started).as_micros() as u64
    }

    fn measured(&self, sent: Instant, done: Instant) -> bool {
        sent >= self.from && done <= self.to
    }
}

/// What one publisher or consumer saw.
#[derive(Debug, Default)]
struct Report {
    /// Publish latency per request (publishers) or publish -> delivery per message (consumers).
    latency_us: Histogram,
    /// Messages published (or delivered) in the measured window.
    messages: u64,
    acked: u64,
    redelivered: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Report {
    fn error(&mut self, error: &Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| error.to_string());
    }

    fn merge(&mut self, other: Report) {
        self.latency_us.merge(&other.latency_us);
        self.messages += other.messages;
        self.acked += other.acked;
        self.redelivered += other.redelivered;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

pub async fn run(args: BenchTopic, globals: &Globals) -> CliResult {
    let options = ClientOptions {
        channels_per_endpoint: args.connections as usize,
        ..globals.client_options()
    };
    let client = Client::connect_with(&globals.endpoints, options)?;
    let topic = format!(
        "bench-{}-{}",
        std::process::id(),
        conclave_client::unix_ms_now()
    );
    setup(&client, &topic, args.consumers > 0).await?;
    let started = Instant::now();
    let from = started + Duration::from_secs(args.warmup);
    let clock = Clock {
        started,
        from,
        to: from + Duration::from_secs(args.duration),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = (0..args.consumers)
        .map(|member| {
            tokio::spawn(consume(
                client.clone(),
                topic.clone(),
                member,
                args.fetch_max,
                clock,
                stop.clone(),
            ))
        })
        .collect();
    let publishers: Vec<_> = (0..args.publishers)
        .map(|publisher| {
            tokio::spawn(publish(
                client.clone(),
                topic.clone(),
                publisher,
                pacing(&args),
                clock,
            ))
        })
        .collect();
    let published = join(publishers).await?;
    tokio::time::sleep_until(clock.to.max(Instant::now())).await;
    let deadline = Instant::now() + DRAIN;
    while args.consumers > 0 && Instant::now() < deadline && behind(&client, &topic).await? > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let consumed = join(consumers).await?;
    let lag = if args.consumers > 0 {
        behind(&client, &topic).await?
    } else {
        0
    };
    let _ = client.delete_topic(&topic).await;
    print_report(
        &args,
        &published,
        (args.consumers > 0).then_some((&consumed, lag)),
        globals.json,
    )?;
    if published.messages == 0 {
        return Err(CliError::failed(format!(
            "no Publish succeeded{}",
            published
                .first_error
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// A topic of its own (discarding the oldest past 256 MiB) and, with consumers, its group.
async fn setup(client: &Client, topic: &str, group: bool) -> CliResult {
    let options = TopicOptions {
        max_bytes: 256 * 1024 * 1024,
        ..TopicOptions::default()
    };
    client.create_topic(topic, &options).await?;
    if group {
        let options = GroupOptions {
            start: TopicStart::New,
            ack_wait: Duration::from_secs(30),
            ..GroupOptions::default()
        };
        client.create_group(topic, GROUP, &options).await?;
    }
    Ok(())
}

/// The group's messages published but not acked yet.
async fn behind(client: &Client, topic: &str) -> Result<u64, CliError> {
    let group = client.get_group(topic, GROUP).await?;
    Ok(group.lag)
}

async fn join(handles: Vec<tokio::task::JoinHandle<Report>>) -> Result<Report, CliError> {
    let mut total = Report::default();
    for handle in handles {
        let report = handle
            .await
            .map_err(|error| CliError::failed(format!("a bench task panicked: {error}")))?;
        total.merge(report);
    }
    Ok(total)
}

/// How one publisher paces itself: the interval between its Publish requests (none: closed
/// loop), its batch size, message size and key space.
#[derive(Clone, Copy)]
struct Pacing {
    interval: Option<Duration>,
    batch: u32,
    size: u32,
    keys: u32,
}

fn pacing(args: &BenchTopic) -> Pacing {
    let interval = (args.rate > 0).then(|| {
        let per_publisher = f64::from(args.rate) / f64::from(args.publishers * args.batch);
        Duration::from_secs_f64(1.0 / per_publisher)
    });
    Pacing {
        interval,
        batch: args.batch,
        size: args.size,
        keys: args.keys,
    }
}

async fn publish(
    client: Client,
    topic: String,
    publisher: u32,
    pacing: Pacing,
    clock: Clock,
) -> Report {
    let mut report = Report::default();
    let mut next = Instant::now();
    let mut counter = u64::from(publisher);
    loop {
        if let Some(interval) = pacing.interval {
            tokio::time::sleep_until(next).await;
            next += interval;
        }
        let sent = Instant::now();
        if sent >= clock.to {
            return report;
        }
        let messages = (0..pacing.batch)
            .map(|_| {
                counter += 1;
                message(&topic, clock.micros(sent), counter, pacing)
            })
            .collect();
        let result = client.publish(messages).await;
        let done = Instant::now();
        if !clock.measured(sent, done) {
            continue;
        }
        match result {
            Ok(_) => {
                report
                    .latency_us
                    .record(done.duration_since(sent).as_micros() as u64);
                report.messages += u64::from(pacing.batch);
            }
            Err(error) => report.error(&error),
        }
    }
}

/// A message whose data starts with its send time (microseconds since the bench started).
fn message(topic: &str, sent_us: u64, counter: u64, pacing: Pacing) -> PublishMessage {
    let mut data = vec![b'x'; pacing.size as usize];
    data[..8].copy_from_slice(&sent_us.to_le_bytes());
    let message = PublishMessage::new(topic, data);
    match pacing.keys {
        0 => message,
        keys => message.with_key(format!("k{}", counter % u64::from(keys))),
    }
}

async fn consume(
    client: Client,
    topic: String,
    member: u32,
    max: u32,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> Report {
    let mut report = Report::default();
    let name = format!("m{member}");
    while !stop.load(Ordering::Relaxed) {
        let deliveries = match client.fetch(&topic, GROUP, &name, max, FETCH_WAIT).await {
            Ok(deliveries) => deliveries,
            Err(error) => {
                report.error(&error);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let now = clock.micros(Instant::now());
        let mut acks = Vec::with_capacity(deliveries.len());
        for delivery in &deliveries {
            let Some(message) = &delivery.message else {
                continue;
            };
            let sent_us = message
                .data
                .get(..8)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
            let sent = clock.started + Duration::from_micros(sent_us);
            if delivery.deliveries > 1 {
                report.redelivered += 1;
            }
            if sent >= clock.from && sent < clock.to {
                report.latency_us.record(now.saturating_sub(sent_us));
                report.messages += 1;
            }
            acks.push(client.ack(&topic, GROUP, message.seq, delivery.token));
        }
        for result in futures::future::join_all(acks).await {
            match result {
                Ok(_) => report.acked += 1,
                Err(error) => report.error(&error),
            }
        }
    }
    report
}

fn print_report(
    args: &BenchTopic,
    published: &Report,
    consumed: Option<(&Report, u64)>,
    json: bool,
) -> CliResult {
    let seconds = args.duration as f64;
    let ms = |us: u64| us as f64 / 1000.0;
    let quantiles = |h: &Histogram| json!({"p50": ms(h.quantile(0.50)), "p99": ms(h.quantile(0.99)), "max": ms(h.max())});
    if json {
        return output::json_document(&json!({
            "publishers": args.publishers, "batch": args.batch, "size": args.size,
            "consumers": args.consumers, "rate": args.rate, "keys": args.keys,
            "duration_s": args.duration,
            "published": published.messages,
            "published_per_s": published.messages as f64 / seconds,
            "publish_latency_ms": quantiles(&published.latency_us),
            "publish_errors": published.errors,
            "delivered": consumed.map(|(c, _)| c.messages),
            "delivered_per_s": consumed.map(|(c, _)| c.messages as f64 / seconds),
            "delivery_latency_ms": consumed.map(|(c, _)| quantiles(&c.latency_us)),
            "redelivered": consumed.map(|(c, _)| c.redelivered),
            "consumer_errors": consumed.map(|(c, _)| c.errors),
            "lag_at_end": consumed.map(|(_, lag)| lag),
            "first_error": published.first_error.clone().or_else(|| consumed.and_then(|(c, _)| c.first_error.clone())),
        }));
    }
    let rate = if args.rate == 0 {
        "closed loop".to_string()
    } else {
        format!("{}/s", args.rate)
    };
    output::line(&format!(
        "bench topic: publishers={} batch={} size={}B consumers={} keys={} rate={rate} duration={}s (after {}s warm-up)",
        args.publishers, args.batch, args.size, args.consumers, args.keys, args.duration, args.warmup
    ))?;
    let latency = &published.latency_us;
    output::line(&format!(
        "published   {} messages, {:.1} msgs/s; Publish p50 {:.2}ms p99 {:.2}ms max {:.2}ms; {} errors",
        published.messages,
        published.messages as f64 / seconds,
        ms(latency.quantile(0.50)),
        ms(latency.quantile(0.99)),
        ms(latency.max()),
        published.errors
    ))?;
    if let Some((consumed, lag)) = consumed {
        let latency = &consumed.latency_us;
        output::line(&format!(
            "delivered   {} messages, {:.1} msgs/s; publish->delivery p50 {:.2}ms p99 {:.2}ms max {:.2}ms; {} acked, {} redelivered, {} errors, lag at end {lag}",
            consumed.messages,
            consumed.messages as f64 / seconds,
            ms(latency.quantile(0.50)),
            ms(latency.quantile(0.99)),
            ms(latency.max()),
            consumed.acked,
            consumed.redelivered,
            consumed.errors
        ))?;
    }
    if let Some(error) = published
        .first_error
        .as_ref()
        .or(consumed.and_then(|(c, _)| c.first_error.as_ref()))
    {
        output::line(&format!("first error {error}"))?;
    }
    Ok(())
}
