//! `sealcast publish`: read a transcript and publish it to a session.
//!
//! While publishing, `sealcast session rotate` (and SIGUSR1 on Unix)
//! rotates the session key: the stored session gets the new key, and the new
//! invite link goes to stderr or to the file of `--rotated-link-file`. The
//! new key also goes, wrapped for each device, to the devices paired with
//! `sealcast pair offer`. `sealcast session end` makes it end the session
//! as `--end` does. Both commands reach it through the session's control
//! directory, see [`crate::control`].

use std::io::BufRead;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use sealcast_protocol::pairing::KeyGrant;
use sealcast_protocol::{SessionId, TranscriptSegment};
use tokio::sync::mpsc;

use super::{absolute_path, open_key_store, parse_session_id};
use crate::auth::SignedInDevice;
use crate::control::{ControlChannel, ControlRequest};
use crate::error::ClientError;
use crate::input::merge::IdAssigner;
use crate::input::{self, interim, jsonl, InputError, InputFormat};
use crate::keystore::{write_private_file, KeyStore, StoredSession};
use crate::pace::{self, Pace, Pacer};
use crate::pairing::PairingApi;
use crate::publish::{PublishReport, Publisher, DEFAULT_WINDOW};

/// Arguments of `sealcast publish`.
#[derive(Debug, Args)]
#[command(
    after_help = "Rotating the session key: run `sealcast session rotate` on this device, or \
    on Unix send SIGUSR1 to the running command (`kill -USR1 PID`, with the process id that \
    it prints at the start). It closes the current stream with a signed checkpoint, \
    continues on a new stream under a new random key of the next key epoch, stores that key \
    in the session file, and writes the new invite link (with epoch=N) to stderr, or to the \
    file of --rotated-link-file. Only followers that get the new link can read what follows; \
    give it to every follower that should keep reading, and not to a removed one. Every \
    device paired with `sealcast pair offer` and not removed with `sealcast pair remove` gets \
    the new key through the relay, wrapped for it alone, and reads on without a new link.\n\n\
    Ending the session: `sealcast session end` on this device makes the running command stop \
    reading its input and end the session as --end does, then exit with status 0. Only one \
    `sealcast publish` of a session runs at a time on a device."
)]
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

    /// File that receives the new invite link after each key rotation
    /// (`sealcast session rotate` or SIGUSR1), replaced each time and readable only by this user
    /// [default: the link goes to stderr]
    #[arg(long, value_name = "FILE")]
    pub rotated_link_file: Option<PathBuf>,

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
    let link_file = args
        .rotated_link_file
        .as_deref()
        .map(absolute_path)
        .transpose()?;
    let store = open_key_store(state_dir)?;
    let mut session = store.resolve(args.session.as_ref())?;
    // Taken before connecting, so that a second publish of the session on
    // this device fails here instead of replacing the first one's connection.
    let control = ControlChannel::open(&store, &session.session_id)?;
    let device = SignedInDevice::load(&store, &session.relay, session.ca_cert.as_deref())?;
    let mut publisher = super::session::connect_publisher(&session, &device, args.window).await?;
    // Keeps the shared access token fresh for reconnects during a long publish.
    let _refresher = device.spawn_refresher();
    tracing::info!(session_id = %session.session_id, stream_id = %publisher.stream_id(), key_epoch = publisher.key_epoch(), "publishing");
    let mut rotation = Rotation {
        requests: PublishRequests::listen(control)?,
        store: &store,
        link_file,
        device: &device,
        pairing_api: PairingApi::new(&session.relay, device.tls())?,
    };

    let sent = tokio::select! {
        result = send_all(&mut publisher, &mut source, &mut pacer, &mut rotation, &mut session) => result?,
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

    if sent.stop_requested {
        stderr_line!(
            "Stopping: session {} was handed to another device with `sealcast pair offer --device`, which publishes from here.",
            session.session_id
        );
        let report = publisher.finish().await?;
        print_report(&report, Some(sent.final_segments));
        return Ok(());
    }
    if sent.end_requested {
        stderr_line!(
            "Ending session {}, as `sealcast session end` requested.",
            session.session_id
        );
    }
    if args.end || sent.end_requested {
        // `end` consumes the publisher, so its stream keys are gone before the shred.
        let report = publisher.end().await?;
        print_report(&report, Some(sent.final_segments));
        let session_id = session.session_id;
        let relay = session.relay.clone();
        super::session::shred_session(&store, session)?;
        let reported = super::session::report_end(&relay, &session_id, &device).await;
        // The lock is held until the end was reported to the relay, so that
        // a waiting `sealcast session end` finds the whole end done once the
        // lock is released.
        rotation.requests.control.close_ended();
        reported?;
        stderr_line!("Session {session_id} ended. Its key was deleted from this device.");
    } else {
        let report = publisher.finish().await?;
        print_report(&report, Some(sent.final_segments));
    }
    Ok(())
}

