//! Appending events to their chains and signing checkpoints, in a
//! transaction of their own or inside the store writer's.
//!
//! The chain head is read inside the transaction, never cached, so the
//! relay's store writer thread and `sealcast-relay` commands on the same
//! database can append to one stream: SQLite's write lock, or the
//! PostgreSQL advisory write lock that every node takes, orders them.
//! Entry and checkpoint counters are incremented before the commit, so a
//! failed commit, which the store counts on its own, leaves them too high.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::entry::{Entry, Stream};
use super::event::Event;
use super::key::AuditKey;
use super::AuditError;
use crate::db::{Backend, Db};
use crate::metrics::{AUDIT_CHECKPOINTS, AUDIT_ENTRIES};
use crate::store::audit::{self as audit_store, ChainHead};
use crate::store::{now_millis, open_migrated_writer, SavepointError, StoreError};

/// When the relay signs the head of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Entries after the last checkpoint at which an append signs the head.
    pub every_entries: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            every_entries: 1000,
        }
    }
}

/// Appends `events` in order with time `now` (Unix milliseconds) and signs
/// the head of each stream that reached `policy`, all in one write
/// transaction. Returns the sequence number each event got.
pub(crate) fn append(
    conn: &Db,
    key: &AuditKey,
    policy: CheckpointPolicy,
    events: &[Event],
    now: i64,
) -> Result<Vec<u64>, StoreError> {
    let tx = conn
        .begin_write()
        .map_err(StoreError::db("begin an audit transaction"))?;
    let sequence_numbers = append_in(&tx, key, policy, events, now)?;
    tx.commit()
        .map_err(StoreError::db("commit an audit transaction"))?;
    Ok(sequence_numbers)
}

/// Does the work of [`append`] inside the caller's transaction.
fn append_in(
    conn: &Db,
    key: &AuditKey,
    policy: CheckpointPolicy,
    events: &[Event],
    now: i64,
) -> Result<Vec<u64>, StoreError> {
    let mut heads: BTreeMap<Stream, ChainHead> = BTreeMap::new();
    let mut sequence_numbers = Vec::with_capacity(events.len());

    for event in events {
        let stream = event.action.stream();
        let head = match heads.get(&stream) {
            Some(head) => *head,
            None => audit_store::head(conn, stream)?,
        };
        let entry = chained_entry(event, head, now);
        audit_store::insert_entry(conn, &entry)?;
        metrics::counter!(AUDIT_ENTRIES, "stream" => stream.as_str()).increment(1);
        sequence_numbers.push(entry.seq);
        heads.insert(
            stream,
            ChainHead {
                seq: entry.seq,
                hash: entry.hash,
            },
        );
    }

    for (stream, head) in &heads {
        let last = audit_store::last_checkpoint(conn, *stream)?.map_or(0, |(seq, _)| seq);
        if head.seq.saturating_sub(last) >= policy.every_entries.max(1) {
            sign(conn, key, *stream, *head, now)?;
        }
    }
    Ok(sequence_numbers)
}

/// Appends one event from a command on the relay host, with its own
/// connection to the database of `backend` and the audit key of `data_dir`.
pub(crate) fn record_direct(
    data_dir: &Path,
    backend: &Backend,
    event: Event,
) -> Result<u64, AuditError> {
    let key = AuditKey::load_or_create(data_dir)?;
    let conn = open_migrated_writer(backend)?;
    let sequence_numbers = append(
        &conn,
        &key,
        CheckpointPolicy::default(),
        &[event],
        now_millis(),
    )?;
    Ok(sequence_numbers.first().copied().unwrap_or(0))
}

/// Signs the head of every stream that has entries after its last
/// checkpoint, in one write transaction.
pub(crate) fn checkpoint_heads(conn: &Db, key: &AuditKey, now: i64) -> Result<(), StoreError> {
    let tx = conn
        .begin_write()
        .map_err(StoreError::db("begin an audit transaction"))?;
    checkpoint_heads_in(&tx, key, now)?;
    tx.commit()
        .map_err(StoreError::db("commit an audit transaction"))
}

/// Does the work of [`checkpoint_heads`] inside the caller's transaction.
fn checkpoint_heads_in(conn: &Db, key: &AuditKey, now: i64) -> Result<(), StoreError> {
    for stream in Stream::ALL {
        let head = audit_store::head(conn, stream)?;
        let last = audit_store::last_checkpoint(conn, stream)?.map_or(0, |(seq, _)| seq);
        // An anchor head has no entry left to check a checkpoint against.
        let has_entry = audit_store::entry_exists(conn, stream, head.seq)?;
        if head.seq > last && has_entry {
            sign(conn, key, stream, head, now)?;
        }
    }
    Ok(())
}

fn sign(
    conn: &Db,
    key: &AuditKey,
    stream: Stream,
    head: ChainHead,
    now: i64,
) -> Result<(), StoreError> {
    audit_store::insert_checkpoint(conn, &key.checkpoint(stream, head.seq, head.hash, now))?;
    metrics::counter!(AUDIT_CHECKPOINTS, "stream" => stream.as_str()).increment(1);
    Ok(())
}

/// Audit work for the store's writer thread, which runs it inside its group
/// transaction beside frames. So the relay's own events never compete with
/// the frame writer for the write lock. Admin commands and retention runs
/// use connections of their own, so they still do.
pub(crate) struct AuditBatch {
    pub(crate) events: Vec<Event>,
    pub(crate) key: Arc<AuditKey>,
    pub(crate) policy: CheckpointPolicy,
    /// Whether to sign every stream head with unsigned entries afterwards.
    pub(crate) sign_heads: bool,
}

impl AuditBatch {
    /// Appends the events and signs due checkpoints inside the writer's
    /// transaction, under a savepoint, so a failure leaves no partial batch.
    pub(crate) fn apply(&self, conn: &Db) -> Result<(), StoreError> {
        conn.savepoint(|conn| {
            let now = now_millis();
            append_in(conn, &self.key, self.policy, &self.events, now)?;
            if self.sign_heads {
                checkpoint_heads_in(conn, &self.key, now)?;
            }
            Ok::<_, SavepointError>(())
        })
        .map_err(|SavepointError(error)| error)
    }
}

fn chained_entry(event: &Event, head: ChainHead, now: i64) -> Entry {
    let mut entry = Entry {
        stream: event.action.stream(),
        seq: head.seq + 1,
        created_at: now,
        actor: event.actor.clone(),
        action: event.action.as_str().to_owned(),
        source: event.source.clone(),
        session_id: event.session_id.clone(),
        subject: event.subject.clone(),
        digest: event.digest.clone(),
        details: event.details.clone(),
        prev_hash: head.hash,
        hash: [0; 32],
    };
    entry.hash = entry.compute_hash();
    entry
}
