//! Verification of audit chains, their checkpoints and retention anchors,
//! from the database or from an export file.
//!
//! A [`ChainVerifier`] takes the entries of one stream in order and stops
//! at the first one that is wrong, so that a report names where the record
//! stops being trustworthy.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use ed25519_dalek::VerifyingKey;
use rusqlite::{Connection, OpenFlags};

use crate::db::{db_params, Backend, Db};

use super::entry::{Anchor, Checkpoint, Entry, Stream, GENESIS_HASH, HASH_LEN};
use super::key::read_public_key;
use super::AuditError;
use crate::store::audit as audit_store;
use crate::store::StoreError;

/// The append-only triggers that the schema creates.
const TRIGGERS: [&str; 6] = [
    "audit_entries_reject_update",
    "audit_entries_guard_delete",
    "audit_checkpoints_reject_update",
    "audit_checkpoints_guard_delete",
    "audit_anchors_reject_update",
    "audit_anchors_reject_delete",
];

/// The first thing wrong in a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The stream.
    pub stream: Stream,
    /// Sequence number of the entry, checkpoint or anchor concerned.
    pub seq: u64,
    /// The problem, and what it means.
    pub problem: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream {}, entry {}: {}",
            self.stream, self.seq, self.problem
        )
    }
}

/// Verification result of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// Entries checked.
    pub entries: u64,
    /// Sequence numbers of the first and last entries checked.
    pub range: Option<(u64, u64)>,
    /// Checkpoints whose signature and entry hash matched.
    pub checkpoints: u64,
    /// Sequence number of the last entry a checkpoint covers.
    pub covered_through: Option<u64>,
    /// Sequence number of the last entry removed by retention, if any.
    pub anchored_at: Option<u64>,
}

/// The outcome of verifying a database or an export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Per stream, what was checked.
    pub streams: BTreeMap<Stream, StreamSummary>,
    /// The first failure of each stream that has one.
    pub failures: Vec<Failure>,
    /// Problems outside the chains, such as missing triggers.
    pub problems: Vec<String>,
}

impl Report {
    /// Returns whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty() && self.problems.is_empty()
    }
}

/// Starting point of a stream's chain.
pub(crate) enum Start<'a> {
    /// At sequence number 1 after the genesis hash.
    Genesis,
    /// After the last entry a signed anchor records as removed.
    Anchor(&'a Anchor),
    /// At whatever entry comes first, as in an export of a range.
    FirstEntry,
}

/// Checks the entries of one stream in order.
pub(crate) struct ChainVerifier {
    stream: Stream,
    expected: Option<(u64, [u8; HASH_LEN])>,
    checkpoints: BTreeMap<u64, Checkpoint>,
    summary: StreamSummary,
}

impl ChainVerifier {
    /// Starts a verifier for `stream` whose checkpoints, already checked
    /// for a valid signature, are `checkpoints`.
    pub(crate) fn new(stream: Stream, start: Start<'_>, checkpoints: Vec<Checkpoint>) -> Self {
        let (expected, anchored_at) = match start {
            Start::Genesis => (Some((1, GENESIS_HASH)), None),
            Start::Anchor(anchor) => (Some((anchor.seq + 1, anchor.hash)), Some(anchor.seq)),
            Start::FirstEntry => (None, None),
        };
        ChainVerifier {
            stream,
            expected,
            checkpoints: checkpoints.into_iter().map(|c| (c.seq, c)).collect(),
            summary: StreamSummary {
                anchored_at,
                ..StreamSummary::default()
            },
        }
    }

    /// Returns the sequence number the next entry must have, 0 when any may come.
    pub(crate) fn next_seq(&self) -> u64 {
        self.expected.map_or(0, |(seq, _)| seq)
    }

