//! Ratios to the null relay, and the pass or fail verdict.

use crate::report::schema::{Comparison, ConnectionResult, RampOutcome, StepResult, Verdict};

/// Name of the physical-limit reference in results.
const NULL: &str = "null";
/// Name of the hand-written Node.js relay in results.
const NODE_WS: &str = "node-ws";
/// Name of the relay under test in results.
const SEALCAST: &str = "sealcast";

/// Compares each system with the null relay, and the relay with the Node.js
/// relay: in run mode the mean over rounds of each figure, in ramp mode the
/// last passing throughput.
pub fn compare(steps: &[StepResult], ramp: &[RampOutcome]) -> Vec<Comparison> {
    let mut pairs: Vec<(String, &str)> = Vec::new();
    let names = if ramp.is_empty() {
        system_names(steps)
    } else {
        ramp.iter().map(|outcome| outcome.system.clone()).collect()
    };
    if names.iter().any(|name| name == NULL) {
        for name in names.iter().filter(|name| *name != NULL) {
            pairs.push((name.clone(), NULL));
        }
    }
    if names.iter().any(|name| name == NODE_WS) && names.iter().any(|name| name == SEALCAST) {
        pairs.push((SEALCAST.to_string(), NODE_WS));
    }

    let mut comparisons = Vec::new();
    for (system, reference) in pairs {
        if ramp.is_empty() {
            for (metric, figure) in FIGURES {
                let value = mean(steps, &system, *figure);
                let reference_value = mean(steps, reference, *figure);
                if let (Some(value), Some(reference_value)) = (value, reference_value) {
                    comparisons.push(comparison(
                        metric,
                        &system,
                        value,
                        reference,
                        reference_value,
                    ));
                }
            }
        } else {
            let passing = |name: &str| {
                ramp.iter()
                    .find(|outcome| outcome.system == name)
                    .and_then(|outcome| outcome.last_passing_delivered_fps)
            };
            if let (Some(value), Some(reference_value)) = (passing(&system), passing(reference)) {
                let metric = "max_delivered_fps_within_budget";
                comparisons.push(comparison(
                    metric,
                    &system,
                    value,
                    reference,
                    reference_value,
                ));
            }
        }
    }
    comparisons
}

type Figure = fn(&StepResult) -> Option<f64>;

/// Figures compared in run mode.
const FIGURES: &[(&str, Figure)] = &[
    ("delivered_fps", |step| Some(step.delivered_fps)),
    ("latency_p50_us", |step| Some(step.latency.p50_us as f64)),
    ("latency_p99_us", |step| Some(step.latency.p99_us as f64)),
    ("latency_max_us", |step| Some(step.latency.max_us as f64)),
    ("cpu_us_per_delivered_frame", |step| {
        step.resources.map(|r| r.cpu_us_per_delivered_frame)
    }),
    ("rss_max_kib", |step| {
        step.resources.map(|r| r.rss_max_kib as f64)
    }),
];

fn comparison(
    metric: &str,
    system: &str,
    value: f64,
    reference: &str,
    reference_value: f64,
) -> Comparison {
    Comparison {
        metric: metric.to_string(),
        system: system.to_string(),
        value,
        reference: reference.to_string(),
        reference_value,
        ratio: if reference_value == 0.0 {
            0.0
        } else {
            value / reference_value
        },
    }
}

fn system_names(steps: &[StepResult]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for step in steps {
        if !names.contains(&step.system) {
            names.push(step.system.clone());
        }
    }
    names
}

fn mean(steps: &[StepResult], system: &str, figure: Figure) -> Option<f64> {
    let values: Vec<f64> = steps
        .iter()
        .filter(|step| step.system == system)
        .filter_map(figure)
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(values.iter().sum::<f64>() / values.len() as f64)
}

