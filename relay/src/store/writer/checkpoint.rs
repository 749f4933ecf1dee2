//! WAL checkpoints outside of commits. The writer connection runs with
//! `wal_autocheckpoint=0`, because an automatic checkpoint runs inside the
//! COMMIT that crosses its threshold.
//!
//! The checkpointer thread runs a PASSIVE checkpoint on a connection of its
//! own every [`CheckpointPolicy::interval`]. SQLite runs a passive checkpoint
//! without waiting for the writer or for readers (see the documentation of
//! `sqlite3_wal_checkpoint_v2`), and it copies the bulk of the committed
//! pages into the database file. The WAL starts again from its beginning only when a
//! write transaction begins while every WAL frame is copied and no reader
//! still reads old ones. Under steady writes that moment may never come,
//! because the writer commits again before a passive checkpoint catches up.
//! So once the WAL file passes [`CheckpointPolicy::restart_above_bytes`], the
//! thread raises a [`RestartSignal`], and the writer thread runs a RESTART
//! checkpoint between two transactions. That copies the few frames committed
//! since the passive one, waits for readers to finish with the WAL, and makes
//! the next transaction start the WAL over. That commit cuts the file back to
//! the writer's `journal_size_limit`. The writer runs it itself because a
//! RESTART from another connection would compete with the writer for the
//! write lock, and under steady writes it could wait indefinitely.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::metrics::{STORE_CHECKPOINT_FAILURES, STORE_CHECKPOINT_SECONDS, STORE_WAL_BYTES};
use crate::store::StoreError;

/// When the checkpointer works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckpointPolicy {
    /// Time between two PASSIVE checkpoints.
    pub(crate) interval: Duration,
    /// WAL file size above which the writer runs a RESTART checkpoint.
    pub(crate) restart_above_bytes: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            interval: Duration::from_millis(250),
            restart_above_bytes: 128 * 1024 * 1024,
        }
    }
}

/// The checkpointer's request to the writer thread for a RESTART checkpoint.
#[derive(Debug, Clone, Default)]
pub(crate) struct RestartSignal(Arc<AtomicBool>);

impl RestartSignal {
    fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Returns whether a restart was requested, and clears the request.
    pub(crate) fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

/// Maximum time a RESTART checkpoint waits for a passive checkpoint or for
/// readers. The writer's next transaction waits as long, so it is short: a
/// checkpoint that gives up is requested again after the next interval.
const RESTART_BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// Runs a RESTART checkpoint on the writer's connection, between two of its
/// transactions, then sets the connection's busy timeout back to `busy_timeout`.
pub(crate) fn restart_wal(conn: &Connection, busy_timeout: Duration) {
    if let Err(error) = conn.busy_timeout(RESTART_BUSY_TIMEOUT) {
        tracing::error!(%error, "failed to set the busy timeout of a RESTART checkpoint");
        return;
    }
    run_mode(conn, Mode::Restart);
    if let Err(error) = conn.busy_timeout(busy_timeout) {
        tracing::error!(%error, "failed to restore the store writer's busy timeout");
    }
}

/// The running checkpointer thread. [`Checkpointer::stop`] ends it.
pub(crate) struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Opens a connection to the database at `db_path` and starts the
    /// thread, which raises `restart` when the WAL grows past its bound.
    pub(crate) fn start(
        db_path: &Path,
        policy: CheckpointPolicy,
        restart: RestartSignal,
    ) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            db_path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(StoreError::sqlite("open the checkpoint connection"))?;

        let wal_path = wal_path(db_path);
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sealcast-store-checkpoint".into())
            .spawn(move || run(&conn, &wal_path, policy, &restart, &stopped))
            .map_err(|error| StoreError::WriterThread(error.into()))?;
        Ok(Checkpointer { stop, thread })
    }

    /// Stops the thread and waits for it, at most one checkpoint's time.
    pub(crate) fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("store checkpoint thread failed");
        }
    }
}

/// Returns the path of the WAL file SQLite keeps next to `db_path`.
pub(crate) fn wal_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn run(
    conn: &Connection,
    wal_path: &Path,
    policy: CheckpointPolicy,
    restart: &RestartSignal,
    stopped: &mpsc::Receiver<()>,
) {
    tracing::debug!(?policy, "store checkpoint thread started");
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(policy.interval) {
        run_mode(conn, Mode::Passive);

        let wal_bytes = file_size(wal_path);
        metrics::gauge!(STORE_WAL_BYTES).set(wal_bytes as f64);
        if wal_bytes > policy.restart_above_bytes {
            tracing::debug!(
                wal_bytes,
                limit = policy.restart_above_bytes,
                "store WAL is over its bound: asking the writer for a RESTART checkpoint"
            );
            restart.raise();
        }
    }
    tracing::debug!("store checkpoint thread stopped");
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Passive,
    Restart,
}

impl Mode {
    fn sql(self) -> &'static str {
        match self {
            Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            Mode::Restart => "PRAGMA wal_checkpoint(RESTART)",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Passive => "passive",
            Mode::Restart => "restart",
        }
    }
}

/// Runs a checkpoint and records its time. A checkpoint that could not get
/// its locks in time is not an error: the next interval tries again.
fn run_mode(conn: &Connection, mode: Mode) {
    let started = Instant::now();
    // The row is (busy, frames in the WAL, frames copied to the database).
    let outcome = conn.query_row(mode.sql(), [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    });
    let elapsed = started.elapsed();
    metrics::histogram!(STORE_CHECKPOINT_SECONDS, "mode" => mode.label())
        .record(elapsed.as_secs_f64());

    match outcome {
        Ok((busy, wal_frames, copied_frames)) => tracing::trace!(
            mode = mode.label(),
            busy = busy != 0,
            wal_frames,
            copied_frames,
            elapsed_us = elapsed.as_micros() as u64,
            "store checkpoint"
        ),
        Err(error) => {
            metrics::counter!(STORE_CHECKPOINT_FAILURES, "mode" => mode.label()).increment(1);
            tracing::error!(mode = mode.label(), %error, "store checkpoint failed");
        }
    }
}

/// Returns the size of the file at `path`, 0 when it does not exist.
fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

#[cfg(test)]
mod tests;
