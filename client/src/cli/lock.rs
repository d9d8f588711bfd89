//! `conclave lock ...` and `conclave semaphore ...`: fenced locks and semaphores from the command
//! line, and `lock run`, which runs a command while holding a lock.

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Subcommand};
use conclave_client::{
    lock_event, unix_ms_now, AcquireOptions, Acquisition, Client, Grant, HeldLock, Lock, LockEvent,
    LockHolder, LockKind, LockListOptions, ReadConsistency,
};
use futures::StreamExt;
use serde_json::{json, Value};

use super::hold::{self, acquire_in_rounds, check_command, kind_name, Ended, HoldArgs};
use super::output::{self, header_json, insert_bytes, table, text};
use super::render::{clip, enum_name};
use super::when::{format_duration, format_relative, parse_duration};
use super::{agent_run::Signals, CliError, CliResult, Globals};

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Take a lock (or join its queue and wait with --wait) and print its fencing token.
    ///
    /// The holder is a lease of --ttl, which lapses unless renewed with `lock keep-alive`, or a
    /// live agent session (--session-id). Exits 1 when it was not granted within the wait.
    Acquire {
        name: String,
        #[command(flatten)]
        acquire: AcquireArgs,
    },
    /// Give a lock back (or leave its queue). Exits 1 when the grant is no longer current.
    Release { name: String, token: u64 },
    /// Renew a lease holder's TTL from now. Exits 1 (lock lost) once the grant is gone.
    KeepAlive { name: String, token: u64 },
    /// Show a lock: holder, token, expiry, waiters. Exits 1 when nobody holds or waits for it.
    Get {
        name: String,
        #[arg(long)]
        serializable: bool,
    },
    /// List locks in name order.
    Ls(ListArgs),
    /// Print a lock's state, then every change (granted, released, lost, queued, ...).
    Watch {
        name: String,
        /// Exit after printing this many events (the first is the state now).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Run a command while holding a lock, like `etcdctl lock` and `consul lock`.
    ///
    /// Waits for the lock (--wait; default: until granted), keeps its lease alive, and runs the
    /// command in its own process group with CONCLAVE_LOCK and CONCLAVE_FENCING_TOKEN in its
    /// environment (pass the token to what it writes: `conclave kv put --fence-lock "$CONCLAVE_LOCK"
    /// --fence-token "$CONCLAVE_FENCING_TOKEN" ...`). If the lock is lost, the command gets
    /// SIGTERM, SIGKILL after --kill-grace, and this exits 1. Otherwise the lock is released when
    /// the command exits, and this exits with the command's code.
    #[command(override_usage = "conclave lock run <NAME> [OPTIONS] -- <COMMAND>...")]
    Run {
        name: String,
        #[command(flatten)]
        hold: HoldArgs,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SemaphoreCommand {
    /// Take --permits of a semaphore of --limit permits (or wait for them with --wait) and print
    /// the grant's fencing token. Exits 1 when not granted within the wait.
    Acquire {
        name: String,
        /// The semaphore's number of permits (1..=10000), fixed by whoever creates it.
        #[arg(long)]
        limit: u32,
        /// Permits to take (1..=limit).
        #[arg(long, default_value_t = 1)]
        permits: u32,
        #[command(flatten)]
        acquire: AcquireArgs,
    },
    /// Give a grant back (or leave the queue). Exits 1 when it is no longer current.
    Release { name: String, token: u64 },
    /// Renew a lease holder's TTL from now. Exits 1 (lock lost) once the grant is gone.
    KeepAlive { name: String, token: u64 },
    /// Show a semaphore: limit, holders and their permits, waiters.
    Get {
        name: String,
        #[arg(long)]
        serializable: bool,
    },
    /// List semaphores in name order.
    Ls(ListArgs),
    /// Print a semaphore's state, then every change.
    Watch {
        name: String,
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

/// Who holds the grant and how long to wait for it.
#[derive(Debug, Args)]
pub struct AcquireArgs {
    /// Lease TTL (1s..=1h) when not held by a session.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Hold it by this live agent session instead of a lease: it is lost when the session ends.
    #[arg(long, value_name = "ID")]
    pub session_id: Option<u64>,
    /// Wait in the queue up to this long (at most 5m); default: try once.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Who holds it, for people.
    #[arg(long, default_value = "")]
    pub owner: String,
    /// After a lost holder, nobody gets it for this long (at most 60s; default 3s); only for a
    /// lock this call creates.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_delay: Option<Duration>,
}

impl AcquireArgs {
    pub fn options(&self) -> AcquireOptions {
        AcquireOptions {
            holder: match self.session_id {
                Some(id) => LockHolder::Session(id),
                None => LockHolder::Lease(self.ttl),
            },
            owner: self.owner.clone(),
            wait: self.wait,
            lock_delay: self.lock_delay,
        }
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Return at most this many (1..=1000), in one page.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Start after this name.
    #[arg(long, value_name = "NAME")]
    pub after: Option<String>,
    #[arg(long)]
    pub serializable: bool,
}

pub async fn run_lock(command: LockCommand, globals: &Globals) -> CliResult {
    let client = globals.client()?;
    let kind = LockKind::Lock;
    match command {
        LockCommand::Acquire { name, acquire } => {
            let acquired = client.acquire_lock(&name, &acquire.options()).await?;
            print_acquisition(&acquired, globals.json)
        }
        LockCommand::Release { name, token } => release(&client, kind, &name, token, globals).await,
        LockCommand::KeepAlive { name, token } => {
            keep_alive(&client, kind, &name, token, globals).await
        }
        LockCommand::Get { name, serializable } => {
            get(&client, kind, &name, serializable, globals).await
        }
        LockCommand::Ls(args) => list(&client, kind, args, globals).await,
        LockCommand::Watch { name, count } => {
            let stream = client.watch_lock(kind, &name).await?;
            print_events(stream, count, globals.json).await
        }
        LockCommand::Run {
            name,
            hold,
            command,
        } => run(&client, &name, &hold, &command).await,
    }
}

pub async fn run_semaphore(command: SemaphoreCommand, globals: &Globals) -> CliResult {
    let client = globals.client()?;
    let kind = LockKind::Semaphore;
    match command {
        SemaphoreCommand::Acquire {
            name,
            limit,
            permits,
            acquire,
        } => {
            let acquired = client
                .acquire_semaphore(&name, limit, permits, &acquire.options())
                .await?;
            print_acquisition(&acquired, globals.json)
        }
        SemaphoreCommand::Release { name, token } => {
            release(&client, kind, &name, token, globals).await
        }
        SemaphoreCommand::KeepAlive { name, token } => {
            keep_alive(&client, kind, &name, token, globals).await
        }
        SemaphoreCommand::Get { name, serializable } => {
            get(&client, kind, &name, serializable, globals).await
        }
        SemaphoreCommand::Ls(args) => list(&client, kind, args, globals).await,
        SemaphoreCommand::Watch { name, count } => {
            let stream = client.watch_lock(kind, &name).await?;
            print_events(stream, count, globals.json).await
        }
    }
}

/// `lock run`: hold the lock while the command runs.
async fn run(client: &Client, name: &str, hold: &HoldArgs, command: &[OsString]) -> CliResult {
    check_command(command)?;
    let mut signals = Signals::new()?;
    let ttl = hold.ttl;
    let held = acquire_in_rounds(hold.wait, &mut signals, |wait| {
        HeldLock::acquire_lock(client, name, ttl, wait)
    })
    .await?;
    let Some(held) = held else {
        return Err(CliError::failed(format!(
            "lock {name} was not granted within {}",
            format_duration(hold.wait.unwrap_or_default())
        )));
    };
    eprintln!("acquired lock {name}, fencing token {}", held.token());
    let endpoints = client.endpoints().join(",");
    let ended = hold::supervise(&held, command, hold.kill_grace, &endpoints, &mut signals).await?;
    finish(held, ended).await
}

/// After a supervised command: report a loss (exit 1), or release and exit with its code.
pub async fn finish(held: HeldLock, ended: Ended) -> CliResult {
    let what = format!("{} {}", kind_name(held.kind()), held.name());
    match ended {
        Ended::Lost(loss) => Err(CliError::failed(format!(
            "{what} lost ({loss}); the command was stopped"
        ))),
        Ended::Exited(status) => {
            if let Err(error) = held.release().await {
                eprintln!("warning: releasing {what}: {error}");
            }
            match hold::exit_code(status) {
                0 => Ok(()),
                code => std::process::exit(code),
            }
        }
    }
}

async fn release(
    client: &Client,
    kind: LockKind,
    name: &str,
    token: u64,
    globals: &Globals,
) -> CliResult {
    let header = client.release_lock(kind, name, token).await?;
    if globals.json {
        output::json_document(&json!({ "header": header_json(&header) }))
    } else {
        output::line(&format!("released, revision {}", header.revision))
    }
}

async fn keep_alive(
    client: &Client,
    kind: LockKind,
    name: &str,
    token: u64,
    globals: &Globals,
) -> CliResult {
    let kept = client.keep_alive_lock(kind, name, token).await?;
    if globals.json {
        output::json_document(&json!({
            "header": header_json(&kept.header),
            "expires_at_ms": kept.expires_at_ms,
        }))
    } else {
        output::line(&format!(
            "kept alive; expires {}",
            format_relative(kept.expires_at_ms, unix_ms_now())
        ))
    }
}

async fn get(
    client: &Client,
    kind: LockKind,
    name: &str,
    serializable: bool,
    globals: &Globals,
) -> CliResult {
    let read = client
        .get_lock_with(kind, name, consistency(serializable))
        .await?;
    if globals.json {
        return output::json_document(&json!({
            "header": header_json(&read.header),
            "lock": lock_json(&read.lock),
        }));
    }
    output::line(&lock_text(&read.lock))
}

async fn list(client: &Client, kind: LockKind, args: ListArgs, globals: &Globals) -> CliResult {
    let mut options = LockListOptions {
        after: args.after.unwrap_or_default(),
        limit: args.limit.unwrap_or(0),
        consistency: consistency(args.serializable),
    };
    let mut locks: Vec<Lock> = Vec::new();
    let (header, more) = loop {
        let page = client.list_locks(kind, options.clone()).await?;
        locks.extend(page.locks);
        let last = locks.last().map(|lock| lock.name.clone());
        match (page.more, args.limit, last) {
            (true, None, Some(last)) if last > options.after => options.after = last,
            (more, _, _) => break (page.header, more),
        }
    };
    if globals.json {
        return output::json_document(&json!({
            "header": header_json(&header),
            "locks": locks.iter().map(lock_json).collect::<Vec<_>>(),
            "count": locks.len(),
            "more": more,
        }));
    }
    let now = unix_ms_now();
    let mut rows = vec![vec![
        "NAME".to_string(),
        "HOLDERS".to_string(),
        "TOKEN".to_string(),
        "EXPIRES".to_string(),
        "WAITERS".to_string(),
    ]];
    for lock in &locks {
        let first = lock.holders.first();
        rows.push(vec![
            lock.name.clone(),
            if kind == LockKind::Semaphore {
                format!("{}/{}", held_permits(lock), lock.limit)
            } else {
                lock.holders.len().to_string()
            },
            first.map_or("-".to_string(), |grant| grant.token.to_string()),
            first.map_or("-".to_string(), |grant| {
                format_relative(grant.expires_at_ms, now)
            }),
            lock.waiters.len().to_string(),
        ]);
    }
    if locks.is_empty() {
        return Ok(());
    }
    output::line(&table(&rows))?;
    if more {
        eprintln!(
            "(more follow; continue with --after {})",
            locks.last().map_or("", |lock| lock.name.as_str())
        );
    }
    Ok(())
}

pub fn print_acquisition(acquired: &Acquisition, json: bool) -> CliResult {
    let what = format!("{} {}", kind_name(acquired.kind), acquired.name);
    if json {
        output::json_document(&json!({
            "header": header_json(&acquired.header),
            "acquired": acquired.acquired,
            "token": acquired.token,
            "expires_at_ms": acquired.expires_at_ms,
            "lock": acquired.lock.as_ref().map_or(Value::Null, lock_json),
        }))?;
    } else if acquired.acquired {
        output::line(&format!(
            "{} fencing token {}{}",
            if acquired.kind == LockKind::Election {
                "elected;"
            } else {
                "acquired;"
            },
            acquired.token,
            if acquired.expires_at_ms == 0 {
                String::new()
            } else {
                format!(
                    "; expires {} unless kept alive",
                    format_relative(acquired.expires_at_ms, unix_ms_now())
                )
            }
        ))?;
    }
    if acquired.acquired {
        return Ok(());
    }
    let holder = acquired
        .lock
        .as_ref()
        .and_then(|lock| lock.holders.first())
        .map(|grant| format!(" (held by {})", holder_text(grant)))
        .unwrap_or_default();
    Err(CliError::failed(format!("{what} was not granted{holder}")))
}

/// Prints lock events, one per line, until `count` or an error.
pub async fn print_events(
    mut stream: conclave_client::LockEventStream,
    count: Option<u64>,
    json: bool,
) -> CliResult {
    let mut printed = 0u64;
    if count == Some(0) {
        return Ok(());
    }
    while let Some(event) = stream.next().await {
        let event = event?;
        if json {
            output::json_line(&event_json(&event))?;
        } else {
            output::line(&event_text(&event))?;
        }
        printed += 1;
        if count.is_some_and(|count| printed >= count) {
            return Ok(());
        }
    }
    Err(CliError::failed("the watch ended"))
}

fn consistency(serializable: bool) -> ReadConsistency {
    if serializable {
        ReadConsistency::Serializable
    } else {
        ReadConsistency::Linearizable
    }
}

fn held_permits(lock: &Lock) -> u32 {
    lock.holders.iter().map(|grant| grant.permits).sum()
}

pub fn event_kind_name(event: &LockEvent) -> String {
    let kind = lock_event::Kind::try_from(event.kind).unwrap_or(lock_event::Kind::Current);
    enum_name(kind.as_str_name(), "KIND_")
}

pub fn grant_json(grant: &Grant) -> Value {
    let holder = grant.holder.clone().unwrap_or_default();
    let mut object = serde_json::Map::new();
    object.insert("token".into(), grant.token.into());
    object.insert("session_id".into(), holder.session_id.into());
    object.insert("ttl_ms".into(), holder.ttl_ms.into());
    object.insert("owner".into(), holder.owner.into());
    object.insert("permits".into(), grant.permits.into());
    object.insert("expires_at_ms".into(), grant.expires_at_ms.into());
    object.insert("since_ms".into(), grant.since_ms.into());
    insert_bytes(&mut object, "value", &grant.value);
    Value::Object(object)
}

pub fn lock_json(lock: &Lock) -> Value {
    json!({
        "kind": kind_name(LockKind::try_from(lock.kind).unwrap_or(LockKind::Lock)),
        "name": lock.name,
        "limit": lock.limit,
        "holders": lock.holders.iter().map(grant_json).collect::<Vec<_>>(),
        "waiters": lock.waiters.iter().map(grant_json).collect::<Vec<_>>(),
        "lock_delay_ms": lock.lock_delay_ms,
        "unavailable_until_ms": lock.unavailable_until_ms,
        "last_token": lock.last_token,
    })
}

pub fn event_json(event: &LockEvent) -> Value {
    json!({
        "kind": event_kind_name(event),
        "token": event.token,
        "reason": event.reason,
        "sequence": event.sequence,
        "lock": event.lock.as_ref().map_or(Value::Null, lock_json),
    })
}

/// Who holds a grant, for people: the owner, and the session or the lease.
pub fn holder_text(grant: &Grant) -> String {
    let holder = grant.holder.clone().unwrap_or_default();
    let who = if holder.session_id != 0 {
        format!("session {}", holder.session_id)
    } else {
        format!(
            "lease {}",
            format_duration(Duration::from_millis(holder.ttl_ms))
        )
    };
    if holder.owner.is_empty() {
        who
    } else {
        format!("{} ({who})", clip(&holder.owner, 40))
    }
}

/// A lock over a few lines: who holds it, with what token, until when; who waits.
pub fn lock_text(lock: &Lock) -> String {
    let now = unix_ms_now();
    let kind = LockKind::try_from(lock.kind).unwrap_or(LockKind::Lock);
    let mut lines = vec![format!(
        "{} {}{}; last token {}; lock-delay {}",
        kind_name(kind),
        lock.name,
        if kind == LockKind::Semaphore {
            format!(" ({}/{} permits held)", held_permits(lock), lock.limit)
        } else {
            String::new()
        },
        lock.last_token,
        format_duration(Duration::from_millis(lock.lock_delay_ms)),
    )];
    if lock.holders.is_empty() {
        lines.push("  held by nobody".to_string());
    }
    for grant in &lock.holders {
        let mut line = format!(
            "  {} token {} by {}, since {}",
            if kind == LockKind::Election {
                "leader"
            } else {
                "holder"
            },
            grant.token,
            holder_text(grant),
            format_relative(grant.since_ms, now)
        );
        if kind == LockKind::Semaphore {
            line.push_str(&format!(", {} permit(s)", grant.permits));
        }
        if grant.expires_at_ms != 0 {
            line.push_str(&format!(
                ", expires {}",
                format_relative(grant.expires_at_ms, now)
            ));
        }
        if !grant.value.is_empty() {
            line.push_str(&format!(", value {}", clip(&text(&grant.value), 60)));
        }
        lines.push(line);
    }
    for grant in &lock.waiters {
        lines.push(format!(
            "  waiting: token {} by {}, gives up {}",
            grant.token,
            holder_text(grant),
            format_relative(grant.expires_at_ms, now)
        ));
    }
    if lock.unavailable_until_ms > now {
        lines.push(format!(
            "  lock-delay after a lost holder: nobody gets it until {}",
            format_relative(lock.unavailable_until_ms, now)
        ));
    }
    lines.join("\n")
}

/// One event on one line: `SEQUENCE KIND token T [reason] -> holders`.
pub fn event_text(event: &LockEvent) -> String {
    let mut line = format!(
        "{} {}",
        event.sequence,
        event_kind_name(event).to_ascii_uppercase()
    );
    if event.token != 0 {
        line.push_str(&format!(" token {}", event.token));
    }
    if !event.reason.is_empty() {
        line.push_str(&format!(" ({})", clip(&event.reason, 80)));
    }
    match &event.lock {
        None => line.push_str(": nobody holds or waits"),
        Some(lock) => {
            let holders: Vec<String> = lock
                .holders
                .iter()
                .map(|grant| {
                    let mut holder = format!("{} by {}", grant.token, holder_text(grant));
                    if !grant.value.is_empty() {
                        holder.push_str(&format!(" = {}", clip(&text(&grant.value), 40)));
                    }
                    holder
                })
                .collect();
            line.push_str(&format!(
                ": held [{}], {} waiting",
                holders.join(", "),
                lock.waiters.len()
            ));
        }
    }
    line
}
