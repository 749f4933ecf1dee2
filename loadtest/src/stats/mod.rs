//! Statistics of one load step: latency histograms, counters and errors by kind.
//!
//! Publisher and follower tasks record into a [`Recorder`] shared by the
//! step. Histograms are split into shards, each behind its own mutex, so
//! that thousands of tasks rarely wait on each other. The shards are merged
//! when the step ends. Latency counts only frames whose intended send time falls
//! inside the measurement window, so warm-up and drain do not skew it.
//!
//! | module | job |
//! | --- | --- |
//! | [`summary`] | percentiles and percentile curves of HDR histograms |
//! | [`procfs`] | relay CPU time and resident memory from `/proc` |

pub mod procfs;
pub mod summary;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use self::summary::{new_histogram, record};

/// Histogram shards; a power of two above the worker thread count.
const SHARDS: usize = 16;

/// The histograms of one shard, all in microseconds.
struct Shard {
    /// Publisher-to-follower latency of frames intended inside the window.
    latency: Histogram<u64>,
    /// Latency of every frame since the last progress tick.
    recent: Histogram<u64>,
    /// How late publishers sent frames relative to their intended time.
    send_lag: Histogram<u64>,
    /// TCP connect, TLS handshake and WebSocket upgrade, until the welcome.
    connect: Histogram<u64>,
}

/// Counters of a step, taken when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Segment frames publishers sealed and sent, in every phase.
    pub frames_sent: u64,
    /// Segment frames the relay acknowledged as committed.
    pub frames_acknowledged: u64,
    /// Segment frames followers opened, in every phase.
    pub frames_delivered: u64,
    /// Frames followers opened whose intended send time lies in the window.
    pub frames_delivered_in_window: u64,
    /// Final frames followers never received, counted from sequence numbers
    /// and final counts in the frame headers (the protocol's gap rule).
    pub gap_frames: u64,
    /// Frames a follower received again after opening them.
    pub duplicates: u64,
    /// Frames that failed to decrypt or authenticate.
    pub decrypt_errors: u64,
}

/// The shared recorder of one step.
pub struct Recorder {
    shards: Vec<Mutex<Shard>>,
    window_start_us: AtomicU64,
    window_end_us: AtomicU64,
    frames_sent: AtomicU64,
    frames_acknowledged: AtomicU64,
    frames_delivered: AtomicU64,
    frames_delivered_in_window: AtomicU64,
    gap_frames: AtomicU64,
    duplicates: AtomicU64,
    decrypt_errors: AtomicU64,
    connections_open: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// Creates an empty recorder whose window is still unset (nothing is in it).
    pub fn new() -> Recorder {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    latency: new_histogram(),
                    recent: new_histogram(),
                    send_lag: new_histogram(),
                    connect: new_histogram(),
                })
            })
            .collect();
        Recorder {
            shards,
            window_start_us: AtomicU64::new(u64::MAX),
            window_end_us: AtomicU64::new(u64::MAX),
            frames_sent: AtomicU64::new(0),
            frames_acknowledged: AtomicU64::new(0),
            frames_delivered: AtomicU64::new(0),
            frames_delivered_in_window: AtomicU64::new(0),
            gap_frames: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            decrypt_errors: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// Sets the measurement window, in microseconds since the clock origin.
    pub fn set_window(&self, start_us: u64, end_us: u64) {
        self.window_start_us.store(start_us, Ordering::Relaxed);
        self.window_end_us.store(end_us, Ordering::Relaxed);
    }

    fn in_window(&self, intended_us: u64) -> bool {
        let start = self.window_start_us.load(Ordering::Relaxed);
        let end = self.window_end_us.load(Ordering::Relaxed);
        (start..end).contains(&intended_us)
    }

    fn shard(&self, key: usize) -> MutexGuard<'_, Shard> {
        self.shards[key % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a frame a follower opened: intended send time and arrival time.
    pub fn record_delivery(&self, key: usize, sent_us: u64, received_us: u64) {
        let latency = received_us.saturating_sub(sent_us);
        self.frames_delivered.fetch_add(1, Ordering::Relaxed);
        let in_window = self.in_window(sent_us);
        if in_window {
            self.frames_delivered_in_window
                .fetch_add(1, Ordering::Relaxed);
        }

        let mut shard = self.shard(key);
        record(&mut shard.recent, latency);
        if in_window {
            record(&mut shard.latency, latency);
        }
    }

    /// Records a frame a publisher sent: intended and actual send time.
    pub fn record_send(&self, key: usize, intended_us: u64, actual_us: u64) {
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
        if self.in_window(intended_us) {
            record(
                &mut self.shard(key).send_lag,
                actual_us.saturating_sub(intended_us),
            );
        }
    }

    /// Records a connection that opened, with the time it took.
    pub fn record_connect(&self, key: usize, micros: u64) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        record(&mut self.shard(key).connect, micros);
    }

    /// Records that an open connection closed.
    pub fn record_disconnect(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Raises the count of acknowledged segment frames.
    pub fn add_acknowledged(&self, frames: u64) {
        self.frames_acknowledged
            .fetch_add(frames, Ordering::Relaxed);
    }

    /// Adds final frames missing before an opened frame.
    pub fn add_gap_frames(&self, frames: u64) {
        self.gap_frames.fetch_add(frames, Ordering::Relaxed);
        self.count_error("gap");
    }

    /// Counts a frame received twice.
    pub fn add_duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a frame that failed to decrypt.
    pub fn add_decrypt_error(&self) {
        self.decrypt_errors.fetch_add(1, Ordering::Relaxed);
        self.count_error("decrypt");
    }

    /// Counts an error by kind, for example `connect: tls` or `close 4005`.
    pub fn count_error(&self, kind: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        *errors.entry(kind.to_string()).or_insert(0) += 1;
    }

    /// Returns the number of open connections.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    /// Returns segment frames opened by followers so far.
    pub fn frames_delivered(&self) -> u64 {
        self.frames_delivered.load(Ordering::Relaxed)
    }

    /// Merges and clears the latency recorded since the last call, for progress display.
    pub fn take_recent(&self) -> Histogram<u64> {
        let mut merged = new_histogram();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = merged.add(&shard.recent);
            shard.recent.reset();
        }
        merged
    }

    /// Returns the merged latency, send lag and connect time histograms.
    pub fn histograms(&self) -> Histograms {
        let mut merged = Histograms {
            latency: new_histogram(),
            send_lag: new_histogram(),
            connect: new_histogram(),
        };
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = merged.latency.add(&shard.latency);
            let _ = merged.send_lag.add(&shard.send_lag);
            let _ = merged.connect.add(&shard.connect);
        }
        merged
    }

    /// Returns the counters.
    pub fn counts(&self) -> Counts {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Counts {
            frames_sent: load(&self.frames_sent),
            frames_acknowledged: load(&self.frames_acknowledged),
            frames_delivered: load(&self.frames_delivered),
            frames_delivered_in_window: load(&self.frames_delivered_in_window),
            gap_frames: load(&self.gap_frames),
            duplicates: load(&self.duplicates),
            decrypt_errors: load(&self.decrypt_errors),
        }
    }

    /// Adds the counters, errors and histograms of followers that ran in a
    /// worker process, so that the step's summary covers every process.
    pub fn absorb(&self, counts: &Counts, errors: &BTreeMap<String, u64>, histograms: &Histograms) {
        let add = |counter: &AtomicU64, value: u64| counter.fetch_add(value, Ordering::Relaxed);
        add(&self.frames_sent, counts.frames_sent);
        add(&self.frames_acknowledged, counts.frames_acknowledged);
        add(&self.frames_delivered, counts.frames_delivered);
        add(
            &self.frames_delivered_in_window,
            counts.frames_delivered_in_window,
        );
        add(&self.gap_frames, counts.gap_frames);
        add(&self.duplicates, counts.duplicates);
        add(&self.decrypt_errors, counts.decrypt_errors);
        {
            let mut own = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
            for (kind, count) in errors {
                *own.entry(kind.clone()).or_insert(0) += count;
            }
        }
        // Decoded worker histograms have the bounds of `new_histogram`, as
        // `EncodedHistogram::decode` ensures, so adding cannot fail for lack of range.
        let mut shard = self.shard(0);
        let _ = shard.latency.add(&histograms.latency);
        let _ = shard.send_lag.add(&histograms.send_lag);
        let _ = shard.connect.add(&histograms.connect);
    }

    /// Returns the errors by kind.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The merged histograms of a step.
