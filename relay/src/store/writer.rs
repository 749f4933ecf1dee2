//! The writer thread: it owns the write connection and commits queued writes
//! in groups.
//!
//! Each round takes every queued write, up to [`MAX_BATCH`], runs them in one
//! `BEGIN IMMEDIATE` transaction and completes each write's callback after
//! COMMIT returns, in queue order. A write that fails on its own (for example
//! a frame out of order) fails alone; a failed COMMIT fails the whole batch.
//! WAL checkpoints run on the [`checkpoint`] thread, which the writer thread
//! starts and stops.

mod checkpoint;

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};
use sealcast_protocol::SessionId;
use tokio::sync::mpsc;

use super::browsers;
use super::schema::{u64_to_sql, BUSY_TIMEOUT};
use super::{FrameRecord, NewSession, Redemption, StoreError};
use crate::audit::AuditBatch;
use crate::metrics::{
    STORE_COMMIT_BATCH_WRITES, STORE_COMMIT_FAILURES, STORE_COMMIT_SECONDS, STORE_WRITE_FAILURES,
};
use checkpoint::{CheckpointPolicy, Checkpointer, RestartSignal};

/// Most writes committed in one transaction. Larger than the store's queue,
/// for the batches that [`collect`] fills while the store is behind.
const MAX_BATCH: usize = 8192;

/// Pause between two takes while a batch fills from a queue that was full.
const REFILL_PAUSE: Duration = Duration::from_millis(1);

/// Maximum time a batch fills from a queue that was full.
const MAX_REFILL_TIME: Duration = Duration::from_millis(10);

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
    /// Mark a session ended and delete its browser credentials. Queued behind
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

/// Starts the writer thread, which runs the checkpointer while it runs.
pub(super) fn spawn(
    conn: Connection,
    queue: mpsc::Receiver<WriteOp>,
) -> Result<std::thread::JoinHandle<u64>, StoreError> {
    spawn_with_policy(conn, queue, CheckpointPolicy::default())
}

pub(super) fn spawn_with_policy(
    conn: Connection,
    queue: mpsc::Receiver<WriteOp>,
    policy: CheckpointPolicy,
) -> Result<std::thread::JoinHandle<u64>, StoreError> {
    std::thread::Builder::new()
        .name("sealcast-store-writer".into())
        .spawn(move || {
            let restart = RestartSignal::default();
            let checkpointer = start_checkpointer(&conn, policy, &restart);
            let transactions = serve(conn, queue, Some(&restart));
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
pub(super) fn run(conn: Connection, queue: mpsc::Receiver<WriteOp>) -> u64 {
    serve(conn, queue, None)
}

/// Commits batches until stopped or every sender is gone, and runs a RESTART
/// checkpoint after a batch when `restart` requests one. Returns the number
/// of transactions run.
fn serve(
    mut conn: Connection,
    mut queue: mpsc::Receiver<WriteOp>,
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
            commit_batch(&mut conn, &mut batch);
            transactions += 1;
        }
        if stop {
            break;
        }
        // After the batch's completions, so that only the next batch waits.
        if restart.is_some_and(RestartSignal::take) {
            checkpoint::restart_wal(&conn, BUSY_TIMEOUT);
        }
    }
    tracing::debug!(transactions, "store writer thread stopped");
    transactions
}

/// Fills `batch` from the queue. Returns whether a stop request was taken.
///
/// When the first take empties a full queue, senders are waiting for room,
/// so the store is behind. The batch then keeps filling: the writer pauses
/// for [`REFILL_PAUSE`] and takes what the waiting senders queued, for up to
/// [`MAX_REFILL_TIME`] and [`MAX_REFILL_BYTES`]. A larger group shares one
/// WAL sync among more writes, and frames of one session that commit
/// together share their B-tree pages.
fn collect(first: WriteOp, queue: &mut mpsc::Receiver<WriteOp>, batch: &mut Vec<WriteOp>) -> bool {
    let started = Instant::now();
    let (moved, stop) = take_queued(first, queue, batch);
    if stop || moved < queue.max_capacity() {
        return stop;
    }

    let mut bytes: usize = batch.iter().map(WriteOp::frame_bytes).sum();
    while batch.len() < MAX_BATCH && bytes < MAX_REFILL_BYTES && started.elapsed() < MAX_REFILL_TIME
    {
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

fn commit_batch(conn: &mut Connection, batch: &mut Vec<WriteOp>) {
    let started = Instant::now();
    let outcomes = apply_batch(conn, batch);
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
                if outcome.as_ref().is_err_and(|error| !error.is_refusal()) {
                    metrics::counter!(STORE_WRITE_FAILURES).increment(1);
                }
                op.complete(outcome);
            }
        }
        Err(error) => {
            metrics::counter!(STORE_COMMIT_FAILURES).increment(1);
            tracing::error!(%error, writes = batch.len(), "store commit failed");
            for op in batch.drain(..) {
                op.complete(Err(error.clone()));
            }
        }
    }
}

