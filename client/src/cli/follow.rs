//! `sealcast follow`: follow a session from an invite link and print it.
//!
//! Standard output carries only the transcript. Connection changes, gaps,
//! rejected frames, unreadable frames of a key epoch without a key and the
//! authorship verdict of each stream go to standard error, and none of them
//! contains key material or transcript text.
//!
//! With `-` the link is the first line of standard input. Every later line
//! is a link of the same session with the key of a later key epoch, which
//! the follower adds while it runs.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use sealcast_protocol::authorship::{PublisherKey, Verdict};
use sealcast_protocol::pairing::KeyGrant;
use sealcast_protocol::{FollowInvite, TranscriptSegment};
use tokio::sync::mpsc;

use crate::error::ClientError;
use crate::follow::{verdict, FollowEvent, FollowReport, Follower, FollowerConfig, FollowerKeys};
use crate::tls::TlsSettings;
use crate::transcript::{Change, Transcript};

/// Width of the in-place interim line when the terminal width is unknown.
const DEFAULT_COLUMNS: usize = 80;

/// Maximum length of a line of standard input taken as a link, in bytes.
const MAX_LINK_LINE: u64 = 64 * 1024;

/// Arguments of `sealcast follow`.
// The field docs are the --help text, so they stay plain text, not rustdoc markup.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Args)]
#[command(
    after_help = "When the session ends, a line on stderr reports each stream: \
    \"complete and authored by device KEY\", or which frames are not signed by that \
    device or missing. When the link carries the publisher key (publisher= in the \
    #fragment) and any stream is not verified complete, or no stream arrived, the \
    command exits with status 65 after the transcript. A link without a publisher key \
    cannot be checked: the command then warns and exits with status 0.\n\n\
    After the clinician rotates the session key, the frames of the new key epoch can be \
    read only with the new link, which carries epoch=N. With LINK -, every line of \
    standard input after the first is such a link of the same session: the command \
    adds its key and shows the frames of that epoch that arrived before it. Until \
    then, a line on stderr names the key epoch that cannot be read, and those frames \
    are not shown. Frames that stay unreadable make the command exit with status 65."
)]
pub struct FollowArgs {
    /// The invite link, in quotes. - reads it from the first line of stdin,
    /// which keeps the key out of the process list, and takes each later
    /// line as the link of a rotated key
    #[arg(value_name = "LINK")]
    pub link: String,

    /// PEM file with the CA certificate that signs the relay's certificate
    /// [default: the bundled Mozilla roots]
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// text: "[mm:ss] speaker: text" per final segment, with interim text
    /// updated in place on a terminal; jsonl: one JSON object per final
    /// segment, then {"event":"ended"}
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

/// `--format` values of `sealcast follow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// JSON Lines.
    Jsonl,
}

/// Runs `sealcast follow` until the session ends.
pub async fn run(args: FollowArgs) -> Result<(), ClientError> {
    let (link_text, later_links) = if args.link == "-" {
        let mut lines = spawn_stdin_lines();
        let first =
            lines
                .recv()
                .await
                .transpose()?
                .ok_or_else(|| ClientError::InvalidArgument {
                    option: "LINK",
                    reason:
                        "standard input ended before a link: pipe the invite link into the command"
                            .into(),
                })?;
        (first, Some(lines))
    } else {
        (args.link.clone(), None)
    };
    let invite = FollowInvite::parse(&link_text)?;
    let tls = TlsSettings::new(args.ca_cert.as_deref())?;
    if invite.key_epoch == 0 {
        stderr_line!(
            "Following the session on {}. Fingerprint words: {} (check that the clinician's screen shows the same)",
            invite.link.relay,
            invite.link.key.fingerprint().words().join(" ")
        );
    } else {
        stderr_line!(
            "Following the session on {} with the key of key epoch {}.",
            invite.link.relay,
            invite.key_epoch
        );
    }
    let later_keys = later_links.map_or(LaterKeys::None, LaterKeys::Links);
    follow_link(invite, tls, args.format, later_keys).await
}

