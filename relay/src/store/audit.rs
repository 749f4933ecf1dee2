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
//! can drop them, which verification then detects. On PostgreSQL the same
//! rules are plpgsql trigger functions, and TRUNCATE, which skips row
//! triggers, is rejected too.

use super::StoreError;
use crate::audit::{Anchor, Checkpoint, Entry, Stream, GENESIS_HASH, HASH_LEN};
use crate::db::{db_params, Db, Row};

/// Entries that [`for_each_entry`] reads per query.
const ENTRIES_PER_PAGE: i64 = 1000;

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

/// The audit tables and their triggers on PostgreSQL, with the names and
/// messages of [`MIGRATION`]. Each trigger function raises its message from
/// the trigger's argument.
pub(super) const MIGRATION_PG: &str = "
    CREATE TABLE audit_entries (
        stream TEXT NOT NULL CHECK (stream IN ('application', 'admin')),
        seq BIGINT NOT NULL CHECK (seq >= 1),
        created_at BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        source TEXT,
        session_id TEXT,
        subject TEXT,
        digest TEXT,
        details TEXT NOT NULL,
        prev_hash BYTEA NOT NULL,
        hash BYTEA NOT NULL,
        PRIMARY KEY (stream, seq)
    );

    CREATE INDEX audit_entries_by_time ON audit_entries (stream, created_at);

    CREATE TABLE audit_checkpoints (
        stream TEXT NOT NULL,
        seq BIGINT NOT NULL,
        hash BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        public_key BYTEA NOT NULL,
        signature BYTEA NOT NULL,
        PRIMARY KEY (stream, seq)
    );

    CREATE TABLE audit_anchors (
        stream TEXT NOT NULL,
        seq BIGINT NOT NULL,
        hash BYTEA NOT NULL,
        removed BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        public_key BYTEA NOT NULL,
        signature BYTEA NOT NULL,
        PRIMARY KEY (stream, seq)
    );

    CREATE TABLE audit_retention_guard (
        stream TEXT PRIMARY KEY,
        through_seq BIGINT NOT NULL
    );

    CREATE FUNCTION audit_reject() RETURNS trigger LANGUAGE plpgsql AS $body$
    BEGIN
        RAISE EXCEPTION '%', TG_ARGV[0];
    END;
    $body$;

    CREATE FUNCTION audit_guard_delete() RETURNS trigger LANGUAGE plpgsql AS $body$
    BEGIN
        IF NOT EXISTS (
            SELECT 1 FROM audit_retention_guard AS guard
            JOIN audit_anchors AS anchor
                ON anchor.stream = guard.stream AND anchor.seq = guard.through_seq
            WHERE guard.stream = OLD.stream AND OLD.seq <= guard.through_seq
        ) THEN
            RAISE EXCEPTION '%', TG_ARGV[0];
        END IF;
        RETURN OLD;
    END;
    $body$;

    CREATE TRIGGER audit_entries_reject_update BEFORE UPDATE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_reject(
        'audit entries are append-only: UPDATE is rejected');

    CREATE TRIGGER audit_entries_guard_delete BEFORE DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_guard_delete(
        'audit entries are append-only: only a retention run may delete entries up to its signed anchor');

    CREATE TRIGGER audit_entries_reject_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject(
        'audit entries are append-only: TRUNCATE is rejected');

    CREATE TRIGGER audit_checkpoints_reject_update BEFORE UPDATE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_reject(
        'audit checkpoints are append-only: UPDATE is rejected');

    CREATE TRIGGER audit_checkpoints_guard_delete BEFORE DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_guard_delete(
        'audit checkpoints are append-only: only a retention run may delete checkpoints up to its signed anchor');

    CREATE TRIGGER audit_checkpoints_reject_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject(
        'audit checkpoints are append-only: TRUNCATE is rejected');

    CREATE TRIGGER audit_anchors_reject_update BEFORE UPDATE ON audit_anchors
    FOR EACH ROW EXECUTE FUNCTION audit_reject(
        'audit anchors are append-only: UPDATE is rejected');

    CREATE TRIGGER audit_anchors_reject_delete BEFORE DELETE ON audit_anchors
    FOR EACH ROW EXECUTE FUNCTION audit_reject(
        'audit anchors are append-only: DELETE is rejected');

    CREATE TRIGGER audit_anchors_reject_truncate BEFORE TRUNCATE ON audit_anchors
    FOR EACH STATEMENT EXECUTE FUNCTION audit_reject(
        'audit anchors are append-only: TRUNCATE is rejected');";

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
pub(crate) fn head(db: &Db, stream: Stream) -> Result<ChainHead, StoreError> {
    let last = db
        .query_opt(
            "SELECT seq, hash FROM audit_entries WHERE stream = ?1 ORDER BY seq DESC LIMIT 1",
            db_params![stream.as_str()],
            |row| Ok((row.get::<i64>(0)?, row.get::<Vec<u8>>(1)?)),
        )
        .map_err(StoreError::db("read the audit chain head"))?;
    if let Some((seq, hash)) = last {
        return Ok(ChainHead {
            seq: stored_seq(seq)?,
            hash: hash_from_sql(hash)?,
        });
    }
    match latest_anchor(db, stream)? {
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
pub(crate) fn insert_entry(db: &Db, entry: &Entry) -> Result<(), StoreError> {
    let details = serde_json::to_string(&entry.details).map_err(|_| StoreError::Corrupt {
        what: "audit entry details",
    })?;
    let seq = seq_to_sql(entry.seq, "audit entry sequence number")?;
    db.execute(
        "INSERT INTO audit_entries (stream, seq, created_at, actor, action, source,
            session_id, subject, digest, details, prev_hash, hash)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        db_params![
            entry.stream.as_str(),
            seq,
            entry.created_at,
            entry.actor,
            entry.action,
            entry.source,
            entry.session_id,
            entry.subject,
            entry.digest,
            details,
            entry.prev_hash,
            entry.hash,
        ],
    )
    .map_err(StoreError::db("append an audit entry"))?;
    Ok(())
}

/// Returns whether `stream` has an entry with sequence number `seq`.
pub(crate) fn entry_exists(db: &Db, stream: Stream, seq: u64) -> Result<bool, StoreError> {
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    db.query_opt(
        "SELECT 1 FROM audit_entries WHERE stream = ?1 AND seq = ?2",
        db_params![stream.as_str(), seq],
        |_| Ok(()),
    )
    .map(|row| row.is_some())
    .map_err(StoreError::db("look up an audit entry"))
}

/// Stores a checkpoint. Signing the same entry twice keeps the first.
pub(crate) fn insert_checkpoint(db: &Db, checkpoint: &Checkpoint) -> Result<(), StoreError> {
    let seq = seq_to_sql(checkpoint.seq, "audit checkpoint sequence number")?;
    db.execute(
        "INSERT INTO audit_checkpoints (stream, seq, hash, created_at, public_key, signature)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6)
        ON CONFLICT DO NOTHING",
        db_params![
            checkpoint.stream.as_str(),
            seq,
            checkpoint.hash,
            checkpoint.created_at,
            checkpoint.public_key,
            checkpoint.signature,
        ],
    )
    .map_err(StoreError::db("store an audit checkpoint"))?;
    Ok(())
}

/// Reads the sequence number of the latest checkpoint of `stream`.
/// Returns the public key of the newest checkpoint of either stream.
pub(crate) fn newest_checkpoint_key(db: &Db) -> Result<Option<Vec<u8>>, StoreError> {
    db.query_opt(
        "SELECT public_key FROM audit_checkpoints ORDER BY created_at DESC LIMIT 1",
        db_params![],
        |row| row.get::<Vec<u8>>(0),
    )
    .map_err(StoreError::db("read the newest audit checkpoint's key"))
}

pub(crate) fn last_checkpoint(db: &Db, stream: Stream) -> Result<Option<(u64, i64)>, StoreError> {
    let row = db
        .query_opt(
            "SELECT seq, created_at FROM audit_checkpoints WHERE stream = ?1
            ORDER BY seq DESC LIMIT 1",
            db_params![stream.as_str()],
            |row| Ok((row.get::<i64>(0)?, row.get::<i64>(1)?)),
        )
        .map_err(StoreError::db("read the latest audit checkpoint"))?;
    row.map(|(seq, created_at)| Ok((stored_seq(seq)?, created_at)))
        .transpose()
}

/// Reads every checkpoint of `stream` in sequence order.
pub(crate) fn checkpoints(db: &Db, stream: Stream) -> Result<Vec<Checkpoint>, StoreError> {
    let rows = db
        .query_all(
            "SELECT seq, hash, created_at, public_key, signature FROM audit_checkpoints
            WHERE stream = ?1 ORDER BY seq",
            db_params![stream.as_str()],
            |row| {
                Ok((
                    row.get::<i64>(0)?,
                    row.get::<Vec<u8>>(1)?,
                    row.get::<i64>(2)?,
                    row.get::<Vec<u8>>(3)?,
                    row.get::<Vec<u8>>(4)?,
                ))
            },
        )
        .map_err(StoreError::db("read audit checkpoints"))?;
    rows.into_iter()
        .map(|(seq, hash, created_at, public_key, signature)| {
            Ok(Checkpoint {
                stream,
                seq: stored_seq(seq)?,
                hash: hash_from_sql(hash)?,
                created_at,
                public_key: fixed(public_key, "audit checkpoint public key")?,
                signature: fixed(signature, "audit checkpoint signature")?,
            })
        })
        .collect()
}

/// Reads every anchor of `stream` in sequence order.
pub(crate) fn anchors(db: &Db, stream: Stream) -> Result<Vec<Anchor>, StoreError> {
    let rows = db
        .query_all(
            "SELECT seq, hash, removed, created_at, public_key, signature FROM audit_anchors
            WHERE stream = ?1 ORDER BY seq",
            db_params![stream.as_str()],
            |row| {
                Ok((
                    row.get::<i64>(0)?,
                    row.get::<Vec<u8>>(1)?,
                    row.get::<i64>(2)?,
                    row.get::<i64>(3)?,
                    row.get::<Vec<u8>>(4)?,
                    row.get::<Vec<u8>>(5)?,
                ))
            },
        )
        .map_err(StoreError::db("read audit anchors"))?;
    rows.into_iter()
        .map(|(seq, hash, removed, created_at, public_key, signature)| {
            Ok(Anchor {
                stream,
                seq: stored_seq(seq)?,
                hash: hash_from_sql(hash)?,
                removed: u64::try_from(removed).unwrap_or(0),
                created_at,
                public_key: fixed(public_key, "audit anchor public key")?,
                signature: fixed(signature, "audit anchor signature")?,
            })
        })
        .collect()
}

/// Reads the anchor with the highest sequence number of `stream`.
pub(crate) fn latest_anchor(db: &Db, stream: Stream) -> Result<Option<Anchor>, StoreError> {
    Ok(anchors(db, stream)?.pop())
}

/// Calls `visit` with each entry of `stream` whose sequence number is in
/// `from_seq..=until_seq`, in order, reading [`ENTRIES_PER_PAGE`] entries
/// at a time rather than all at once. Stops at the first error `visit`
/// returns.
pub(crate) fn for_each_entry<E: From<StoreError>>(
    db: &Db,
    stream: Stream,
    from_seq: u64,
    until_seq: u64,
    mut visit: impl FnMut(Entry) -> Result<(), E>,
) -> Result<(), E> {
    let mut next = i64::try_from(from_seq).unwrap_or(i64::MAX);
    let until = i64::try_from(until_seq).unwrap_or(i64::MAX);
    while next <= until {
        let page = db
            .query_all(
                "SELECT seq, created_at, actor, action, source, session_id, subject, digest,
                    details, prev_hash, hash
                FROM audit_entries WHERE stream = ?1 AND seq BETWEEN ?2 AND ?3
                ORDER BY seq LIMIT ?4",
                db_params![stream.as_str(), next, until, ENTRIES_PER_PAGE],
                |row| Ok((row.get::<i64>(0)?, entry_row(stream, row))),
            )
            .map_err(StoreError::db("read audit entries"))?;
        let Some(&(last, _)) = page.last() else {
            break;
        };
        let full = page.len() as i64 == ENTRIES_PER_PAGE;
        for (_, entry) in page {
            visit(entry?)?;
        }
        if !full || last == i64::MAX {
            break;
        }
        next = last + 1;
    }
    Ok(())
}

/// Returns the sequence numbers of the first and last entries of `stream`
/// recorded in `from..=until` (Unix milliseconds), or `None` when there are none.
pub(crate) fn seq_range_between(
    db: &Db,
    stream: Stream,
    from: i64,
    until: i64,
) -> Result<Option<(u64, u64)>, StoreError> {
    let range = db
        .query_one(
            "SELECT MIN(seq), MAX(seq) FROM audit_entries
            WHERE stream = ?1 AND created_at BETWEEN ?2 AND ?3",
            db_params![stream.as_str(), from, until],
            |row| Ok((row.get::<Option<i64>>(0)?, row.get::<Option<i64>>(1)?)),
        )
        .map_err(StoreError::db("find audit entries in a time range"))?;
    match range {
        (Some(first), Some(last)) => Ok(Some((stored_seq(first)?, stored_seq(last)?))),
        _ => Ok(None),
    }
}

/// Returns the highest sequence number `seq` of `stream` such that every
/// entry up to it was recorded before `cutoff`, with that entry's hash.
pub(crate) fn expired_prefix(
    db: &Db,
    stream: Stream,
    cutoff: i64,
) -> Result<Option<(u64, [u8; HASH_LEN])>, StoreError> {
    // The first entry at or after the cutoff ends the prefix, so an entry
    // with a clock that went backwards never opens a gap in the chain.
    let first_kept = db
        .query_one(
            "SELECT MIN(seq) FROM audit_entries WHERE stream = ?1 AND created_at >= ?2",
            db_params![stream.as_str(), cutoff],
            |row| row.get::<Option<i64>>(0),
        )
        .map_err(StoreError::db("find expired audit entries"))?;
    let last_removed = db
        .query_opt(
            "SELECT seq, hash FROM audit_entries WHERE stream = ?1 AND seq < ?2
            ORDER BY seq DESC LIMIT 1",
            db_params![stream.as_str(), first_kept.unwrap_or(i64::MAX)],
            |row| Ok((row.get::<i64>(0)?, row.get::<Vec<u8>>(1)?)),
        )
        .map_err(StoreError::db("find expired audit entries"))?;
    last_removed
        .map(|(seq, hash)| Ok((stored_seq(seq)?, hash_from_sql(hash)?)))
        .transpose()
}

/// Counts the entries of `stream` with sequence numbers up to `seq`.
pub(crate) fn count_through(db: &Db, stream: Stream, seq: u64) -> Result<u64, StoreError> {
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    let count = db
        .query_one(
            "SELECT COUNT(*) FROM audit_entries WHERE stream = ?1 AND seq <= ?2",
            db_params![stream.as_str(), seq],
            |row| row.get::<i64>(0),
        )
        .map_err(StoreError::db("count expired audit entries"))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Stores `anchor` and deletes the entries and checkpoints of its stream up
/// to its sequence number, through the retention guard. Returns the number
/// of entries deleted. Runs inside the caller's transaction.
pub(crate) fn remove_through(db: &Db, anchor: &Anchor) -> Result<u64, StoreError> {
    let stream = anchor.stream.as_str();
    let seq = seq_to_sql(anchor.seq, "audit anchor sequence number")?;
    db.execute(
        "INSERT INTO audit_anchors (stream, seq, hash, removed, created_at, public_key, signature)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        db_params![
            stream,
            seq,
            anchor.hash,
            i64::try_from(anchor.removed).unwrap_or(i64::MAX),
            anchor.created_at,
            anchor.public_key,
            anchor.signature,
        ],
    )
    .map_err(StoreError::db("store an audit anchor"))?;

    db.execute(
        "INSERT INTO audit_retention_guard (stream, through_seq) VALUES (?1, ?2)",
        db_params![stream, seq],
    )
    .map_err(StoreError::db("set the audit retention guard"))?;

    let deleted = db
        .execute(
            "DELETE FROM audit_entries WHERE stream = ?1 AND seq <= ?2",
            db_params![stream, seq],
        )
        .map_err(StoreError::db("delete expired audit entries"))?;
    db.execute(
        "DELETE FROM audit_checkpoints WHERE stream = ?1 AND seq <= ?2",
        db_params![stream, seq],
    )
    .map_err(StoreError::db("delete expired audit checkpoints"))?;

    db.execute(
        "DELETE FROM audit_retention_guard WHERE stream = ?1",
        db_params![stream],
    )
    .map_err(StoreError::db("clear the audit retention guard"))?;
    Ok(deleted as u64)
}

/// Reads an entry's columns after its sequence number. A value that does
/// not fit its field is [`StoreError::Corrupt`], so that verification can
/// name the entry.
fn entry_row(stream: Stream, row: &Row<'_>) -> Result<Entry, StoreError> {
    let read = StoreError::db("read an audit entry");
    let details: String = row.get(8).map_err(&read)?;
    let details = serde_json::from_str(&details).map_err(|_| StoreError::Corrupt {
        what: "audit entry details",
    })?;
    Ok(Entry {
        stream,
        seq: stored_seq(row.get(0).map_err(&read)?)?,
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

/// Converts a sequence number for storage. Sequence numbers above
/// `i64::MAX` do not occur, because they count appended entries.
fn seq_to_sql(seq: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt { what })
}
