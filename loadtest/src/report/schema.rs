//! The JSON result of a run, `result.json`. `docs/benchmarks.md` documents
//! every field; [`SCHEMA_VERSION`] changes when a field changes meaning or
//! is removed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::summary::{CurvePoint, Summary};
use crate::stats::Counts;

/// Version of this schema.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole result of one invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunResult {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// Version of `sealcast-loadtest`.
    pub tool_version: String,
    /// `run`, `ramp` or `connections`.
    pub mode: String,
    /// Start time, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// The machine the run used.
    pub machine: Machine,
    /// The offered load.
    pub workload: Workload,
    /// The systems measured, in the order they ran.
    pub systems: Vec<System>,
    /// Every load step, in the order run.
    pub steps: Vec<StepResult>,
    /// Ramp mode: per system, the last step within budget.
    pub ramp: Vec<RampOutcome>,
    /// Connection mode results.
    pub connections: Vec<ConnectionResult>,
    /// Figures of each system relative to the null relay, and of the relay
    /// relative to the Node.js relay.
    pub comparison: Vec<Comparison>,
    /// Whether the run met its pass conditions.
    pub verdict: Verdict,
}

/// The machine the run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// CPU model from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// Total memory from `/proc/meminfo`, KiB.
    pub memory_kib: u64,
    /// Kernel release from `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// One-minute load average from `/proc/loadavg` when the result was
    /// written; above the core count, other processes competed for the CPUs.
    pub load_average_1m: f64,
}

/// The offered load, as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Source of the transcript segments: a folder or the demo file.
    pub transcripts: String,
    /// Consultations loaded.
    pub consultations: usize,
    /// Clinics of the first step.
    pub clinics: usize,
    /// Followers per clinic.
    pub followers_per_clinic: usize,
    /// Frames per second each publisher sends.
    pub rate_per_clinic: f64,
    /// Gap jitter as a fraction of the mean gap.
    pub jitter: f64,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Measurement window, seconds.
    pub duration_s: f64,
    /// Interleaved rounds per system.
    pub rounds: u32,
}

/// One system under test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// `sealcast` or `null`.
    pub name: String,
    /// `in-process`, `child process` or `external`.
    pub placement: String,
    /// Scope of the CPU and memory figures, empty when not measured.
    pub resource_scope: String,
}

/// One load step against one system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepResult {
    /// System name.
    pub system: String,
    /// Round, from 1.
    pub round: u32,
    /// Step within the round, from 1 (ramp mode has several).
    pub step: u32,
    /// Clinics.
    pub clinics: usize,
    /// Followers per clinic.
    pub followers_per_clinic: usize,
    /// Frames per second each publisher sends.
    pub rate_per_clinic: f64,
    /// Frames per second all publishers send together.
    pub offered_fps: f64,
    /// Measurement window actually used, seconds.
    pub measured_s: f64,
    /// Connection figures.
    pub connections: ConnectionStats,
    /// Frame counters.
    pub frames: Counts,
    /// Segment frames sent that some connected follower never opened.
    pub lost_frames: u64,
    /// Followers that did not receive a verified end-of-session frame.
    pub incomplete_followers: u64,
    /// Frames opened by followers per second, counting frames intended in the window.
    pub delivered_fps: f64,
    /// Publisher-to-follower latency after decryption, from the intended send time.
    pub latency: Summary,
    /// Percentile curve of the latency, for plots.
    pub latency_curve: Vec<CurvePoint>,
    /// How late publishers sent relative to the intended time (load generator delay).
    pub send_lag: Summary,
    /// Frames opened and their p99 latency in each second of the step.
    pub timeline: Vec<TimelinePoint>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// CPU and memory of the system, when measured.
    pub resources: Option<Resources>,
    /// No loss, gap, duplicate, decryption error, unacknowledged frame or
    /// failed connection.
    pub passed: bool,
}

/// Frames opened by followers during one second of a step, whatever their intended time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelinePoint {
    /// Seconds since the first frame was due, at the end of the interval.
    pub second: f64,
    /// Frames opened in the interval.
    pub delivered: u64,
    /// p99 latency of those frames, microseconds (0 when none).
    pub p99_us: u64,
}

