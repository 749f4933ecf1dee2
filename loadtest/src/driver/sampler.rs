//! Reads the system's CPU time and memory at the edges of the measurement
//! window, and its memory once a second in between, to find the maximum.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio::time::Instant as TokioInstant;

use crate::report::schema::Resources;
use crate::stats::procfs::{ProcSample, ProcessProbe};

/// Interval of the memory readings between the window's edges.
const MEMORY_INTERVAL: Duration = Duration::from_secs(1);

/// Starts sampling; the task returns raw readings for [`resources`].
pub fn spawn(probe: ProcessProbe, start: Instant, stop: Instant) -> JoinHandle<Option<Window>> {
    tokio::spawn(async move {
        let mut rss_max = probe.sample()?.rss_kib;
        tokio::time::sleep_until(TokioInstant::from_std(start)).await;
        let first = probe.sample()?;
        rss_max = rss_max.max(first.rss_kib);

        let mut tick = tokio::time::interval(MEMORY_INTERVAL);
        while Instant::now() < stop {
            let remaining = stop.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = tick.tick() => {
                    if let Some(sample) = probe.sample() {
                        rss_max = rss_max.max(sample.rss_kib);
                    }
                }
                () = tokio::time::sleep(remaining) => {}
            }
        }
        let last = probe.sample()?;
        Some(Window {
            first,
            last,
            elapsed: stop.saturating_duration_since(start),
            rss_max_kib: rss_max.max(last.rss_kib),
        })
    })
}

/// Readings at the window's edges.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    first: ProcSample,
    last: ProcSample,
    elapsed: Duration,
    rss_max_kib: u64,
}

/// Turns the readings into the step's resource figures.
pub fn resources(window: &Window, delivered_in_window: u64) -> Resources {
    let cpu_seconds = (window.last.cpu_seconds - window.first.cpu_seconds).max(0.0);
    let seconds = window.elapsed.as_secs_f64().max(f64::EPSILON);
    let per_frame = if delivered_in_window == 0 {
        0.0
    } else {
        cpu_seconds * 1e6 / delivered_in_window as f64
    };
    Resources {
        cpu_seconds,
        cpu_percent: cpu_seconds / seconds * 100.0,
        cpu_us_per_delivered_frame: per_frame,
        rss_start_kib: window.first.rss_kib,
        rss_end_kib: window.last.rss_kib,
        rss_max_kib: window.rss_max_kib,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_from_readings() {
        let window = Window {
            first: ProcSample {
                cpu_seconds: 1.0,
                rss_kib: 1000,
                peak_rss_kib: 1000,
            },
            last: ProcSample {
                cpu_seconds: 3.0,
                rss_kib: 1500,
                peak_rss_kib: 1600,
            },
            elapsed: Duration::from_secs(4),
            rss_max_kib: 1600,
        };
        let figures = resources(&window, 1000);
        assert_eq!(figures.cpu_seconds, 2.0);
        assert_eq!(figures.cpu_percent, 50.0);
        assert_eq!(figures.cpu_us_per_delivered_frame, 2000.0);
        assert_eq!(figures.rss_max_kib, 1600);
    }
}
