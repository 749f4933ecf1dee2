//! The result as tables of cells, printed aligned on standard output and
//! reused by the Markdown report.

use crate::report::schema::{Comparison, ConnectionResult, RampOutcome, RunResult, StepResult};

/// A table: the header, then rows of cells of the same length.
pub type Cells = Vec<Vec<String>>;

/// Renders the whole result as aligned plain-text tables.
pub fn render(result: &RunResult) -> String {
    let mut out = String::new();
    for (title, cells) in sections(result) {
        out.push_str(title);
        out.push('\n');
        out.push_str(&align(&cells));
        out.push('\n');
    }
    let verdict = if result.verdict.passed {
        "PASSED"
    } else {
        "FAILED"
    };
    out.push_str(&format!("verdict: {verdict}\n"));
    for problem in &result.verdict.problems {
        out.push_str(&format!("  - {problem}\n"));
    }
    out
}

/// Returns the non-empty tables of a result, with titles.
pub fn sections(result: &RunResult) -> Vec<(&'static str, Cells)> {
    let mut sections = Vec::new();
    if !result.steps.is_empty() {
        sections.push((
            "Load steps (latency in ms, publisher to follower after decryption)",
            steps(&result.steps),
        ));
    }
    if !result.ramp.is_empty() {
        sections.push(("Ramp", ramp(&result.ramp)));
    }
    if !result.connections.is_empty() {
        sections.push(("Idle connections", connections(&result.connections)));
    }
    if !result.comparison.is_empty() {
        sections.push((
            "Compared with the reference systems",
            comparison(&result.comparison),
        ));
    }
    sections
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

/// Builds the step table, one row per step.
pub fn steps(steps: &[StepResult]) -> Cells {
    let header = [
        "system",
        "round",
        "step",
        "clinics",
        "offered fps",
        "delivered fps",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "send lag p99",
        "lost",
        "gaps",
        "dup",
        "decrypt",
        "connections",
        "connect p99",
        "CPU %",
        "CPU µs/frame",
        "RSS max MiB",
        "passed",
    ];
    let mut cells = vec![header.iter().map(|h| h.to_string()).collect()];
    for step in steps {
        let resources = step.resources.unwrap_or_default();
        let measured = step.resources.is_some();
        let or_dash = |text: String| if measured { text } else { "-".into() };
        cells.push(vec![
            step.system.clone(),
            step.round.to_string(),
            step.step.to_string(),
            step.clinics.to_string(),
            format!("{:.0}", step.offered_fps),
            format!("{:.0}", step.delivered_fps),
            ms(step.latency.p50_us),
            ms(step.latency.p90_us),
            ms(step.latency.p99_us),
            ms(step.latency.p999_us),
            ms(step.latency.max_us),
            ms(step.send_lag.p99_us),
            step.lost_frames.to_string(),
            step.frames.gap_frames.to_string(),
            step.frames.duplicates.to_string(),
            step.frames.decrypt_errors.to_string(),
            format!("{}/{}", step.connections.opened, step.connections.attempted),
            ms(step.connections.connect.p99_us),
            or_dash(format!("{:.0}", resources.cpu_percent)),
            or_dash(format!("{:.1}", resources.cpu_us_per_delivered_frame)),
            or_dash(format!("{:.1}", resources.rss_max_kib as f64 / 1024.0)),
            if step.passed { "yes" } else { "no" }.to_string(),
        ]);
    }
    cells
}

fn ramp(outcomes: &[RampOutcome]) -> Cells {
    let mut cells = vec![vec![
        "system".to_string(),
        "p99 budget ms".into(),
        "last passing step".into(),
        "clinics".into(),
        "delivered fps".into(),
        "stopped because".into(),
    ]];
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    for outcome in outcomes {
        cells.push(vec![
            outcome.system.clone(),
            format!("{}", outcome.budget_ms),
            or_dash(outcome.last_passing_step.map(|s| s.to_string())),
            or_dash(outcome.last_passing_clinics.map(|c| c.to_string())),
            or_dash(
                outcome
                    .last_passing_delivered_fps
                    .map(|f| format!("{f:.0}")),
            ),
            outcome.stop_reason.clone(),
        ]);
    }
    cells
}

fn connections(results: &[ConnectionResult]) -> Cells {
    let mut cells = vec![vec![
        "system".to_string(),
        "requested".into(),
        "opened".into(),
        "RSS before MiB".into(),
        "RSS after MiB".into(),
        "KiB per connection".into(),
        "includes load generator".into(),
        "connect p99 ms".into(),
        "setup s".into(),
    ]];
    for result in results {
        cells.push(vec![
            result.system.clone(),
            result.requested.to_string(),
            result.opened.to_string(),
            format!("{:.1}", result.rss_before_kib as f64 / 1024.0),
            format!("{:.1}", result.rss_after_kib as f64 / 1024.0),
            format!("{:.1}", result.rss_per_connection_bytes / 1024.0),
            if result.memory_includes_load_generator {
                "yes"
            } else {
                "no"
            }
            .to_string(),
            ms(result.connect.p99_us),
            format!("{:.1}", result.setup_s),
        ]);
    }
    cells
}

fn comparison(comparisons: &[Comparison]) -> Cells {
    let mut cells = vec![vec![
        "system".to_string(),
        "figure".into(),
        "value".into(),
        "reference".into(),
        "reference value".into(),
        "ratio".into(),
    ]];
    for comparison in comparisons {
        cells.push(vec![
            comparison.system.clone(),
            comparison.metric.clone(),
            format!("{:.1}", comparison.value),
            comparison.reference.clone(),
            format!("{:.1}", comparison.reference_value),
            format!("{:.2}", comparison.ratio),
        ]);
    }
    cells
}

/// Pads every column to its widest cell.
fn align(cells: &Cells) -> String {
    let columns = cells.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            cells
                .iter()
                .map(|row| row.get(column).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_the_widest_cell() {
        let cells = vec![
            vec!["a".to_string(), "bb".to_string()],
            vec!["ccc".to_string(), "d".to_string()],
        ];
        assert_eq!(align(&cells), "a    bb\nccc  d\n");
    }
}
