//! Signals to a process group the exec agent created for one command: by process group id, never
//! by name, and never to "every process" (-1) or the agent's own group (0). And the tie that makes
//! a command die with the agent that started it.

use std::io;
use std::os::unix::process::CommandExt as _;

pub const SIGTERM: i32 = libc::SIGTERM;
pub const SIGKILL: i32 = libc::SIGKILL;

/// Sends `signal` to the process group `pgid` (the pid of a command spawned as its group's
/// leader). A group that no longer exists is not an error.
pub fn signal_group(pgid: u32, signal: i32) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "process group id too large"))?;
    // kill(2) reads -1 as every process we may signal and 0 as our own group.
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    #[allow(unsafe_code)] // kill(2) takes integers only; nothing in this process's memory changes
    let result = unsafe { libc::kill(-pgid, signal) };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(error)
}

/// Makes the command's process receive SIGKILL when the agent dies, even by SIGKILL, so that a dead
/// agent leaves no command running on a task whose lease will go to another agent
/// (`PR_SET_PDEATHSIG`). Linux ties it to the thread that spawned the command; the agent spawns on
/// its runtime's worker threads, which live as long as the agent. Only the command's own process is
/// covered: processes it started in the background must watch their parent themselves.
pub fn die_with_agent(command: &mut tokio::process::Command) {
    #[allow(unsafe_code)] // getpid(2) has no preconditions
    let agent = unsafe { libc::getpid() };
    // Between fork and exec only async-signal-safe calls are allowed: prctl(2) and getppid(2) are.
    #[allow(unsafe_code)]
    unsafe {
        command.as_std_mut().pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The agent died before the tie was made: do not run the command at all.
            if libc::getppid() != agent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_everyone_nor_ourselves() {
        assert!(signal_group(0, SIGTERM).is_err());
        assert!(signal_group(1, SIGTERM).is_err());
        assert!(signal_group(u32::MAX, SIGTERM).is_err());
    }

    #[test]
    fn signals_reach_the_group() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30; wait"])
            .process_group(0)
            .spawn()
            .expect("sh runs");
        signal_group(child.id(), SIGKILL).expect("signal sent");
        let status = child.wait().expect("reaped");
        assert!(!status.success());
    }
}
