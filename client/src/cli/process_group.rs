//! Signals to a process group the exec agent created for one command: by process group id, never
//! by name, and never to "every process" (-1) or the agent's own group (0).

use std::io;

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
