//! The process families every Prometheus client library exports (`process_*`), read from
//! `/proc/self`: Linux only; elsewhere they are left out.

use super::scrape::Families;

/// Clock ticks per second of `/proc/self/stat`'s times: USER_HZ, 100 on every Linux
/// architecture Conclave runs on (reading `sysconf(_SC_CLK_TCK)` would need libc).
const TICKS_PER_SECOND: f64 = 100.0;

pub(super) fn gather(families: &Families) {
    if let Some(stat) = Stat::read() {
        families.counter_f64(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent, in seconds.",
            (stat.user_ticks + stat.system_ticks) as f64 / TICKS_PER_SECOND,
        );
        families.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size, in bytes.",
            stat.virtual_bytes as f64,
        );
        if let Some(boot_seconds) = boot_time_seconds() {
            families.gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
                boot_seconds as f64 + stat.start_ticks as f64 / TICKS_PER_SECOND,
            );
        }
    }
    if let Some(rss_bytes) = resident_bytes() {
        families.gauge(
            "process_resident_memory_bytes",
            "Resident memory size, in bytes.",
            rss_bytes as f64,
        );
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        families.gauge(
            "process_open_fds",
            "Open file descriptors.",
            entries.count() as f64,
        );
    }
    if let Some(max_fds) = max_fds() {
        families.gauge(
            "process_max_fds",
            "The limit on open file descriptors.",
            max_fds as f64,
        );
    }
}

struct Stat {
    user_ticks: u64,
    system_ticks: u64,
    start_ticks: u64,
    virtual_bytes: u64,
}

impl Stat {
    /// `/proc/self/stat`, split after the command name (which may hold spaces and parentheses):
    /// field 3 (state) is the first there, so field N is at N - 3 (proc(5)).
    fn read() -> Option<Stat> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        let after_name = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            user_ticks: field(14)?,
            system_ticks: field(15)?,
            start_ticks: field(22)?,
            virtual_bytes: field(23)?,
        })
    }
}

/// VmRSS from `/proc/self/status`, which is in kB whatever the page size.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn boot_time_seconds() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("btime "))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_is_read() {
        let stat = Stat::read().expect("/proc/self/stat parses");
        assert!(stat.virtual_bytes > 0);
        assert!(resident_bytes().expect("VmRSS is there") > 0);
        assert!(max_fds().expect("Max open files is there") > 0);
        assert!(boot_time_seconds().expect("btime is there") > 1_000_000_000);
    }
}
