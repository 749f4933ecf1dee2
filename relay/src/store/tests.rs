use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use sealcast_protocol::paired_keys::DeviceId;
use sealcast_protocol::{FrameKind, SessionId, StreamId};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::at_rest;

fn new_session(session_id: SessionId) -> NewSession {
    NewSession {
        session_id,
        epoch: u64::MAX - 7,
        fingerprint: [9; 16],
        invite_token_hash: [2; 32],
        invite_verifier: Some([3; 32]),
        max_browsers: 2,
        created_at: 1_700_000_000_000,
        organization_id: None,
        created_by_user: None,
        created_by_device: None,
    }
}

fn frame(session_id: SessionId, offset: u64, stream: u8, seq: u64) -> FrameRecord {
    let mut delivery = vec![0u8; 8];
    delivery.extend_from_slice(format!("frame {offset}").as_bytes());
    FrameRecord {
        session_id,
        offset,
        stream_id: StreamId([stream; 16]),
        seq,
        kind: FrameKind::Final,
        final_count: seq + 1,
        received_at: 1_700_000_000_000 + offset as i64,
        delivery: Bytes::from(delivery),
    }
}

/// Returns the SQLite backend of `dir`.
fn sqlite_backend(dir: &Path) -> Backend {
    Backend::Sqlite(dir.join(DATABASE_FILE))
}

/// A write's position in the queue and its outcome.
type Outcome = (usize, Result<(), StoreError>);

/// Collects each write's outcome under its position in the queue.
#[derive(Clone, Default)]
struct Outcomes(Arc<Mutex<Vec<Outcome>>>);

impl Outcomes {
    fn completion(&self, position: usize) -> Completion {
        let outcomes = self.clone();
        Box::new(move |result| outcomes.0.lock().unwrap().push((position, result)))
    }

    fn take(&self) -> Vec<Outcome> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Opens the writer's connection as the store does, with a development key,
/// and returns it with the frame keys.
fn writer_connection(dir: &Path) -> (Connection, Arc<at_rest::DataKeys>) {
    let (conn, keys) = open_keyed_writer(dir, &KeySource::Development).unwrap();
    (conn, keys.data_keys().clone())
}

async fn append(store: &Store, record: FrameRecord) -> Result<(), StoreError> {
    let (sender, receiver) = oneshot::channel();
    let done: Completion = Box::new(move |result| {
        let _ = sender.send(result);
    });
    store.reserve().await?.send(WriteOp::AppendFrame {
        frame: record,
        done,
    });
    receiver.await.unwrap()
}

async fn end(store: &Store, session_id: SessionId) -> Result<(), StoreError> {
    let (sender, receiver) = oneshot::channel();
    store.reserve().await?.send(WriteOp::EndSession {
        session_id,
        ended_at: 1_700_000_009_000,
        done: Box::new(move |result| {
            let _ = sender.send(result);
        }),
    });
    receiver.await.unwrap()
}

#[test]
fn writer_commits_queued_writes_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (conn, keys) = writer_connection(dir.path());
    let session_id = SessionId::random();
    let outcomes = Outcomes::default();

    let (queue, receiver) = mpsc::channel(1024);
    let create = WriteOp::CreateSession {
        session: new_session(session_id),
        done: outcomes.completion(0),
    };
    queue.try_send(create).ok().unwrap();
    for offset in 0..100u64 {
        let op = WriteOp::AppendFrame {
            frame: frame(session_id, offset, 1, offset),
            done: outcomes.completion(offset as usize + 1),
        };
        queue.try_send(op).ok().unwrap();
    }
    queue.try_send(WriteOp::Stop).ok().unwrap();

    let transactions = writer::run(Db::Sqlite(conn), receiver, keys);

    assert_eq!(transactions, 1);
    let outcomes = outcomes.take();
    assert_eq!(outcomes.len(), 101);
    for (expected, (position, result)) in outcomes.into_iter().enumerate() {
        assert_eq!(position, expected, "completions out of queue order");
        assert!(result.is_ok(), "write {position} failed: {result:?}");
    }
}

