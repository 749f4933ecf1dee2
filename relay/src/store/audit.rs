//! Audit tables: entries, signed checkpoints, retention anchors and the
//! guard that lets only a retention run delete entries.
//!
//! Triggers make `audit_entries`, `audit_checkpoints` and `audit_anchors`
//! append-only: every UPDATE aborts, and so does every DELETE of an anchor.
//! A DELETE of an entry or checkpoint aborts unless two rows exist in the
//! same transaction: a row of `audit_retention_guard` that names its stream
//! and a sequence number at or after its own, and a signed anchor with
//! exactly that stream and sequence number. [`remove_through`] is the only code
//! that writes the guard: it stores the anchor, sets the guard, deletes and
//! clears the guard in one transaction. Triggers stop mistakes and code
//! paths that do not know the rule. Someone who can write the database file
//! can drop them, which verification then detects.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::StoreError;
use crate::audit::{Anchor, Checkpoint, Entry, Stream, GENESIS_HASH, HASH_LEN};

/// Schema version 4.
pub(super) const MIGRATION: &str = "
    CREATE TABLE audit_entries (
        stream TEXT NOT NULL CHECK (stream IN ('application', 'admin')),
        seq INTEGER NOT NULL CHECK (seq >= 1),
        created_at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        source TEXT,
        session_id TEXT,
        subject TEXT,
        digest TEXT,
        details TEXT NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (stream, seq)
    ) WITHOUT ROWID;

    CREATE INDEX audit_entries_by_time ON audit_entries (stream, created_at);

    CREATE TABLE audit_checkpoints (
        stream TEXT NOT NULL,
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        public_key BLOB NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (stream, seq)
    ) WITHOUT ROWID;

    CREATE TABLE audit_anchors (
        stream TEXT NOT NULL,
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL,
        removed INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        public_key BLOB NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (stream, seq)
    ) WITHOUT ROWID;

    CREATE TABLE audit_retention_guard (
        stream TEXT PRIMARY KEY,
        through_seq INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TRIGGER audit_entries_reject_update BEFORE UPDATE ON audit_entries
    BEGIN
        SELECT RAISE(ABORT, 'audit entries are append-only: UPDATE is rejected');
    END;

    CREATE TRIGGER audit_entries_guard_delete BEFORE DELETE ON audit_entries
    WHEN NOT EXISTS (
        SELECT 1 FROM audit_retention_guard AS guard
        JOIN audit_anchors AS anchor
            ON anchor.stream = guard.stream AND anchor.seq = guard.through_seq
        WHERE guard.stream = OLD.stream AND OLD.seq <= guard.through_seq
    )
    BEGIN
        SELECT RAISE(ABORT, 'audit entries are append-only: only a retention run may delete entries up to its signed anchor');
    END;

    CREATE TRIGGER audit_checkpoints_reject_update BEFORE UPDATE ON audit_checkpoints
    BEGIN
        SELECT RAISE(ABORT, 'audit checkpoints are append-only: UPDATE is rejected');
    END;

    CREATE TRIGGER audit_checkpoints_guard_delete BEFORE DELETE ON audit_checkpoints
    WHEN NOT EXISTS (
        SELECT 1 FROM audit_retention_guard AS guard
        JOIN audit_anchors AS anchor
            ON anchor.stream = guard.stream AND anchor.seq = guard.through_seq
        WHERE guard.stream = OLD.stream AND OLD.seq <= guard.through_seq
    )
    BEGIN
        SELECT RAISE(ABORT, 'audit checkpoints are append-only: only a retention run may delete checkpoints up to its signed anchor');
    END;

    CREATE TRIGGER audit_anchors_reject_update BEFORE UPDATE ON audit_anchors
    BEGIN
        SELECT RAISE(ABORT, 'audit anchors are append-only: UPDATE is rejected');
    END;

    CREATE TRIGGER audit_anchors_reject_delete BEFORE DELETE ON audit_anchors
    BEGIN
        SELECT RAISE(ABORT, 'audit anchors are append-only: DELETE is rejected');
    END;";

/// The last entry of a stream, or what the next entry links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChainHead {
    /// Sequence number of the last entry, 0 for an empty stream.
    pub(crate) seq: u64,
    /// Its hash, which the next entry stores as its previous hash.
    pub(crate) hash: [u8; HASH_LEN],
}

