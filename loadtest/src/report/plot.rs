//! `latency.svg`: latency against percentile, one line per step.
//!
//! The horizontal axis counts "nines", `-log10(1 - percentile / 100)`, so
//! 90%, 99%, 99.9% and 99.99% are evenly spaced and the tail stays readable,
//! as in HdrHistogram's percentile plots. The vertical axis is logarithmic
//! from 1 ms, so that systems whose latencies differ a hundredfold share one
//! readable plot. Values below 1 ms, which occur only at the lowest
//! percentiles here, are drawn at 1 ms.

use std::path::Path;

use plotters::prelude::*;

use crate::error::LoadtestError;
use crate::report::schema::{RunResult, StepResult};

/// Bottom of the latency axis in milliseconds; lower values are drawn on it.
const MIN_MS: f64 = 1.0;

/// Largest number of nines drawn: 99.999%.
const MAX_NINES: f64 = 5.0;

/// Line colours, reused in turn.
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// Draws the plot. Returns `false`, writing nothing, when no step has latencies.
pub fn draw(result: &RunResult, path: &Path) -> Result<bool, LoadtestError> {
    let series: Vec<(String, Vec<(f64, f64)>)> = result
        .steps
        .iter()
        .filter(|step| !step.latency_curve.is_empty())
        .map(|step| (label(step), points(step)))
        .collect();
    if series.is_empty() {
        return Ok(false);
    }
    render(&series, path).map_err(|reason| LoadtestError::Plot {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(true)
}

fn label(step: &StepResult) -> String {
    format!(
        "{} r{} s{}: {} clinics, {:.0} fps",
        step.system, step.round, step.step, step.clinics, step.delivered_fps
    )
}

/// Converts a step's curve to (nines, milliseconds).
fn points(step: &StepResult) -> Vec<(f64, f64)> {
    step.latency_curve
        .iter()
        .map(|point| (nines(point.percentile), point.value_us as f64 / 1000.0))
        .collect()
}

fn nines(percentile: f64) -> f64 {
    let remaining = (1.0 - percentile / 100.0).max(10f64.powf(-MAX_NINES));
    (-remaining.log10()).clamp(0.0, MAX_NINES)
}

fn percentile_label(nines: f64) -> String {
    let percentile = 100.0 * (1.0 - 10f64.powf(-nines));
    let text = format!("{percentile:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn render(series: &[(String, Vec<(f64, f64)>)], path: &Path) -> Result<(), String> {
    let max_ms = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(_, ms)| *ms))
        .fold(0.0f64, f64::max)
        .max(2.0 * MIN_MS);
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Publisher-to-follower latency by percentile",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..MAX_NINES, (MIN_MS..max_ms * 1.2).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| percentile_label(*x))
        .x_desc("percentile")
        .y_labels(20)
        .y_label_formatter(&|ms| format!("{ms}"))
        .y_desc("latency (ms, logarithmic)")
        .draw()
        .map_err(|e| e.to_string())?;

    for (index, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_of_common_percentiles() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), MAX_NINES);
        assert_eq!(nines(0.0), 0.0);
    }

    #[test]
    fn percentile_labels_are_short() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
    }
}
