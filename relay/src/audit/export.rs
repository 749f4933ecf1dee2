//! Export of audit entries as JSON Lines, and offline verification of an
//! export file.
//!
//! The first line is a header object with `"type": "header"`, the format
//! name and version, the audit public key and the requested range. Then, for
//! each stream, its checkpoints (`"type": "checkpoint"`) and its entries
//! (`"type": "entry"`), each as one JSON object per line. An export of a time
//! range runs from the first entry in the range to the first checkpoint at
//! or after its last entry, so that a signature covers every exported entry:
//! the export signs a fresh checkpoint of each stream's head first.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::append::{append, checkpoint_heads, CheckpointPolicy};
use super::entry::{Checkpoint, Entry, Stream};
use super::event::{Action, Event, ACTOR_ADMIN_CLI};
use super::key::{parse_public_key, AuditKey};
use super::verify::{check_signatures, ChainVerifier, Failure, Report, Start};
use super::AuditError;
use crate::db::{Backend, Db};
use crate::store::audit as audit_store;
use crate::store::{now_millis, open_migrated_writer};

/// Format name in the header line.
pub(crate) const FORMAT: &str = "sealcast-audit-export";

/// Format version this build writes and reads.
pub(crate) const VERSION: u32 = 1;

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) format: String,
    pub(crate) version: u32,
    /// Ed25519 public key of the checkpoints, as hex.
    pub(crate) public_key: String,
    /// Unix milliseconds of the export.
    pub(crate) exported_at: i64,
    pub(crate) streams: Vec<Stream>,
    /// Requested range in Unix milliseconds, inclusive.
    pub(crate) from: Option<i64>,
    pub(crate) to: Option<i64>,
}

/// One line of an export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Header(Header),
    Checkpoint(Checkpoint),
    Entry(Entry),
}

/// Range and destination of an export.
#[derive(Debug, Clone)]
pub(crate) struct ExportRequest {
    pub(crate) streams: Vec<Stream>,
    pub(crate) from: Option<i64>,
    pub(crate) to: Option<i64>,
    pub(crate) out: PathBuf,
}

/// Entries written per stream.
pub(crate) type ExportCounts = BTreeMap<Stream, u64>;

/// Records the export in the admin stream, signs both heads and writes the
/// requested range to `request.out`, mode 0600. The audit key is the one
/// of `data_dir`, the entries those of the database of `backend`.
pub(crate) fn export(
    data_dir: &Path,
    backend: &Backend,
    request: &ExportRequest,
) -> Result<ExportCounts, AuditError> {
    let key = AuditKey::load_or_create(data_dir)?;
    let conn = open_migrated_writer(backend)?;
    let now = now_millis();
    let streams: Vec<&str> = request.streams.iter().map(|s| s.as_str()).collect();
    let mut event =
        Event::new(Action::AuditExported, ACTOR_ADMIN_CLI).detail("streams", streams.join(","));
    if let Some(from) = request.from {
        event = event.detail("from", from);
    }
    if let Some(to) = request.to {
        event = event.detail("to", to);
    }
    append(&conn, &key, CheckpointPolicy::default(), &[event], now)?;
    checkpoint_heads(&conn, &key, now)?;

    let file_error = |source| AuditError::ExportFile {
        path: request.out.clone(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&request.out)
        .map_err(file_error)?;
    let mut out = BufWriter::new(file);
    let header = Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        public_key: hex::encode(key.verifying_key().as_bytes()),
        exported_at: now,
        streams: request.streams.clone(),
        from: request.from,
        to: request.to,
    };
    write_line(&mut out, &Line::Header(header)).map_err(file_error)?;

    let mut counts = ExportCounts::new();
    for &stream in &request.streams {
        let written = export_stream(&conn, stream, request, &mut out)?;
        counts.insert(stream, written);
    }
    out.flush().map_err(file_error)?;
    out.get_ref().sync_all().map_err(file_error)?;
    Ok(counts)
}

fn export_stream(
    conn: &Db,
    stream: Stream,
    request: &ExportRequest,
    out: &mut BufWriter<File>,
) -> Result<u64, AuditError> {
    let file_error = |source| AuditError::ExportFile {
        path: request.out.clone(),
        source,
    };
    let from = request.from.unwrap_or(i64::MIN);
    let to = request.to.unwrap_or(i64::MAX);
    let Some((first, last)) = audit_store::seq_range_between(conn, stream, from, to)? else {
        return Ok(0);
    };
    let checkpoints = audit_store::checkpoints(conn, stream)?;
    // The head was just signed, so a checkpoint at or after `last` exists
    // unless the stream changed meanwhile; then the export ends at `last`.
    let end = checkpoints
        .iter()
        .map(|checkpoint| checkpoint.seq)
        .find(|&seq| seq >= last)
        .unwrap_or(last);
    for checkpoint in checkpoints
        .into_iter()
        .filter(|checkpoint| (first..=end).contains(&checkpoint.seq))
    {
        write_line(out, &Line::Checkpoint(checkpoint)).map_err(file_error)?;
    }
    let mut written = 0;
    audit_store::for_each_entry(conn, stream, first, end, |entry| {
        written += 1;
        write_line(out, &Line::Entry(entry)).map_err(file_error)
    })?;
    Ok(written)
}

