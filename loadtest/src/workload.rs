//! The workload: real transcript segments, the open-loop send schedule and
//! the probe field that carries each frame's intended send time.
//!
//! Every frame's plaintext is a transcript segment in the protocol's JSON
//! form with one extra field, `sent_us`: the intended send time in
//! microseconds on the system's `CLOCK_MONOTONIC` (see [`monotonic_micros`]),
//! so that worker processes share the scale. Receivers ignore unknown fields, as
//! the protocol requires, so the frames are valid segments for any device,
//! and the follower recovers the field only after decrypting the frame.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rand::Rng;
use sealcast_client::input::{self, merge};
use sealcast_protocol::TranscriptSegment;
use serde::{Deserialize, Serialize};

use crate::error::LoadtestError;

/// The demo consultation shipped with the relay, used without real transcripts.
const SAMPLE_CONSULTATION: &str = include_str!("../../relay/demo/sample-consultation.jsonl");

/// Subfolder of `SEALCAST_TRANSCRIPTS` that contains the PriMock57 TextGrid files.
const PRIMOCK_FOLDER: &str = "primock57";

/// An [`Instant`] paired with the `CLOCK_MONOTONIC` reading taken at the
/// same moment, in microseconds.
#[derive(Debug, Clone, Copy)]
struct ClockOrigin {
    instant: Instant,
    monotonic_us: u64,
}

/// Returns this process's pairing of [`Instant`] and `CLOCK_MONOTONIC`,
/// read once. `CLOCK_MONOTONIC` is one clock for the whole system, so
/// publishers in the coordinator and followers in worker processes convert
/// instants to the same microsecond scale.
fn clock_origin() -> ClockOrigin {
    static ORIGIN: OnceLock<ClockOrigin> = OnceLock::new();
    *ORIGIN.get_or_init(pair_clocks)
}

/// Attempts at pairing the clocks; the narrowest one is kept.
const PAIRING_ATTEMPTS: usize = 16;

/// Reads `CLOCK_MONOTONIC` between two instants and pairs it with their
/// midpoint. The error is at most half the gap between the instants, which
/// a preemption can widen, so the narrowest of several attempts is kept.
fn pair_clocks() -> ClockOrigin {
    let attempt = || {
        let before = Instant::now();
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let after = Instant::now();
        let gap = after.duration_since(before);
        let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
        let origin = ClockOrigin {
            instant: before + gap / 2,
            monotonic_us: seconds * 1_000_000 + nanos / 1_000,
        };
        (gap, origin)
    };
    let (mut narrowest, mut best) = attempt();
    for _ in 1..PAIRING_ATTEMPTS {
        let (gap, origin) = attempt();
        if gap < narrowest {
            (narrowest, best) = (gap, origin);
        }
    }
    best
}

/// Converts an instant to microseconds on `CLOCK_MONOTONIC`, the scale of
/// `sent_us` and of the step timeline sent to worker processes.
pub fn monotonic_micros(instant: Instant) -> u64 {
    let origin = clock_origin();
    if instant >= origin.instant {
        let after = instant.duration_since(origin.instant).as_micros();
        origin
            .monotonic_us
            .saturating_add(u64::try_from(after).unwrap_or(u64::MAX))
    } else {
        let before = origin.instant.duration_since(instant).as_micros();
        origin
            .monotonic_us
            .saturating_sub(u64::try_from(before).unwrap_or(u64::MAX))
    }
}

/// Converts microseconds on `CLOCK_MONOTONIC` back to an instant of this
/// process; the inverse of [`monotonic_micros`].
pub fn instant_at(monotonic_us: u64) -> Instant {
    let origin = clock_origin();
    if monotonic_us >= origin.monotonic_us {
        origin.instant + Duration::from_micros(monotonic_us - origin.monotonic_us)
    } else {
        let before = Duration::from_micros(origin.monotonic_us - monotonic_us);
        origin.instant.checked_sub(before).unwrap_or(origin.instant)
    }
}

/// The consultations the publishers replay, each a list of segments in order.
#[derive(Debug, Clone)]
pub struct Transcripts {
    consultations: Arc<Vec<Arc<Vec<TranscriptSegment>>>>,
    source: String,
}