/// Reads the head of `stream`: its last entry, else its latest anchor when
/// retention removed every entry, else the genesis.
pub(crate) fn head(conn: &Connection, stream: Stream) -> Result<ChainHead, StoreError> {
    let last = conn
        .prepare_cached(
            "SELECT seq, hash FROM audit_entries WHERE stream = ?1 ORDER BY seq DESC LIMIT 1",
        )
        .and_then(|mut statement| statement.query_row([stream.as_str()], head_row).optional())
        .map_err(StoreError::sqlite("read the audit chain head"))?;
    if let Some(head) = last {
        return head;
    }
    match latest_anchor(conn, stream)? {
        Some(anchor) => Ok(ChainHead {
            seq: anchor.seq,
            hash: anchor.hash,
        }),
        None => Ok(ChainHead {
            seq: 0,
            hash: GENESIS_HASH,
        }),
    }
}

/// Appends an entry, whose sequence number and hashes the caller computed
/// from [`head`] in the same transaction.
pub(crate) fn insert_entry(conn: &Connection, entry: &Entry) -> Result<(), StoreError> {
    let details = serde_json::to_string(&entry.details).map_err(|_| StoreError::Corrupt {
        what: "audit entry details",
    })?;
    conn.prepare_cached(
        "INSERT INTO audit_entries (stream, seq, created_at, actor, action, source,
            session_id, subject, digest, details, prev_hash, hash)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            entry.stream.as_str(),
            seq_to_sql(entry.seq)?,
            entry.created_at,
            entry.actor,
            entry.action,
            entry.source,
            entry.session_id,
            entry.subject,
            entry.digest,
            details,
            entry.prev_hash.as_slice(),
            entry.hash.as_slice(),
        ])
    })
    .map_err(StoreError::sqlite("append an audit entry"))?;
    Ok(())
}

/// Returns whether `stream` has an entry with sequence number `seq`.
pub(crate) fn entry_exists(
    conn: &Connection,
    stream: Stream,
    seq: u64,
) -> Result<bool, StoreError> {
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    conn.prepare_cached("SELECT 1 FROM audit_entries WHERE stream = ?1 AND seq = ?2")
        .and_then(|mut statement| statement.exists(params![stream.as_str(), seq]))
        .map_err(StoreError::sqlite("look up an audit entry"))
}

/// Stores a checkpoint. Signing the same entry twice keeps the first.
pub(crate) fn insert_checkpoint(
    conn: &Connection,
    checkpoint: &Checkpoint,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO audit_checkpoints (stream, seq, hash, created_at, public_key,
            signature)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            checkpoint.stream.as_str(),
            seq_to_sql(checkpoint.seq)?,
            checkpoint.hash.as_slice(),
            checkpoint.created_at,
            checkpoint.public_key.as_slice(),
            checkpoint.signature.as_slice(),
        ])
    })
    .map_err(StoreError::sqlite("store an audit checkpoint"))?;
    Ok(())
}

/// Reads the sequence number of the latest checkpoint of `stream`.
pub(crate) fn last_checkpoint(
    conn: &Connection,
    stream: Stream,
) -> Result<Option<(u64, i64)>, StoreError> {
    conn.prepare_cached(
        "SELECT seq, created_at FROM audit_checkpoints WHERE stream = ?1
        ORDER BY seq DESC LIMIT 1",
    )
    .and_then(|mut statement| {
        statement
            .query_row([stream.as_str()], |row| {
                Ok((seq_from_sql(row.get(0)?)?, row.get(1)?))
            })
            .optional()
    })
    .map_err(StoreError::sqlite("read the latest audit checkpoint"))
}

/// Reads every checkpoint of `stream` in sequence order.
pub(crate) fn checkpoints(
    conn: &Connection,
    stream: Stream,
) -> Result<Vec<Checkpoint>, StoreError> {
    let mut statement = conn
        .prepare(
            "SELECT seq, hash, created_at, public_key, signature FROM audit_checkpoints
            WHERE stream = ?1 ORDER BY seq",
        )
        .map_err(StoreError::sqlite("read audit checkpoints"))?;
    let rows = statement
        .query_map([stream.as_str()], |row| checkpoint_row(stream, row))
        .map_err(StoreError::sqlite("read audit checkpoints"))?;
    rows.map(|row| row.map_err(StoreError::sqlite("read an audit checkpoint"))?)
        .collect()
}

/// Reads every anchor of `stream` in sequence order.
pub(crate) fn anchors(conn: &Connection, stream: Stream) -> Result<Vec<Anchor>, StoreError> {
    let mut statement = conn
        .prepare(
            "SELECT seq, hash, removed, created_at, public_key, signature FROM audit_anchors
            WHERE stream = ?1 ORDER BY seq",
        )
        .map_err(StoreError::sqlite("read audit anchors"))?;
    let rows = statement
        .query_map([stream.as_str()], |row| anchor_row(stream, row))
        .map_err(StoreError::sqlite("read audit anchors"))?;
    rows.map(|row| row.map_err(StoreError::sqlite("read an audit anchor"))?)
        .collect()
}

