//! Measuring a process's resident memory from `/proc/<pid>/status` (Linux).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Returns the resident set size (`VmRSS`) of process `pid` in bytes.
pub fn resident_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS")
}

/// Returns the highest resident set size (`VmHWM`) process `pid` has had
/// since it started, in bytes. It catches peaks between two samples.
pub fn peak_resident_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM")
}

fn status_bytes(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("failed to read {path}: {err}"));
    parse_kib_field(&status, field).unwrap_or_else(|| panic!("{path} has no {field} line"))
}

/// Reads a line such as `VmRSS:  1234 kB` of a status file, in bytes.
fn parse_kib_field(status: &str, field: &str) -> Option<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// Samples a process's resident memory on a background thread and keeps the maximum.
pub struct PeakSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PeakSampler {
    /// Starts sampling process `pid` every `interval`.
    pub fn start(pid: u32, interval: Duration) -> Self {
        let peak = Arc::new(AtomicU64::new(resident_bytes(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let peak = Arc::clone(&peak);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(resident_bytes(pid), Ordering::Relaxed);
                    thread::sleep(interval);
                }
            })
        };
        PeakSampler {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns the highest resident size seen, in bytes.
    pub fn finish(mut self) -> u64 {
        self.stop_thread();
        self.peak.load(Ordering::Relaxed)
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("memory sampler thread panicked");
        }
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_bytes() {
        let status = "Name:\trelay\nVmHWM:\t  9000 kB\nVmRSS:\t  8192 kB\nThreads:\t4\n";
        assert_eq!(parse_kib_field(status, "VmRSS"), Some(8192 * 1024));
        assert_eq!(parse_kib_field(status, "VmHWM"), Some(9000 * 1024));
        assert_eq!(parse_kib_field("Name:\trelay\n", "VmRSS"), None);
    }

    #[test]
    fn own_process_has_resident_memory() {
        let pid = std::process::id();
        let resident = resident_bytes(pid);
        assert!(resident > 0);
        assert!(peak_resident_bytes(pid) >= resident);
    }
}
