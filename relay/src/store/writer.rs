//! The writer thread: it owns the write connection and commits queued writes
//! in groups.
//!
//! Each round takes every queued write, up to [`MAX_BATCH`], runs them in one
//! write transaction (SQLite's `BEGIN IMMEDIATE`, or PostgreSQL's `BEGIN`
//! with the store's advisory lock) and completes each write's callback after
//! COMMIT returns, in queue order. A write that fails on its own (for example
//! a frame out of order) fails alone: SQLite undoes only the failed
//! statement, and on PostgreSQL each write other than a frame runs under a
//! savepoint. A failed
//! COMMIT, or a lost PostgreSQL connection, fails the whole batch. On SQLite,
//! WAL checkpoints run on the [`checkpoint`] thread, which the writer thread
//! starts and stops.

mod checkpoint;
mod frames_pg;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use sealcast_protocol::paired_keys::DeviceId;
use sealcast_protocol::SessionId;
use tokio::sync::mpsc;

use super::challenges::{self, NewChallenge, PresentedChallenge};
use super::fault::StoreFault;
use super::schema::{u64_to_sql, BUSY_TIMEOUT};
use super::{browsers, paired};
use super::{FrameRecord, NewSession, PairedKey, Redemption, SavepointError, StoreError};
use crate::at_rest::{DataKeys, FrameCiphers};
use crate::audit::AuditBatch;
use crate::db::{db_params, Db};
use crate::metrics::{
    STORE_COMMIT_BATCH_WRITES, STORE_COMMIT_FAILURES, STORE_COMMIT_SECONDS, STORE_WRITE_FAILURES,
};
use checkpoint::{CheckpointPolicy, Checkpointer, RestartSignal};

/// Most writes committed in one transaction. Larger than the store's queue,
/// for the batches that [`collect`] fills while the store is behind.
const MAX_BATCH: usize = 8192;

/// Pause between two takes while a batch fills.
const REFILL_PAUSE: Duration = Duration::from_millis(1);

/// Maximum time a batch fills from a queue that was full.
const MAX_REFILL_TIME: Duration = Duration::from_millis(10);

/// Writes below which a batch keeps filling while writes keep arriving, and
/// the maximum time it does so. Each write of a small batch pays for the
/// commit's WAL sync and for index and `streams` pages that it rarely shares.
/// On 5,000 sessions a batch of 25 frames cost the writer about 2.4 times the
/// CPU per frame of a batch of 1,000. That is an estimate from replaying this
/// schema's inserts through Python's `sqlite3` module on a two-core machine.
/// A pause that finds no new write ends the filling, so a lightly loaded
/// relay commits after one pause.
const FILL_TARGET: usize = 512;
const MAX_FILL_TIME: Duration = Duration::from_millis(5);

/// Bytes of frames after which a batch stops filling from a queue that was
/// full. Every frame in a batch is in memory until its commit, so this
/// bounds what the refill adds to the queue's own 1,024 writes.
const MAX_REFILL_BYTES: usize = 8 * 1024 * 1024;

/// SQLite's default WAL size in pages for automatic checkpoints, used only
/// when the checkpointer thread cannot start.
const AUTOCHECKPOINT_PAGES: i64 = 1000;

/// Called on the writer thread once the write is committed or has failed.
/// It must not block.
pub(crate) type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// One queued write.
pub(crate) enum WriteOp {
    /// Store a new session.
    CreateSession {
        session: NewSession,
        done: Completion,
    },
    /// Append a frame. The store checks that its offset directly follows the
    /// session's last stored offset and that the session is still open.
    AppendFrame {
        frame: FrameRecord,
        done: Completion,
    },
    /// Store a browser's follow credential if the session admits another browser.
    RedeemInvite {
        redemption: Redemption,
        done: Completion,
    },
    /// Store a paired device's follow credential, device id and the key
    /// epoch its pairing delivered, if the session is open.
    PairDevice {
        device: Redemption,
        device_id: DeviceId,
        key_epoch: u32,
        done: Completion,
    },
    /// Store a wrapped key of a later epoch for a paired device.
    StorePairedKey { key: PairedKey, done: Completion },
    /// Delete a paired device's follow credential and wrapped keys.
    RemovePairedDevice {
        session_id: SessionId,
        device_id: DeviceId,
        done: Completion,
    },
    /// Store an invite challenge, within the limits on live challenges.
    IssueChallenge {
        challenge: NewChallenge,
        done: Completion,
    },
    /// Delete a presented invite challenge and check it.
    TakeChallenge {
        presented: PresentedChallenge,
        done: Completion,
    },
    /// Mark a session ended and delete its browser and paired device
    /// credentials. Queued behind
    /// the session's frames.
    EndSession {
        session_id: SessionId,
        ended_at: i64,
        done: Completion,
    },
    /// Append audit events and sign due checkpoints, under a savepoint.
    Audit { batch: AuditBatch, done: Completion },
    /// Commit what is queued before it, then stop the thread.
    Stop,
}