#[test]
fn writer_fails_bad_writes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (conn, keys) = writer_connection(dir.path());
    let session_id = SessionId::random();
    let outcomes = Outcomes::default();

    let ops = vec![
        WriteOp::CreateSession {
            session: new_session(session_id),
            done: outcomes.completion(0),
        },
        WriteOp::AppendFrame {
            frame: frame(session_id, 0, 1, 0),
            done: outcomes.completion(1),
        },
        // Same stream and sequence number at a new offset: a duplicate.
        WriteOp::AppendFrame {
            frame: frame(session_id, 1, 1, 0),
            done: outcomes.completion(2),
        },
        WriteOp::AppendFrame {
            frame: frame(session_id, 1, 2, 0),
            done: outcomes.completion(3),
        },
        // Offset 5 would leave a gap after offset 1.
        WriteOp::AppendFrame {
            frame: frame(session_id, 5, 2, 1),
            done: outcomes.completion(4),
        },
        WriteOp::EndSession {
            session_id,
            ended_at: 1,
            done: outcomes.completion(5),
        },
        // Nothing may follow the end.
        WriteOp::AppendFrame {
            frame: frame(session_id, 2, 2, 1),
            done: outcomes.completion(6),
        },
        WriteOp::EndSession {
            session_id,
            ended_at: 2,
            done: outcomes.completion(7),
        },
    ];
    let (queue, receiver) = mpsc::channel(16);
    for op in ops {
        queue.try_send(op).ok().unwrap();
    }
    drop(queue);

    assert_eq!(writer::run(Db::Sqlite(conn), receiver, keys), 1);
    let outcomes = outcomes.take();
    assert!(outcomes[0].1.is_ok());
    assert!(outcomes[1].1.is_ok());
    assert!(matches!(
        outcomes[2].1,
        Err(StoreError::SequenceOutOfOrder { seq: 0, .. })
    ));
    assert!(outcomes[3].1.is_ok());
    assert!(matches!(
        outcomes[4].1,
        Err(StoreError::FrameOutOfOrder { offset: 5, .. })
    ));
    assert!(outcomes[5].1.is_ok());
    assert!(matches!(
        outcomes[6].1,
        Err(StoreError::FrameOutOfOrder { offset: 2, .. })
    ));
    assert!(matches!(outcomes[7].1, Err(StoreError::NotEndable { .. })));
}

/// Runs `ops` through a writer on `conn` and returns each write's outcome.
fn run_writes(conn: Connection, keys: Arc<at_rest::DataKeys>, ops: Vec<WriteOp>) {
    let (queue, receiver) = mpsc::channel(1024);
    for op in ops {
        queue.try_send(op).ok().unwrap();
    }
    queue.try_send(WriteOp::Stop).ok().unwrap();
    writer::run(Db::Sqlite(conn), receiver, keys);
}