    /// Checks the next entry.
    pub(crate) fn push(&mut self, entry: &Entry) -> Result<(), Failure> {
        let fail = |seq, problem: String| Failure {
            stream: self.stream,
            seq,
            problem,
        };
        let (expected_seq, expected_prev) = self.expected.unwrap_or((entry.seq, entry.prev_hash));
        if entry.seq > expected_seq {
            return Err(fail(
                expected_seq,
                format!(
                    "entry is missing: the next entry found is {}, so entries were removed",
                    entry.seq
                ),
            ));
        }
        if entry.seq < expected_seq {
            return Err(fail(
                entry.seq,
                format!("entry appears where entry {expected_seq} was expected: entries were reordered, duplicated or left behind by a removal"),
            ));
        }
        if entry.compute_hash() != entry.hash {
            return Err(fail(
                entry.seq,
                "content does not match its stored hash: the entry was altered, or moved from another position".into(),
            ));
        }
        if entry.prev_hash != expected_prev {
            return Err(fail(
                entry.seq,
                format!(
                    "previous hash does not match entry {}: entries before it were altered, removed, inserted or reordered",
                    entry.seq.saturating_sub(1)
                ),
            ));
        }
        if let Some(checkpoint) = self.checkpoints.get(&entry.seq) {
            if checkpoint.hash != entry.hash {
                return Err(fail(
                    entry.seq,
                    "hash differs from the signed checkpoint: the chain up to this entry was rewritten".into(),
                ));
            }
            self.summary.checkpoints += 1;
            self.summary.covered_through = Some(entry.seq);
        }

        self.expected = Some((entry.seq + 1, entry.hash));
        self.summary.entries += 1;
        let first = self.summary.range.map_or(entry.seq, |(first, _)| first);
        self.summary.range = Some((first, entry.seq));
        Ok(())
    }

    /// Checks that no signed checkpoint names an entry after the last one
    /// pushed, and returns the summary.
    pub(crate) fn finish(self) -> Result<StreamSummary, Failure> {
        let last = self.expected.map_or(0, |(next, _)| next.saturating_sub(1));
        if let Some((&seq, _)) = self.checkpoints.range(last + 1..).next() {
            return Err(Failure {
                stream: self.stream,
                seq,
                problem: format!(
                    "entry is missing but a signed checkpoint names it: entries after {last} were removed"
                ),
            });
        }
        Ok(self.summary)
    }
}

/// Splits `checkpoints` into those signed by `key` and the first that is
/// not, as a failure.
pub(crate) fn check_signatures(
    checkpoints: Vec<Checkpoint>,
    key: Option<&VerifyingKey>,
) -> Result<Vec<Checkpoint>, Failure> {
    for checkpoint in &checkpoints {
        if !key.is_some_and(|key| checkpoint.verify(key)) {
            return Err(Failure {
                stream: checkpoint.stream,
                seq: checkpoint.seq,
                problem: "checkpoint signature does not verify with the audit public key".into(),
            });
        }
    }
    Ok(checkpoints)
}

/// Verifies both streams of the database of `backend`, without writing to
/// it. The public key is `pinned` when given, else the public key file of
/// `data_dir`.
pub(crate) fn verify_database(
    data_dir: &Path,
    backend: &Backend,
    pinned: Option<VerifyingKey>,
) -> Result<Report, AuditError> {
    let conn = match backend {
        Backend::Sqlite(path) => {
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map(Db::Sqlite)
                .map_err(|source| AuditError::Open {
                    path: path.clone(),
                    reason: source.to_string(),
                })?
        }
        Backend::Postgres(config) => match backend.connect_postgres() {
            Some(connected) => connected.map_err(|source| AuditError::Open {
                path: config.get_dbname().unwrap_or("postgres").into(),
                reason: source.to_string(),
            })?,
            None => unreachable!("a PostgreSQL backend connects to PostgreSQL"),
        },
    };
    let key = match pinned {
        Some(key) => Some(key),
        None => read_public_key(data_dir).ok(),
    };

    let mut report = Report::default();
    report.problems.extend(missing_triggers(&conn)?);
    for stream in Stream::ALL {
        match verify_stream(&conn, stream, key.as_ref())? {
            Ok(summary) => {
                report.streams.insert(stream, summary);
            }
            Err(failure) => report.failures.push(failure),
        }
    }
    if key.is_none() && report.streams.values().any(|summary| summary.entries > 0) {
        report.problems.push(format!(
            "audit public key not found in {}: pass --public-key",
            data_dir.display()
        ));
    }
    Ok(report)
}

