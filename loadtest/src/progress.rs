//! The live progress line: elapsed time, phase, open connections, frames
//! delivered and the p99 latency of the last second, which is also kept as
//! the step's timeline.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use crate::client::Timing;
use crate::report::schema::TimelinePoint;
use crate::stats::Recorder;

/// Interval between updates and between timeline points.
const TICK: Duration = Duration::from_secs(1);

/// A progress line that updates itself until dropped or finished.
pub struct Progress {
    bar: ProgressBar,
    ticker: Option<JoinHandle<()>>,
    timeline: Arc<Mutex<Vec<TimelinePoint>>>,
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

    /// Updates the line once a second from the recorder, and returns the
    /// per-second timeline of the step when [`Progress::finish_step`] is called.
    pub fn follow_step(&mut self, recorder: Arc<Recorder>, timing: Timing, expected: u64) {
        let bar = self.bar.clone();
        let timeline = Arc::clone(&self.timeline);
        self.ticker = Some(tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            interval.tick().await;
            loop {
                interval.tick().await;
                let recent = recorder.take_recent();
                let point = TimelinePoint {
                    second: timing.start.elapsed().as_secs_f64().round(),
                    delivered: recent.len(),
                    p99_us: recent.value_at_quantile(0.99),
                };
                bar.set_message(format!(
                    "{} | connections {}/{expected} | frames delivered {} | p99 {:.1} ms",
                    phase(&timing),
                    recorder.connections_open(),
                    recorder.frames_delivered(),
                    point.p99_us as f64 / 1000.0,
                ));
                if Instant::now() >= timing.start {
                    timeline
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(point);
                }
            }
        }));
    }

    /// Clears the line and returns the timeline recorded since [`Progress::follow_step`].
    pub fn finish_step(self) -> Vec<TimelinePoint> {
        let timeline = self
            .timeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.finish();
        timeline
    }

    /// Clears the line.
    pub fn finish(mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
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