fn stored_offsets(dir: &Path, session_id: SessionId) -> Vec<i64> {
    let conn = Connection::open(dir.join(DATABASE_FILE)).unwrap();
    let mut statement = conn
        .prepare("SELECT frame_offset FROM frames WHERE session_id = ?1 ORDER BY frame_offset")
        .unwrap();
    statement
        .query_map([session_id.as_bytes().as_slice()], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn full_database_acknowledges_only_stored_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (SessionId::random(), SessionId::random());
    let (conn, keys) = writer_connection(dir.path());
    let outcomes = Outcomes::default();
    let sessions = vec![
        WriteOp::CreateSession {
            session: new_session(first),
            done: outcomes.completion(0),
        },
        WriteOp::CreateSession {
            session: NewSession {
                invite_token_hash: [4; 32],
                ..new_session(second)
            },
            done: outcomes.completion(1),
        },
    ];
    run_writes(conn, keys, sessions);
    for (position, result) in outcomes.take() {
        assert!(
            result.is_ok(),
            "session {position} was not created: {result:?}"
        );
    }

    // The database may not grow by a single page, so a frame that needs
    // overflow pages fails with SQLITE_FULL, while a small one would still
    // fit in the pages the database has.
    let (conn, keys) = writer_connection(dir.path());
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .unwrap();
    conn.pragma_update(None, "max_page_count", pages).unwrap();
    let mut large = frame(first, 0, 1, 0);
    large.delivery = Bytes::from(vec![7u8; 256 * 1024]);
    let frames = vec![
        WriteOp::AppendFrame {
            frame: large,
            done: outcomes.completion(0),
        },
        WriteOp::AppendFrame {
            frame: frame(second, 0, 2, 0),
            done: outcomes.completion(1),
        },
    ];
    run_writes(conn, keys, frames);

    let outcomes = outcomes.take();
    assert_eq!(outcomes.len(), 2);
    let full = outcomes[0].1.as_ref().unwrap_err();
    assert_eq!(StoreFault::of(full), StoreFault::DiskFull, "{full}");
    assert_eq!(stored_offsets(dir.path(), first), Vec::<i64>::new());
    let small_stored = !stored_offsets(dir.path(), second).is_empty();
    assert_eq!(
        outcomes[1].1.is_ok(),
        small_stored,
        "the small frame's outcome {:?} disagrees with the store, which has it: {small_stored}",
        outcomes[1].1
    );
}

#[test]
fn transaction_rolled_back_by_sqlite_fails_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let first = SessionId::random();
    let (conn, keys) = writer_connection(dir.path());
    let outcomes = Outcomes::default();
    let create = WriteOp::CreateSession {
        session: new_session(first),
        done: outcomes.completion(0),
    };
    run_writes(conn, keys, vec![create]);
    assert!(outcomes.take()[0].1.is_ok());

    // A single-row INSERT runs without a statement journal, so SQLITE_FULL
    // in one rolls back the whole transaction. The sessions below fill their
    // table's last page, and the frame after them fits in a page of its own
    // table: a writer that went on would store it outside any transaction.
    let (conn, keys) = writer_connection(dir.path());
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .unwrap();
    conn.pragma_update(None, "max_page_count", pages).unwrap();
    let mut ops: Vec<WriteOp> = (1..200u8)
        .map(|index| WriteOp::CreateSession {
            session: NewSession {
                invite_token_hash: [index; 32],
                ..new_session(SessionId::random())
            },
            done: outcomes.completion(usize::from(index)),
        })
        .collect();
    ops.push(WriteOp::AppendFrame {
        frame: frame(first, 0, 1, 0),
        done: outcomes.completion(200),
    });
    run_writes(conn, keys, ops);

    let outcomes = outcomes.take();
    let failed = outcomes
        .iter()
        .filter(|(_, result)| result.is_err())
        .count();
    assert!(failed > 0, "no write hit the page limit");
    for (position, result) in &outcomes {
        if let Err(error) = result {
            let fault = StoreFault::of(error);
            assert_eq!(fault, StoreFault::DiskFull, "write {position}: {error}");
        }
    }
    let frame_stored = !stored_offsets(dir.path(), first).is_empty();
    let frame_outcome = &outcomes.last().unwrap().1;
    assert_eq!(
        frame_outcome.is_ok(),
        frame_stored,
        "the frame's outcome {frame_outcome:?} disagrees with the store, which has it: {frame_stored}"
    );
}

#[tokio::test]
async fn store_rejects_sequence_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let session_id = SessionId::random();
    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    store.create_session(new_session(session_id)).await.unwrap();
    append(&store, frame(session_id, 0, 1, 0)).await.unwrap();

    // A new stream must start at 0, and a known one must not skip a number.
    let late_start = append(&store, frame(session_id, 1, 2, 3)).await;
    assert!(
        matches!(
            late_start,
            Err(StoreError::SequenceOutOfOrder { seq: 3, .. })
        ),
        "{late_start:?}"
    );
    let skipped = append(&store, frame(session_id, 1, 1, 2)).await;
    assert!(
        matches!(skipped, Err(StoreError::SequenceOutOfOrder { seq: 2, .. })),
        "{skipped:?}"
    );

    // The rejected frames left no row behind, so offset 1 is still free.
    append(&store, frame(session_id, 1, 1, 1)).await.unwrap();
    let tail = store.session_tail(session_id).await.unwrap();
    assert_eq!(tail.next_offset, 2);
    assert_eq!(tail.streams.len(), 1);
    assert_eq!(tail.streams[0].last_seq, 1);
    assert_eq!(tail.streams[0].last_offset, 1);
    store.close().await;
}