/// Follows the session of `invite` and prints it until the session ends.
/// The link may carry a paired device's follow token in place of the
/// invite token. Each line from `later_links` is a link of a rotated key,
/// whose key the follower adds. Returns [`ClientError::StreamsNotVerified`]
/// when the link carries a publisher key and the session is not verified
/// complete.
pub(crate) async fn follow_link(
    invite: FollowInvite,
    tls: TlsSettings,
    format: OutputFormat,
    later_keys: LaterKeys,
) -> Result<(), ClientError> {
    let publisher = invite.publisher;
    let first = invite.clone();
    let mut follower = Follower::start(FollowerConfig::from_invite(invite, tls))?;
    let keys = follower.keys();
    let (mut later_links, mut later_grants) = match later_keys {
        LaterKeys::None => (None, None),
        LaterKeys::Links(links) => (Some(links), None),
        LaterKeys::Grants(grants) => (None, Some(grants)),
    };
    // A paired device gets the keys of epochs after its pairing's only.
    let paired_epoch = later_grants.as_ref().map(|_| first.key_epoch);
    let mut printer = Printer::new(format, publisher, paired_epoch);
    loop {
        let event = tokio::select! {
            event = follower.next_event() => event,
            grant = next_grant(&mut later_grants) => {
                match grant {
                    Some(grant) => add_grant_key(&first, grant, &keys),
                    None => later_grants = None,
                }
                continue;
            }
            line = next_line(&mut later_links) => {
                match line {
                    Some(Ok(line)) => add_link_key(&first, &line, &keys),
                    Some(Err(err)) => {
                        stderr_line!("warning: stopped reading links from stdin: {err}");
                        later_links = None;
                    }
                    None => later_links = None,
                }
                continue;
            }
            _ = tokio::signal::ctrl_c() => {
                printer.clear_status()?;
                return Err(ClientError::Interrupted);
            }
        };
        match event {
            Some(event) => printer.handle(event)?,
            None => break,
        }
    }

    printer.clear_status()?;
    let report = follower.finish().await?;
    if report.missing_final_frames > 0 || report.frames_rejected > 0 || report.frames_unreadable > 0
    {
        stderr_line!(
            "warning: the transcript is incomplete: {} final segments missing, {} frames rejected, {} frames unreadable without the key of their key epoch",
            report.missing_final_frames,
            report.frames_rejected,
            report.frames_unreadable
        );
    }
    check_authorship(&report)
}

/// Returns the warning for the first unreadable frame of `key_epoch`, at
/// `offset`. `paired_epoch` is the key epoch a paired device got with its
/// pairing: the clinician device sends it the keys of later epochs only.
fn unreadable_warning(key_epoch: u32, offset: u64, paired_epoch: Option<u32>) -> String {
    match paired_epoch {
        Some(paired_epoch) if key_epoch < paired_epoch => format!(
            "frames of key epoch {key_epoch} cannot be read by this device, from offset {offset}: they are older than its pairing at key epoch {paired_epoch}, and the clinician device sends the keys of later epochs only"
        ),
        Some(_) => format!(
            "frames of key epoch {key_epoch} cannot be read yet, from offset {offset}: this device has no key of that epoch. They are kept and shown if the clinician device sends that key to this device"
        ),
        None => format!(
            "frames of key epoch {key_epoch} cannot be read, from offset {offset}: this device has no key of that epoch. Pass the session's link with epoch={key_epoch} on stdin to read them"
        ),
    }
}

/// The source of a follower's keys of later key epochs.
#[derive(Debug)]
pub(crate) enum LaterKeys {
    /// Nowhere: the follower reads only the epoch of its link.
    None,
    /// Invite links with `epoch=N`, one a line of standard input.
    Links(mpsc::Receiver<Result<String, ClientError>>),
    /// Keys the clinician device wrapped for this paired device, already unwrapped.
    Grants(mpsc::Receiver<KeyGrant>),
}

