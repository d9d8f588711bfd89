//! Picks free TCP ports on 127.0.0.1 for test nodes and keeps other test processes off them.
//!
//! A node's addresses are part of the cluster membership, so a node must get the same ports back on
//! every restart: ports are reserved for the lifetime of a [`PortReservation`], not just until the
//! node has bound them.
//!
//! Ports come from below the kernel's ephemeral range (`ip_local_port_range`). A port found by
//! binding port 0 lies inside that range, where every outbound connection (the nodes' own peer
//! connections, the test clients) also draws its local port, so such a port can be taken between
//! the moment the harness releases it and the moment the node binds it. Below the range only
//! processes that bind explicitly compete, and those that are Conclave test processes are kept
//! apart by lock files. When the range below is too small the allocator falls back to port 0.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Context as _};
use rand::Rng as _;

/// Lowest port the allocator hands out: above the well-known and common fixed service ports.
const PORT_MIN: u16 = 20_000;
/// How many candidates to try before giving up.
const ATTEMPTS_MAX: usize = 1_000;

/// Ports this process has reserved and not yet released.
static RESERVED_IN_PROCESS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A set of ports reserved for one test cluster; released (lock files removed) on drop.
#[derive(Debug, Default)]
pub struct PortReservation {
    ports: Vec<u16>,
}

impl PortReservation {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserves one more free port and returns its address on 127.0.0.1.
    pub fn reserve(&mut self) -> anyhow::Result<SocketAddr> {
        let (range_min, range_max) = candidate_range();
        let mut rng = rand::thread_rng();
        for _ in 0..ATTEMPTS_MAX {
            let port = if range_max > range_min {
                rng.gen_range(range_min..range_max)
            } else {
                bound_port_zero()?
            };
            if !claim_in_process(port) {
                continue;
            }
            if !is_bindable(port) || !claim_across_processes(port)? {
                release_in_process(port);
                continue;
            }
            self.ports.push(port);
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
        bail!("no free port found on 127.0.0.1 after {ATTEMPTS_MAX} attempts")
    }

    /// Releases one port early, e.g. after a node failed to bind it and got new ports instead.
    pub fn release(&mut self, addr: SocketAddr) {
        if let Some(position) = self.ports.iter().position(|port| *port == addr.port()) {
            let port = self.ports.swap_remove(position);
            release_port(port);
        }
    }
}

impl Drop for PortReservation {
    fn drop(&mut self) {
        for port in self.ports.drain(..) {
            release_port(port);
        }
    }
}

/// The half-open range of candidate ports: from [`PORT_MIN`] to the start of the ephemeral range.
fn candidate_range() -> (u16, u16) {
    let ephemeral_min = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_min < PORT_MIN + 1_024 {
        // Too few ports below the ephemeral range: let the kernel choose (see the module comment).
        return (0, 0);
    }
    (PORT_MIN, ephemeral_min)
}

fn bound_port_zero() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn is_bindable(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

fn claim_in_process(port: u16) -> bool {
    RESERVED_IN_PROCESS
        .lock()
        .expect("port set lock is never held across a panic")
        .insert(port)
}

fn release_in_process(port: u16) {
    RESERVED_IN_PROCESS
        .lock()
        .expect("port set lock is never held across a panic")
        .remove(&port);
}

fn release_port(port: u16) {
    let _ = fs::remove_file(lock_path(port));
    release_in_process(port);
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("conclave-test-ports")
}

fn lock_path(port: u16) -> PathBuf {
    lock_dir().join(port.to_string())
}

/// Creates the port's lock file holding this process's id. A lock file whose process is gone is
/// stale (that process was killed before it could clean up) and is taken over.
fn claim_across_processes(port: u16) -> anyhow::Result<bool> {
    let dir = lock_dir();
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = lock_path(port);
    for _ in 0..2 {
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                write!(file, "{}", std::process::id())
                    .with_context(|| format!("write {}", path.display()))?;
                return Ok(true);
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = fs::read_to_string(&path).unwrap_or_default();
                let owner_alive = match owner.trim().parse::<u32>() {
                    Ok(pid) => PathBuf::from(format!("/proc/{pid}")).exists(),
                    // A file without a pid is still being written by its creator, unless it is
                    // old: then its creator died in between.
                    Err(_) => fs::metadata(&path)
                        .and_then(|metadata| metadata.modified())
                        .ok()
                        .and_then(|modified| modified.elapsed().ok())
                        .is_none_or(|age| age < std::time::Duration::from_secs(10)),
                };
                if owner_alive {
                    return Ok(false);
                }
                let _ = fs::remove_file(&path);
            }
            Err(error) => return Err(error).with_context(|| format!("create {}", path.display())),
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_distinct_bindable_and_released_on_drop() {
        let mut reservation = PortReservation::new();
        let addrs: Vec<SocketAddr> = (0..8).map(|_| reservation.reserve().unwrap()).collect();
        let distinct: BTreeSet<u16> = addrs.iter().map(SocketAddr::port).collect();
        assert_eq!(distinct.len(), addrs.len());
        for addr in &addrs {
            assert!(lock_path(addr.port()).exists());
            assert!(TcpListener::bind(addr).is_ok(), "{addr} is not free");
        }
        drop(reservation);
        for addr in &addrs {
            assert!(!lock_path(addr.port()).exists());
        }
    }
}