#[tokio::test]
async fn store_reloads_committed_frames() {
    let dir = tempfile::tempdir().unwrap();
    let session_id = SessionId::random();

    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    store.create_session(new_session(session_id)).await.unwrap();
    for offset in 0..10u64 {
        let stream = if offset % 2 == 0 { 1 } else { 2 };
        append(&store, frame(session_id, offset, stream, offset / 2))
            .await
            .unwrap();
    }
    end(&store, session_id).await.unwrap();
    store.close().await;
    drop(store);

    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    let record = store.session(session_id).await.unwrap().unwrap();
    assert_eq!(record.epoch, u64::MAX - 7);
    assert_eq!(record.fingerprint, [9; 16]);
    assert_eq!(record.ended_at, Some(1_700_000_009_000));

    let tail = store.session_tail(session_id).await.unwrap();
    assert_eq!(tail.next_offset, 10);
    let mut streams: Vec<_> = tail
        .streams
        .iter()
        .map(|stream| (stream.stream_id.0[0], stream.last_seq, stream.last_offset))
        .collect();
    streams.sort();
    assert_eq!(streams, vec![(1, 4, 8), (2, 4, 9)]);

    let frames = store
        .frames_between(session_id, 3, 10, 256, usize::MAX)
        .await
        .unwrap();
    let offsets: Vec<u64> = frames.iter().map(|frame| frame.offset).collect();
    assert_eq!(offsets, (3..10).collect::<Vec<_>>());
    let (offset, body) = sealcast_protocol::api::decode_delivery(&frames[0].delivery).unwrap();
    assert_eq!(offset, 3);
    assert_eq!(body, b"frame 3");
}

#[tokio::test]
async fn frame_reads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let session_id = SessionId::random();
    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    store.create_session(new_session(session_id)).await.unwrap();
    for offset in 0..20u64 {
        append(&store, frame(session_id, offset, 1, offset))
            .await
            .unwrap();
    }

    let by_count = store
        .frames_between(session_id, 0, 20, 5, usize::MAX)
        .await
        .unwrap();
    assert_eq!(by_count.len(), 5);
    let by_until = store
        .frames_between(session_id, 0, 3, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(by_until.len(), 3);
    // Each stored frame is 7 or 8 bytes: the read stops at the frame reaching 20 bytes.
    let by_bytes = store
        .frames_between(session_id, 0, 20, 100, 20)
        .await
        .unwrap();
    assert_eq!(by_bytes.len(), 3);
    store.close().await;
}

#[tokio::test]
async fn lookups_match_hashes_only() {
    let dir = tempfile::tempdir().unwrap();
    let session_id = SessionId::random();
    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    store.create_session(new_session(session_id)).await.unwrap();

    let found = store.session_by_invite([2; 32]).await.unwrap().unwrap();
    assert_eq!(found.session_id, session_id);
    assert!(store.session_by_invite([1; 32]).await.unwrap().is_none());
    assert!(store.session(SessionId::random()).await.unwrap().is_none());
    store.close().await;
}

#[tokio::test]
async fn closed_store_rejects_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    store.close().await;
    let result = store.create_session(new_session(SessionId::random())).await;
    assert!(matches!(result, Err(StoreError::WriterStopped)));
}

fn redemption(session_id: SessionId, credential: u8) -> Redemption {
    Redemption {
        session_id,
        credential_hash: [credential; 32],
        created_at: 1_700_000_001_000,
    }
}

#[tokio::test]
async fn redemptions_stop_at_browser_limit() {
    let dir = tempfile::tempdir().unwrap();
    let session_id = SessionId::random();
    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    store.create_session(new_session(session_id)).await.unwrap();

    store
        .redeem_invite(redemption(session_id, 10))
        .await
        .unwrap();
    store
        .redeem_invite(redemption(session_id, 11))
        .await
        .unwrap();
    let third = store.redeem_invite(redemption(session_id, 12)).await;
    assert!(
        matches!(
            third,
            Err(StoreError::BrowsersExhausted {
                max_browsers: 2,
                ..
            })
        ),
        "{third:?}"
    );
    assert_eq!(store.browser_count(session_id).await.unwrap(), 2);

    let record = store.session(session_id).await.unwrap().unwrap();
    assert_eq!(record.invite_verifier, Some([3; 32]));
    store.close().await;
}

#[tokio::test]
async fn browser_credentials_find_their_session() {
    let dir = tempfile::tempdir().unwrap();
    let session_id = SessionId::random();
    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    store.create_session(new_session(session_id)).await.unwrap();
    store
        .redeem_invite(redemption(session_id, 10))
        .await
        .unwrap();

    let found = store.session_by_browser([10; 32]).await.unwrap().unwrap();
    assert_eq!(found.session_id, session_id);
    assert!(store.session_by_browser([11; 32]).await.unwrap().is_none());
    store.close().await;
}

