//! The simulated clinician device: seals transcript segments on one stream
//! and sends them open-loop, at intended times fixed in advance.
//!
//! A publisher does not wait for acknowledgements before the next frame. It
//! waits only while its socket cannot take more bytes (TCP back-pressure from
//! the relay), and then sends the frames that fell due meanwhile at once.
//! Latency counts from each frame's intended time, so a stalled relay or a
//! stalled load generator shows up in the figures instead of lowering the
//! offered load.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::SeedableRng;
use sealcast_protocol::api::PublisherEvent;
use sealcast_protocol::{EndOfSession, FrameKind, StreamSealer};
use tokio::sync::watch;
use tokio::time::Instant as TokioInstant;
use tokio_tungstenite::tungstenite::Message;

use super::socket::Socket;
use super::{close_kind, is_normal_close, Timing};
use crate::stats::Recorder;
use crate::workload::{monotonic_micros, Schedule, Script};

/// Everything one publisher needs for a run.
pub struct PublisherRun {
    /// Clinic index, also the statistics shard key.
    pub key: usize,
    /// Sealer of the clinic's stream.
    pub sealer: StreamSealer,
    /// The segments to send.
    pub script: Script,
    /// Send times.
    pub schedule: Schedule,
    /// Start, stop and drain deadline of the step.
    pub timing: Timing,
    /// The step's statistics.
    pub recorder: Arc<Recorder>,
}

/// Frames a publisher sent and whether the relay acknowledged them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherOutcome {
    /// Segment frames sent, the end frame not included.
    pub segments_sent: u64,
    /// Whether the end-of-session frame was sent.
    pub end_sent: bool,
    /// Whether the relay acknowledged every frame before the drain deadline.
    pub all_acknowledged: bool,
}

/// Sends frames until the send stop time, then the end frame, and waits for
/// the relay to acknowledge everything.
pub async fn run(socket: Socket, mut run: PublisherRun) -> PublisherOutcome {
    let (mut sink, stream) = socket.split();
    let (acked_sender, mut acked) = watch::channel(None::<u64>);
    let reader = tokio::spawn(read_acks(stream, acked_sender, Arc::clone(&run.recorder)));

    let mut outcome = PublisherOutcome::default();
    let mut rng = StdRng::from_entropy();
    let mut intended = run.timing.start + run.schedule.first_offset(&mut rng);
    while intended < run.timing.send_stop {
        tokio::time::sleep_until(TokioInstant::from_std(intended)).await;
        let sent_us = monotonic_micros(intended);
        let plaintext = run.script.next_plaintext(sent_us);
        let Some(frame) = seal(&mut run, FrameKind::Final, &plaintext) else {
            break;
        };
        if sink.send(Message::Binary(frame.into())).await.is_err() {
            run.recorder.count_error("publisher send failed");
            break;
        }
        run.recorder.record_send(
            run.key,
            sent_us,
            monotonic_micros(std::time::Instant::now()),
        );
        outcome.segments_sent += 1;
        intended += run.schedule.next_gap(&mut rng);
    }

    outcome.end_sent = send_end(&mut sink, &mut run, outcome.segments_sent).await;
    let last_seq = outcome.segments_sent;
    let deadline = TokioInstant::from_std(run.timing.drain_deadline);
    let everything_acked = matches!(
        tokio::time::timeout_at(
            deadline,
            acked.wait_for(|seq| seq.is_some_and(|seq| seq >= last_seq)),
        )
        .await,
        Ok(Ok(_))
    );
    outcome.all_acknowledged = outcome.end_sent && everything_acked;
    let acknowledged = acked.borrow().map_or(0, |seq| (seq + 1).min(last_seq));
    run.recorder.add_acknowledged(acknowledged);
    if !outcome.all_acknowledged {
        run.recorder
            .count_error("publisher frames unacknowledged at drain deadline");
    }

    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sink.close()).await;
    reader.abort();
    run.recorder.record_disconnect();
    outcome
}

fn seal(run: &mut PublisherRun, kind: FrameKind, plaintext: &[u8]) -> Option<Vec<u8>> {
    match run.sealer.seal(kind, plaintext) {
        Ok(frame) => Some(frame),
        Err(err) => {
            tracing::error!(error = %err, "failed to seal a frame");
            run.recorder.count_error("publisher seal failed");
            None
        }
    }
}

async fn send_end(
    sink: &mut futures_util::stream::SplitSink<Socket, Message>,
    run: &mut PublisherRun,
    segments: u64,
) -> bool {
    let end = EndOfSession {
        final_segments: segments,
    };
    let Some(frame) = seal(run, FrameKind::EndOfSession, &end.to_plaintext()) else {
        return false;
    };
    if sink.send(Message::Binary(frame.into())).await.is_err() {
        run.recorder.count_error("publisher send failed");
        return false;
    }
    true
}

/// Reads `ack` events and publishes the highest acknowledged sequence number.
async fn read_acks(
    mut stream: futures_util::stream::SplitStream<Socket>,
    acked: watch::Sender<Option<u64>>,
    recorder: Arc<Recorder>,
) {
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Text(text)) => match serde_json::from_str::<PublisherEvent>(&text) {
                Ok(PublisherEvent::Ack { seq, .. }) => {
                    acked.send_modify(|highest| {
                        *highest = Some(highest.map_or(seq, |h| h.max(seq)))
                    });
                }
                Ok(PublisherEvent::Welcome { .. }) => {}
                Err(_) => recorder.count_error("publisher invalid event"),
            },
            Ok(Message::Close(frame)) => {
                // The relay echoes this publisher's own normal close.
                if !is_normal_close(frame.as_ref()) {
                    recorder.count_error(&format!("publisher {}", close_kind(frame.as_ref())));
                }
                return;
            }
            Ok(_) => {}
            Err(_) => {
                recorder.count_error("publisher connection lost");
                return;
            }
        }
    }
}
