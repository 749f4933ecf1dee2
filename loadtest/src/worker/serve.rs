//! The worker side: opens the assigned followers, runs them through the
//! coordinator's time line and reports their statistics.

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use sealcast_client::{endpoint, TlsSettings};
use sealcast_protocol::StreamOpener;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use url::Url;
use zeroize::Zeroizing;

use super::message::{
    encode_line, Assignment, EncodedHistogram, FromWorker, ReportedFollower, TimelineSecond,
    ToWorker, WorkerReport,
};
use crate::client::connect_follower;
use crate::client::follower::{self, FollowerRun};
use crate::client::socket::{NodeDialers, Socket};
use crate::client::{Timeline, Timing};
use crate::progress::spawn_ticker;
use crate::stats::Recorder;

/// A follower whose socket opened, with what it needs to run.
struct OpenFollower {
    clinic: usize,
    shard: usize,
    opener: StreamOpener,
    socket: Socket,
}

/// Serves one assignment read from `input`, writing messages to `output`.
/// Returns an error after sending it as [`FromWorker::Failed`] when that
/// is still possible.
pub async fn serve<R, W>(input: R, mut output: W) -> Result<(), String>
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut input = BufReader::new(input);
    match run(&mut input, &mut output).await {
        Ok(report) => write_message(&mut output, &FromWorker::Report(Box::new(report))).await,
        Err(reason) => {
            let failed = FromWorker::Failed {
                reason: reason.clone(),
            };
            // The coordinator may be gone, so the reason is returned even
            // when it cannot be sent.
            let _ = write_message(&mut output, &failed).await;
            Err(reason)
        }
    }
}

async fn run<R, W>(input: &mut R, output: &mut W) -> Result<WorkerReport, String>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let assignment = match read_message(input).await? {
        Some(ToWorker::Assignment(assignment)) => assignment,
        Some(ToWorker::Start { .. }) => {
            return Err("received the start before an assignment".into());
        }
        None => return Err("the coordinator closed the pipe before the assignment".into()),
    };
    tracing::debug!(
        worker = assignment.worker,
        clinics = assignment.clinics.len(),
        "worker assignment received"
    );

    let recorder = Arc::new(Recorder::new());
    let attempted: usize = assignment.clinics.iter().map(|c| c.followers.len()).sum();
    let followers = connect(&assignment, &recorder).await?;
    // The followers' openers have their own copies of the keys.
    drop(assignment);
    let connected = FromWorker::Connected {
        opened: followers.len() as u64,
        attempted: attempted as u64,
    };
    write_message(output, &connected).await?;

    let timeline = match read_message(input).await? {
        Some(ToWorker::Start { timeline }) => timeline,
        Some(ToWorker::Assignment(_)) => return Err("received a second assignment".into()),
        None => return Err("the coordinator closed the pipe before the start".into()),
    };
    let (followers, seconds) = run_followers(followers, &timeline, &recorder, input).await?;
    report(&recorder, followers, seconds)
}

/// Opens every assigned follower, `connect_concurrency` at a time. Failed
/// attempts are counted in `recorder` by kind, as in the coordinator.
async fn connect(
    assignment: &Assignment,
    recorder: &Arc<Recorder>,
) -> Result<Vec<OpenFollower>, String> {
    let relay = &assignment.relay;
    let tls = match &relay.tls {
        Some(tls) => Some(
            TlsSettings::new(tls.ca_cert.as_deref())
                .and_then(|settings| settings.websocket_config())
                .map_err(|err| format!("invalid TLS settings: {err}"))?,
        ),
        None => None,
    };
    let parse =
        |url: &str| Url::parse(url).map_err(|err| format!("invalid relay URL {url}: {err}"));
    let mut nodes = Vec::with_capacity(relay.follower_nodes.len().max(1));
    if relay.follower_nodes.is_empty() {
        nodes.push((parse(&relay.base_url)?, relay.addr));
    }
    for node in &relay.follower_nodes {
        nodes.push((parse(&node.base_url)?, node.addr));
    }
    let dialers = NodeDialers::new(nodes, tls, assignment.source_addrs);

    let mut attempts = Vec::new();
    for clinic in &assignment.clinics {
        let key = clinic.key()?;
        let token = clinic.invite_token();
        for &number in &clinic.followers {
            if number >= assignment.followers_per_clinic {
                return Err(format!(
                    "clinic {}: follower {number} is not below the {} followers per clinic",
                    clinic.index, assignment.followers_per_clinic
                ));
            }
            let shard = clinic.index * (assignment.followers_per_clinic + 1) + number;
            let turn = NodeDialers::turn(clinic.index, number, assignment.followers_per_clinic);
            attempts.push((
                clinic.index,
                shard,
                turn,
                clinic.session_id,
                key.clone(),
                token.clone(),
            ));
        }
    }

    let connecting = attempts
        .into_iter()
        .map(|(clinic, shard, turn, session_id, key, token)| {
            let (node_url, dialer) = dialers.node(turn);
            let follow_url = endpoint::follow_url(node_url, None, 0);
            async move {
                let socket =
                    connect_follower(dialer, &follow_url, &token, &key, recorder, shard).await?;
                Some(OpenFollower {
                    clinic,
                    shard,
                    opener: StreamOpener::new(key, session_id),
                    socket,
                })
            }
        });
    Ok(stream::iter(connecting)
        .buffer_unordered(assignment.connect_concurrency.max(1))
        .filter_map(|follower| async move { follower })
        .collect()
        .await)
}