#[tokio::test]
async fn ending_deletes_browser_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let session_id = SessionId::random();
    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    store.create_session(new_session(session_id)).await.unwrap();
    store
        .redeem_invite(redemption(session_id, 10))
        .await
        .unwrap();

    end(&store, session_id).await.unwrap();
    assert!(store.session_by_browser([10; 32]).await.unwrap().is_none());
    assert_eq!(store.browser_count(session_id).await.unwrap(), 0);
    let late = store.redeem_invite(redemption(session_id, 11)).await;
    assert!(
        matches!(late, Err(StoreError::SessionEnded { .. })),
        "{late:?}"
    );
    store.close().await;
}

#[tokio::test]
async fn version_1_database_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let session_id = SessionId::random();
    {
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        conn.execute_batch(
            "CREATE TABLE api_keys (key_hash BLOB PRIMARY KEY, created_at INTEGER NOT NULL)
                 WITHOUT ROWID;
             CREATE TABLE sessions (
                 session_id BLOB PRIMARY KEY, epoch INTEGER NOT NULL,
                 fingerprint BLOB NOT NULL, publisher_token_hash BLOB NOT NULL UNIQUE,
                 invite_token_hash BLOB NOT NULL UNIQUE, invite_verifier BLOB,
                 created_at INTEGER NOT NULL, ended_at INTEGER) WITHOUT ROWID;
             CREATE TABLE frames (
                 session_id BLOB NOT NULL REFERENCES sessions (session_id),
                 frame_offset INTEGER NOT NULL, stream_id BLOB NOT NULL,
                 seq INTEGER NOT NULL, kind INTEGER NOT NULL,
                 final_count INTEGER NOT NULL, received_at INTEGER NOT NULL,
                 frame BLOB NOT NULL,
                 PRIMARY KEY (session_id, frame_offset),
                 UNIQUE (session_id, stream_id, seq)) WITHOUT ROWID;
             PRAGMA user_version = 1;",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO sessions (session_id, epoch, fingerprint, publisher_token_hash,
                 invite_token_hash, created_at) VALUES (?1, 5, ?2, ?3, ?4, 0)",
            rusqlite::params![
                session_id.as_bytes().as_slice(),
                [9u8; 16].as_slice(),
                [1u8; 32].as_slice(),
                [2u8; 32].as_slice()
            ],
        )
        .unwrap();
        // Offsets 0 to 2: stream 1 at seq 0 and 1, stream 2 at seq 0.
        for (offset, stream, seq) in [(0i64, 1u8, 0i64), (1, 2, 0), (2, 1, 1)] {
            conn.execute(
                "INSERT INTO frames VALUES (?1, ?2, ?3, ?4, 1, 0, 0, ?5)",
                rusqlite::params![
                    session_id.as_bytes().as_slice(),
                    offset,
                    [stream; 16].as_slice(),
                    seq,
                    [offset as u8; 40].as_slice()
                ],
            )
            .unwrap();
        }
    }

    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    let tail = store.session_tail(session_id).await.unwrap();
    assert_eq!(tail.next_offset, 3);
    let mut streams: Vec<_> = tail
        .streams
        .iter()
        .map(|stream| (stream.stream_id.0[0], stream.last_seq, stream.last_offset))
        .collect();
    streams.sort();
    assert_eq!(streams, vec![(1, 1, 2), (2, 0, 1)]);
    let frames = store
        .frames_between(session_id, 0, 10, 10, 1 << 20)
        .await
        .unwrap();
    let offsets: Vec<u64> = frames.iter().map(|frame| frame.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2]);

    let record = store.session(session_id).await.unwrap().unwrap();
    assert_eq!(record.invite_verifier, None);
    // Sessions made before accounts belong to no organization.
    assert_eq!(record.organization_id, None);
    {
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!tables.contains(&"api_keys".to_owned()), "{tables:?}");
        assert!(tables.contains(&"users".to_owned()), "{tables:?}");
        assert!(
            conn.prepare("SELECT publisher_token_hash FROM sessions")
                .is_err(),
            "the publisher token column survived the rebuild"
        );
    }
    // Sessions made before the migration admit one browser.
    store
        .redeem_invite(redemption(session_id, 10))
        .await
        .unwrap();
    let second = store.redeem_invite(redemption(session_id, 11)).await;
    assert!(
        matches!(
            second,
            Err(StoreError::BrowsersExhausted {
                max_browsers: 1,
                ..
            })
        ),
        "{second:?}"
    );
    store.close().await;
}

