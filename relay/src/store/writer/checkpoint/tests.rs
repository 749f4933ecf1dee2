use std::sync::atomic::AtomicUsize;
use std::thread::JoinHandle;
use std::time::Instant;

use axum::body::Bytes;
use rusqlite::Connection;
use sealcast_protocol::{FrameKind, SessionId, StreamId};
use tokio::sync::mpsc as queue;

use super::*;
use crate::store::writer::{spawn_with_policy, WriteOp};
use crate::store::{FrameRecord, NewSession, DATABASE_FILE};

/// Bytes of each test frame. Larger than a page, so each frame writes
/// several pages to the WAL.
const FRAME_BYTES: usize = 6000;

fn policy() -> CheckpointPolicy {
    CheckpointPolicy {
        interval: Duration::from_millis(10),
        restart_above_bytes: 1024 * 1024,
    }
}

/// A writer thread with its checkpointer, fed by this test's thread.
struct Writer {
    queue: queue::Sender<WriteOp>,
    thread: JoinHandle<u64>,
    session_id: SessionId,
    next_offset: u64,
    failures: Arc<AtomicUsize>,
    wal: PathBuf,
}

impl Writer {
    /// Opens a new database as the store does and starts its writer. With
    /// `journal_size_limit` 0 the WAL file is emptied whenever the WAL starts
    /// over, so its size shows how much of it is in use.
    fn start(dir: &Path, journal_size_limit: Option<i64>) -> Writer {
        let db_path = dir.join(DATABASE_FILE);
        let (conn, keys) =
            crate::store::open_keyed_writer(dir, &crate::at_rest::KeySource::Development).unwrap();
        if let Some(limit) = journal_size_limit {
            conn.pragma_update(None, "journal_size_limit", limit)
                .unwrap();
        }
        // A small queue keeps group commits small, as under steady load.
        let (sender, receiver) = queue::channel(16);
        let thread = spawn_with_policy(
            crate::db::Db::Sqlite(conn),
            receiver,
            keys.data_keys().clone(),
            policy(),
        )
        .unwrap();

        let writer = Writer {
            queue: sender,
            thread,
            session_id: SessionId::random(),
            next_offset: 0,
            failures: Arc::default(),
            wal: wal_path(&db_path),
        };
        writer.send(WriteOp::CreateSession {
            session: new_session(writer.session_id),
            done: writer.completion(),
        });
        writer
    }

    fn completion(&self) -> crate::store::Completion {
        let failures = Arc::clone(&self.failures);
        Box::new(move |result| {
            if result.is_err() {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    fn send(&self, op: WriteOp) {
        self.queue.blocking_send(op).ok().unwrap();
    }

    /// Queues `count` frames and returns the largest WAL file seen meanwhile.
    fn append(&mut self, count: usize) -> u64 {
        let mut largest = 0;
        for _ in 0..count {
            let frame = self.next_frame();
            self.send(WriteOp::AppendFrame {
                frame,
                done: self.completion(),
            });
            largest = largest.max(file_size(&self.wal));
        }
        largest
    }

    fn next_frame(&mut self) -> FrameRecord {
        let frame = FrameRecord {
            session_id: self.session_id,
            offset: self.next_offset,
            stream_id: StreamId([1; 16]),
            seq: self.next_offset,
            kind: FrameKind::Final,
            final_count: self.next_offset + 1,
            received_at: 0,
            delivery: Bytes::from(vec![7u8; 8 + FRAME_BYTES]),
        };
        self.next_offset += 1;
        frame
    }

    /// Appends one frame, waits until it is committed, and so every write
    /// queued before it, then returns the WAL file's size.
    fn settle(&mut self) -> u64 {
        let (committed, wait) = std::sync::mpsc::channel();
        let count_failure = self.completion();
        let frame = self.next_frame();
        self.send(WriteOp::AppendFrame {
            frame,
            done: Box::new(move |result| {
                count_failure(result);
                let _ = committed.send(());
            }),
        });
        wait.recv().unwrap();
        file_size(&self.wal)
    }

    /// Stops the writer after it commits everything queued and returns how
    /// many writes failed.
    fn stop(self) -> usize {
        self.send(WriteOp::Stop);
        self.thread.join().unwrap();
        self.failures.load(Ordering::Relaxed)
    }
}

fn new_session(session_id: SessionId) -> NewSession {
    NewSession {
        session_id,
        epoch: 1,
        fingerprint: [9; 16],
        invite_token_hash: [2; 32],
        invite_verifier: None,
        max_browsers: 1,
        created_at: 0,
        organization_id: None,
        created_by_user: None,
        created_by_device: None,
    }
}

#[test]
fn wal_stays_bounded_under_sustained_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = Writer::start(dir.path(), None);

    // 3,000 frames of 6 KB. With passive checkpoints alone the WAL file
    // grows past 30 MB here, because the writer never pauses long enough
    // for the WAL to start over.
    let frames = 3000;
    let largest = writer.append(frames);
    let written = (frames * FRAME_BYTES) as u64;
    assert_eq!(writer.stop(), 0, "writes failed");

    assert!(
        largest < 8 * 1024 * 1024,
        "WAL file reached {largest} bytes while {written} bytes of frames were written"
    );
}

#[test]
fn wal_restarts_after_reader_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = Writer::start(dir.path(), Some(0));
    writer.append(10);

    // A read transaction keeps every later frame in the WAL.
    let reader = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT COUNT(*) FROM frames", [], |row| row.get(0))
        .unwrap();
    // Measured once the writer has committed them all, which on a busy
    // machine it may not have while they are still being queued.
    writer.append(400);
    let pinned = writer.settle();
    assert!(
        pinned > policy().restart_above_bytes,
        "the reader did not keep the WAL from starting over ({pinned} bytes)"
    );

    reader.execute_batch("COMMIT").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut current = file_size(&writer.wal);
    while current > policy().restart_above_bytes && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        writer.append(1);
        current = file_size(&writer.wal);
    }
    assert_eq!(writer.stop(), 0, "writes failed");
    assert!(
        current <= policy().restart_above_bytes,
        "WAL file still has {current} bytes after the reader finished"
    );
}

#[test]
fn checkpointer_fails_to_start_without_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing").join(DATABASE_FILE);
    let started = Checkpointer::start(&missing, policy(), RestartSignal::default());
    assert!(
        matches!(started, Err(StoreError::Database { .. })),
        "checkpointer started on a missing database"
    );
}