/// Runs every write in one transaction. The outer error means nothing was committed.
fn apply_batch(
    conn: &mut Connection,
    batch: &[WriteOp],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(StoreError::sqlite("begin a transaction"))?;
    let outcomes = batch.iter().map(|op| apply(&tx, op)).collect();
    tx.commit()
        .map_err(StoreError::sqlite("commit a transaction"))?;
    Ok(outcomes)
}

fn apply(conn: &Connection, op: &WriteOp) -> Result<(), StoreError> {
    match op {
        WriteOp::CreateSession { session, .. } => insert_session(conn, session),
        WriteOp::AppendFrame { frame, .. } => append_frame(conn, frame),
        WriteOp::RedeemInvite { redemption, .. } => browsers::insert(conn, redemption),
        WriteOp::EndSession {
            session_id,
            ended_at,
            ..
        } => end_session(conn, session_id, *ended_at),
        WriteOp::Audit { batch, .. } => batch.apply(conn),
        WriteOp::Stop => Ok(()),
    }
}

fn insert_session(conn: &Connection, session: &NewSession) -> Result<(), StoreError> {
    let sql = "INSERT INTO sessions (session_id, epoch, fingerprint, invite_token_hash,
        invite_verifier, max_browsers, created_at, organization_id, created_by_user,
        created_by_device)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
    conn.prepare_cached(sql)
        .and_then(|mut statement| {
            statement.execute(params![
                session.session_id.as_bytes().as_slice(),
                u64_to_sql(session.epoch),
                session.fingerprint.as_slice(),
                session.invite_token_hash.as_slice(),
                session
                    .invite_verifier
                    .as_ref()
                    .map(|verifier| verifier.as_slice()),
                session.max_browsers,
                session.created_at,
                session.organization_id,
                session.created_by_user,
                session.created_by_device,
            ])
        })
        .map_err(StoreError::sqlite("store a session"))?;
    Ok(())
}

fn append_frame(conn: &Connection, frame: &FrameRecord) -> Result<(), StoreError> {
    let out_of_order = || StoreError::FrameOutOfOrder {
        session_id: frame.session_id,
        offset: frame.offset,
    };
    let offset = i64::try_from(frame.offset).map_err(|_| out_of_order())?;
    let seq = i64::try_from(frame.seq).map_err(|_| out_of_order())?;
    let body = frame.delivery.get(8..).ok_or_else(out_of_order)?;

    // The WHERE clause keeps offsets gap-free and nothing after the session end,
    // whatever the in-memory state believed.
    let sql = "INSERT INTO frames (session_id, frame_offset, stream_id, seq, kind, final_count,
            received_at, frame)
        SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
        WHERE ?2 = (SELECT COALESCE(MAX(frame_offset) + 1, 0) FROM frames WHERE session_id = ?1)
          AND EXISTS (SELECT 1 FROM sessions WHERE session_id = ?1 AND ended_at IS NULL)";
    let inserted = conn
        .prepare_cached(sql)
        .and_then(|mut statement| {
            statement.execute(params![
                frame.session_id.as_bytes().as_slice(),
                offset,
                frame.stream_id.as_bytes().as_slice(),
                seq,
                frame.kind.to_byte(),
                u64_to_sql(frame.final_count),
                frame.received_at,
                body,
            ])
        })
        .map_err(StoreError::sqlite("store a frame"))?;

    if inserted == 1 {
        Ok(())
    } else {
        Err(out_of_order())
    }
}

fn end_session(conn: &Connection, session_id: &SessionId, ended_at: i64) -> Result<(), StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE sessions SET ended_at = ?2 WHERE session_id = ?1 AND ended_at IS NULL",
        )
        .and_then(|mut statement| {
            statement.execute(params![session_id.as_bytes().as_slice(), ended_at])
        })
        .map_err(StoreError::sqlite("end a session"))?;

    if changed == 1 {
        browsers::delete_for_session(conn, session_id)
    } else {
        Err(StoreError::NotEndable {
            session_id: *session_id,
        })
    }
}