#[tokio::test]
async fn swapped_frame_blobs_fail_catch_up_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    let session_id = SessionId::random();
    store.create_session(new_session(session_id)).await.unwrap();
    for offset in 0..3 {
        append(&store, frame(session_id, offset, 1, offset))
            .await
            .unwrap();
    }
    {
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        conn.busy_timeout(BUSY_TIMEOUT).unwrap();
        let blob = |offset: i64| -> Vec<u8> {
            conn.query_row(
                "SELECT frame FROM frames WHERE session_id = ?1 AND frame_offset = ?2",
                rusqlite::params![session_id.as_bytes().as_slice(), offset],
                |row| row.get(0),
            )
            .unwrap()
        };
        let (first, second) = (blob(0), blob(1));
        assert!(
            !first.windows(7).any(|window| window == b"frame 0"),
            "the stored blob holds the frame as written"
        );
        for (offset, sealed) in [(0i64, second), (1, first)] {
            conn.execute(
                "UPDATE frames SET frame = ?3 WHERE session_id = ?1 AND frame_offset = ?2",
                rusqlite::params![session_id.as_bytes().as_slice(), offset, sealed],
            )
            .unwrap();
        }
    }

    let error = store
        .frames_between(session_id, 0, 3, 256, usize::MAX)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::AtRest(_)), "{error:?}");
    assert!(
        error.to_string().contains("frames.frame at offset 0"),
        "{error}"
    );
    // The untouched frame after them still reads.
    let frames = store
        .frames_between(session_id, 2, 3, 256, usize::MAX)
        .await
        .unwrap();
    let (_, body) = sealcast_protocol::api::decode_delivery(&frames[0].delivery).unwrap();
    assert_eq!(body, b"frame 2");
    store.close().await;
}

#[test]
fn unmigrated_database_is_rejected_without_key() {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    conn.execute_batch("PRAGMA user_version = 3;").unwrap();
    drop(conn);

    let opened = open_migrated_writer(&sqlite_backend(dir.path()));
    assert!(
        matches!(
            opened,
            Err(StoreError::SchemaNotCurrent {
                found: 3,
                expected: schema::SCHEMA_VERSION
            })
        ),
        "{:?}",
        opened.err()
    );
}

#[test]
fn nodes_opening_new_database_together_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                open_keyed_writer(&path, &at_rest::KeySource::Development).map(|_| ())
            })
        })
        .collect();
    for opener in openers {
        opener.join().unwrap().unwrap();
    }
    let (conn, _) = writer_connection(dir.path());
    assert_eq!(
        schema::schema_version(&conn).unwrap(),
        schema::SCHEMA_VERSION
    );
}

fn paired_key(session_id: SessionId, device: u8, key_epoch: u32) -> PairedKey {
    let mut wrapped_key = vec![device; 112];
    wrapped_key[..4].copy_from_slice(&key_epoch.to_be_bytes());
    PairedKey {
        session_id,
        device_id: DeviceId([device; 8]),
        key_epoch,
        wrapped_key,
        created_at: 1_700_000_002_000,
    }
}

/// Returns the epochs of a device's stored keys after `after`.
async fn stored_epochs(
    store: &Store,
    session_id: SessionId,
    device: u8,
    after: Option<u32>,
) -> Vec<u32> {
    store
        .paired_keys_after(session_id, DeviceId([device; 8]), after)
        .await
        .unwrap()
        .iter()
        .map(|key| u32::from_be_bytes(key[..4].try_into().unwrap()))
        .collect()
}

#[tokio::test]
async fn paired_keys_keep_newest_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let session_id = SessionId::random();
    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    store.create_session(new_session(session_id)).await.unwrap();
    store
        .pair_device(redemption(session_id, 20), DeviceId([1; 8]), 0)
        .await
        .unwrap();

    let unknown = store.store_paired_key(paired_key(session_id, 2, 1)).await;
    assert!(
        matches!(unknown, Err(StoreError::UnknownPairedDevice { .. })),
        "{unknown:?}"
    );
    for epoch in 1..=6 {
        store
            .store_paired_key(paired_key(session_id, 1, epoch))
            .await
            .unwrap();
    }
    assert_eq!(
        stored_epochs(&store, session_id, 1, None).await,
        [3, 4, 5, 6]
    );
    assert_eq!(stored_epochs(&store, session_id, 1, Some(4)).await, [5, 6]);
    assert!(stored_epochs(&store, session_id, 1, Some(6))
        .await
        .is_empty());

    let stale = store.store_paired_key(paired_key(session_id, 1, 5)).await;
    assert!(
        matches!(
            stale,
            Err(StoreError::StalePairedKey {
                key_epoch: 5,
                newest: 6
            })
        ),
        "{stale:?}"
    );
    // The newest epoch again replaces its key, so a retried post succeeds.
    store
        .store_paired_key(paired_key(session_id, 1, 6))
        .await
        .unwrap();

    let (record, device_id) = store.paired_device([20; 32]).await.unwrap().unwrap();
    assert_eq!(record.session_id, session_id);
    assert_eq!(device_id, Some(DeviceId([1; 8])));
    store.close().await;
}

