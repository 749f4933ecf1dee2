//! `report.md`: the run's settings, machine, tables, plot and verdict.

use std::fmt::Write;

use crate::report::schema::RunResult;
use crate::report::table::{sections, Cells};

/// Renders the Markdown report; `plot` is the SVG file name next to it, if drawn.
pub fn render(result: &RunResult, plot: Option<&str>) -> String {
    let mut out = String::new();
    let workload = &result.workload;
    let machine = &result.machine;
    let _ = writeln!(out, "# sealcast load test: {} mode\n", result.mode);
    let _ = writeln!(
        out,
        "Machine: {} cores ({}), {:.1} GiB memory, Linux {}, load average {:.2} at the end.\n",
        machine.cores,
        machine.cpu_model,
        machine.memory_kib as f64 / 1024.0 / 1024.0,
        machine.kernel,
        machine.load_average_1m
    );
    let _ = writeln!(
        out,
        "Workload: {} clinics, each 1 publisher and {} followers, {} frames/s per publisher \
         (gap jitter ±{:.0}%), {} s warm-up then {} s measured, {} round(s). \
         Segments from {} ({} consultations).\n",
        workload.clinics,
        workload.followers_per_clinic,
        workload.rate_per_clinic,
        workload.jitter * 100.0,
        workload.warmup_s,
        workload.duration_s,
        workload.rounds,
        workload.transcripts,
        workload.consultations,
    );

    let _ = writeln!(out, "Systems:\n");
    for system in &result.systems {
        let scope = if system.resource_scope.is_empty() {
            "not measured".to_string()
        } else {
            system.resource_scope.clone()
        };
        let _ = writeln!(
            out,
            "- `{}`, {}; CPU and memory: {}",
            system.name, system.placement, scope
        );
    }
    out.push('\n');

    for (title, cells) in sections(result) {
        let _ = writeln!(out, "## {title}\n");
        out.push_str(&markdown_table(&cells));
        out.push('\n');
    }
    if let Some(plot) = plot {
        let _ = writeln!(
            out,
            "## Latency percentiles\n\n![latency percentiles]({plot})\n"
        );
    }

    let verdict = if result.verdict.passed {
        "passed"
    } else {
        "failed"
    };
    let _ = writeln!(out, "## Verdict\n\nThe run {verdict}.");
    for problem in &result.verdict.problems {
        let _ = writeln!(out, "- {problem}");
    }
    out
}

fn markdown_table(cells: &Cells) -> String {
    let mut out = String::new();
    for (index, row) in cells.iter().enumerate() {
        let _ = writeln!(out, "| {} |", row.join(" | "));
        if index == 0 {
            let rule: Vec<&str> = row.iter().map(|_| "---").collect();
            let _ = writeln!(out, "| {} |", rule.join(" | "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_rule_under_the_header() {
        let cells = vec![
            vec!["a".to_string(), "b".to_string()],
            vec!["1".to_string(), "2".to_string()],
        ];
        assert_eq!(
            markdown_table(&cells),
            "| a | b |\n| --- | --- |\n| 1 | 2 |\n"
        );
    }
}