impl Transcripts {
    /// Loads the PriMock57 consultations under `root/primock57` when `root`
    /// is given, else the relay's demo consultation.
    pub fn load(root: Option<&Path>) -> Result<Self, LoadtestError> {
        let consultations = match root {
            Some(root) => load_primock(&root.join(PRIMOCK_FOLDER))?,
            None => vec![load_sample()?],
        };
        let source = match root {
            Some(root) => root.join(PRIMOCK_FOLDER).display().to_string(),
            None => "relay/demo/sample-consultation.jsonl".to_string(),
        };
        Ok(Transcripts {
            consultations: Arc::new(consultations.into_iter().map(Arc::new).collect()),
            source,
        })
    }

    /// Returns where the transcripts came from, for the report.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Returns the number of consultations.
    pub fn consultation_count(&self) -> usize {
        self.consultations.len()
    }

    /// Returns the total number of segments over all consultations.
    pub fn segment_count(&self) -> usize {
        self.consultations.iter().map(|c| c.len()).sum()
    }

    /// Returns the script of clinic `index`: its consultation and the segment it starts at,
    /// so that neighbouring clinics send different text.
    pub fn script_for(&self, index: usize) -> Script {
        let count = self.consultations.len().max(1);
        let segments = Arc::clone(&self.consultations[index % count]);
        let start = (index / count).wrapping_mul(7) % segments.len().max(1);
        Script {
            segments,
            next: start,
            frame: 0,
        }
    }
}

/// One clinic's endless supply of segments: its consultation, repeated.
#[derive(Debug, Clone)]
pub struct Script {
    segments: Arc<Vec<TranscriptSegment>>,
    next: usize,
    frame: u64,
}

impl Script {
    /// Builds the plaintext of the next frame with its intended send time.
    /// Segment ids count frames, so they stay unique when the consultation repeats.
    pub fn next_plaintext(&mut self, sent_us: u64) -> Vec<u8> {
        let segment = &self.segments[self.next];
        let probe = ProbeSegment {
            segment_id: self.frame,
            revision: 0,
            speaker: &segment.speaker,
            start_ms: segment.start_ms,
            end_ms: segment.end_ms,
            text: &segment.text,
            is_final: true,
            sent_us,
        };
        self.next = (self.next + 1) % self.segments.len();
        self.frame += 1;
        // Serializing strings and integers to JSON cannot fail.
        serde_json::to_vec(&probe).unwrap_or_default()
    }
}

/// A transcript segment in the protocol's field order, plus `sent_us`.
#[derive(Debug, Serialize)]
struct ProbeSegment<'a> {
    segment_id: u64,
    revision: u32,
    speaker: &'a str,
    start_ms: u64,
    end_ms: u64,
    text: &'a str,
    #[serde(rename = "final")]
    is_final: bool,
    sent_us: u64,
}

/// The fields a follower reads back from a decrypted frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Probe {
    /// Frame number within the stream.
    pub segment_id: u64,
    /// Intended send time, microseconds on `CLOCK_MONOTONIC`.
    pub sent_us: u64,
}

impl Probe {
    /// Parses the probe fields from a decrypted segment.
    pub fn parse(plaintext: &[u8]) -> Option<Probe> {
        serde_json::from_slice(plaintext).ok()
    }
}

/// Open-loop send times: a mean interval, each gap scaled by a random factor.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Mean time between frames of one clinic.
    pub interval: Duration,
    /// Each gap is the interval times a factor drawn uniformly from
    /// `1 - jitter ..= 1 + jitter`, so the mean rate is kept.
    pub jitter: f64,
}

impl Schedule {
    /// Builds the schedule for `rate` frames per second with the given jitter.
    pub fn new(rate: f64, jitter: f64) -> Schedule {
        Schedule {
            interval: Duration::from_secs_f64(1.0 / rate),
            jitter: jitter.clamp(0.0, 1.0),
        }
    }

    /// Draws the offset of a clinic's first frame, uniform over one interval,
    /// so that clinics do not send in lockstep.
    pub fn first_offset(&self, rng: &mut impl Rng) -> Duration {
        self.interval.mul_f64(rng.gen_range(0.0..1.0))
    }

    /// Draws the gap to the next frame.
    pub fn next_gap(&self, rng: &mut impl Rng) -> Duration {
        if self.jitter == 0.0 {
            return self.interval;
        }
        let factor = rng.gen_range((1.0 - self.jitter)..=(1.0 + self.jitter));
        self.interval.mul_f64(factor)
    }
}