impl WriteOp {
    /// Returns the bytes of the frame a write appends, 0 for other writes.
    fn frame_bytes(&self) -> usize {
        match self {
            WriteOp::AppendFrame { frame, .. } => frame.delivery.len(),
            _ => 0,
        }
    }

    /// Calls the write's completion with `outcome`.
    pub(crate) fn complete(self, outcome: Result<(), StoreError>) {
        match self {
            WriteOp::CreateSession { done, .. }
            | WriteOp::AppendFrame { done, .. }
            | WriteOp::RedeemInvite { done, .. }
            | WriteOp::PairDevice { done, .. }
            | WriteOp::StorePairedKey { done, .. }
            | WriteOp::RemovePairedDevice { done, .. }
            | WriteOp::IssueChallenge { done, .. }
            | WriteOp::TakeChallenge { done, .. }
            | WriteOp::EndSession { done, .. }
            | WriteOp::Audit { done, .. } => done(outcome),
            WriteOp::Stop => {}
        }
    }
}

/// A reserved place in the writer's queue.
pub(crate) struct WritePermit<'a> {
    permit: mpsc::Permit<'a, WriteOp>,
}

impl<'a> WritePermit<'a> {
    pub(super) fn new(permit: mpsc::Permit<'a, WriteOp>) -> Self {
        WritePermit { permit }
    }

    /// Enqueues a write without waiting.
    pub(crate) fn send(self, op: WriteOp) {
        self.permit.send(op);
    }
}

/// Starts the writer thread, which runs the checkpointer of a SQLite
/// database while it runs. Frames are sealed with `keys` on the writer thread.
pub(super) fn spawn(
    conn: Db,
    queue: mpsc::Receiver<WriteOp>,
    keys: Arc<DataKeys>,
) -> Result<std::thread::JoinHandle<u64>, StoreError> {
    spawn_with_policy(conn, queue, keys, CheckpointPolicy::default())
}

pub(super) fn spawn_with_policy(
    conn: Db,
    queue: mpsc::Receiver<WriteOp>,
    keys: Arc<DataKeys>,
    policy: CheckpointPolicy,
) -> Result<std::thread::JoinHandle<u64>, StoreError> {
    std::thread::Builder::new()
        .name("sealcast-store-writer".into())
        .spawn(move || {
            let restart = RestartSignal::default();
            let checkpointer = conn
                .as_sqlite()
                .and_then(|sqlite| start_checkpointer(sqlite, policy, &restart));
            let transactions = serve(conn, queue, FrameCiphers::new(keys), Some(&restart));
            if let Some(checkpointer) = checkpointer {
                checkpointer.stop();
            }
            transactions
        })
        .map_err(|error| StoreError::WriterThread(error.into()))
}

/// Starts the checkpointer for the writer's database file. When it cannot
/// start, turns SQLite's automatic checkpoints back on, inside commits, so
/// that the WAL stays bounded all the same.
fn start_checkpointer(
    conn: &Connection,
    policy: CheckpointPolicy,
    restart: &RestartSignal,
) -> Option<Checkpointer> {
    let path = conn.path().filter(|path| !path.is_empty())?;
    match Checkpointer::start(Path::new(path), policy, restart.clone()) {
        Ok(checkpointer) => Some(checkpointer),
        Err(error) => {
            tracing::error!(%error, "failed to start the store checkpoint thread: checkpoints run inside commits");
            if let Err(error) = conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)
            {
                tracing::error!(%error, "failed to turn automatic checkpoints on: the WAL grows without bound");
            }
            None
        }
    }
}