/// Waits for the next grant of `grants`, or forever once there are none.
async fn next_grant(grants: &mut Option<mpsc::Receiver<KeyGrant>>) -> Option<KeyGrant> {
    match grants {
        Some(grants) => grants.recv().await,
        None => std::future::pending().await,
    }
}

/// Gives the key of an unwrapped grant to the follower, when the grant
/// names the session and publisher key of the pairing.
fn add_grant_key(first: &FollowInvite, grant: KeyGrant, keys: &FollowerKeys) {
    if first.publisher != Some(grant.publisher) {
        stderr_line!(
            "warning: ignored the key of key epoch {}: it names another publisher key than the pairing",
            grant.key_epoch
        );
        return;
    }
    if let Err(err) = keys.add_key(grant.key_epoch, grant.session_key) {
        stderr_line!(
            "warning: the key of key epoch {} was not added: {err}",
            grant.key_epoch
        );
    }
}

/// Waits for the next line of `lines`, or forever once there are none.
async fn next_line(
    lines: &mut Option<mpsc::Receiver<Result<String, ClientError>>>,
) -> Option<Result<String, ClientError>> {
    match lines {
        Some(lines) => lines.recv().await,
        None => std::future::pending().await,
    }
}

/// Parses a link of a rotated key and gives its key to the follower, when
/// it names the relay, invite token and publisher key of the first link.
/// A line that fails is reported on stderr and following goes on.
fn add_link_key(first: &FollowInvite, line: &str, keys: &FollowerKeys) {
    if line.trim().is_empty() {
        return;
    }
    let invite = match FollowInvite::parse(line) {
        Ok(invite) => invite,
        Err(err) => {
            stderr_line!("warning: ignored a line of stdin that is not an invite link: {err}");
            return;
        }
    };
    let same_session = invite.link.relay == first.link.relay
        && invite.link.token == first.link.token
        && invite.publisher == first.publisher;
    if !same_session {
        stderr_line!(
            "warning: ignored the link of key epoch {}: its relay, invite token or publisher key differs from the first link, so it belongs to another session",
            invite.key_epoch
        );
        return;
    }
    if let Err(err) = keys.add_key(invite.key_epoch, invite.link.key) {
        stderr_line!(
            "warning: the key of key epoch {} was not added: {err}",
            invite.key_epoch
        );
    }
}

/// Fails when the link carries a publisher key and the report is not
/// verified complete. The verdict lines were printed with the events.
fn check_authorship(report: &FollowReport) -> Result<(), ClientError> {
    if report.publisher.is_none() {
        stderr_line!(
            "warning: authorship was not checked: the invite link carries no publisher key"
        );
        return Ok(());
    }
    if report.is_verified_complete() {
        return Ok(());
    }
    if report.streams.is_empty() {
        stderr_line!("warning: no stream of the session arrived, so nothing could be verified");
    }
    Err(ClientError::StreamsNotVerified)
}

/// Reads standard input line by line on a thread. The reader stops at end
/// of input, after a line longer than [`MAX_LINK_LINE`], or at a read error,
/// which it passes on.
fn spawn_stdin_lines() -> mpsc::Receiver<Result<String, ClientError>> {
    let (sender, receiver) = mpsc::channel(4);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        loop {
            let mut line = String::new();
            let read = (&mut stdin)
                .take(MAX_LINK_LINE + 1)
                .read_line(&mut line)
                .map_err(|err| ClientError::io("read an invite link from", "stdin", err));
            let result = match read {
                Ok(0) => return,
                Ok(_) if line.len() as u64 > MAX_LINK_LINE => Err(ClientError::InvalidArgument {
                    option: "LINK",
                    reason: format!(
                        "a line of stdin is longer than {MAX_LINK_LINE} bytes: put one link on each line"
                    ),
                }),
                Ok(_) if line.trim().is_empty() => continue,
                Ok(_) => Ok(line),
                Err(err) => Err(err),
            };
            let failed = result.is_err();
            if sender.blocking_send(result).is_err() || failed {
                return;
            }
        }
    });
    receiver
}