fn load_sample() -> Result<Vec<TranscriptSegment>, LoadtestError> {
    let path = Path::new("relay/demo/sample-consultation.jsonl");
    let segments = input::jsonl::read(Cursor::new(SAMPLE_CONSULTATION), "sample", path)
        .map_err(|err| transcripts_error(path, err.to_string()))?;
    Ok(merge::assign_ids(segments))
}

/// Loads every consultation of the folder: the files of one consultation
/// share the name before the last `_`, which is followed by the speaker.
fn load_primock(folder: &Path) -> Result<Vec<Vec<TranscriptSegment>>, LoadtestError> {
    let mut groups: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    let entries = fs::read_dir(folder).map_err(|err| transcripts_error(folder, err.to_string()))?;
    for entry in entries {
        let path = entry
            .map_err(|err| transcripts_error(folder, err.to_string()))?
            .path();
        let is_textgrid = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("textgrid"));
        let stem = path.file_stem().and_then(|stem| stem.to_str());
        if let (true, Some((consultation, _speaker))) =
            (is_textgrid, stem.and_then(|stem| stem.rsplit_once('_')))
        {
            groups
                .entry(consultation.to_string())
                .or_default()
                .push(path);
        }
    }

    let mut consultations = Vec::with_capacity(groups.len());
    for mut files in groups.into_values() {
        files.sort();
        let segments = input::load_files(&files, None)
            .map_err(|err| transcripts_error(&files[0], err.to_string()))?;
        consultations.push(segments);
    }
    if consultations.is_empty() {
        return Err(transcripts_error(
            folder,
            "no *_SPEAKER.TextGrid files found: point SEALCAST_TRANSCRIPTS at the folder that contains primock57/".into(),
        ));
    }
    Ok(consultations)
}

fn transcripts_error(path: &Path, reason: String) -> LoadtestError {
    LoadtestError::Transcripts {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn sample_consultation_loads() {
        let transcripts = Transcripts::load(None).unwrap();
        assert_eq!(transcripts.consultation_count(), 1);
        assert!(transcripts.segment_count() > 10);
    }

    #[test]
    fn probe_round_trips_through_segment_json() {
        let mut script = Transcripts::load(None).unwrap().script_for(3);
        let plaintext = script.next_plaintext(123_456);
        let segment = TranscriptSegment::from_plaintext(&plaintext).unwrap();
        assert!(segment.is_final);
        assert!(!segment.text.is_empty());
        let probe = Probe::parse(&plaintext).unwrap();
        assert_eq!(probe.sent_us, 123_456);
        assert_eq!(probe.segment_id, 0);
        let second = Probe::parse(&script.next_plaintext(9)).unwrap();
        assert_eq!(second.segment_id, 1);
    }

    #[test]
    fn monotonic_micros_round_trip() {
        let now = Instant::now();
        for instant in [
            now,
            now + Duration::from_secs(30),
            now - Duration::from_millis(5),
        ] {
            let micros = monotonic_micros(instant);
            let back = instant_at(micros);
            let error = if back > instant {
                back - instant
            } else {
                instant - back
            };
            assert!(error < Duration::from_micros(1), "{error:?}");
        }
        let later = monotonic_micros(now + Duration::from_millis(250));
        assert_eq!(later - monotonic_micros(now), 250_000);
    }

    #[test]
    fn monotonic_micros_match_clock_gettime() {
        // Pairs the clocks first, outside the readings compared.
        monotonic_micros(Instant::now());
        let before = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let micros = monotonic_micros(Instant::now());
        let after = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let to_micros =
            |t: rustix::time::Timespec| t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000;
        assert!(
            micros + 1 >= to_micros(before),
            "{micros} before {before:?}"
        );
        assert!(micros <= to_micros(after) + 1, "{micros} after {after:?}");
    }

    #[test]
    fn schedule_gaps_stay_within_jitter() {
        let schedule = Schedule::new(10.0, 0.5);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let gap = schedule.next_gap(&mut rng);
            assert!(gap >= Duration::from_millis(50), "{gap:?}");
            assert!(gap <= Duration::from_millis(150), "{gap:?}");
        }
        assert!(schedule.first_offset(&mut rng) < schedule.interval);
    }

    #[test]
    fn primock_folder_loads_when_present() {
        let Some(root) = std::env::var_os("SEALCAST_TRANSCRIPTS") else {
            eprintln!("SEALCAST_TRANSCRIPTS is not set: skipped");
            return;
        };
        let transcripts = Transcripts::load(Some(Path::new(&root))).unwrap();
        assert!(transcripts.consultation_count() >= 2);
    }
}
