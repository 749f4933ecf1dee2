//! The server driver: starts the systems under test and runs the chosen
//! mode against each, interleaving systems so that machine drift affects
//! them alike.
//!
//! | module | job |
//! | --- | --- |
//! | [`setup`] | sessions and sockets, authenticated as devices are |
//! | [`step`] | one load step: warm-up, measurement, drain, summary |
//! | [`connections`] | idle connections and memory per connection |
//! | [`sampler`] | CPU and memory readings during a step |
//! | [`workers`] | worker processes of a step (`--processes`) |

pub mod connections;
pub mod sampler;
pub mod setup;
pub mod step;
pub mod workers;

use crate::cli::{Baseline, Mode, RunArgs};
use crate::error::LoadtestError;
use crate::report::schema::{ConnectionResult, RampOutcome, StepResult, System};
use crate::target::Target;
use crate::workload::Transcripts;

use self::step::{run_step, StepPlan};

/// Measurements of every system in one invocation.
#[derive(Debug, Default)]
pub struct Measurements {
    /// The systems, in run order.
    pub systems: Vec<System>,
    /// Every load step.
    pub steps: Vec<StepResult>,
    /// Ramp outcomes.
    pub ramp: Vec<RampOutcome>,
    /// Connection mode results.
    pub connections: Vec<ConnectionResult>,
}

/// Starts the systems, runs the mode and stops the systems again.
pub async fn execute(
    args: &RunArgs,
    transcripts: &Transcripts,
) -> Result<Measurements, LoadtestError> {
    let targets = start_targets(args).await?;
    let mut measurements = Measurements {
        systems: targets.iter().map(describe).collect(),
        ..Measurements::default()
    };

    let outcome = match args.mode {
        Mode::Run => run_rounds(args, transcripts, &targets, &mut measurements).await,
        Mode::Ramp => run_ramp(args, transcripts, &targets, &mut measurements).await,
        Mode::Connections => run_connections(args, &targets, &mut measurements).await,
    };
    for target in targets {
        target.stop().await;
    }
    outcome.map(|()| measurements)
}

async fn start_targets(args: &RunArgs) -> Result<Vec<Target>, LoadtestError> {
    let connections = planned_connections(args);
    let mut targets = vec![Target::sealcast(args, connections).await?];
    for baseline in &args.baseline {
        let started = match baseline {
            Baseline::Null => Target::null(args).await,
            Baseline::NodeWs => Target::node_ws(args).await,
        };
        match started {
            Ok(target) => targets.push(target),
            Err(err) => {
                // A relay started in this process must be stopped, not dropped,
                // because its runtime cannot be dropped inside another runtime.
                for target in targets {
                    target.stop().await;
                }
                return Err(err);
            }
        }
    }
    Ok(targets)
}

/// Returns the maximum number of connections any step of the mode opens at once.
fn planned_connections(args: &RunArgs) -> usize {
    match args.mode {
        Mode::Run => args.clinics * (args.followers + 1),
        Mode::Ramp => ramp_clinics(args, args.ramp_steps) * (args.followers + 1),
        Mode::Connections => args.count + args.count.div_ceil(args.followers_per_session),
    }
}

fn describe(target: &Target) -> System {
    System {
        name: target.name().to_string(),
        placement: target.placement.to_string(),
        resource_scope: target
            .probe
            .as_ref()
            .map(|probe| probe.scope_description())
            .unwrap_or_default(),
    }
}

fn plan(args: &RunArgs, round: u32, step: u32, clinics: usize) -> StepPlan {
    StepPlan {
        round,
        step,
        clinics,
        followers: args.followers,
        rate: args.rate,
        jitter: args.jitter,
        warmup: args.warmup,
        duration: args.duration,
        drain: args.drain,
        source_addrs: args.source_addrs,
        connect_concurrency: args.connect_concurrency,
        processes: args.processes,
        progress: !args.no_progress,
    }
}

async fn run_rounds(
    args: &RunArgs,
    transcripts: &Transcripts,
    targets: &[Target],
    measurements: &mut Measurements,
) -> Result<(), LoadtestError> {
    for round in 1..=args.rounds {
        for target in targets {
            let result = run_step(target, transcripts, &plan(args, round, 1, args.clinics)).await?;
            tracing::info!(
                system = target.name(),
                round,
                passed = result.passed,
                "step finished"
            );
            measurements.steps.push(result);
        }
    }
    Ok(())
}

/// Clinics of ramp step `step` (from 1): the first step's clinics times the factor per step.
fn ramp_clinics(args: &RunArgs, step: u32) -> usize {
    let factor = args.ramp_factor.powi(step.saturating_sub(1) as i32);
    (args.clinics as f64 * factor).ceil() as usize
}