/// Runs the followers until each ends or the drain deadline passes. Fails
/// when the coordinator closes the pipe first, because then no process
/// reads the report.
async fn run_followers<R>(
    followers: Vec<OpenFollower>,
    timeline: &Timeline,
    recorder: &Arc<Recorder>,
    input: &mut R,
) -> Result<(Vec<ReportedFollower>, Vec<TimelineSecond>), String>
where
    R: AsyncBufRead + Unpin,
{
    let timing = Timing::from_timeline(timeline);
    recorder.set_window(timeline.measure_start_us, timeline.stop_us);
    let seconds = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&seconds);
    let ticker = spawn_ticker(Arc::clone(recorder), timing, move |second, recent| {
        match EncodedHistogram::encode(&recent) {
            Ok(latency) => collected
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(TimelineSecond { second, latency }),
            Err(err) => tracing::warn!(error = %err, second, "timeline second dropped"),
        }
    });
    let tasks = followers.into_iter().map(|follower| {
        let run = FollowerRun {
            key: follower.shard,
            opener: follower.opener,
            timing,
            recorder: Arc::clone(recorder),
        };
        let clinic = follower.clinic;
        let task = tokio::spawn(follower::run(follower.socket, run));
        async move { (clinic, task.await) }
    });

    let mut closed = String::new();
    let finished = tokio::select! {
        finished = join_all(tasks) => finished,
        _ = input.read_line(&mut closed) => {
            return Err("the coordinator closed the pipe during the step".into());
        }
    };
    // As in the coordinator, the partial second after the last tick is not kept.
    ticker.abort();

    let mut reported = Vec::with_capacity(finished.len());
    for (clinic, outcome) in finished {
        match outcome {
            Ok(outcome) => reported.push(ReportedFollower { clinic, outcome }),
            Err(err) => tracing::error!(error = %err, clinic, "a follower task failed"),
        }
    }
    let timeline = std::mem::take(&mut *seconds.lock().unwrap_or_else(PoisonError::into_inner));
    Ok((reported, timeline))
}

fn report(
    recorder: &Recorder,
    followers: Vec<ReportedFollower>,
    timeline: Vec<TimelineSecond>,
) -> Result<WorkerReport, String> {
    let histograms = recorder.histograms();
    Ok(WorkerReport {
        counts: recorder.counts(),
        errors: recorder.errors(),
        latency: EncodedHistogram::encode(&histograms.latency)?,
        connect: EncodedHistogram::encode(&histograms.connect)?,
        followers,
        timeline,
    })
}

/// Reads one message line; `None` when the input has closed. The line
/// buffer is zeroized because an assignment contains secrets.
// NOTE: the reader's own buffers, `BufReader` and tokio's standard input,
// keep copies of the raw bytes that are not zeroized.
async fn read_message<R>(input: &mut R) -> Result<Option<ToWorker>, String>
where
    R: AsyncBufRead + Unpin,
{
    let mut line = Zeroizing::new(String::new());
    let read = input
        .read_line(&mut line)
        .await
        .map_err(|err| format!("failed to read standard input: {err}"))?;
    if read == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|err| format!("invalid message from the coordinator: {err}"))
}