/// Commits batches until stopped or every sender is gone, without a
/// checkpointer. Returns the number of transactions run.
#[cfg(test)]
pub(super) fn run(conn: Db, queue: mpsc::Receiver<WriteOp>, keys: Arc<DataKeys>) -> u64 {
    serve(conn, queue, FrameCiphers::new(keys), None)
}

/// Commits batches until stopped or every sender is gone, and runs a RESTART
/// checkpoint after a batch when `restart` requests one. Returns the number
/// of transactions run.
fn serve(
    conn: Db,
    mut queue: mpsc::Receiver<WriteOp>,
    mut ciphers: FrameCiphers,
    restart: Option<&RestartSignal>,
) -> u64 {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut transactions = 0;
    loop {
        // Block for the first write, then take whatever else is already queued.
        let Some(first) = queue.blocking_recv() else {
            break;
        };
        let stop = collect(first, &mut queue, &mut batch);

        if !batch.is_empty() {
            commit_batch(&conn, &mut ciphers, &mut batch);
            transactions += 1;
        }
        if stop {
            break;
        }
        // After the batch's completions, so that only the next batch waits.
        if restart.is_some_and(RestartSignal::take) {
            if let Some(sqlite) = conn.as_sqlite() {
                checkpoint::restart_wal(sqlite, BUSY_TIMEOUT);
            }
        }
    }
    tracing::debug!(transactions, "store writer thread stopped");
    transactions
}

/// Fills `batch` from the queue. Returns whether a stop request was taken.
///
/// After the first take, the writer pauses for [`REFILL_PAUSE`] and takes
/// what arrived meanwhile, as long as each pause brings new writes. A batch
/// under [`FILL_TARGET`] writes fills so for up to [`MAX_FILL_TIME`]. When
/// the first take emptied a full queue, senders are waiting for room, so the
/// store is behind, and the batch fills for up to [`MAX_REFILL_TIME`],
/// [`MAX_BATCH`] writes and [`MAX_REFILL_BYTES`]. A larger group shares one
/// WAL sync among more writes, and frames of one session that commit
/// together share their B-tree pages.
fn collect(first: WriteOp, queue: &mut mpsc::Receiver<WriteOp>, batch: &mut Vec<WriteOp>) -> bool {
    let started = Instant::now();
    let (moved, stop) = take_queued(first, queue, batch);
    if stop {
        return true;
    }
    let (max_writes, max_time) = if moved < queue.max_capacity() {
        (FILL_TARGET, MAX_FILL_TIME)
    } else {
        (MAX_BATCH, MAX_REFILL_TIME)
    };

    let mut bytes: usize = batch.iter().map(WriteOp::frame_bytes).sum();
    while batch.len() < max_writes && bytes < MAX_REFILL_BYTES && started.elapsed() < max_time {
        std::thread::sleep(REFILL_PAUSE);
        let Ok(next) = queue.try_recv() else {
            break;
        };
        let taken_from = batch.len();
        if take_queued(next, queue, batch).1 {
            return true;
        }
        bytes += batch[taken_from..]
            .iter()
            .map(WriteOp::frame_bytes)
            .sum::<usize>();
    }
    false
}

/// Moves `first` and the writes queued behind it into `batch`, up to
/// [`MAX_BATCH`]. Returns how many it moved and whether it took a stop request.
fn take_queued(
    first: WriteOp,
    queue: &mut mpsc::Receiver<WriteOp>,
    batch: &mut Vec<WriteOp>,
) -> (usize, bool) {
    let mut moved = 0;
    let mut next = Some(first);
    while let Some(op) = next.take() {
        if matches!(op, WriteOp::Stop) {
            return (moved, true);
        }
        batch.push(op);
        moved += 1;
        if batch.len() < MAX_BATCH {
            next = queue.try_recv().ok();
        }
    }
    (moved, false)
}

