//! Node wall clocks the harness can move: libfaketime preloaded into a node process, its offset
//! read from a file the harness rewrites while the node runs.
//!
//! Only `CLOCK_REALTIME` (Rust's `SystemTime`, what a leader stamps into its commands) is faked;
//! the monotonic clocks (`Instant`, Raft's timers, tokio's) stay true
//! (`FAKETIME_DONT_FAKE_MONOTONIC=1`), and so do file timestamps (`NO_FAKE_STAT=1`). libfaketime
//! 0.9.10 rereads the offset file when the second of the real clock changes
//! (`FAKETIME_CACHE_DURATION=0`), so a running node sees a new offset within [`PICKUP`].

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};

use crate::cluster::TestCluster;

/// Environment variable: the libfaketime library to preload, instead of the standard locations.
pub const LIBRARY_ENV: &str = "CONCLAVE_FAKETIME_LIB";

/// Where Debian's `libfaketime` package (pulled in by `faketime`) and builds from source put it.
const LIBRARY_LOCATIONS: [&str; 5] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
    "/usr/lib64/faketime/libfaketime.so.1",
];

/// How long a running process may take to see a new offset: the file is reread once the real
/// clock's second changes, so at most a second, plus scheduling.
pub const PICKUP: Duration = Duration::from_millis(1500);

/// The libfaketime library: `$CONCLAVE_FAKETIME_LIB`, else the first standard location that
/// exists. Fails naming the package to install.
pub fn libfaketime() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(LIBRARY_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{LIBRARY_ENV}={} is not a file", path.display());
        }
        return Ok(path);
    }
    match LIBRARY_LOCATIONS
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
    {
        Some(path) => Ok(path.to_path_buf()),
        None => bail!(
            "libfaketime is not installed (looked in {}): install the Debian package `faketime` \
             (`apt-get install faketime`, which brings `libfaketime`), or set {LIBRARY_ENV}",
            LIBRARY_LOCATIONS.join(", ")
        ),
    }
}

/// One node's faked wall clock: the environment its process starts with and the offset file.
#[derive(Clone, Debug)]
pub struct FakeClock {
    library: PathBuf,
    file: PathBuf,
    offset_ms: i64,
}

impl FakeClock {
    /// A clock with offset zero, its offset in `file` (created now: libfaketime must find it from
    /// the process's first call on).
    pub fn create(library: PathBuf, file: PathBuf) -> anyhow::Result<Self> {
        let mut clock = Self {
            library,
            file,
            offset_ms: 0,
        };
        clock.set_offset_ms(0)?;
        Ok(clock)
    }

    /// The variables to start the node process with.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("LD_PRELOAD", self.library.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_CACHE_DURATION", "0".to_string()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
            ("NO_FAKE_STAT", "1".to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }

    /// The offset last set.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// Moves the wall clock to real time + `offset_ms`. The file is replaced by a rename, never
    /// rewritten in place: libfaketime exits the process on a specification it cannot parse,
    /// such as a half-written one.
    pub fn set_offset_ms(&mut self, offset_ms: i64) -> anyhow::Result<()> {
        let staging = self.file.with_extension("new");
        std::fs::write(&staging, format!("{}\n", specification(offset_ms)))
            .with_context(|| format!("write {}", staging.display()))?;
        std::fs::rename(&staging, &self.file)
            .with_context(|| format!("rename {} to {}", staging.display(), self.file.display()))?;
        self.offset_ms = offset_ms;
        Ok(())
    }
}

/// True when a process started with `env` runs under libfaketime.
pub fn is_faked(env: &[(String, String)]) -> bool {
    env.iter()
        .any(|(name, _)| name == "FAKETIME_TIMESTAMP_FILE")
}

/// Removes the semaphore and shared memory libfaketime 0.9.10 creates per process
/// (`/dev/shm/{sem.faketime_sem_,faketime_shm_}<pid>`), which a killed process leaves behind.
/// Call it only for a reaped child of ours: then no live process of ours has that PID.
pub fn remove_leftovers(pid: u32) {
    for name in [
        format!("sem.faketime_sem_{pid}"),
        format!("faketime_shm_{pid}"),
    ] {
        let path = Path::new("/dev/shm").join(name);
        if let Err(error) = std::fs::remove_file(&path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), "remove libfaketime leftover: {error}");
            }
        }
    }
}

/// How far a node's clock read through Status may be from the offset set (plus half the call).
pub const TOLERANCE_MS: i64 = 250;

/// Polls node `id`'s wall clock (`wall_clock_ms` in its Status) until it reads `offset_ms` from
/// this process's clock, within [`TOLERANCE_MS`] plus half the call; returns the offset read.
/// Fails after [`PICKUP`] + 2 s, saying what it read.
pub async fn wait_for_offset(
    cluster: &TestCluster,
    id: u64,
    offset_ms: i64,
) -> anyhow::Result<i64> {
    let deadline = tokio::time::Instant::now() + PICKUP + Duration::from_secs(2);
    loop {
        let before = unix_ms();
        let last = match cluster.status(id).await {
            Ok(status) if status.wall_clock_ms > 0 => {
                let after = unix_ms();
                let observed_ms = status.wall_clock_ms as i64 - (before + after) as i64 / 2;
                let slack_ms = TOLERANCE_MS + (after - before) as i64 / 2;
                if (observed_ms - offset_ms).abs() <= slack_ms {
                    return Ok(observed_ms);
                }
                format!("it reads {}", seconds(observed_ms))
            }
            Ok(_) => "its Status carries no wall_clock_ms (an old node?)".to_string(),
            Err(error) => format!("{error:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "node {id}'s wall clock did not move to {} from the harness's: {last}",
                seconds(offset_ms)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `+12.3 s`, `-2.0 s`.
pub fn seconds(ms: i64) -> String {
    format!("{:+.1} s", ms as f64 / 1000.0)
}

/// libfaketime's relative offset in seconds, `+12.345` or `-2.000` (the C locale's decimal point).
fn specification(offset_ms: i64) -> String {
    let sign = if offset_ms < 0 { '-' } else { '+' };
    let magnitude = offset_ms.unsigned_abs();
    format!("{sign}{}.{:03}", magnitude / 1000, magnitude % 1000)
}

/// This process's wall clock in Unix milliseconds (the harness is never faked).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_written_as_signed_seconds() {
        assert_eq!(specification(0), "+0.000");
        assert_eq!(specification(12_345), "+12.345");
        assert_eq!(specification(-2_000), "-2.000");
        assert_eq!(specification(-30_007), "-30.007");
    }

    #[test]
    fn offset_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node-1.faketime");
        let mut clock = FakeClock::create(PathBuf::from("/lib/libfaketime.so.1"), file.clone())
            .expect("create");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "+0.000\n");
        clock.set_offset_ms(-7_500).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "-7.500\n");
        assert_eq!(clock.offset_ms(), -7_500);
        assert!(is_faked(&clock.env()));
        assert!(!file.with_extension("new").exists());
    }
}