async fn write_message<W>(output: &mut W, message: &FromWorker) -> Result<(), String>
where
    W: AsyncWrite + Unpin,
{
    let line = encode_line(message, 4096)?;
    let written = async {
        output.write_all(&line).await?;
        output.flush().await
    };
    written
        .await
        .map_err(|err| format!("failed to write standard output: {err}"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use sealcast_client::SecretString;
    use sealcast_protocol::{SessionId, SessionKey};

    use super::*;
    use crate::worker::message::{FollowedClinic, RelayAddress, RelayTls};

    /// Serves `input` and returns the error and the messages written.
    async fn serve_bytes(input: &[u8]) -> (Result<(), String>, Vec<FromWorker>) {
        let mut output = Vec::new();
        let served = serve(input, &mut output).await;
        let messages = output
            .split(|byte| *byte == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).unwrap())
            .collect();
        (served, messages)
    }

    fn assignment(tls: Option<RelayTls>, follower: usize) -> Vec<u8> {
        let key = SessionKey::generate();
        let clinic = FollowedClinic::new(
            0,
            SessionId::random(),
            &key,
            &SecretString::from("token"),
            vec![follower],
        );
        let message = ToWorker::Assignment(Assignment {
            worker: 1,
            relay: RelayAddress {
                base_url: "https://localhost:9/".into(),
                addr: "127.0.0.1:9".parse().unwrap(),
                follower_nodes: Vec::new(),
                tls,
            },
            source_addrs: 0,
            connect_concurrency: 4,
            followers_per_clinic: 2,
            clinics: vec![clinic],
        });
        encode_line(&message, 512).unwrap().to_vec()
    }

    fn failure(messages: &[FromWorker]) -> &str {
        match messages.last() {
            Some(FromWorker::Failed { reason }) => reason,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn closed_input_fails_before_assignment() {
        let (served, messages) = serve_bytes(b"").await;
        assert!(served.is_err());
        assert!(failure(&messages).contains("closed the pipe before the assignment"));
    }

    #[tokio::test]
    async fn invalid_json_is_rejected() {
        let (served, messages) = serve_bytes(b"{\"type\":\"assignment\",\n").await;
        assert!(served.is_err());
        assert!(failure(&messages).starts_with("invalid message from the coordinator"));
    }

    #[tokio::test]
    async fn start_before_assignment_is_rejected() {
        let timeline = Timing::new(
            std::time::Duration::ZERO,
            std::time::Duration::ZERO,
            std::time::Duration::from_secs(1),
            std::time::Duration::ZERO,
        )
        .to_timeline();
        let input = encode_line(&ToWorker::Start { timeline }, 256).unwrap();
        let (_, messages) = serve_bytes(&input).await;
        assert_eq!(
            failure(&messages),
            "received the start before an assignment"
        );
    }

    #[tokio::test]
    async fn missing_ca_file_is_rejected() {
        let tls = RelayTls {
            ca_cert: Some(PathBuf::from("/nonexistent/dev-cert.pem")),
        };
        let (_, messages) = serve_bytes(&assignment(Some(tls), 0)).await;
        let reason = failure(&messages);
        assert!(reason.starts_with("invalid TLS settings"), "{reason}");
        assert!(reason.contains("/nonexistent/dev-cert.pem"), "{reason}");
    }

    #[tokio::test]
    async fn follower_number_out_of_range_is_rejected() {
        let (_, messages) = serve_bytes(&assignment(None, 2)).await;
        assert_eq!(
            failure(&messages),
            "clinic 0: follower 2 is not below the 2 followers per clinic"
        );
    }

    #[tokio::test]
    async fn unreachable_relay_counts_failed_connections() {
        // Port 9 on loopback has no listener, so the attempt fails at once.
        let input = assignment(None, 1);
        let (served, messages) = serve_bytes(&input).await;
        assert!(matches!(
            messages.first(),
            Some(FromWorker::Connected {
                opened: 0,
                attempted: 1
            })
        ));
        // The input ends after the assignment, as when the coordinator exits.
        assert!(served.is_err());
        assert!(failure(&messages).contains("closed the pipe before the start"));
    }
}