/// Reads the anchor with the highest sequence number of `stream`.
pub(crate) fn latest_anchor(
    conn: &Connection,
    stream: Stream,
) -> Result<Option<Anchor>, StoreError> {
    Ok(anchors(conn, stream)?.pop())
}

/// Calls `visit` with each entry of `stream` whose sequence number is in
/// `from_seq..=until_seq`, in order, without loading them all at once.
/// Stops at the first error `visit` returns.
pub(crate) fn for_each_entry<E: From<StoreError>>(
    conn: &Connection,
    stream: Stream,
    from_seq: u64,
    until_seq: u64,
    mut visit: impl FnMut(Entry) -> Result<(), E>,
) -> Result<(), E> {
    let mut statement = conn
        .prepare(
            "SELECT seq, created_at, actor, action, source, session_id, subject, digest,
                details, prev_hash, hash
            FROM audit_entries WHERE stream = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
        )
        .map_err(StoreError::sqlite("read audit entries"))?;
    let bounds = (
        i64::try_from(from_seq).unwrap_or(i64::MAX),
        i64::try_from(until_seq).unwrap_or(i64::MAX),
    );
    let mut rows = statement
        .query(params![stream.as_str(), bounds.0, bounds.1])
        .map_err(StoreError::sqlite("read audit entries"))?;
    while let Some(row) = rows
        .next()
        .map_err(StoreError::sqlite("read an audit entry"))?
    {
        let entry = entry_row(stream, row)?;
        visit(entry)?;
    }
    Ok(())
}

/// Returns the sequence numbers of the first and last entries of `stream`
/// recorded in `from..=until` (Unix milliseconds), or `None` when there are none.
pub(crate) fn seq_range_between(
    conn: &Connection,
    stream: Stream,
    from: i64,
    until: i64,
) -> Result<Option<(u64, u64)>, StoreError> {
    let range: (Option<i64>, Option<i64>) = conn
        .query_row(
            "SELECT MIN(seq), MAX(seq) FROM audit_entries
            WHERE stream = ?1 AND created_at BETWEEN ?2 AND ?3",
            params![stream.as_str(), from, until],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(StoreError::sqlite("find audit entries in a time range"))?;
    match range {
        (Some(first), Some(last)) => Ok(Some((stored_seq(first)?, stored_seq(last)?))),
        _ => Ok(None),
    }
}

/// Returns the highest sequence number `seq` of `stream` such that every
/// entry up to it was recorded before `cutoff`, with that entry's hash.
pub(crate) fn expired_prefix(
    conn: &Connection,
    stream: Stream,
    cutoff: i64,
) -> Result<Option<(u64, [u8; HASH_LEN])>, StoreError> {
    // The first entry at or after the cutoff ends the prefix, so an entry
    // with a clock that went backwards never opens a gap in the chain.
    let first_kept: Option<i64> = conn
        .query_row(
            "SELECT MIN(seq) FROM audit_entries WHERE stream = ?1 AND created_at >= ?2",
            params![stream.as_str(), cutoff],
            |row| row.get(0),
        )
        .map_err(StoreError::sqlite("find expired audit entries"))?;
    let last_removed: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM audit_entries WHERE stream = ?1 AND seq < ?2
            ORDER BY seq DESC LIMIT 1",
            params![stream.as_str(), first_kept.unwrap_or(i64::MAX)],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(StoreError::sqlite("find expired audit entries"))?;
    last_removed
        .map(|(seq, hash)| Ok((stored_seq(seq)?, hash_from_sql(hash)?)))
        .transpose()
}

/// Counts the entries of `stream` with sequence numbers up to `seq`.
pub(crate) fn count_through(
    conn: &Connection,
    stream: Stream,
    seq: u64,
) -> Result<u64, StoreError> {
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    let count: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM audit_entries WHERE stream = ?1 AND seq <= ?2",
            params![stream.as_str(), seq],
            |row| row.get(0),
        )
        .map_err(StoreError::sqlite("count expired audit entries"))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Stores `anchor` and deletes the entries and checkpoints of its stream up
/// to its sequence number, through the retention guard. Returns the number
/// of entries deleted. Runs inside the caller's transaction.
pub(crate) fn remove_through(conn: &Connection, anchor: &Anchor) -> Result<u64, StoreError> {
    let stream = anchor.stream.as_str();
    let seq = seq_to_sql(anchor.seq).map_err(StoreError::sqlite("store an audit anchor"))?;
    conn.execute(
        "INSERT INTO audit_anchors (stream, seq, hash, removed, created_at, public_key, signature)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            stream,
            seq,
            anchor.hash.as_slice(),
            i64::try_from(anchor.removed).unwrap_or(i64::MAX),
            anchor.created_at,
            anchor.public_key.as_slice(),
            anchor.signature.as_slice(),
        ],
    )
    .map_err(StoreError::sqlite("store an audit anchor"))?;

    conn.execute(
        "INSERT INTO audit_retention_guard (stream, through_seq) VALUES (?1, ?2)",
        params![stream, seq],
    )
    .map_err(StoreError::sqlite("set the audit retention guard"))?;

    let deleted = conn
        .execute(
            "DELETE FROM audit_entries WHERE stream = ?1 AND seq <= ?2",
            params![stream, seq],
        )
        .map_err(StoreError::sqlite("delete expired audit entries"))?;
    conn.execute(
        "DELETE FROM audit_checkpoints WHERE stream = ?1 AND seq <= ?2",
        params![stream, seq],
    )
    .map_err(StoreError::sqlite("delete expired audit checkpoints"))?;

    conn.execute(
        "DELETE FROM audit_retention_guard WHERE stream = ?1",
        [stream],
    )
    .map_err(StoreError::sqlite("clear the audit retention guard"))?;
    Ok(deleted as u64)
}

