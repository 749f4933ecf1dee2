//! Statistics turned into output: the JSON result, the table on standard
//! output, the Markdown report and its SVG latency plot.
//!
//! | module | job |
//! | --- | --- |
//! | [`schema`] | the JSON result's types |
//! | [`compare`] | ratios to the null relay and the verdict |
//! | [`table`] | the plain-text table |
//! | [`markdown`] | `report.md` |
//! | [`plot`] | `latency.svg` |

pub mod compare;
pub mod markdown;
pub mod plot;
pub mod schema;
pub mod table;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::{Mode, RunArgs};
use crate::driver::Measurements;
use crate::error::LoadtestError;
use crate::workload::Transcripts;

use self::schema::{Machine, RunResult, Workload, SCHEMA_VERSION};

/// File names inside the output folder.
pub const RESULT_FILE: &str = "result.json";
/// Markdown report.
pub const REPORT_FILE: &str = "report.md";
/// Latency percentile plot.
pub const PLOT_FILE: &str = "latency.svg";

/// Assembles the result of a finished run.
pub fn build(
    args: &RunArgs,
    transcripts: &Transcripts,
    measurements: Measurements,
    started: SystemTime,
) -> RunResult {
    let ramp_mode = args.mode == Mode::Ramp;
    let comparison = compare::compare(&measurements.steps, &measurements.ramp);
    let verdict = compare::verdict(&measurements.steps, ramp_mode, &measurements.connections);
    RunResult {
        schema_version: SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        mode: mode_name(args.mode).to_string(),
        started_unix_s: started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()),
        machine: machine(),
        workload: Workload {
            transcripts: transcripts.source().to_string(),
            consultations: transcripts.consultation_count(),
            clinics: args.clinics,
            followers_per_clinic: args.followers,
            rate_per_clinic: args.rate,
            jitter: args.jitter,
            warmup_s: args.warmup.as_secs_f64(),
            duration_s: args.duration.as_secs_f64(),
            rounds: args.rounds,
        },
        systems: measurements.systems,
        steps: measurements.steps,
        ramp: measurements.ramp,
        connections: measurements.connections,
        comparison,
        verdict,
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Run => "run",
        Mode::Ramp => "ramp",
        Mode::Connections => "connections",
    }
}

/// Writes `result.json`, `report.md` and, when there are latencies, `latency.svg`.
/// Returns the paths written.
pub fn write_all(result: &RunResult, folder: &Path) -> Result<Vec<PathBuf>, LoadtestError> {
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoadtestError::Write { path, source }
    };
    fs::create_dir_all(folder).map_err(write_error(folder))?;

    let json_path = folder.join(RESULT_FILE);
    let json = serde_json::to_string_pretty(result).unwrap_or_default();
    fs::write(&json_path, json + "\n").map_err(write_error(&json_path))?;
    let mut written = vec![json_path];

    let plot_path = folder.join(PLOT_FILE);
    let has_plot = plot::draw(result, &plot_path)?;
    if has_plot {
        written.push(plot_path);
    }
    let report_path = folder.join(REPORT_FILE);
    let report = markdown::render(result, has_plot.then_some(PLOT_FILE));
    fs::write(&report_path, report).map_err(write_error(&report_path))?;
    written.push(report_path);
    Ok(written)
}

/// Reads the machine's CPU model, core count, memory and kernel from `/proc`.
pub fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    Machine {
        cpu_model,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_kib,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        load_average_1m: fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0),
    }
}