fn commit_batch(conn: &Db, ciphers: &mut FrameCiphers, batch: &mut Vec<WriteOp>) {
    let started = Instant::now();
    let outcomes = apply_batch(conn, ciphers, batch);
    let elapsed = started.elapsed();

    metrics::histogram!(STORE_COMMIT_SECONDS).record(elapsed.as_secs_f64());
    metrics::histogram!(STORE_COMMIT_BATCH_WRITES).record(batch.len() as f64);
    tracing::trace!(
        writes = batch.len(),
        elapsed_us = elapsed.as_micros() as u64,
        "store batch"
    );

    match outcomes {
        Ok(outcomes) => {
            for (op, outcome) in batch.drain(..).zip(outcomes) {
                if let Err(error) = &outcome {
                    count_write_failure(error);
                }
                op.complete(outcome);
            }
        }
        Err(error) => {
            let fault = StoreFault::of(&error);
            metrics::counter!(STORE_COMMIT_FAILURES, "reason" => fault.label()).increment(1);
            metrics::counter!(STORE_WRITE_FAILURES, "reason" => fault.label())
                .increment(batch.len() as u64);
            // The error names the database's result and the step, never stored content.
            tracing::error!(%error, reason = fault.label(), writes = batch.len(), "store commit failed: no write of the batch is acknowledged");
            for op in batch.drain(..) {
                op.complete(Err(error.clone()));
            }
        }
    }
}

/// Counts a write that failed on its own inside a committed transaction.
/// Refusals, such as an invite that no browser may redeem any more, are
/// answers to the request rather than failures, so they are not counted.
fn count_write_failure(error: &StoreError) {
    if !error.is_refusal() {
        let fault = StoreFault::of(error);
        metrics::counter!(STORE_WRITE_FAILURES, "reason" => fault.label()).increment(1);
    }
}

/// Runs every write in one transaction. The outer error means nothing was committed.
///
/// SQLite rolls the whole transaction back by itself when some statements
/// fail with `SQLITE_FULL`, `SQLITE_IOERR` or `SQLITE_NOMEM`, and a lost
/// PostgreSQL connection loses the transaction. The batch then stops at
/// that write and fails with its error: the writes before it are gone, and
/// the writes after it would otherwise run outside a transaction, each
/// committed on its own while the batch reported them failed.
///
/// PostgreSQL rejects every statement of a transaction after one fails, so
/// there each write runs under a savepoint, which a failed write rolls
/// back to. SQLite needs none, because it undoes only the failed statement.
/// Frames, the bulk of every batch, skip the savepoint and its two round
/// trips: a frame out of order or after its session's end is found by row
/// counts, never by a failed statement, so only a database fault fails one,
/// and that fails the batch.
///
/// NOTE: when the PostgreSQL connection is lost during COMMIT, the server
/// may have committed the batch that this reports failed, so a retried
/// frame can then be rejected as out of order.
fn apply_batch(
    conn: &Db,
    ciphers: &mut FrameCiphers,
    batch: &[WriteOp],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let tx = conn
        .begin_write()
        .map_err(StoreError::db("begin a transaction"))?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut index = 0;
    while index < batch.len() {
        // On PostgreSQL, consecutive frames go together, in a fixed number
        // of statements.
        if tx.is_postgres() {
            let frames = frames_from(&batch[index..]);
            if frames.len() > 1 {
                index += frames.len();
                outcomes.extend(frames_pg::append_frames(&tx, ciphers, &frames)?);
                continue;
            }
        }
        let op = &batch[index];
        index += 1;
        let outcome = if tx.is_postgres() && !matches!(op, WriteOp::AppendFrame { .. }) {
            tx.savepoint(|db| apply(db, ciphers, op).map_err(SavepointError))
                .map_err(|SavepointError(error)| error)
        } else {
            apply(&tx, ciphers, op)
        };
        if let Err(error) = &outcome {
            if !tx.in_transaction() {
                return Err(error.clone());
            }
        }
        outcomes.push(outcome);
    }
    tx.commit()
        .map_err(StoreError::db("commit a transaction"))?;
    Ok(outcomes)
}

/// Returns the frames of the writes at the start of `ops`, up to the first
/// write that is not a frame.
fn frames_from(ops: &[WriteOp]) -> Vec<&FrameRecord> {
    ops.iter()
        .map_while(|op| match op {
            WriteOp::AppendFrame { frame, .. } => Some(frame),
            _ => None,
        })
        .collect()
}

