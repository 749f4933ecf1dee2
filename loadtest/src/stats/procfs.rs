//! CPU time and resident memory of the relay process, read from `/proc`.
//!
//! A relay in its own process is measured whole. A relay started inside the
//! harness process runs on threads whose names start with a known prefix,
//! so its CPU time is the sum over those threads. Its resident memory can
//! only be read for the whole process, load generator included. The nodes
//! of a cluster on this machine are measured as the sum of their processes.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Part of a process that a probe measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeScope {
    /// Every thread of the process.
    Process,
    /// CPU time of the threads whose name starts with this prefix; memory of
    /// the whole process.
    Threads(String),
    /// Every thread of several processes, such as the nodes of a cluster,
    /// with CPU time and memory summed over them.
    Processes(Vec<u32>),
}

/// Reads CPU time and memory of one local process, part of one, or the sum
/// of several.
#[derive(Debug, Clone)]
pub struct ProcessProbe {
    pid: u32,
    scope: ProbeScope,
    ticks_per_second: f64,
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// User plus system CPU time in seconds since the process or threads started.
    pub cpu_seconds: f64,
    /// Resident set size in KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size in KiB (`VmHWM`).
    pub peak_rss_kib: u64,
}

impl ProcessProbe {
    /// Creates a probe for process `pid`.
    pub fn new(pid: u32, scope: ProbeScope) -> ProcessProbe {
        let ticks = rustix::param::clock_ticks_per_second();
        ProcessProbe {
            pid,
            scope,
            ticks_per_second: ticks.max(1) as f64,
        }
    }

    /// Creates a probe for processes `pids`, one for each node of a cluster.
    /// With one process id it is a probe of that process.
    pub fn processes(pids: &[u32]) -> Option<ProcessProbe> {
        match pids {
            [] => None,
            [pid] => Some(ProcessProbe::new(*pid, ProbeScope::Process)),
            [first, ..] => Some(ProcessProbe::new(
                *first,
                ProbeScope::Processes(pids.to_vec()),
            )),
        }
    }

    /// Creates a probe for the threads of this process whose names start with `prefix`.
    pub fn own_threads(prefix: &str) -> ProcessProbe {
        ProcessProbe::new(std::process::id(), ProbeScope::Threads(prefix.to_string()))
    }

    /// Describes what the readings cover, for the report.
    pub fn scope_description(&self) -> String {
        match &self.scope {
            ProbeScope::Process => format!("process {}", self.pid),
            ProbeScope::Threads(prefix) => format!(
                "CPU of threads named {prefix}* in process {}; memory of the whole process, load generator included",
                self.pid
            ),
            ProbeScope::Processes(pids) => {
                let list: Vec<String> = pids.iter().map(u32::to_string).collect();
                format!("processes {}, summed", list.join(", "))
            }
        }
    }

    /// Returns whether memory readings include the load generator.
    pub fn memory_is_shared(&self) -> bool {
        matches!(self.scope, ProbeScope::Threads(_))
    }

    /// Reads the process now. Returns `None` when it has exited or `/proc` is unreadable.
    pub fn sample(&self) -> Option<ProcSample> {
        if let ProbeScope::Processes(pids) = &self.scope {
            return self.sample_sum(pids);
        }
        let base = PathBuf::from(format!("/proc/{}", self.pid));
        let ticks = match &self.scope {
            ProbeScope::Threads(prefix) => thread_ticks(&base.join("task"), prefix)?,
            ProbeScope::Process | ProbeScope::Processes(_) => cpu_ticks(&base.join("stat"))?,
        };
        let status = fs::read_to_string(base.join("status")).ok()?;
        Some(ProcSample {
            cpu_seconds: ticks as f64 / self.ticks_per_second,
            rss_kib: status_kib(&status, "VmRSS:")?,
            peak_rss_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
        })
    }
}

impl ProcessProbe {
    /// Reads every process of `pids` and sums the readings. The sum of the
    /// peaks is an upper bound of the peak of the sum. Returns `None` when
    /// any of them has exited.
    fn sample_sum(&self, pids: &[u32]) -> Option<ProcSample> {
        let mut total = ProcSample::default();
        for &pid in pids {
            let reading = ProcessProbe {
                pid,
                scope: ProbeScope::Process,
                ticks_per_second: self.ticks_per_second,
            }
            .sample()?;
            total.cpu_seconds += reading.cpu_seconds;
            total.rss_kib += reading.rss_kib;
            total.peak_rss_kib += reading.peak_rss_kib;
        }
        Some(total)
    }
}

/// Sums the CPU ticks of the threads whose `comm` starts with `prefix`.
fn thread_ticks(tasks: &Path, prefix: &str) -> Option<u64> {
    let mut total = 0;
    for entry in fs::read_dir(tasks).ok()?.flatten() {
        let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.starts_with(prefix) {
            total += cpu_ticks(&entry.path().join("stat")).unwrap_or(0);
        }
    }
    Some(total)
}

/// Reads `utime + stime` from a `stat` file, in clock ticks.
fn cpu_ticks(stat_path: &Path) -> Option<u64> {
    parse_stat_ticks(&fs::read_to_string(stat_path).ok()?)
}

/// Parses `utime + stime` (fields 14 and 15) of a `stat` line. The command
/// name in field 2 may contain spaces and parentheses, so fields are counted
/// after its last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Reads a `kB` line such as `VmRSS:   1234 kB` from a `status` file.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_in_name_parses() {
        let stat = "4242 (tokio (x) y) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 4 0 100";
        assert_eq!(parse_stat_ticks(stat), Some(325));
    }

    #[test]
    fn status_lines_parse() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let probe = ProcessProbe::new(std::process::id(), ProbeScope::Process);
        let sample = probe.sample().unwrap();
        assert!(sample.rss_kib > 0);
        assert!(sample.peak_rss_kib >= sample.rss_kib);
    }

    #[test]
    fn processes_are_summed() {
        let own = std::process::id();
        let single = ProcessProbe::processes(&[own]).unwrap();
        assert_eq!(single.scope, ProbeScope::Process);
        let twice = ProcessProbe::processes(&[own, own]).unwrap();
        let once = single.sample().unwrap();
        let summed = twice.sample().unwrap();
        assert!(
            summed.rss_kib >= once.rss_kib * 3 / 2,
            "{summed:?} {once:?}"
        );
        assert!(summed.cpu_seconds >= once.cpu_seconds * 2.0 - 0.1);
        assert!(ProcessProbe::processes(&[]).is_none());
        assert!(twice.scope_description().contains("summed"));
    }

    #[test]
    fn thread_prefix_selects_named_threads() {
        let busy = std::thread::Builder::new()
            .name("probe-spin".into())
            .spawn(|| {
                let start = std::time::Instant::now();
                let mut x = 0u64;
                while start.elapsed() < std::time::Duration::from_millis(300) {
                    x = x.wrapping_add(std::hint::black_box(1));
                }
                x
            })
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(250));
        let named = ProcessProbe::own_threads("probe-spin").sample().unwrap();
        let none = ProcessProbe::own_threads("no-such-thread")
            .sample()
            .unwrap();
        busy.join().unwrap();
        assert!(named.cpu_seconds > 0.0, "{named:?}");
        assert_eq!(none.cpu_seconds, 0.0);
    }
}