/// Writes events to stdout and stderr.
struct Printer {
    format: OutputFormat,
    /// The link's publisher key, named in the verdict lines.
    publisher: Option<PublisherKey>,
    transcript: Transcript,
    /// Whether interim text is shown on a status line that is rewritten in place.
    live_status: bool,
    status_shown: bool,
    columns: usize,
    /// Key epochs whose unreadable frames were reported, once each.
    unreadable_epochs: BTreeSet<u32>,
    /// Key epoch of the pairing's first key when later keys come from the
    /// clinician device, `None` when they come from links on stdin.
    paired_epoch: Option<u32>,
}

impl Printer {
    fn new(
        format: OutputFormat,
        publisher: Option<PublisherKey>,
        paired_epoch: Option<u32>,
    ) -> Self {
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|value| value.parse().ok())
            .filter(|&columns: &usize| columns > 10)
            .unwrap_or(DEFAULT_COLUMNS);
        Printer {
            format,
            publisher,
            transcript: Transcript::new(),
            live_status: format == OutputFormat::Text && std::io::stdout().is_terminal(),
            status_shown: false,
            columns,
            unreadable_epochs: BTreeSet::new(),
            paired_epoch,
        }
    }

    fn handle(&mut self, event: FollowEvent) -> Result<(), ClientError> {
        match event {
            FollowEvent::SegmentFinal {
                stream_id, segment, ..
            } => {
                if self.transcript.apply(stream_id, segment.clone()) != Change::Unchanged {
                    self.print_final(&segment)?;
                }
            }
            FollowEvent::SegmentUpdated {
                stream_id, segment, ..
            } => {
                let change = self.transcript.apply(stream_id, segment.clone());
                if self.live_status && change != Change::Unchanged {
                    self.show_status(&segment)?;
                }
            }
            FollowEvent::Ended => {
                self.clear_status()?;
                if self.format == OutputFormat::Jsonl {
                    write_stdout("{\"event\":\"ended\"}\n")?;
                }
                stderr_line!("The session has ended.");
            }
            other => self.report(other)?,
        }
        Ok(())
    }

    /// Reports a connection or integrity event on stderr.
    fn report(&mut self, event: FollowEvent) -> Result<(), ClientError> {
        self.clear_status()?;
        match event {
            FollowEvent::Connected {
                session_id,
                resumed,
                session_ended,
                from_offset,
                ..
            } => {
                let action = if resumed { "Reconnected" } else { "Connected" };
                let ended = if session_ended { " (the session has already ended)" } else { "" };
                stderr_line!("{action} to session {session_id} from offset {from_offset}{ended}");
            }
            FollowEvent::Disconnected { reason, retry_in } => {
                stderr_line!(
                    "warning: connection lost ({reason}); reconnecting in {:.1} s",
                    retry_in.as_secs_f64()
                );
            }
            FollowEvent::Gap {
                offset,
                stream_id,
                missing_final_frames,
            } => stderr_line!(
                "warning: {missing_final_frames} final segments of stream {stream_id} are missing before offset {offset}"
            ),
            FollowEvent::FrameRejected { offset, reason } => {
                stderr_line!("warning: rejected the frame at offset {offset}: {reason}");
            }
            FollowEvent::FrameUnreadable {
                offset, key_epoch, ..
            } => {
                // Reported once per epoch.
                if self.unreadable_epochs.insert(key_epoch) {
                    let warning = unreadable_warning(key_epoch, offset, self.paired_epoch);
                    stderr_line!("warning: {warning}");
                }
            }
            FollowEvent::KeyAdded {
                key_epoch,
                frames_opened,
            } => {
                self.unreadable_epochs.remove(&key_epoch);
                stderr_line!(
                    "Added the key of key epoch {key_epoch}: {frames_opened} frames that arrived before it are opened"
                );
            }
            FollowEvent::KeyRejected { key_epoch, reason } => {
                stderr_line!("warning: the key of key epoch {key_epoch} was not added: {reason}");
            }
            FollowEvent::SignatureRejected {
                offset,
                stream_id,
                seq,
                reason,
            } => stderr_line!(
                "warning: frame {seq} of stream {stream_id} at offset {offset} is not authored by the clinician's device: {reason}"
            ),
            FollowEvent::StreamVerdict { stream_id, verdict } => {
                let line = verdict::describe(&stream_id, &verdict, self.publisher.as_ref());
                match verdict {
                    Verdict::Complete { .. } => stderr_line!("{line}"),
                    _ => stderr_line!("warning: {line}"),
                }
            }
            // `session end` seals the end frame on a stream of its own, whose
            // count of zero would only confuse the patient.
            FollowEvent::EndOfSession { final_segments: 0, .. } => {
                stderr_line!("The clinician's device closed the session.");
            }
            FollowEvent::EndOfSession { final_segments, .. } => {
                stderr_line!("The clinician's device closed the session ({final_segments} final segments in its last stream).");
            }
            FollowEvent::SegmentFinal { .. } | FollowEvent::SegmentUpdated { .. } | FollowEvent::Ended => {}
        }
        Ok(())
    }

    fn print_final(&mut self, segment: &TranscriptSegment) -> Result<(), ClientError> {
        self.clear_status()?;
        let line = match self.format {
            OutputFormat::Text => format!("{}\n", text_line(segment)),
            OutputFormat::Jsonl => {
                let json = serde_json::to_string(segment).map_err(|err| {
                    ClientError::Internal(format!("failed to encode a segment: {err}"))
                })?;
                format!("{json}\n")
            }
        };
        write_stdout(&line)
    }

    fn show_status(&mut self, segment: &TranscriptSegment) -> Result<(), ClientError> {
        let line = text_line(segment).replace(['\n', '\r'], " ");
        let width = self.columns.saturating_sub(2);
        let shown: String = if line.chars().count() > width {
            let tail: Vec<char> = line.chars().rev().take(width.saturating_sub(1)).collect();
            std::iter::once('…').chain(tail.into_iter().rev()).collect()
        } else {
            line
        };
        self.status_shown = true;
        write_stdout(&format!("\r\x1b[2K{shown}"))
    }

    fn clear_status(&mut self) -> Result<(), ClientError> {
        if self.status_shown {
            self.status_shown = false;
            write_stdout("\r\x1b[2K")?;
        }
        Ok(())
    }
}