/// Raises the clinics step by step. At each step every system still within
/// budget runs, so the systems alternate as in a round. A step's attempts
/// are numbered as rounds in the results.
async fn run_ramp(
    args: &RunArgs,
    transcripts: &Transcripts,
    targets: &[Target],
    measurements: &mut Measurements,
) -> Result<(), LoadtestError> {
    let mut outcomes: Vec<RampOutcome> = targets
        .iter()
        .map(|target| RampOutcome {
            system: target.name().to_string(),
            budget_ms: args.budget_ms,
            last_passing_step: None,
            last_passing_clinics: None,
            last_passing_delivered_fps: None,
            stop_reason: format!("reached the last step ({})", args.ramp_steps),
        })
        .collect();
    let mut active = vec![true; targets.len()];

    for step in 1..=args.ramp_steps {
        let clinics = ramp_clinics(args, step);
        for (index, target) in targets.iter().enumerate() {
            if !active[index] {
                continue;
            }
            // A failing step runs again up to --ramp-retries times, so that
            // a passing load is not rejected for one burst of outside noise.
            let mut failure = None;
            for attempt in 1..=args.ramp_retries + 1 {
                let result =
                    run_step(target, transcripts, &plan(args, attempt, step, clinics)).await?;
                failure = ramp_failure(&result, args.budget_ms);
                let delivered_fps = result.delivered_fps;
                measurements.steps.push(result);
                if failure.is_none() {
                    outcomes[index].last_passing_step = Some(step);
                    outcomes[index].last_passing_clinics = Some(clinics);
                    outcomes[index].last_passing_delivered_fps = Some(delivered_fps);
                    break;
                }
            }
            if let Some(reason) = failure {
                outcomes[index].stop_reason = format!("step {step} ({clinics} clinics): {reason}");
                active[index] = false;
            }
        }
        if !active.contains(&true) {
            break;
        }
    }
    measurements.ramp = outcomes;
    Ok(())
}

/// Returns why a ramp step fails: over budget, or any loss or error.
fn ramp_failure(result: &StepResult, budget_ms: f64) -> Option<String> {
    let p99_ms = result.latency.p99_us as f64 / 1000.0;
    if !result.passed {
        return Some(format!(
            "{} frames lost, {} gap frames, {} of {} connections opened",
            result.lost_frames,
            result.frames.gap_frames,
            result.connections.opened,
            result.connections.attempted
        ));
    }
    if p99_ms > budget_ms {
        return Some(format!("p99 {p99_ms:.2} ms over the {budget_ms} ms budget"));
    }
    None
}

async fn run_connections(
    args: &RunArgs,
    targets: &[Target],
    measurements: &mut Measurements,
) -> Result<(), LoadtestError> {
    for target in targets {
        let result = connections::run(target, args).await?;
        measurements.connections.push(result);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_run_on_both_systems_loses_nothing() {
        let cli = Cli::try_parse_from([
            "sealcast-loadtest",
            "--clinics",
            "3",
            "--rate",
            "20",
            "--warmup",
            "300ms",
            "--duration",
            "1s",
            "--baseline",
            "null",
            "--no-progress",
        ])
        .unwrap();
        let transcripts = Transcripts::load(None).unwrap();
        let measurements = execute(&cli.run, &transcripts).await.unwrap();

        assert_eq!(measurements.systems.len(), 2);
        assert_eq!(measurements.steps.len(), 2);
        for step in &measurements.steps {
            assert!(step.passed, "{step:#?}");
            assert_eq!(step.lost_frames, 0, "{}", step.system);
            assert_eq!(step.connections.opened, 9, "{}", step.system);
            assert!(step.frames.frames_sent >= 3 * 20, "{}", step.system);
            assert_eq!(
                step.frames.frames_delivered,
                2 * step.frames.frames_sent,
                "{}",
                step.system
            );
            assert_eq!(step.frames.frames_acknowledged, step.frames.frames_sent);
            assert!(step.latency.count > 0, "{}", step.system);
            assert!(step.resources.is_some(), "{}", step.system);
        }
    }

    #[test]
    fn ramp_clinics_grow_by_the_factor() {
        let cli = Cli::try_parse_from([
            "sealcast-loadtest",
            "--mode",
            "ramp",
            "--clinics",
            "10",
            "--ramp-factor",
            "2",
        ])
        .unwrap();
        assert_eq!(ramp_clinics(&cli.run, 1), 10);
        assert_eq!(ramp_clinics(&cli.run, 2), 20);
        assert_eq!(ramp_clinics(&cli.run, 4), 80);
    }
}