fn apply(conn: &Db, ciphers: &mut FrameCiphers, op: &WriteOp) -> Result<(), StoreError> {
    match op {
        WriteOp::CreateSession { session, .. } => insert_session(conn, session),
        WriteOp::AppendFrame { frame, .. } => append_frame(conn, ciphers, frame),
        WriteOp::RedeemInvite { redemption, .. } => browsers::insert(conn, redemption),
        WriteOp::PairDevice {
            device,
            device_id,
            key_epoch,
            ..
        } => paired::insert(conn, device, device_id, *key_epoch),
        WriteOp::StorePairedKey { key, .. } => paired::insert_key(conn, key),
        WriteOp::RemovePairedDevice {
            session_id,
            device_id,
            ..
        } => paired::remove(conn, session_id, device_id),
        WriteOp::IssueChallenge { challenge, .. } => challenges::insert(conn, challenge),
        WriteOp::TakeChallenge { presented, .. } => challenges::take(conn, presented),
        WriteOp::EndSession {
            session_id,
            ended_at,
            ..
        } => end_session(conn, session_id, *ended_at),
        WriteOp::Audit { batch, .. } => batch.apply(conn),
        WriteOp::Stop => Ok(()),
    }
}

fn insert_session(db: &Db, session: &NewSession) -> Result<(), StoreError> {
    let sql = "INSERT INTO sessions (session_id, epoch, fingerprint, invite_token_hash,
        invite_verifier, max_browsers, created_at, organization_id, created_by_user,
        created_by_device)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
    db.execute(
        sql,
        db_params![
            session.session_id.as_bytes(),
            u64_to_sql(session.epoch),
            session.fingerprint,
            session.invite_token_hash,
            session.invite_verifier,
            session.max_browsers,
            session.created_at,
            session.organization_id,
            session.created_by_user,
            session.created_by_device,
        ],
    )
    .map_err(StoreError::db("store a session"))?;
    Ok(())
}

fn append_frame(
    db: &Db,
    ciphers: &mut FrameCiphers,
    frame: &FrameRecord,
) -> Result<(), StoreError> {
    let out_of_order = || StoreError::FrameOutOfOrder {
        session_id: frame.session_id,
        offset: frame.offset,
    };
    let offset = i64::try_from(frame.offset).map_err(|_| out_of_order())?;
    let seq = i64::try_from(frame.seq).map_err(|_| out_of_order())?;
    let body = frame.delivery.get(8..).ok_or_else(out_of_order)?;
    let sealed = ciphers.seal(frame.session_id.as_bytes(), frame.offset, body);

    if db.is_postgres() {
        return append_frame_postgres(db, frame, offset, seq, sealed);
    }

    // The WHERE clause keeps offsets gap-free and nothing after the session end,
    // whatever the in-memory state believed.
    let sql = "INSERT INTO frames (session_id, frame_offset, stream_id, seq, kind, final_count,
            received_at, frame)
        SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
        WHERE ?2 = (SELECT COALESCE(MAX(frame_offset) + 1, 0) FROM frames WHERE session_id = ?1)
          AND EXISTS (SELECT 1 FROM sessions WHERE session_id = ?1 AND ended_at IS NULL)";
    let inserted = db
        .execute(
            sql,
            db_params![
                frame.session_id.as_bytes(),
                offset,
                frame.stream_id.as_bytes(),
                seq,
                frame.kind.to_byte(),
                u64_to_sql(frame.final_count),
                frame.received_at,
                sealed,
            ],
        )
        .map_err(StoreError::db("store a frame"))?;

    if inserted != 1 {
        return Err(out_of_order());
    }
    if advance_stream(db, frame, offset, seq)? {
        return Ok(());
    }

    reject_sequence(db, frame, offset)
}

/// Takes a stored frame back out because its stream already contains its
/// sequence number or a hole precedes it, which the session's in-memory
/// state should have caught, so that the batch's other writes still commit.
fn reject_sequence(db: &Db, frame: &FrameRecord, offset: i64) -> Result<(), StoreError> {
    db.execute(
        "DELETE FROM frames WHERE session_id = ?1 AND frame_offset = ?2",
        db_params![frame.session_id.as_bytes(), offset],
    )
    .map_err(StoreError::db("remove a rejected frame"))?;
    Err(StoreError::SequenceOutOfOrder {
        session_id: frame.session_id,
        seq: frame.seq,
    })
}

