//! `sealcast publish`: read a transcript and publish it to a session.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use sealcast_protocol::{SessionId, TranscriptSegment};
use tokio::sync::mpsc;

use super::{open_key_store, parse_session_id};
use crate::auth::SignedInDevice;
use crate::error::ClientError;
use crate::input::merge::IdAssigner;
use crate::input::{self, interim, jsonl, InputError, InputFormat};
use crate::pace::{self, Pace, Pacer};
use crate::publish::{PublishReport, Publisher, DEFAULT_WINDOW};

/// Arguments of `sealcast publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Session to publish to [default: the session started last]
    #[arg(long, value_name = "ID", value_parser = parse_session_id)]
    pub session: Option<SessionId>,

    /// fast: send every segment at once; realtime: send each segment at its
    /// end time, measured from the earliest start time [default: fast]
    #[arg(long, value_enum)]
    pub pace: Option<PaceArg>,

    /// Speed-up factor for realtime pacing, for example 10 (implies --pace realtime)
    #[arg(long, value_name = "FACTOR")]
    pub speed: Option<f64>,

    /// Also send interim revisions: growing word prefixes of each final segment
    #[arg(long)]
    pub interim: bool,

    /// End the session after publishing: send the end-of-session frame, call
    /// the end endpoint and delete the session key from this device
    #[arg(long)]
    pub end: bool,

    /// Input format [default: from the file extension, .TextGrid or .jsonl]
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,

    /// Maximum number of frames sent but not yet acknowledged by the relay
    #[arg(long, value_name = "FRAMES", default_value_t = DEFAULT_WINDOW)]
    pub window: usize,

    /// Transcript files: one TextGrid per speaker (speaker from the _doctor or
    /// _patient file name suffix) or JSON Lines; - reads JSON Lines from stdin
    /// as they arrive
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// `--pace` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PaceArg {
    /// As fast as the relay acknowledges.
    Fast,
    /// At the pace of the timestamps.
    Realtime,
}

/// `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Praat TextGrid, one speaker per file.
    Textgrid,
    /// JSON Lines, one segment per line.
    Jsonl,
}

impl From<FormatArg> for InputFormat {
    fn from(format: FormatArg) -> Self {
        match format {
            FormatArg::Textgrid => InputFormat::TextGrid,
            FormatArg::Jsonl => InputFormat::Jsonl,
        }
    }
}

impl PublishArgs {
    /// Returns the pace that `--pace` and `--speed` select together.
    pub fn pace(&self) -> Result<Pace, ClientError> {
        match (self.pace, self.speed) {
            (None | Some(PaceArg::Fast), None) => Ok(Pace::Fast),
            (Some(PaceArg::Realtime), None) => Ok(Pace::REALTIME),
            (Some(PaceArg::Fast), Some(_)) => Err(ClientError::InvalidArgument {
                option: "--speed",
                reason: "it applies to realtime pacing: drop --pace fast".into(),
            }),
            (_, Some(speed)) if !(speed.is_finite() && speed > 0.0) => {
                Err(ClientError::InvalidArgument {
                    option: "--speed",
                    reason: format!("{speed} is not a positive factor: pass for example 10"),
                })
            }
            (_, Some(speed)) => Ok(Pace::Timed { speed }),
        }
    }
}

/// The source of the segments to publish.
enum SegmentSource {
    /// Whole files, merged and scheduled in advance.
    Files(std::vec::IntoIter<TranscriptSegment>),
    /// JSON Lines from stdin, published as they arrive.
    Stdin(mpsc::Receiver<Result<TranscriptSegment, InputError>>),
}

impl SegmentSource {
    async fn next(&mut self) -> Option<Result<TranscriptSegment, InputError>> {
        match self {
            SegmentSource::Files(segments) => segments.next().map(Ok),
            SegmentSource::Stdin(receiver) => receiver.recv().await,
        }
    }
}

/// Runs `sealcast publish`.
pub async fn run(args: PublishArgs, state_dir: Option<PathBuf>) -> Result<(), ClientError> {
    let pace = args.pace()?;
    let (mut source, mut pacer) = open_source(&args, pace)?;
    let store = open_key_store(state_dir)?;
    let session = store.resolve(args.session.as_ref())?;
    let device = SignedInDevice::load(&store, &session.relay, session.ca_cert.as_deref())?;
    let mut publisher = super::session::connect_publisher(&session, &device, args.window).await?;
    // Keeps the shared access token fresh for reconnects during a long publish.
    let _refresher = device.spawn_refresher();
    tracing::info!(session_id = %session.session_id, stream_id = %publisher.stream_id(), "publishing");

    let published = tokio::select! {
        result = send_all(&mut publisher, &mut source, &mut pacer) => result?,
        _ = tokio::signal::ctrl_c() => {
            stderr_line!("Interrupted: waiting for the relay to acknowledge what was sent (Ctrl-C again to quit)");
            let report = tokio::select! {
                report = publisher.finish() => report?,
                _ = tokio::signal::ctrl_c() => return Err(ClientError::Interrupted),
            };
            print_report(&report, None);
            return Err(ClientError::Interrupted);
        }
    };

    if args.end {
        // `end` consumes the publisher, so its stream keys are gone before the shred.
        let report = publisher.end().await?;
        print_report(&report, Some(published));
        let session_id = session.session_id;
        let relay = session.relay.clone();
        super::session::shred_session(&store, session)?;
        super::session::report_end(&relay, &session_id, &device).await?;
        stderr_line!("Session {session_id} ended. Its key was deleted from this device.");
    } else {
        let report = publisher.finish().await?;
        print_report(&report, Some(published));
    }
    Ok(())
}

