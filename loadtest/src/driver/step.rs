//! One load step: create the clinics, connect them, run the open-loop load
//! through warm-up, measurement and drain, and summarize what happened.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use sealcast_client::RelayApi;
use sealcast_protocol::{StreamOpener, StreamSealer};

use super::sampler;
use super::setup::{connect_clinics, create_clinics, relay_api, ConnectedClinic};
use super::workers::WorkerPool;
use crate::client::follower::{self, FollowerOutcome, FollowerRun};
use crate::client::publisher::{self, PublisherOutcome, PublisherRun};
use crate::client::socket::{Dialer, NodeDialers};
use crate::client::Timing;
use crate::error::LoadtestError;
use crate::progress::{Progress, RemoteProgress};
use crate::report::schema::{ConnectionStats, StepResult};
use crate::stats::summary::{curve, Summary};
use crate::stats::Recorder;
use crate::target::Target;
use crate::worker::message::WorkerReport;
use crate::worker::split::FollowerSplit;
use crate::workload::{monotonic_micros, Schedule, Transcripts};

/// Time between the last connection opening and the first frame.
const LEAD: Duration = Duration::from_millis(300);

/// The load of one step.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// Round, from 1.
    pub round: u32,
    /// Step within the round, from 1.
    pub step: u32,
    /// Clinics.
    pub clinics: usize,
    /// Followers per clinic.
    pub followers: usize,
    /// Frames per second per publisher.
    pub rate: f64,
    /// Gap jitter fraction.
    pub jitter: f64,
    /// Warm-up.
    pub warmup: Duration,
    /// Measurement window.
    pub duration: Duration,
    /// Maximum wait after the window.
    pub drain: Duration,
    /// Loopback source addresses.
    pub source_addrs: u8,
    /// Parallel connection attempts in each process.
    pub connect_concurrency: usize,
    /// Processes that hold followers, this one included.
    pub processes: usize,
    /// Whether to show progress.
    pub progress: bool,
}