pub struct Histograms {
    /// Publisher-to-follower latency inside the window.
    pub latency: Histogram<u64>,
    /// Publisher send lag inside the window.
    pub send_lag: Histogram<u64>,
    /// Connection set-up times.
    pub connect: Histogram<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_frames_in_window_count_for_latency() {
        let recorder = Recorder::new();
        recorder.set_window(1_000, 2_000);
        recorder.record_delivery(0, 500, 800);
        recorder.record_delivery(1, 1_500, 1_750);
        recorder.record_delivery(2, 2_000, 2_100);
        let counts = recorder.counts();
        assert_eq!(counts.frames_delivered, 3);
        assert_eq!(counts.frames_delivered_in_window, 1);
        let histograms = recorder.histograms();
        assert_eq!(histograms.latency.len(), 1);
        assert_eq!(histograms.latency.max(), 250);
        assert_eq!(recorder.take_recent().len(), 3);
        assert_eq!(recorder.take_recent().len(), 0);
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let recorder = Recorder::new();
        recorder.count_error("close 4005");
        recorder.count_error("close 4005");
        recorder.add_decrypt_error();
        let errors = recorder.errors();
        assert_eq!(errors.get("close 4005"), Some(&2));
        assert_eq!(errors.get("decrypt"), Some(&1));
        assert_eq!(recorder.counts().decrypt_errors, 1);
    }

    #[test]
    fn absorbed_statistics_are_added() {
        let remote = Recorder::new();
        remote.set_window(0, 10_000);
        remote.record_connect(0, 900);
        remote.record_delivery(0, 1_000, 1_400);
        remote.add_duplicate();
        remote.count_error("follower connection lost");

        let local = Recorder::new();
        local.set_window(0, 10_000);
        local.record_connect(1, 700);
        local.record_delivery(1, 2_000, 2_100);
        local.count_error("follower connection lost");
        local.absorb(&remote.counts(), &remote.errors(), &remote.histograms());

        let counts = local.counts();
        assert_eq!(counts.frames_delivered, 2);
        assert_eq!(counts.frames_delivered_in_window, 2);
        assert_eq!(counts.duplicates, 1);
        assert_eq!(local.errors().get("follower connection lost"), Some(&2));
        let histograms = local.histograms();
        assert_eq!(histograms.connect.len(), 2);
        assert_eq!(histograms.latency.len(), 2);
        assert_eq!(histograms.latency.max(), 400);
    }

    #[test]
    fn connections_are_tracked() {
        let recorder = Recorder::new();
        recorder.record_connect(3, 1200);
        recorder.record_connect(4, 800);
        recorder.record_disconnect();
        assert_eq!(recorder.connections_open(), 1);
        assert_eq!(recorder.histograms().connect.len(), 2);
    }
}