/// Outcome of [`send_all`].
struct Sent {
    /// Final segments sent.
    final_segments: u64,
    /// Whether `sealcast session end` requested the end before the input ended.
    end_requested: bool,
    /// Whether a hand-over to another device stopped publishing before the input ended.
    stop_requested: bool,
}

/// Sends every segment at its time, until the input ends or an end request
/// arrives. A rotation request between two segments rotates the key.
async fn send_all(
    publisher: &mut Publisher,
    source: &mut SegmentSource,
    pacer: &mut Pacer,
    rotation: &mut Rotation<'_>,
    session: &mut StoredSession,
) -> Result<Sent, ClientError> {
    let mut sent = Sent {
        final_segments: 0,
        end_requested: false,
        stop_requested: false,
    };
    loop {
        // The waits are cancel-safe: a segment received from the channel
        // or the iterator is never dropped, waiting for its time again
        // ends at the same instant, and a request is taken only when its
        // wait returns.
        let segment = tokio::select! {
            segment = source.next() => segment,
            request = rotation.requests.recv() => {
                match rotation.handle(request?, publisher, session).await? {
                    Flow::Continue => continue,
                    flow => return Ok(sent.stopped_by(flow)),
                }
            }
        };
        let Some(segment) = segment else {
            return Ok(sent);
        };
        let segment = segment?;
        loop {
            tokio::select! {
                () = pacer.wait_for(&segment) => break,
                request = rotation.requests.recv() => {
                    match rotation.handle(request?, publisher, session).await? {
                        Flow::Continue => {}
                        flow => return Ok(sent.stopped_by(flow)),
                    }
                }
            }
        }
        publisher.publish(&segment).await?;
        sent.final_segments += u64::from(segment.is_final);
    }
}

impl Sent {
    /// Records the request that stopped publishing before the input ended.
    fn stopped_by(mut self, flow: Flow) -> Sent {
        match flow {
            Flow::Continue => {}
            Flow::End => self.end_requested = true,
            Flow::Stop => self.stop_requested = true,
        }
        self
    }
}

/// Whether publishing goes on after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    End,
    /// The session was handed to another device: close the stream and stop.
    Stop,
}

/// Key rotation while publishing: where requests come from and where the new key and link go.
struct Rotation<'a> {
    requests: PublishRequests,
    store: &'a KeyStore,
    link_file: Option<PathBuf>,
    /// Signs the posts of wrapped keys for paired devices.
    device: &'a SignedInDevice,
    pairing_api: PairingApi,
}

impl Rotation<'_> {
    /// Carries out a request: rotates the key and confirms a rotation that
    /// `sealcast session rotate` requested, or returns [`Flow::End`] for an
    /// end request.
    async fn handle(
        &self,
        request: PublishRequest,
        publisher: &mut Publisher,
        session: &mut StoredSession,
    ) -> Result<Flow, ClientError> {
        match request {
            PublishRequest::Signal => {
                self.rotate(publisher, session).await?;
                Ok(Flow::Continue)
            }
            PublishRequest::Control(ControlRequest::Rotate { id }) => {
                self.rotate(publisher, session).await?;
                self.requests
                    .control
                    .confirm_rotation(&id, session.key_epoch)?;
                Ok(Flow::Continue)
            }
            PublishRequest::Control(ControlRequest::End) => Ok(Flow::End),
            PublishRequest::Control(ControlRequest::Stop) => Ok(Flow::Stop),
        }
    }

    /// Rotates the key, stores the new key in the session file, then hands
    /// out the new link. The key is stored first, so that `sealcast session
    /// end` seals its end frame under the newest epoch.
    async fn rotate(
        &self,
        publisher: &mut Publisher,
        session: &mut StoredSession,
    ) -> Result<(), ClientError> {
        let rotated = publisher.rotate_key().await?;
        session.key = rotated.key.clone();
        session.key_epoch = rotated.key_epoch;
        self.store.save(session)?;

        let link = rotated.invite.to_url();
        match &self.link_file {
            Some(path) => {
                write_private_file(path, format!("{link}\n").as_bytes())?;
                stderr_line!(
                    "Rotated the session key to key epoch {}: the new invite link is in {}. Give it only to the followers that should keep reading.",
                    rotated.key_epoch,
                    path.display()
                );
            }
            None => {
                stderr_line!(
                    "Rotated the session key to key epoch {}. New invite link (it contains the new key: give it only to the followers that should keep reading):",
                    rotated.key_epoch
                );
                stderr_line!("{link}");
            }
        }
        self.send_to_paired_devices(session).await;
        Ok(())
    }

    /// Wraps the newest key for every device paired with the session and
    /// posts it to the relay. A device whose post fails is reported on
    /// stderr and the others still get the key, because publishing goes on
    /// either way.
    async fn send_to_paired_devices(&self, session: &StoredSession) {
        let devices = match self.store.paired_devices(&session.session_id) {
            Ok(devices) => devices,
            Err(err) => {
                stderr_line!(
                    "warning: the paired devices get no key of key epoch {}: {err}",
                    session.key_epoch
                );
                return;
            }
        };
        let grant = KeyGrant {
            key_epoch: session.key_epoch,
            session_id: session.session_id,
            session_key: session.key.clone(),
            // The key `sealcast pair offer` put into the pairing payload: on
            // a device that took the session over, the first device's key,
            // which paired devices check every later key against.
            publisher: session.publisher_key(self.device.token().key()),
        };
        for paired in devices {
            let wrapped = paired.pairing.wrap_key(&grant);
            let posted = self
                .pairing_api
                .post_paired_key(
                    self.device,
                    &session.session_id,
                    &paired.device_id,
                    &wrapped,
                )
                .await;
            match posted {
                Ok(()) => stderr_line!(
                    "Sent the key of key epoch {} to paired device {}.",
                    session.key_epoch,
                    paired.device_id
                ),
                Err(err) => stderr_line!(
                    "warning: paired device {} did not get the key of key epoch {}: {err}",
                    paired.device_id,
                    session.key_epoch
                ),
            }
        }
    }
}