/// Connection figures of a step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionStats {
    /// Connections attempted.
    pub attempted: u64,
    /// Connections that opened and got the relay's welcome.
    pub opened: u64,
    /// Time from TCP connect to the welcome.
    pub connect: Summary,
}

/// CPU and memory of a system over a step's measurement window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU seconds (user plus system) used inside the window.
    pub cpu_seconds: f64,
    /// CPU use as a percentage of one core.
    pub cpu_percent: f64,
    /// CPU microseconds per delivered frame.
    pub cpu_us_per_delivered_frame: f64,
    /// Resident memory at the window's start, KiB.
    pub rss_start_kib: u64,
    /// Resident memory at the window's end, KiB.
    pub rss_end_kib: u64,
    /// Highest resident memory seen during the step, KiB.
    pub rss_max_kib: u64,
}

/// Ramp outcome of one system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampOutcome {
    /// System name.
    pub system: String,
    /// p99 budget, milliseconds.
    pub budget_ms: f64,
    /// Last step within budget and without loss, `None` when the first failed.
    pub last_passing_step: Option<u32>,
    /// Clinics of that step.
    pub last_passing_clinics: Option<usize>,
    /// Delivered frames per second of that step.
    pub last_passing_delivered_fps: Option<f64>,
    /// Reason the ramp stopped.
    pub stop_reason: String,
}

/// Connection mode result of one system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionResult {
    /// System name.
    pub system: String,
    /// Connections requested.
    pub requested: usize,
    /// Connections open at the measurement.
    pub opened: u64,
    /// Sessions the followers were spread over.
    pub sessions: usize,
    /// Resident memory after creating the sessions, before connecting, KiB.
    pub rss_before_kib: u64,
    /// Resident memory with every connection open and idle, KiB.
    pub rss_after_kib: u64,
    /// `(rss_after - rss_before) / opened`, bytes.
    pub rss_per_connection_bytes: f64,
    /// Whether the memory figures include the load generator (relay in-process).
    pub memory_includes_load_generator: bool,
    /// Time from TCP connect to the welcome.
    pub connect: Summary,
    /// Seconds to open all connections.
    pub setup_s: f64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
}

/// One figure of a system next to the same figure of a reference system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// The figure, for example `delivered_fps` or `latency_p99_us`.
    pub metric: String,
    /// The system compared.
    pub system: String,
    /// Its value, averaged over rounds.
    pub value: f64,
    /// The reference system: `null`, or `node-ws` for the relay.
    pub reference: String,
    /// The reference's value, averaged over rounds.
    pub reference_value: f64,
    /// `value / reference_value`, 0 when the reference value is 0.
    pub ratio: f64,
}

/// The pass or fail decision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// No problem below.
    pub passed: bool,
    /// Each reason the run failed.
    pub problems: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmark record, whose example result must match this schema exactly.
    const BENCHMARKS_DOC: &str = include_str!("../../../docs/benchmarks.md");

    /// Returns the fenced JSON block after the `result-example` marker.
    fn documented_example() -> &'static str {
        let marker = "<!-- result-example -->";
        let after = &BENCHMARKS_DOC[BENCHMARKS_DOC.find(marker).unwrap() + marker.len()..];
        let start = after.find("```json\n").unwrap() + "```json\n".len();
        let end = after[start..].find("\n```").unwrap();
        &after[start..start + end]
    }

    #[test]
    fn documented_example_parses() {
        let result: RunResult = serde_json::from_str(documented_example()).unwrap();
        assert_eq!(result.schema_version, SCHEMA_VERSION);
        assert!(!result.steps.is_empty());
        assert!(!result.comparison.is_empty());
        let step = &result.steps[0];
        assert!(step.latency.p50_us <= step.latency.p99_us);
        assert!(step.latency_curve.len() >= 2);
    }

    #[test]
    fn result_round_trips() {
        let result: RunResult = serde_json::from_str(documented_example()).unwrap();
        let text = serde_json::to_string(&result).unwrap();
        let again: RunResult = serde_json::from_str(&text).unwrap();
        assert_eq!(again, result);
    }

    #[test]
    fn unknown_field_is_rejected() {
        let mut value: serde_json::Value = serde_json::from_str(documented_example()).unwrap();
        value["unexpected"] = serde_json::Value::Bool(true);
        assert!(serde_json::from_value::<RunResult>(value).is_err());
    }
}
