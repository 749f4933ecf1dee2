//! The worker processes of one step, coordinator side: assign followers,
//! wait until they are connected, start them on the step's time line and
//! collect their reports. Every wait has a deadline, and a worker that
//! exits or stays silent fails the step with an error that names it.

use std::time::{Duration, Instant};

use super::setup::Clinic;
use super::step::StepPlan;
use crate::client::socket::CONNECT_TIMEOUT;
use crate::client::Timing;
use crate::error::LoadtestError;
use crate::target::Target;
use crate::worker::message::{
    Assignment, FollowedClinic, FromWorker, NodeAddress, RelayAddress, RelayTls, ToWorker,
    WorkerReport,
};
use crate::worker::process::WorkerProcess;
use crate::worker::split::FollowerSplit;

/// Time a worker has to start and parse its assignment, on top of its connection attempts.
const START_GRACE: Duration = Duration::from_secs(30);
/// Time after the drain deadline for a worker to close its sockets and report.
const REPORT_GRACE: Duration = Duration::from_secs(15);
/// Line buffer bytes per clinic in an assignment. From the field sizes, a
/// clinic's JSON is about 200 bytes.
const ASSIGNMENT_BYTES_PER_CLINIC: usize = 256;

/// The running workers of one step; empty with `--processes 1`.
#[derive(Default)]
pub struct WorkerPool {
    workers: Vec<AssignedWorker>,
}

struct AssignedWorker {
    process: WorkerProcess,
    attempted: usize,
    connect_deadline: Instant,
}

impl WorkerPool {
    /// Starts a worker for every process of `split` after the coordinator
    /// that has followers, and sends each its assignment.
    pub async fn start(
        target: &Target,
        clinics: &[Clinic],
        split: &FollowerSplit,
        plan: &StepPlan,
    ) -> Result<WorkerPool, LoadtestError> {
        let relay = RelayAddress {
            base_url: target.base_url.to_string(),
            addr: target.addr,
            follower_nodes: target
                .follower_nodes
                .iter()
                .map(|node| NodeAddress {
                    base_url: node.base_url.to_string(),
                    addr: node.addr,
                })
                .collect(),
            tls: target.tls.as_ref().map(|_| RelayTls {
                ca_cert: target.ca_cert.clone(),
            }),
        };
        let mut pool = WorkerPool::default();
        for number in 1..split.processes() {
            let followed: Vec<FollowedClinic> = split
                .clinics_of(number)
                .into_iter()
                .filter_map(|(index, followers)| {
                    let clinic = clinics.iter().find(|clinic| clinic.index == index)?;
                    Some(FollowedClinic::new(
                        index,
                        clinic.session_id,
                        &clinic.key,
                        &clinic.invite_token,
                        followers,
                    ))
                })
                .collect();
            let attempted: usize = followed.iter().map(|clinic| clinic.followers.len()).sum();
            if attempted == 0 {
                tracing::debug!(worker = number, "no followers for this worker: not started");
                continue;
            }

            let mut process = WorkerProcess::spawn(number)?;
            let capacity = followed.len() * ASSIGNMENT_BYTES_PER_CLINIC + 1024;
            let assignment = ToWorker::Assignment(Assignment {
                worker: number,
                relay: relay.clone(),
                source_addrs: plan.source_addrs,
                connect_concurrency: plan.connect_concurrency,
                followers_per_clinic: plan.followers,
                clinics: followed,
            });
            process.send(&assignment, capacity).await?;
            pool.workers.push(AssignedWorker {
                process,
                attempted,
                connect_deadline: Instant::now()
                    + connect_bound(attempted, plan.connect_concurrency),
            });
        }
        Ok(pool)
    }

    /// Returns the number of workers started.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Returns the follower connections assigned to workers.
    pub fn attempted(&self) -> usize {
        self.workers.iter().map(|worker| worker.attempted).sum()
    }

    /// Waits until every worker has finished its connection attempts and
    /// returns how many followers opened in all workers together.
    pub async fn wait_connected(&mut self) -> Result<u64, LoadtestError> {
        let mut opened_total = 0;
        for worker in &mut self.workers {
            let message = worker
                .process
                .receive(worker.connect_deadline, "its connection count")
                .await?;
            match message {
                FromWorker::Connected { opened, attempted } => {
                    tracing::info!(
                        worker = worker.process.number(),
                        pid = worker.process.pid(),
                        opened,
                        attempted,
                        "worker followers connected"
                    );
                    opened_total += opened;
                }
                other => {
                    return Err(worker.process.failure(format!(
                        "sent {} instead of its connection count",
                        kind(&other)
                    )));
                }
            }
        }
        Ok(opened_total)
    }

    /// Sends the step's time line to every worker.
    pub async fn start_step(&mut self, timing: &Timing) -> Result<(), LoadtestError> {
        let start = ToWorker::Start {
            timeline: timing.to_timeline(),
        };
        for worker in &mut self.workers {
            worker.process.send(&start, 512).await?;
        }
        Ok(())
    }

    /// Collects every worker's report with the worker's number, waiting
    /// until the drain deadline plus a grace period at most.
    pub async fn collect(
        self,
        timing: &Timing,
    ) -> Result<Vec<(usize, WorkerReport)>, LoadtestError> {
        let deadline = timing.drain_deadline + REPORT_GRACE;
        let mut reports = Vec::with_capacity(self.workers.len());
        for mut worker in self.workers {
            match worker.process.receive(deadline, "its report").await? {
                FromWorker::Report(report) => reports.push((worker.process.number(), *report)),
                other => {
                    return Err(worker
                        .process
                        .failure(format!("sent {} instead of its report", kind(&other))));
                }
            }
        }
        Ok(reports)
    }
}

/// Returns the longest a worker's connection phase can take: its attempts
/// run `concurrency` at a time, and each ends within the connect timeout
/// plus the same again for the relay's welcome.
fn connect_bound(attempts: usize, concurrency: usize) -> Duration {
    let rounds = attempts.div_ceil(concurrency.max(1)) as u32;
    START_GRACE + (CONNECT_TIMEOUT * 2) * rounds
}

fn kind(message: &FromWorker) -> &'static str {
    match message {
        FromWorker::Connected { .. } => "a connection count",
        FromWorker::Report(_) => "a report",
        FromWorker::Failed { .. } => "a failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_bound_grows_with_rounds() {
        assert_eq!(connect_bound(64, 64), START_GRACE + CONNECT_TIMEOUT * 2);
        assert_eq!(connect_bound(65, 64), START_GRACE + CONNECT_TIMEOUT * 4);
        assert_eq!(connect_bound(10, 0), START_GRACE + CONNECT_TIMEOUT * 20);
    }
}