fn verify_stream(
    conn: &Db,
    stream: Stream,
    key: Option<&VerifyingKey>,
) -> Result<Result<StreamSummary, Failure>, AuditError> {
    let anchors = audit_store::anchors(conn, stream)?;
    for anchor in &anchors {
        if !key.is_some_and(|key| anchor.verify(key)) {
            return Ok(Err(Failure {
                stream,
                seq: anchor.seq,
                problem: "retention anchor signature does not verify with the audit public key"
                    .into(),
            }));
        }
    }
    let checkpoints = match check_signatures(audit_store::checkpoints(conn, stream)?, key) {
        Ok(checkpoints) => checkpoints,
        Err(failure) => return Ok(Err(failure)),
    };
    let start = match anchors.last() {
        Some(anchor) => Start::Anchor(anchor),
        None => Start::Genesis,
    };
    let mut verifier = ChainVerifier::new(stream, start, checkpoints);
    let visited = audit_store::for_each_entry(conn, stream, 0, u64::MAX, |entry| {
        verifier.push(&entry).map_err(Visit::Failed)
    });
    match visited {
        Ok(()) => Ok(verifier.finish()),
        Err(Visit::Failed(failure)) => Ok(Err(failure)),
        Err(Visit::Store(StoreError::Corrupt { what })) => Ok(Err(Failure {
            stream,
            seq: verifier.next_seq(),
            problem: format!("{what} cannot be read: the entry was altered"),
        })),
        Err(Visit::Store(error)) => Err(error.into()),
    }
}

/// Reason a walk over entries stopped early.
enum Visit {
    Store(StoreError),
    Failed(Failure),
}

impl From<StoreError> for Visit {
    fn from(error: StoreError) -> Self {
        Visit::Store(error)
    }
}

fn missing_triggers(conn: &Db) -> Result<Vec<String>, AuditError> {
    let query = if conn.is_postgres() {
        "SELECT 1 FROM pg_trigger WHERE tgname = ?1 AND tgenabled <> 'D'"
    } else {
        "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ?1"
    };
    let mut missing = Vec::new();
    for name in TRIGGERS {
        let present = conn
            .query_opt(query, db_params![name], |_| Ok(()))
            .map_err(StoreError::db("read the audit triggers"))?
            .is_some();
        if !present {
            missing.push(format!(
                "trigger {name} is missing: the database was changed outside the relay"
            ));
        }
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(length: u64) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut prev = GENESIS_HASH;
        for seq in 1..=length {
            let mut entry = Entry {
                stream: Stream::Application,
                seq,
                created_at: 1000 + seq as i64,
                actor: "relay".into(),
                action: "session.started".into(),
                source: None,
                session_id: None,
                subject: None,
                digest: None,
                details: BTreeMap::new(),
                prev_hash: prev,
                hash: [0; 32],
            };
            entry.hash = entry.compute_hash();
            prev = entry.hash;
            entries.push(entry);
        }
        entries
    }

    fn run(entries: &[Entry]) -> Result<StreamSummary, Failure> {
        let mut verifier = ChainVerifier::new(Stream::Application, Start::Genesis, Vec::new());
        for entry in entries {
            verifier.push(entry)?;
        }
        verifier.finish()
    }

    #[test]
    fn intact_chain_verifies() {
        let summary = run(&chain(5)).unwrap();
        assert_eq!(summary.entries, 5);
        assert_eq!(summary.range, Some((1, 5)));
    }

    #[test]
    fn altered_entry_is_named() {
        let mut entries = chain(5);
        entries[2].actor = "someone".into();
        let failure = run(&entries).unwrap_err();
        assert_eq!(failure.seq, 3);
        assert!(failure.problem.contains("altered"), "{failure}");
    }

    #[test]
    fn missing_entry_is_named() {
        let mut entries = chain(5);
        entries.remove(1);
        let failure = run(&entries).unwrap_err();
        assert_eq!(failure.seq, 2);
        assert!(failure.problem.contains("missing"), "{failure}");
    }

    #[test]
    fn missing_first_entry_is_named() {
        let entries = chain(3);
        let failure = run(&entries[1..]).unwrap_err();
        assert_eq!(failure.seq, 1);
    }
}