/// Runs one step against `target`. Followers assigned to worker processes
/// run there, and their statistics are merged before the summary.
pub async fn run_step(
    target: &Target,
    transcripts: &Transcripts,
    plan: &StepPlan,
) -> Result<StepResult, LoadtestError> {
    let recorder = Arc::new(Recorder::new());
    let label = format!("{} round {} step {}", target.name(), plan.round, plan.step);
    let mut progress = Progress::new(&label, plan.progress);

    progress.set_phase(&format!("creating {} sessions", plan.clinics));
    let api = relay_api(target)?;
    let clinics = create_clinics(target, &api, plan.clinics, plan.connect_concurrency).await?;

    let split = FollowerSplit::new(plan.clinics, plan.followers, plan.processes);
    if split.processes() > 1 {
        progress.set_phase("starting worker processes");
    }
    let mut workers = WorkerPool::start(target, &clinics, &split, plan).await?;

    progress.set_phase("connecting");
    let tls = target.websocket_tls()?;
    let dialer = Arc::new(Dialer::new(target.addr, tls.clone(), plan.source_addrs));
    let follower_nodes = Arc::new(NodeDialers::new(
        target
            .follower_endpoints()
            .into_iter()
            .map(|node| (node.base_url, node.addr))
            .collect(),
        tls,
        plan.source_addrs,
    ));
    let connected = connect_clinics(
        target,
        dialer,
        follower_nodes,
        clinics,
        &split,
        plan.connect_concurrency,
        Arc::clone(&recorder),
    )
    .await;
    if workers.len() > 0 {
        progress.set_phase("waiting for the worker processes to connect");
    }
    let remote_opened = workers.wait_connected().await?;

    let timing = Timing::new(LEAD, plan.warmup, plan.duration, plan.drain);
    workers.start_step(&timing).await?;
    recorder.set_window(
        monotonic_micros(timing.measure_start),
        monotonic_micros(timing.stop),
    );
    let sampling = target
        .probe
        .clone()
        .map(|probe| sampler::spawn(probe, timing.measure_start, timing.stop));
    let expected_connections = (plan.clinics * (plan.followers + 1)) as u64;
    let remote = (workers.len() > 0).then(|| RemoteProgress {
        workers: workers.len(),
        followers_opened: remote_opened,
    });
    let expected_here = expected_connections - workers.attempted() as u64;
    progress.follow_step(Arc::clone(&recorder), timing, expected_here, remote);

    let tasks: Vec<_> = connected
        .into_iter()
        .map(|clinic| {
            let run = ClinicRun {
                api: api.clone(),
                transcripts: transcripts.clone(),
                schedule: Schedule::new(plan.rate, plan.jitter),
                timing,
                recorder: Arc::clone(&recorder),
                followers_per_clinic: plan.followers,
            };
            tokio::spawn(run_clinic(clinic, run))
        })
        .collect();
    let mut outcomes = BTreeMap::new();
    for task in tasks {
        match task.await {
            Ok(outcome) => {
                outcomes.insert(outcome.index, outcome);
            }
            Err(err) => tracing::error!(error = %err, "a clinic task failed"),
        }
    }

    let reports = workers.collect(&timing).await?;
    let remote_timeline = merge_reports(&recorder, &mut outcomes, &reports)?;
    let mut totals = LossTotals::default();
    for outcome in outcomes.values() {
        totals.add(outcome);
    }

    let window = match sampling {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    let timeline = progress.finish_step(remote_timeline);
    let mut result = summarize(
        plan,
        target,
        &recorder,
        &totals,
        window,
        expected_connections,
    );
    result.timeline = timeline;
    Ok(result)
}

/// Adds the workers' statistics to `recorder` and their followers' outcomes
/// to the clinics they followed, and returns their timeline seconds.
fn merge_reports(
    recorder: &Recorder,
    outcomes: &mut BTreeMap<usize, ClinicOutcome>,
    reports: &[(usize, WorkerReport)],
) -> Result<Vec<(u64, Histogram<u64>)>, LoadtestError> {
    let mut timeline = Vec::new();
    for (number, report) in reports {
        let invalid = |reason: String| LoadtestError::Worker {
            worker: format!("load-test worker {number}"),
            reason: format!("sent an invalid report: {reason}"),
        };
        let histograms = report.histograms().map_err(invalid)?;
        timeline.extend(report.timeline().map_err(invalid)?);
        recorder.absorb(&report.counts, &report.errors, &histograms);
        for follower in &report.followers {
            // A clinic whose task failed sent nothing, so its remote
            // followers count against zero frames sent.
            outcomes
                .entry(follower.clinic)
                .or_insert_with(|| ClinicOutcome {
                    index: follower.clinic,
                    publisher: PublisherOutcome::default(),
                    followers: Vec::new(),
                })
                .followers
                .push(follower.outcome);
        }
    }
    Ok(timeline)
}

/// Inputs of a clinic task besides its sockets.
struct ClinicRun {
    api: RelayApi,
    transcripts: Transcripts,
    schedule: Schedule,
    timing: Timing,
    recorder: Arc<Recorder>,
    followers_per_clinic: usize,
}

/// Outcome of one clinic's devices.
struct ClinicOutcome {
    index: usize,
    publisher: PublisherOutcome,
    followers: Vec<FollowerOutcome>,
}

/// Runs a clinic: followers read while the publisher sends; once the
/// publisher is done and acknowledged, the session is ended, which ends the followers.
async fn run_clinic(connected: ConnectedClinic, run: ClinicRun) -> ClinicOutcome {
    let ConnectedClinic {
        clinic,
        publisher,
        followers,
    } = connected;
    let followers: Vec<_> = followers
        .into_iter()
        .map(|(number, socket)| {
            let follower_run = FollowerRun {
                key: clinic.index * (run.followers_per_clinic + 1) + number,
                opener: StreamOpener::new(clinic.key.clone(), clinic.session_id),
                timing: run.timing,
                recorder: Arc::clone(&run.recorder),
            };
            tokio::spawn(follower::run(socket, follower_run))
        })
        .collect();

    let mut publisher_outcome = PublisherOutcome::default();
    if let Some(socket) = publisher {
        let publisher_run = PublisherRun {
            key: clinic.index,
            sealer: StreamSealer::new(&clinic.key, clinic.session_id),
            script: run.transcripts.script_for(clinic.index),
            schedule: run.schedule,
            timing: run.timing,
            recorder: Arc::clone(&run.recorder),
        };
        publisher_outcome = publisher::run(socket, publisher_run).await;
    }
    if let Err(err) = run
        .api
        .end_session(&clinic.session_id, clinic.staff.as_ref())
        .await
    {
        tracing::debug!(error = %err, session_id = %clinic.session_id, "failed to end a session");
        run.recorder.count_error("end session failed");
    }

    let mut outcomes = Vec::with_capacity(followers.len());
    for task in followers {
        outcomes.extend(task.await.ok());
    }
    ClinicOutcome {
        index: clinic.index,
        publisher: publisher_outcome,
        followers: outcomes,
    }
}

/// Frames lost and followers left incomplete, over all clinics.
#[derive(Debug, Default)]
struct LossTotals {
    lost_frames: u64,
    incomplete_followers: u64,
}

impl LossTotals {
    fn add(&mut self, clinic: &ClinicOutcome) {
        let sent = clinic.publisher.segments_sent;
        for follower in &clinic.followers {
            self.lost_frames += sent.saturating_sub(follower.segments_opened);
            if !(follower.end_verified && follower.ended) {
                self.incomplete_followers += 1;
            }
        }
    }
}

fn summarize(
    plan: &StepPlan,
    target: &Target,
    recorder: &Recorder,
    totals: &LossTotals,
    window: Option<sampler::Window>,
    expected_connections: u64,
) -> StepResult {
    let histograms = recorder.histograms();
    let frames = recorder.counts();
    let measured_s = plan.duration.as_secs_f64();
    let connections = ConnectionStats {
        attempted: expected_connections,
        opened: histograms.connect.len(),
        connect: Summary::of(&histograms.connect),
    };
    let passed = totals.lost_frames == 0
        && totals.incomplete_followers == 0
        && frames.gap_frames == 0
        && frames.duplicates == 0
        && frames.decrypt_errors == 0
        && frames.frames_acknowledged == frames.frames_sent
        && connections.opened == connections.attempted;
    StepResult {
        system: target.name().to_string(),
        round: plan.round,
        step: plan.step,
        clinics: plan.clinics,
        followers_per_clinic: plan.followers,
        rate_per_clinic: plan.rate,
        offered_fps: plan.clinics as f64 * plan.rate,
        measured_s,
        connections,
        delivered_fps: frames.frames_delivered_in_window as f64 / measured_s,
        resources: window.map(|w| sampler::resources(&w, frames.frames_delivered_in_window)),
        frames,
        lost_frames: totals.lost_frames,
        incomplete_followers: totals.incomplete_followers,
        latency: Summary::of(&histograms.latency),
        latency_curve: curve(&histograms.latency),
        send_lag: Summary::of(&histograms.send_lag),
        timeline: Vec::new(),
        errors: recorder.errors(),
        passed,
    }
}