/// Formats a segment as `[mm:ss] speaker: text`.
fn text_line(segment: &TranscriptSegment) -> String {
    let seconds = segment.start_ms / 1000;
    format!(
        "[{:02}:{:02}] {}: {}",
        seconds / 60,
        seconds % 60,
        segment.speaker,
        segment.text
    )
}

fn write_stdout(text: &str) -> Result<(), ClientError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|err| ClientError::io("write the transcript to", "stdout", err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_line_shows_minutes_and_seconds() {
        let segment = TranscriptSegment {
            segment_id: 0,
            revision: 0,
            speaker: "doctor".into(),
            start_ms: 754_300,
            end_ms: 760_000,
            text: "How are you?".into(),
            is_final: true,
        };
        assert_eq!(text_line(&segment), "[12:34] doctor: How are you?");
    }

    #[test]
    fn unreadable_epoch_warning_per_source() {
        let older = unreadable_warning(0, 40, Some(2));
        assert!(older.contains("cannot be read by this device"), "{older}");
        assert!(
            older.contains("older than its pairing at key epoch 2"),
            "{older}"
        );
        assert!(!older.contains("kept and shown"), "{older}");

        let newer = unreadable_warning(3, 90, Some(2));
        assert!(
            newer.contains("cannot be read yet, from offset 90"),
            "{newer}"
        );
        assert!(
            newer.contains("if the clinician device sends that key"),
            "{newer}"
        );

        let linked = unreadable_warning(1, 7, None);
        assert!(linked.contains("link with epoch=1 on stdin"), "{linked}");
    }
}