/// Decides whether the run passed. Every step must be free of loss, gaps,
/// duplicates, decryption errors, unacknowledged frames and failed connections, except that ramp
/// steps may lose frames (loss ends a ramp) but never duplicate or corrupt
/// them. Connection mode must open every requested connection.
pub fn verdict(steps: &[StepResult], ramp_mode: bool, connections: &[ConnectionResult]) -> Verdict {
    let mut problems = Vec::new();
    for step in steps {
        let name = format!("{} round {} step {}", step.system, step.round, step.step);
        if step.frames.duplicates > 0 {
            problems.push(format!(
                "{name}: {} duplicate frames",
                step.frames.duplicates
            ));
        }
        if step.frames.decrypt_errors > 0 {
            problems.push(format!(
                "{name}: {} frames failed to decrypt",
                step.frames.decrypt_errors
            ));
        }
        if ramp_mode {
            continue;
        }
        if step.lost_frames > 0 {
            problems.push(format!("{name}: {} frames lost", step.lost_frames));
        }
        if step.frames.gap_frames > 0 {
            problems.push(format!(
                "{name}: {} final frames missing in gaps",
                step.frames.gap_frames
            ));
        }
        let unacknowledged =
            step.frames.frames_sent - step.frames.frames_acknowledged.min(step.frames.frames_sent);
        if unacknowledged > 0 {
            problems.push(format!(
                "{name}: {unacknowledged} frames not acknowledged by the relay"
            ));
        }
        if step.incomplete_followers > 0 {
            problems.push(format!(
                "{name}: {} followers without a verified end of session",
                step.incomplete_followers
            ));
        }
        if step.connections.opened < step.connections.attempted {
            problems.push(format!(
                "{name}: {} of {} connections opened",
                step.connections.opened, step.connections.attempted
            ));
        }
    }
    for result in connections {
        if result.opened < result.requested as u64 {
            problems.push(format!(
                "{} connections: {} of {} opened",
                result.system, result.opened, result.requested
            ));
        }
    }
    Verdict {
        passed: problems.is_empty(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::schema::ConnectionStats;
    use crate::stats::summary::Summary;
    use crate::stats::Counts;

    fn step(system: &str, delivered_fps: f64, p99_us: u64) -> StepResult {
        StepResult {
            system: system.to_string(),
            round: 1,
            step: 1,
            clinics: 10,
            followers_per_clinic: 2,
            rate_per_clinic: 3.0,
            offered_fps: 30.0,
            measured_s: 10.0,
            connections: ConnectionStats {
                attempted: 30,
                opened: 30,
                connect: Summary::default(),
            },
            frames: Counts::default(),
            lost_frames: 0,
            incomplete_followers: 0,
            delivered_fps,
            latency: Summary {
                p99_us,
                ..Summary::default()
            },
            latency_curve: Vec::new(),
            send_lag: Summary::default(),
            timeline: Vec::new(),
            errors: Default::default(),
            resources: None,
            passed: true,
        }
    }

    #[test]
    fn ratios_use_the_mean_over_rounds() {
        let steps = [
            step("sealcast", 50.0, 2000),
            step("null", 60.0, 1000),
            step("sealcast", 70.0, 4000),
            step("null", 60.0, 1000),
        ];
        let comparisons = compare(&steps, &[]);
        let fps = comparisons
            .iter()
            .find(|c| c.metric == "delivered_fps")
            .unwrap();
        assert_eq!(fps.value, 60.0);
        assert_eq!(fps.ratio, 1.0);
        let p99 = comparisons
            .iter()
            .find(|c| c.metric == "latency_p99_us")
            .unwrap();
        assert_eq!(p99.ratio, 3.0);
        assert!(comparisons.iter().all(|c| c.metric != "rss_max_kib"));
    }

    #[test]
    fn relay_is_compared_with_node_relay() {
        let steps = [
            step("sealcast", 90.0, 2000),
            step("null", 100.0, 1000),
            step("node-ws", 30.0, 8000),
        ];
        let comparisons = compare(&steps, &[]);
        let node = comparisons
            .iter()
            .find(|c| c.metric == "delivered_fps" && c.reference == "node-ws")
            .unwrap();
        assert_eq!(node.system, "sealcast");
        assert_eq!(node.ratio, 3.0);
        let node_to_null = comparisons
            .iter()
            .find(|c| c.system == "node-ws" && c.metric == "delivered_fps")
            .unwrap();
        assert_eq!(node_to_null.reference, "null");
    }

    #[test]
    fn no_null_relay_means_no_comparison() {
        assert!(compare(&[step("sealcast", 1.0, 1)], &[]).is_empty());
    }

    #[test]
    fn loss_fails_a_run_but_not_a_ramp() {
        let mut lossy = step("sealcast", 10.0, 1000);
        lossy.lost_frames = 4;
        lossy.passed = false;
        let run = verdict(std::slice::from_ref(&lossy), false, &[]);
        assert!(!run.passed);
        assert_eq!(run.problems, ["sealcast round 1 step 1: 4 frames lost"]);
        assert!(verdict(std::slice::from_ref(&lossy), true, &[]).passed);
    }

    #[test]
    fn duplicates_and_decryption_errors_always_fail() {
        let mut broken = step("sealcast", 10.0, 1000);
        broken.frames.duplicates = 1;
        broken.frames.decrypt_errors = 2;
        let ramp = verdict(&[broken], true, &[]);
        assert!(!ramp.passed);
        assert_eq!(ramp.problems.len(), 2);
    }

    #[test]
    fn unacknowledged_frames_fail_a_run() {
        let mut step = step("sealcast", 10.0, 1000);
        step.frames.frames_sent = 10;
        step.frames.frames_acknowledged = 7;
        let verdict = verdict(&[step], false, &[]);
        assert_eq!(
            verdict.problems,
            ["sealcast round 1 step 1: 3 frames not acknowledged by the relay"]
        );
    }

    #[test]
    fn clean_steps_pass() {
        assert!(
            verdict(
                &[step("sealcast", 10.0, 1000), step("null", 10.0, 900)],
                false,
                &[]
            )
            .passed
        );
    }
}
