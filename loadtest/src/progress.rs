//! The live progress line: elapsed time, phase, open connections, frames
//! delivered and the p99 latency of the last second. The latency of each
//! second is also kept, merged with the worker processes' seconds, as the
//! step's timeline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::{Instant as TokioInstant, MissedTickBehavior};

use crate::client::Timing;
use crate::report::schema::TimelinePoint;
use crate::stats::summary::new_histogram;
use crate::stats::Recorder;
use crate::worker::message::{EncodedHistogram, TimelineSecond};

/// Interval between updates and between timeline points.
const TICK: Duration = Duration::from_secs(1);

/// The worker processes' part of the progress line. Workers report nothing
/// during a step, only when connected and at the end.
#[derive(Debug, Clone, Copy)]
pub struct RemoteProgress {
    /// Worker processes.
    pub workers: usize,
    /// Followers the workers opened.
    pub followers_opened: u64,
}

/// A progress line that updates itself until dropped or finished.
pub struct Progress {
    bar: ProgressBar,
    ticker: Option<JoinHandle<()>>,
    timeline: Arc<Mutex<Vec<TimelineSecond>>>,
}

impl Progress {
    /// Shows a line labelled `label` on standard error, hidden when `visible` is false.
    pub fn new(label: &str, visible: bool) -> Progress {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(TICK);
        Progress {
            bar,
            ticker: None,
            timeline: Arc::default(),
        }
    }

    /// Sets the message, for set-up phases.
    pub fn set_phase(&self, message: &str) {
        self.bar.set_message(message.to_string());
    }

    /// Updates the line each second of the step from the recorder, and keeps
    /// the latency of each second for the timeline that
    /// [`Progress::finish_step`] returns. `expected` counts this process's
    /// connections. With `remote`, the line labels its figures as this
    /// process's and adds the workers' connections.
    pub fn follow_step(
        &mut self,
        recorder: Arc<Recorder>,
        timing: Timing,
        expected: u64,
        remote: Option<RemoteProgress>,
    ) {
        self.bar.set_message("starting");
        let bar = self.bar.clone();
        let timeline = Arc::clone(&self.timeline);
        let counters = Arc::clone(&recorder);
        self.ticker = Some(spawn_ticker(recorder, timing, move |second, recent| {
            let figures = format!(
                "connections {}/{expected} | frames delivered {} | p99 {:.1} ms",
                counters.connections_open(),
                counters.frames_delivered(),
                recent.value_at_quantile(0.99) as f64 / 1000.0,
            );
            let message = match &remote {
                None => format!("{} | {figures}", phase(&timing)),
                Some(remote) => format!(
                    "{} | this process: {figures} | {} workers: {} followers connected, figures at the end",
                    phase(&timing),
                    remote.workers,
                    remote.followers_opened,
                ),
            };
            bar.set_message(message);
            match EncodedHistogram::encode(&recent) {
                Ok(latency) => timeline
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(TimelineSecond { second, latency }),
                Err(err) => tracing::warn!(error = %err, second, "timeline second dropped"),
            }
        }));
    }

    /// Clears the line and returns the timeline since [`Progress::follow_step`],
    /// with the seconds that worker processes reported merged in.
    pub fn finish_step(self, remote: Vec<(u64, Histogram<u64>)>) -> Vec<TimelinePoint> {
        let own =
            std::mem::take(&mut *self.timeline.lock().unwrap_or_else(PoisonError::into_inner));
        self.finish();

        let mut seconds: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
        let decoded = own
            .into_iter()
            .filter_map(|second| match second.latency.decode() {
                Ok(histogram) => Some((second.second, histogram)),
                Err(err) => {
                    tracing::warn!(error = %err, second = second.second, "timeline second dropped");
                    None
                }
            });
        for (second, histogram) in decoded.chain(remote) {
            let merged = seconds.entry(second).or_insert_with(new_histogram);
            // Own and decoded worker histograms have the bounds of `new_histogram`.
            let _ = merged.add(&histogram);
        }
        seconds
            .into_iter()
            .map(|(second, histogram)| TimelinePoint {
                second: second as f64,
                delivered: histogram.len(),
                p99_us: histogram.value_at_quantile(0.99),
            })
            .collect()
    }

    /// Clears the line.
    pub fn finish(mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

/// Calls `tick` with `k` and the latency recorded since the previous call at
/// `timing.start` plus `k` seconds, for `k` from 1. Every process of a step
/// ticks at the same instants, so their seconds can be merged. A stalled
/// runtime catches up with ticks in a burst, which keeps the numbering.
pub fn spawn_ticker<F>(recorder: Arc<Recorder>, timing: Timing, mut tick: F) -> JoinHandle<()>
where
    F: FnMut(u64, Histogram<u64>) + Send + 'static,
{
    tokio::spawn(async move {
        let first = TokioInstant::from_std(timing.start + TICK);
        let mut interval = tokio::time::interval_at(first, TICK);
        interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut second = 0;
        loop {
            interval.tick().await;
            second += 1;
            tick(second, recorder.take_recent());
        }
    })
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
    }
}

fn phase(timing: &Timing) -> &'static str {
    let now = Instant::now();
    if now < timing.start {
        "starting"
    } else if now < timing.measure_start {
        "warm-up"
    } else if now < timing.stop {
        "measuring"
    } else if now < timing.send_stop {
        "cool-down"
    } else {
        "draining"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summary::record;

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut histogram = new_histogram();
        for &value in values {
            record(&mut histogram, value);
        }
        histogram
    }

    #[test]
    fn worker_seconds_merge_by_number() {
        let progress = Progress::new("test", false);
        let remote = vec![
            (2, histogram(&[100, 200])),
            (1, histogram(&[300])),
            (2, histogram(&[5_000])),
        ];
        let points = progress.finish_step(remote);
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].second, 1.0);
        assert_eq!(points[0].delivered, 1);
        assert_eq!(points[0].p99_us, 300);
        assert_eq!(points[1].second, 2.0);
        assert_eq!(points[1].delivered, 3);
        assert!(points[1].p99_us >= 4_995, "{}", points[1].p99_us);
    }

    #[tokio::test]
    async fn ticker_numbers_seconds_from_the_start() {
        let recorder = Arc::new(Recorder::new());
        let timing = Timing::new(
            Duration::from_millis(200),
            Duration::ZERO,
            Duration::from_secs(10),
            Duration::ZERO,
        );
        let seconds = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&seconds);
        let ticker = spawn_ticker(Arc::clone(&recorder), timing, move |second, recent| {
            collected.lock().unwrap().push((second, recent.len()));
        });
        recorder.record_delivery(0, 1, 2);
        // Half a second after the second tick, at start + 1 s and start + 2 s.
        tokio::time::sleep_until(TokioInstant::from_std(timing.start + TICK * 2 + TICK / 2)).await;
        ticker.abort();
        let seconds = seconds.lock().unwrap().clone();
        assert_eq!(seconds, vec![(1, 1), (2, 0)]);
    }
}
