//! Holding a lock or leadership from the command line (`lock run`, `election campaign`): acquire
//! under a lease, in rounds when the wait is longer than one call may wait, keep it alive, and
//! run a command under it in its own process group, stopped (SIGTERM to the group, SIGKILL after a
//! grace period) as soon as the grant is lost.

use std::ffi::OsString;
use std::future::Future;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use clap::Args;
use conclave_client::{limits::MAX_LOCK_WAIT_MS, HeldLock, LockKind, LockLoss};
use tokio::time::Instant;

use super::agent_run::{find_program, Signals};
use super::process_group::{die_with_agent, signal_group, SIGKILL, SIGTERM};
use super::when::parse_duration;
use super::{CliError, CliResult};

/// How a lease-held grant is taken and kept.
#[derive(Debug, Clone, Args)]
pub struct HoldArgs {
    /// The lease's TTL (1s..=1h); keep-alives go every third of it. Without a successful
    /// keep-alive for this long, the grant counts as lost.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// How long to wait for the grant (default: until it is granted or a signal arrives); 0s tries
    /// once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// How long the command has between SIGTERM and SIGKILL when it must stop.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub kill_grace: Duration,
}

/// How a supervised command ended.
#[derive(Debug)]
pub enum Ended {
    /// It exited by itself (or after a signal this process forwarded to it).
    Exited(ExitStatus),
    /// The grant was lost; the command was stopped.
    Lost(LockLoss),
}

/// Takes a grant with `acquire(wait)`, once per round of at most 5 minutes, until it is granted,
/// `wait` has passed (`None`: no limit) or a signal arrives. `Ok(None)` when the wait passed.
pub async fn acquire_in_rounds<Acquire, Fut>(
    wait: Option<Duration>,
    signals: &mut Signals,
    mut acquire: Acquire,
) -> CliResult<Option<HeldLock>>
where
    Acquire: FnMut(Duration) -> Fut,
    Fut: Future<Output = conclave_client::Result<Option<HeldLock>>>,
{
    let round_max = Duration::from_millis(MAX_LOCK_WAIT_MS);
    let until = wait.map(|wait| Instant::now() + wait);
    loop {
        let round = match until {
            Some(until) => until
                .saturating_duration_since(Instant::now())
                .min(round_max),
            None => round_max,
        };
        tokio::select! {
            held = acquire(round) => {
                if let Some(held) = held? {
                    return Ok(Some(held));
                }
            }
            () = signals.recv() => {
                // Dropping the call makes the node give the place in the queue up.
                return Err(CliError::failed("interrupted while waiting"));
            }
        }
        if until.is_some_and(|until| Instant::now() >= until) {
            return Ok(None);
        }
    }
}

/// Checks that the command can be found before anything is acquired.
pub fn check_command(command: &[OsString]) -> CliResult {
    let program = command
        .first()
        .ok_or_else(|| CliError::usage("no command given after --"))?;
    find_program(Path::new(program)).map_err(CliError::usage)?;
    Ok(())
}

/// Runs `command` while `held` is held: in its own process group, with the grant in its
/// environment (CONCLAVE_LOCK, CONCLAVE_LOCK_KIND, CONCLAVE_FENCING_TOKEN, CONCLAVE_ENDPOINTS).
/// When the grant is lost the group gets SIGTERM, then SIGKILL after `kill_grace`. A first
/// SIGINT/SIGTERM to this process is passed on to the group as SIGTERM (SIGKILL after the grace);
/// a second one kills the group at once.
pub async fn supervise(
    held: &HeldLock,
    command: &[OsString],
    kill_grace: Duration,
    endpoints: &str,
    signals: &mut Signals,
) -> CliResult<Ended> {
    let mut child = tokio::process::Command::new(&command[0]);
    child
        .args(&command[1..])
        .process_group(0)
        .env("CONCLAVE_LOCK", held.name())
        .env("CONCLAVE_LOCK_KIND", kind_name(held.kind()))
        .env("CONCLAVE_FENCING_TOKEN", held.token().to_string())
        .env("CONCLAVE_ENDPOINTS", endpoints);
    die_with_agent(&mut child);
    let mut child = child.spawn().map_err(|error| {
        CliError::failed(format!(
            "could not run {:?}: {error}",
            command[0].to_string_lossy()
        ))
    })?;
    let pgid = child.id().expect("a child not yet waited for has a pid");
    let mut lost: Option<LockLoss> = None;
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    let mut signalled = false;
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let terminate = |kill_at: &mut Option<Instant>| {
        if kill_at.is_none() {
            if let Err(error) = signal_group(pgid, SIGTERM) {
                eprintln!("warning: SIGTERM to process group {pgid}: {error}");
            }
            *kill_at = Some(Instant::now() + kill_grace);
        }
    };
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            loss = held.lost(), if lost.is_none() => {
                eprintln!("{} {} lost ({loss}); stopping the command", kind_name(held.kind()), held.name());
                lost = Some(loss);
                terminate(&mut kill_at);
            }
            () = signals.recv() => {
                if signalled {
                    killed = true;
                    let _ = signal_group(pgid, SIGKILL);
                } else {
                    signalled = true;
                    terminate(&mut kill_at);
                }
            }
            () = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() && !killed => {
                killed = true;
                if let Err(error) = signal_group(pgid, SIGKILL) {
                    eprintln!("warning: SIGKILL to process group {pgid}: {error}");
                }
            }
        }
    };
    // Whatever the command left behind in its group goes with it.
    let _ = signal_group(pgid, SIGKILL);
    let status =
        status.map_err(|error| CliError::failed(format!("waiting for the command: {error}")))?;
    Ok(match lost {
        Some(loss) => Ended::Lost(loss),
        None => Ended::Exited(status),
    })
}

/// The exit code a shell would report for `status`: the code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}

pub fn kind_name(kind: LockKind) -> &'static str {
    match kind {
        LockKind::Lock => "lock",
        LockKind::Semaphore => "semaphore",
        LockKind::Election => "election",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }
}