fn write_line(out: &mut impl Write, line: &Line) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

/// Verifies an export file without a database: every entry's hash and
/// link, every checkpoint's signature, and that a checkpoint covers the
/// last entry of each stream. The public key is `pinned` when given, else
/// the one in the header.
pub(crate) fn verify_export(
    path: &Path,
    pinned: Option<VerifyingKey>,
) -> Result<Report, AuditError> {
    let mut report = Report::default();
    let (header, checkpoints) = read_header_and_checkpoints(path)?;
    let header_key =
        parse_public_key(&header.public_key).map_err(|reason| AuditError::ExportFormat {
            path: path.to_path_buf(),
            line: 1,
            reason,
        })?;
    let key = pinned.unwrap_or(header_key);
    if key != header_key {
        report.problems.push(format!(
            "export names public key {}, not the expected key {}",
            header.public_key,
            hex::encode(key.as_bytes())
        ));
    }

    let mut verifiers = BTreeMap::new();
    for stream in Stream::ALL {
        let stream_checkpoints: Vec<Checkpoint> = checkpoints
            .iter()
            .filter(|checkpoint| checkpoint.stream == stream)
            .cloned()
            .collect();
        match check_signatures(stream_checkpoints, Some(&key)) {
            Ok(checked) => {
                verifiers.insert(
                    stream,
                    ChainVerifier::new(stream, Start::FirstEntry, checked),
                );
            }
            Err(failure) => report.failures.push(failure),
        }
    }

    for_each_line(path, |_, line| {
        if let Line::Entry(entry) = line {
            let stream = entry.stream;
            if let Some(verifier) = verifiers.get_mut(&stream) {
                if let Err(failure) = verifier.push(&entry) {
                    report.failures.push(failure);
                    verifiers.remove(&stream);
                }
            }
        }
        Ok(())
    })?;

    for (stream, verifier) in verifiers {
        match verifier.finish() {
            Ok(summary) => {
                if let Some(failure) = uncovered_tail(stream, &summary) {
                    report.failures.push(failure);
                }
                report.streams.insert(stream, summary);
            }
            Err(failure) => report.failures.push(failure),
        }
    }
    Ok(report)
}

fn uncovered_tail(stream: Stream, summary: &super::verify::StreamSummary) -> Option<Failure> {
    let (_, last) = summary.range?;
    if summary.covered_through == Some(last) {
        return None;
    }
    let after = summary.covered_through.map_or(0, |seq| seq + 1);
    Some(Failure {
        stream,
        seq: after.max(summary.range.map_or(0, |(first, _)| first)),
        problem: format!(
            "entries from here to {last} are not covered by a signed checkpoint: entries were added or removed at the end"
        ),
    })
}

fn read_header_and_checkpoints(path: &Path) -> Result<(Header, Vec<Checkpoint>), AuditError> {
    let mut header = None;
    let mut checkpoints = Vec::new();
    for_each_line(path, |number, line| {
        match (line, number) {
            (Line::Header(found), 1) => header = Some(found),
            (Line::Header(_), _) => return Err("a header appears after the first line".to_owned()),
            (_, 1) => return Err("the first line is not a header".to_owned()),
            (Line::Checkpoint(checkpoint), _) => checkpoints.push(checkpoint),
            (Line::Entry(_), _) => {}
        }
        Ok(())
    })?;
    let invalid = |reason: String| AuditError::ExportFormat {
        path: path.to_path_buf(),
        line: 1,
        reason,
    };
    let header = header.ok_or_else(|| invalid("the file is empty".into()))?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(invalid(format!(
            "format {} version {} is not {FORMAT} version {VERSION}",
            header.format, header.version
        )));
    }
    Ok((header, checkpoints))
}

fn for_each_line(
    path: &Path,
    mut visit: impl FnMut(u64, Line) -> Result<(), String>,
) -> Result<(), AuditError> {
    let file = File::open(path).map_err(|source| AuditError::ExportFile {
        path: path.to_path_buf(),
        source,
    })?;
    let mut number = 0;
    for text in BufReader::new(file).lines() {
        number += 1;
        let text = text.map_err(|source| AuditError::ExportFile {
            path: path.to_path_buf(),
            source,
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let invalid = |reason: String| AuditError::ExportFormat {
            path: path.to_path_buf(),
            line: number,
            reason,
        };
        let line: Line = serde_json::from_str(&text).map_err(|error| invalid(error.to_string()))?;
        visit(number, line).map_err(invalid)?;
    }
    Ok(())
}