/// [`append_frame`] on PostgreSQL, where each statement costs a round trip
/// to the server: the frame's insert and the usual advance of its stream
/// run as one statement. A new stream or a sequence number out of order
/// takes the extra statements of the general path.
fn append_frame_postgres(
    db: &Db,
    frame: &FrameRecord,
    offset: i64,
    seq: i64,
    sealed: &[u8],
) -> Result<(), StoreError> {
    let sql = "WITH inserted AS (
            INSERT INTO frames (session_id, frame_offset, stream_id, seq, kind, final_count,
                received_at, frame)
            SELECT ?1, ?2::BIGINT, ?3, ?4::BIGINT, ?5::BIGINT, ?6::BIGINT, ?7::BIGINT, ?8
            WHERE ?2::BIGINT = (SELECT COALESCE(MAX(frame_offset) + 1, 0) FROM frames
                                WHERE session_id = ?1)
              AND EXISTS (SELECT 1 FROM sessions WHERE session_id = ?1 AND ended_at IS NULL)
            RETURNING 1
        ), advanced AS (
            UPDATE streams SET next_seq = ?4::BIGINT + 1, last_offset = ?2::BIGINT
            WHERE session_id = ?1 AND stream_id = ?3 AND next_seq = ?4::BIGINT
              AND EXISTS (SELECT 1 FROM inserted)
            RETURNING 1
        )
        SELECT (SELECT COUNT(*) FROM inserted), (SELECT COUNT(*) FROM advanced)";
    let (inserted, advanced) = db
        .query_one(
            sql,
            db_params![
                frame.session_id.as_bytes(),
                offset,
                frame.stream_id.as_bytes(),
                seq,
                frame.kind.to_byte(),
                u64_to_sql(frame.final_count),
                frame.received_at,
                sealed,
            ],
            |row| Ok((row.get::<i64>(0)?, row.get::<i64>(1)?)),
        )
        .map_err(StoreError::db("store a frame"))?;
    if inserted != 1 {
        return Err(StoreError::FrameOutOfOrder {
            session_id: frame.session_id,
            offset: frame.offset,
        });
    }
    if advanced == 1 || advance_stream(db, frame, offset, seq)? {
        return Ok(());
    }
    reject_sequence(db, frame, offset)
}

/// Records `seq` at `offset` as the last frame of the frame's stream.
/// Returns false when `seq` does not directly follow the stream's last
/// stored sequence number, or is not 0 for a new stream.
fn advance_stream(db: &Db, frame: &FrameRecord, offset: i64, seq: i64) -> Result<bool, StoreError> {
    let session = frame.session_id.as_bytes().as_slice();
    let stream = frame.stream_id.as_bytes().as_slice();
    let advanced = db
        .execute(
            "UPDATE streams SET next_seq = ?3 + 1, last_offset = ?4
             WHERE session_id = ?1 AND stream_id = ?2 AND next_seq = ?3",
            db_params![session, stream, seq, offset],
        )
        .map_err(StoreError::db("advance a stream"))?;
    if advanced == 1 {
        return Ok(true);
    }
    if seq != 0 {
        return Ok(false);
    }
    let started = db
        .execute(
            "INSERT INTO streams (session_id, stream_id, next_seq, last_offset)
             VALUES (?1, ?2, 1, ?3) ON CONFLICT DO NOTHING",
            db_params![session, stream, offset],
        )
        .map_err(StoreError::db("start a stream"))?;
    Ok(started == 1)
}

fn end_session(db: &Db, session_id: &SessionId, ended_at: i64) -> Result<(), StoreError> {
    let changed = db
        .execute(
            "UPDATE sessions SET ended_at = ?2 WHERE session_id = ?1 AND ended_at IS NULL",
            db_params![session_id.as_bytes(), ended_at],
        )
        .map_err(StoreError::db("end a session"))?;

    if changed == 1 {
        browsers::delete_for_session(db, session_id)?;
        paired::delete_for_session(db, session_id)
    } else {
        Err(StoreError::NotEndable {
            session_id: *session_id,
        })
    }
}