#[tokio::test]
async fn paired_key_epoch_step_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let session_id = SessionId::random();
    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    store.create_session(new_session(session_id)).await.unwrap();
    // Device 1 paired at epoch 0, device 2 after 40 rotations.
    store
        .pair_device(redemption(session_id, 20), DeviceId([1; 8]), 0)
        .await
        .unwrap();
    store
        .pair_device(redemption(session_id, 21), DeviceId([2; 8]), 40)
        .await
        .unwrap();

    let too_far = store
        .store_paired_key(paired_key(session_id, 1, u32::MAX))
        .await;
    assert!(
        matches!(
            too_far,
            Err(StoreError::PairedKeyTooFar {
                key_epoch: u32::MAX,
                newest: 0
            })
        ),
        "{too_far:?}"
    );
    let first_past = MAX_KEY_EPOCH_STEP + 1;
    let too_far = store
        .store_paired_key(paired_key(session_id, 1, first_past))
        .await;
    assert!(
        matches!(too_far, Err(StoreError::PairedKeyTooFar { .. })),
        "{too_far:?}"
    );
    store
        .store_paired_key(paired_key(session_id, 1, MAX_KEY_EPOCH_STEP))
        .await
        .unwrap();
    // The bound moves with the newest stored epoch.
    store
        .store_paired_key(paired_key(session_id, 1, 2 * MAX_KEY_EPOCH_STEP))
        .await
        .unwrap();

    store
        .store_paired_key(paired_key(session_id, 2, 41))
        .await
        .unwrap();
    assert_eq!(stored_epochs(&store, session_id, 2, None).await, [41]);
    store.close().await;
}

#[tokio::test]
async fn removing_paired_device_revokes_it() {
    let dir = tempfile::tempdir().unwrap();
    let session_id = SessionId::random();
    let store = Store::open(
        dir.path(),
        &sqlite_backend(dir.path()),
        &KeySource::Development,
    )
    .await
    .unwrap();
    store.create_session(new_session(session_id)).await.unwrap();
    store
        .pair_device(redemption(session_id, 20), DeviceId([1; 8]), 0)
        .await
        .unwrap();
    store
        .pair_device(redemption(session_id, 21), DeviceId([2; 8]), 0)
        .await
        .unwrap();
    for device in [1, 2] {
        store
            .store_paired_key(paired_key(session_id, device, 1))
            .await
            .unwrap();
    }

    store
        .remove_paired_device(session_id, DeviceId([1; 8]))
        .await
        .unwrap();
    assert!(store.paired_device([20; 32]).await.unwrap().is_none());
    assert!(stored_epochs(&store, session_id, 1, None).await.is_empty());
    assert_eq!(stored_epochs(&store, session_id, 2, None).await, [1]);
    let again = store
        .remove_paired_device(session_id, DeviceId([1; 8]))
        .await;
    assert!(
        matches!(again, Err(StoreError::UnknownPairedDevice { .. })),
        "{again:?}"
    );
    let late = store.store_paired_key(paired_key(session_id, 1, 2)).await;
    assert!(
        matches!(late, Err(StoreError::UnknownPairedDevice { .. })),
        "{late:?}"
    );

    end(&store, session_id).await.unwrap();
    assert!(store.paired_device([21; 32]).await.unwrap().is_none());
    assert!(stored_epochs(&store, session_id, 2, None).await.is_empty());
    let ended = store.store_paired_key(paired_key(session_id, 2, 2)).await;
    assert!(
        matches!(ended, Err(StoreError::SessionEnded { .. })),
        "{ended:?}"
    );
    store.close().await;
}

mod postgres;
