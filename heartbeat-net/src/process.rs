//! What the load generator measures of a process (the server, the sink, itself) through
//! `/proc`, and its own open-file limit.

use std::io;
use std::time::Duration;

/// One reading of a process's CPU time and memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system CPU time consumed since it started (`utime + stime` of
    /// `/proc/PID/stat`, converted with the clock tick).
    pub cpu: Duration,
    /// Resident memory now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident memory since it started (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
}

impl ProcSample {
    /// Reads process `pid` (Linux only). The error names the pid.
    pub fn read(pid: u32) -> io::Result<Self> {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("process {pid}: {e}"));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(named)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(named)?;
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("process {pid}: cannot read {what}"),
            )
        };
        let ticks = cpu_ticks(&stat).ok_or_else(|| bad("utime and stime in /proc/PID/stat"))?;
        // VmRSS and VmHWM are absent for a zombie (it has no memory left): read as 0.
        Ok(Self {
            cpu: ticks_to_duration(ticks, clock_ticks_per_second()),
            rss_kib: status_kib(&status, "VmRSS").unwrap_or(0),
            peak_rss_kib: status_kib(&status, "VmHWM").unwrap_or(0),
        })
    }
}

/// The kernel's clock tick (`USER_HZ`, `sysconf(_SC_CLK_TCK)`), the unit of `/proc/PID/stat`'s
/// CPU times: from the auxiliary vector, through rustix's safe wrapper.
pub fn clock_ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    let per_second = per_second.max(1);
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(per_second);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// `utime + stime` from the text of `/proc/PID/stat`. The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so the fields are counted from the
/// last `)`: after it come state (field 3), ..., utime (14) and stime (15).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// The KiB value of `key` (e.g. `VmHWM`) in the text of `/proc/PID/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// What happened to this process's open-file limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit found at start (`None`: unlimited).
    pub before: Option<u64>,
    /// The soft limit in force now.
    pub now: Option<u64>,
    /// The hard limit, the most an unprivileged process may raise it to.
    pub hard: Option<u64>,
}

impl NofileLimit {
    /// Raises the soft open-file limit to the hard one. `Err` when the kernel refused; the
    /// limit is then unchanged.
    pub fn raise() -> io::Result<Self> {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let old = getrlimit(Resource::Nofile);
        let mut limit = Self {
            before: old.current,
            now: old.current,
            hard: old.maximum,
        };
        let below_hard = match (old.current, old.maximum) {
            (Some(cur), Some(max)) => cur < max,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if below_hard {
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: old.maximum,
                    maximum: old.maximum,
                },
            )?;
            limit.now = getrlimit(Resource::Nofile).current;
        }
        Ok(limit)
    }

    /// Whether `fds` more descriptors than a handful in use fit under the soft limit.
    pub fn fits(&self, fds: u64) -> bool {
        // stdio, the runtime's epoll and eventfd, a listener, /proc reads: well under 32.
        self.now.is_none_or(|n| fds + 32 <= n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_fields_from_the_last_parenthesis() {
        // A command name with spaces and parentheses, as a hostile process may choose.
        let stat = "4242 (a) b (c) d) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    150 25 0 0 20 0 3 0 12345 999 999 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(175));
        assert_eq!(cpu_ticks("4242 (x) S 1 2 3"), None);
        assert_eq!(cpu_ticks("no parenthesis 1 2 3"), None);
        assert_eq!(
            cpu_ticks("1 (x) S 1 1 1 0 -1 0 0 0 0 0 nan 2 0 0 20 0 1 0 1 1 1"),
            None
        );
    }

    #[test]
    fn status_values_are_read_in_kib() {
        let status = "Name:\tserver\nVmHWMX:\t1 kB\nVmHWM:\t   12345 kB\nVmRSS:\t  6789 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(12_345));
        assert_eq!(status_kib(status, "VmRSS"), Some(6_789));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn ticks_convert_with_the_clock_tick() {
        assert_eq!(ticks_to_duration(175, 100), Duration::from_millis(1750));
        assert_eq!(ticks_to_duration(3, 1000), Duration::from_millis(3));
        assert_eq!(ticks_to_duration(7, 0), Duration::from_secs(7));
    }

    #[test]
    fn this_process_reads_back() {
        let me = ProcSample::read(std::process::id()).unwrap();
        assert!(me.peak_rss_kib >= me.rss_kib && me.rss_kib > 0, "{me:?}");
        assert!(ProcSample::read(u32::MAX).is_err());
    }
}