/// Sends every segment at its time and returns how many final segments were sent.
async fn send_all(
    publisher: &mut Publisher,
    source: &mut SegmentSource,
    pacer: &mut Pacer,
) -> Result<u64, ClientError> {
    let mut finals = 0;
    while let Some(segment) = source.next().await {
        let segment = segment?;
        pacer.wait_for(&segment).await;
        publisher.publish(&segment).await?;
        finals += u64::from(segment.is_final);
    }
    Ok(finals)
}

fn print_report(report: &PublishReport, final_segments: Option<u64>) {
    let acknowledged = match (report.acknowledged_seq, report.last_offset) {
        (Some(seq), Some(offset)) => format!("acknowledged up to frame {seq} at offset {offset}"),
        _ => "none acknowledged".to_string(),
    };
    let finals =
        final_segments.map_or(String::new(), |count| format!("{count} final segments in "));
    let signed = report.publisher.map_or(String::new(), |publisher| {
        format!(" signed by device key {}", publisher.to_base64url())
    });
    stderr_line!(
        "Published {finals}{} frames on stream {}{signed}, {acknowledged}, {} reconnects",
        report.frames,
        report.stream_id,
        report.reconnects
    );
}

/// Opens the input: whole files are read, merged and scheduled before
/// connecting, so that input errors show up before anything is sent.
fn open_source(args: &PublishArgs, pace: Pace) -> Result<(SegmentSource, Pacer), ClientError> {
    let format = args.format.map(InputFormat::from);
    let reads_stdin = args.files.iter().any(|file| file == Path::new("-"));
    if reads_stdin {
        if args.files.len() > 1 {
            return Err(ClientError::InvalidArgument {
                option: "FILE",
                reason: "- (stdin) cannot be combined with files: publish them separately".into(),
            });
        }
        if format == Some(InputFormat::TextGrid) {
            return Err(ClientError::InvalidArgument {
                option: "--format",
                reason: "stdin is read as JSON Lines: drop --format textgrid".into(),
            });
        }
        let receiver = spawn_stdin_reader(args.interim);
        return Ok((SegmentSource::Stdin(receiver), Pacer::new(pace)));
    }

    let mut segments = input::load_files(&args.files, format)?;
    if args.interim {
        segments = interim::expand_all(segments)?;
    }
    let origin = segments
        .iter()
        .map(|segment| segment.start_ms)
        .min()
        .unwrap_or(0);
    let scheduled = pace::schedule(segments);
    Ok((
        SegmentSource::Files(scheduled.into_iter()),
        Pacer::with_origin(pace, origin),
    ))
}

/// Reads JSON Lines from stdin on a thread, numbering segments as they
/// arrive. The reader stops at the first error, which it passes on.
fn spawn_stdin_reader(with_interim: bool) -> mpsc::Receiver<Result<TranscriptSegment, InputError>> {
    let (sender, receiver) = mpsc::channel(64);
    std::thread::spawn(move || {
        let mut assigner = IdAssigner::new();
        let stdin = std::io::stdin();
        for (index, line) in stdin.lock().lines().enumerate() {
            let segments = line
                .map_err(|source| InputError::Read {
                    path: PathBuf::from("stdin"),
                    source,
                })
                .and_then(|line| jsonl::parse_line(&line, index + 1, "stdin"))
                .and_then(|parsed| match parsed {
                    Some(segment) => {
                        let segment = assigner.assign(segment);
                        if with_interim {
                            interim::expand(segment)
                        } else {
                            Ok(vec![segment])
                        }
                    }
                    None => Ok(Vec::new()),
                });
            let failed = segments.is_err();
            let results: Vec<Result<TranscriptSegment, InputError>> = match segments {
                Ok(segments) => segments.into_iter().map(Ok).collect(),
                Err(err) => vec![Err(err)],
            };
            for result in results {
                if sender.blocking_send(result).is_err() {
                    return;
                }
            }
            if failed {
                return;
            }
        }
    });
    receiver
}