/// A request to the running command.
#[derive(Debug)]
enum PublishRequest {
    /// SIGUSR1 (Unix): rotate the key.
    Signal,
    /// A request of `sealcast session rotate` or `sealcast session end`.
    Control(ControlRequest),
}

/// Request sources: the session's control directory, and SIGUSR1 on Unix.
struct PublishRequests {
    control: ControlChannel,
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl PublishRequests {
    /// Starts listening for SIGUSR1 as well, and prints on stderr how to
    /// request a rotation, with the process id.
    #[cfg(unix)]
    fn listen(control: ControlChannel) -> Result<Self, ClientError> {
        use tokio::signal::unix::{signal, SignalKind};
        let signal = signal(SignalKind::user_defined1())
            .map_err(|err| ClientError::Internal(format!("failed to listen for SIGUSR1: {err}")))?;
        stderr_line!(
            "Publishing as process {pid}. To rotate the session key, run `sealcast session rotate` or `kill -USR1 {pid}`.",
            pid = std::process::id()
        );
        Ok(PublishRequests { control, signal })
    }

    #[cfg(not(unix))]
    fn listen(control: ControlChannel) -> Result<Self, ClientError> {
        stderr_line!(
            "Publishing as process {}. To rotate the session key, run `sealcast session rotate`.",
            std::process::id()
        );
        Ok(PublishRequests { control })
    }

    /// Waits for the next request. Cancel safe, as both sources are.
    async fn recv(&mut self) -> Result<PublishRequest, ClientError> {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.signal.recv() => Ok(PublishRequest::Signal),
                request = self.control.recv() => request.map(PublishRequest::Control),
            }
        }
        #[cfg(not(unix))]
        {
            self.control.recv().await.map(PublishRequest::Control)
        }
    }
}

fn print_report(report: &PublishReport, final_segments: Option<u64>) {
    let acknowledged = match (report.acknowledged_seq, report.last_offset) {
        (Some(seq), Some(offset)) => format!("acknowledged up to frame {seq} at offset {offset}"),
        _ => "none acknowledged".to_string(),
    };
    let finals =
        final_segments.map_or(String::new(), |count| format!("{count} final segments in "));
    let signed = match (report.publisher, report.endorsed_by) {
        (Some(publisher), Some(endorser)) => format!(
            " signed by device key {}, endorsed by device key {}",
            publisher.to_base64url(),
            endorser.to_base64url()
        ),
        (Some(publisher), None) => format!(" signed by device key {}", publisher.to_base64url()),
        (None, _) => String::new(),
    };
    let epoch = if report.key_epoch == 0 {
        String::new()
    } else {
        format!(" (key epoch {})", report.key_epoch)
    };
    stderr_line!(
        "Published {finals}{} frames, the last on stream {}{epoch}{signed}, {acknowledged}, {} reconnects",
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