fn head_row(row: &Row<'_>) -> rusqlite::Result<Result<ChainHead, StoreError>> {
    let seq: i64 = row.get(0)?;
    let hash: Vec<u8> = row.get(1)?;
    Ok(seq_from_sql(seq)
        .map_err(|_| StoreError::Corrupt {
            what: "audit sequence number",
        })
        .and_then(|seq| {
            Ok(ChainHead {
                seq,
                hash: hash_from_sql(hash)?,
            })
        }))
}

fn entry_row(stream: Stream, row: &Row<'_>) -> Result<Entry, StoreError> {
    let read = StoreError::sqlite("read an audit entry");
    let details: String = row.get(8).map_err(&read)?;
    let details = serde_json::from_str(&details).map_err(|_| StoreError::Corrupt {
        what: "audit entry details",
    })?;
    Ok(Entry {
        stream,
        seq: seq_from_sql(row.get(0).map_err(&read)?).map_err(&read)?,
        created_at: row.get(1).map_err(&read)?,
        actor: row.get(2).map_err(&read)?,
        action: row.get(3).map_err(&read)?,
        source: row.get(4).map_err(&read)?,
        session_id: row.get(5).map_err(&read)?,
        subject: row.get(6).map_err(&read)?,
        digest: row.get(7).map_err(&read)?,
        details,
        prev_hash: hash_from_sql(row.get(9).map_err(&read)?)?,
        hash: hash_from_sql(row.get(10).map_err(&read)?)?,
    })
}

fn checkpoint_row(
    stream: Stream,
    row: &Row<'_>,
) -> rusqlite::Result<Result<Checkpoint, StoreError>> {
    let seq = seq_from_sql(row.get(0)?)?;
    let hash: Vec<u8> = row.get(1)?;
    let created_at: i64 = row.get(2)?;
    let public_key: Vec<u8> = row.get(3)?;
    let signature: Vec<u8> = row.get(4)?;
    Ok((|| {
        Ok(Checkpoint {
            stream,
            seq,
            hash: hash_from_sql(hash)?,
            created_at,
            public_key: fixed(public_key, "audit checkpoint public key")?,
            signature: fixed(signature, "audit checkpoint signature")?,
        })
    })())
}

fn anchor_row(stream: Stream, row: &Row<'_>) -> rusqlite::Result<Result<Anchor, StoreError>> {
    let seq = seq_from_sql(row.get(0)?)?;
    let hash: Vec<u8> = row.get(1)?;
    let removed: i64 = row.get(2)?;
    let created_at: i64 = row.get(3)?;
    let public_key: Vec<u8> = row.get(4)?;
    let signature: Vec<u8> = row.get(5)?;
    Ok((|| {
        Ok(Anchor {
            stream,
            seq,
            hash: hash_from_sql(hash)?,
            removed: u64::try_from(removed).unwrap_or(0),
            created_at,
            public_key: fixed(public_key, "audit anchor public key")?,
            signature: fixed(signature, "audit anchor signature")?,
        })
    })())
}

fn hash_from_sql(bytes: Vec<u8>) -> Result<[u8; HASH_LEN], StoreError> {
    fixed(bytes, "audit hash")
}

fn fixed<const N: usize>(bytes: Vec<u8>, what: &'static str) -> Result<[u8; N], StoreError> {
    <[u8; N]>::try_from(bytes).map_err(|_| StoreError::Corrupt { what })
}

fn stored_seq(seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt {
        what: "audit sequence number",
    })
}

fn seq_to_sql(seq: u64) -> rusqlite::Result<i64> {
    i64::try_from(seq).map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))
}

fn seq_from_sql(seq: i64) -> rusqlite::Result<u64> {
    u64::try_from(seq).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Integer,
            Box::new(error),
        )
    })
}
