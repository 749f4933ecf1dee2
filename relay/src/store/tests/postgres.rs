//! The store on PostgreSQL. Each test creates a database of its own on the
//! server named by `SEALCAST_TEST_POSTGRES` and drops it at the end. Without
//! the variable the tests are skipped, except under CI.
//!
//! The synchronous PostgreSQL client must not run on an async thread, so
//! the tests drive the store from a runtime of their own and run direct SQL
//! in [`blocking`].

use std::time::{Duration, Instant};

use super::*;
use crate::at_rest::{KeyEncryptionKey, SEAL_OVERHEAD};
use crate::audit::{self, Action, AuditLog, CheckpointPolicy, Event};
use crate::db::test_database::TestDatabase;

/// Maximum time a test waits for the store to reach a database that came back.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs synchronous database work from an async test.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

/// Opens a new connection to the test database.
fn connect(database: &TestDatabase) -> Db {
    database.backend().connect_postgres().unwrap().unwrap()
}

async fn open_store(database: &TestDatabase, dir: &Path) -> Store {
    Store::open(dir, database.backend(), &KeySource::Development)
        .await
        .unwrap()
}

/// Opens the writer's connection as the store does, migrating the schema.
fn writer_db(database: &TestDatabase, dir: &Path) -> (Db, Arc<at_rest::DataKeys>) {
    let (db, keys) =
        super::super::open::open_keyed_db(dir, database.backend(), &KeySource::Development)
            .unwrap();
    (db, keys.data_keys().clone())
}

fn stored_offsets(database: &TestDatabase, session_id: SessionId) -> Vec<i64> {
    connect(database)
        .query_all(
            "SELECT frame_offset FROM frames WHERE session_id = ?1 ORDER BY frame_offset",
            db_params![session_id.as_bytes()],
            |row| row.get::<i64>(0),
        )
        .unwrap()
}

fn count(db: &Db, sql: &str) -> i64 {
    db.query_one(sql, db_params![], |row| row.get::<i64>(0))
        .unwrap()
}

#[test]
fn postgres_writer_commits_queue_in_one_transaction() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (db, keys) = writer_db(&database, dir.path());
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

    assert_eq!(writer::run(db, receiver, keys), 1);
    let outcomes = outcomes.take();
    assert_eq!(outcomes.len(), 101);
    for (expected, (position, result)) in outcomes.into_iter().enumerate() {
        assert_eq!(position, expected, "completions out of queue order");
        assert!(result.is_ok(), "write {position} failed: {result:?}");
    }
    assert_eq!(
        stored_offsets(&database, session_id),
        (0..100).collect::<Vec<i64>>()
    );
}

#[test]
fn postgres_writer_fails_bad_writes_alone() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (db, keys) = writer_db(&database, dir.path());
    let session_id = SessionId::random();
    let outcomes = Outcomes::default();

    let ops = vec![
        WriteOp::CreateSession {
            session: new_session(session_id),
            done: outcomes.completion(0),
        },
        // The same invite hash again violates a UNIQUE constraint, which
        // aborts a PostgreSQL transaction without a savepoint.
        WriteOp::CreateSession {
            session: new_session(SessionId::random()),
            done: outcomes.completion(1),
        },
        WriteOp::AppendFrame {
            frame: frame(session_id, 0, 1, 0),
            done: outcomes.completion(2),
        },
        // Same stream and sequence number at a new offset: a duplicate.
        WriteOp::AppendFrame {
            frame: frame(session_id, 1, 1, 0),
            done: outcomes.completion(3),
        },
        WriteOp::AppendFrame {
            frame: frame(session_id, 1, 2, 0),
            done: outcomes.completion(4),
        },
        // Offset 5 would leave a gap after offset 1.
        WriteOp::AppendFrame {
            frame: frame(session_id, 5, 2, 1),
            done: outcomes.completion(5),
        },
        WriteOp::EndSession {
            session_id,
            ended_at: 1,
            done: outcomes.completion(6),
        },
        // Nothing may follow the end.
        WriteOp::AppendFrame {
            frame: frame(session_id, 2, 2, 1),
            done: outcomes.completion(7),
        },
        WriteOp::EndSession {
            session_id,
            ended_at: 2,
            done: outcomes.completion(8),
        },
    ];
    let (queue, receiver) = mpsc::channel(16);
    for op in ops {
        queue.try_send(op).ok().unwrap();
    }
    drop(queue);

    assert_eq!(writer::run(db, receiver, keys), 1);
    let outcomes = outcomes.take();
    assert!(outcomes[0].1.is_ok(), "{:?}", outcomes[0].1);
    let duplicate = outcomes[1].1.as_ref().unwrap_err();
    assert!(
        matches!(duplicate, StoreError::Database { source, .. } if source.is_unique_violation()),
        "{duplicate}"
    );
    assert!(outcomes[2].1.is_ok(), "{:?}", outcomes[2].1);
    assert!(matches!(
        outcomes[3].1,
        Err(StoreError::SequenceOutOfOrder { seq: 0, .. })
    ));
    assert!(outcomes[4].1.is_ok(), "{:?}", outcomes[4].1);
    assert!(matches!(
        outcomes[5].1,
        Err(StoreError::FrameOutOfOrder { offset: 5, .. })
    ));
    assert!(outcomes[6].1.is_ok(), "{:?}", outcomes[6].1);
    assert!(matches!(
        outcomes[7].1,
        Err(StoreError::FrameOutOfOrder { offset: 2, .. })
    ));
    assert!(matches!(outcomes[8].1, Err(StoreError::NotEndable { .. })));
    assert_eq!(stored_offsets(&database, session_id), vec![0, 1]);
}

#[test]
fn postgres_frame_runs_check_each_frame() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (db, keys) = writer_db(&database, dir.path());
    let a = SessionId::random();
    let b = SessionId::random();
    let outcomes = Outcomes::default();
    let mut session_b = new_session(b);
    session_b.invite_token_hash = [9; 32];

    let append = |position: usize, frame: FrameRecord| WriteOp::AppendFrame {
        frame,
        done: outcomes.completion(position),
    };
    let ops = vec![
        WriteOp::CreateSession {
            session: new_session(a),
            done: outcomes.completion(0),
        },
        WriteOp::CreateSession {
            session: session_b,
            done: outcomes.completion(1),
        },
        // One run of frames of both sessions.
        append(2, frame(a, 0, 1, 0)),
        append(3, frame(b, 0, 1, 0)),
        append(4, frame(a, 1, 1, 1)),
        append(5, frame(a, 2, 2, 0)),
        // Sequence number 2 skips 1.
        append(6, frame(b, 1, 1, 2)),
        append(7, frame(b, 1, 1, 1)),
        // A session that does not exist.
        append(8, frame(SessionId::random(), 0, 1, 0)),
        // A new stream must start at sequence number 0.
        append(9, frame(a, 3, 3, 4)),
        WriteOp::EndSession {
            session_id: b,
            ended_at: 1,
            done: outcomes.completion(10),
        },
        // A second run, after the end of session B.
        append(11, frame(b, 2, 1, 2)),
        append(12, frame(a, 3, 1, 2)),
    ];
    let (queue, receiver) = mpsc::channel(32);
    for op in ops {
        queue.try_send(op).ok().unwrap();
    }
    drop(queue);

    assert_eq!(writer::run(db, receiver, keys), 1);
    let outcomes = outcomes.take();
    for position in [0, 1, 2, 3, 4, 5, 7, 10, 12] {
        assert!(
            outcomes[position].1.is_ok(),
            "write {position}: {:?}",
            outcomes[position].1
        );
    }
    assert!(matches!(
        outcomes[6].1,
        Err(StoreError::SequenceOutOfOrder { seq: 2, .. })
    ));
    assert!(matches!(
        outcomes[8].1,
        Err(StoreError::FrameOutOfOrder { offset: 0, .. })
    ));
    assert!(matches!(
        outcomes[9].1,
        Err(StoreError::SequenceOutOfOrder { seq: 4, .. })
    ));
    assert!(matches!(
        outcomes[11].1,
        Err(StoreError::FrameOutOfOrder { offset: 2, .. })
    ));
    assert_eq!(stored_offsets(&database, a), vec![0, 1, 2, 3]);
    assert_eq!(stored_offsets(&database, b), vec![0, 1]);

    let db = connect(&database);
    let streams = db
        .query_all(
            "SELECT stream_id, next_seq, last_offset FROM streams
             WHERE session_id = ?1 ORDER BY stream_id",
            db_params![a.as_bytes()],
            |row| {
                Ok((
                    row.get::<Vec<u8>>(0)?[0],
                    row.get::<i64>(1)?,
                    row.get::<i64>(2)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(streams, vec![(1, 3, 3), (2, 1, 2)]);
    // The stored frames open with the data key, each at its own offset.
    runtime().block_on(async {
        let store = open_store(&database, dir.path()).await;
        let frames = store.frames_between(a, 0, 4, 10, usize::MAX).await.unwrap();
        assert_eq!(frames.len(), 4);
        for (offset, stored) in frames.iter().enumerate() {
            assert_eq!(stored.offset, offset as u64);
            let body = format!("frame {offset}");
            assert!(
                stored.delivery.ends_with(body.as_bytes()),
                "offset {offset}"
            );
        }
        store.close().await;
    });
}

#[test]
fn postgres_store_keeps_sessions_and_frames() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = open_store(&database, dir.path()).await;
        let session_id = SessionId::random();
        store.create_session(new_session(session_id)).await.unwrap();

        let record = store.session(session_id).await.unwrap().unwrap();
        assert_eq!(record.epoch, u64::MAX - 7);
        assert_eq!(record.fingerprint, [9; 16]);
        assert_eq!(record.invite_verifier, Some([3; 32]));
        assert_eq!(record.ended_at, None);
        let by_invite = store.session_by_invite([2; 32]).await.unwrap().unwrap();
        assert_eq!(by_invite.session_id, session_id);
        assert!(store.session_by_invite([5; 32]).await.unwrap().is_none());

        for offset in 0..6u64 {
            let stream = if offset % 2 == 0 { 1 } else { 2 };
            append(&store, frame(session_id, offset, stream, offset / 2))
                .await
                .unwrap();
        }
        let gap = append(&store, frame(session_id, 7, 1, 3)).await;
        assert!(
            matches!(gap, Err(StoreError::FrameOutOfOrder { offset: 7, .. })),
            "{gap:?}"
        );
        let again = append(&store, frame(session_id, 3, 1, 3)).await;
        assert!(
            matches!(again, Err(StoreError::FrameOutOfOrder { offset: 3, .. })),
            "{again:?}"
        );
        let skipped = append(&store, frame(session_id, 6, 1, 5)).await;
        assert!(
            matches!(skipped, Err(StoreError::SequenceOutOfOrder { seq: 5, .. })),
            "{skipped:?}"
        );

        let tail = store.session_tail(session_id).await.unwrap();
        assert_eq!(tail.next_offset, 6);
        let mut streams: Vec<_> = tail
            .streams
            .iter()
            .map(|stream| (stream.stream_id.0[0], stream.last_seq, stream.last_offset))
            .collect();
        streams.sort();
        assert_eq!(streams, vec![(1, 2, 4), (2, 2, 5)]);

        let frames = store
            .frames_between(session_id, 2, 10, 256, usize::MAX)
            .await
            .unwrap();
        let offsets: Vec<u64> = frames.iter().map(|frame| frame.offset).collect();
        assert_eq!(offsets, vec![2, 3, 4, 5]);
        let expected = frame(session_id, 3, 2, 1).delivery;
        assert_eq!(frames[1].delivery[8..], expected[8..]);
        let bounded = store
            .frames_between(session_id, 0, 10, 3, usize::MAX)
            .await
            .unwrap();
        assert_eq!(bounded.len(), 3);

        end(&store, session_id).await.unwrap();
        let ended = store.session(session_id).await.unwrap().unwrap();
        assert_eq!(ended.ended_at, Some(1_700_000_009_000));
        let late = append(&store, frame(session_id, 6, 1, 3)).await;
        assert!(
            matches!(late, Err(StoreError::FrameOutOfOrder { offset: 6, .. })),
            "{late:?}"
        );
        let twice = end(&store, session_id).await;
        assert!(
            matches!(twice, Err(StoreError::NotEndable { .. })),
            "{twice:?}"
        );
        store.check_readable().await.unwrap();
        store.close().await;
    });
}

#[test]
fn postgres_store_keeps_browsers_and_paired_keys() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = open_store(&database, dir.path()).await;
        let session_id = SessionId::random();
        store.create_session(new_session(session_id)).await.unwrap();

        let redemption = |hash: u8| Redemption {
            session_id,
            credential_hash: [hash; 32],
            created_at: 1_700_000_000_000,
        };
        store.redeem_invite(redemption(10)).await.unwrap();
        store.redeem_invite(redemption(11)).await.unwrap();
        let third = store.redeem_invite(redemption(12)).await;
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
        let found = store.session_by_browser([11; 32]).await.unwrap().unwrap();
        assert_eq!(found.session_id, session_id);

        let device_id = DeviceId([4; 8]);
        store
            .pair_device(redemption(20), device_id, 1)
            .await
            .unwrap();
        let (paired, paired_id) = store.paired_device([20; 32]).await.unwrap().unwrap();
        assert_eq!(paired.session_id, session_id);
        assert_eq!(paired_id, Some(device_id));

        let key = |key_epoch: u32| PairedKey {
            session_id,
            device_id,
            key_epoch,
            wrapped_key: vec![key_epoch as u8; 112],
            created_at: 1_700_000_000_000,
        };
        store.store_paired_key(key(2)).await.unwrap();
        store.store_paired_key(key(3)).await.unwrap();
        // Posting the same epoch again replaces the key.
        store.store_paired_key(key(3)).await.unwrap();
        let stale = store.store_paired_key(key(2)).await;
        assert!(
            matches!(stale, Err(StoreError::StalePairedKey { newest: 3, .. })),
            "{stale:?}"
        );
        let far = store
            .store_paired_key(key(3 + MAX_KEY_EPOCH_STEP + 1))
            .await;
        assert!(
            matches!(far, Err(StoreError::PairedKeyTooFar { newest: 3, .. })),
            "{far:?}"
        );
        let keys = store
            .paired_keys_after(session_id, device_id, Some(2))
            .await
            .unwrap();
        assert_eq!(keys, vec![vec![3u8; 112]]);
        let all = store
            .paired_keys_after(session_id, device_id, None)
            .await
            .unwrap();
        assert_eq!(all.len(), 2);

        let unknown = store
            .remove_paired_device(session_id, DeviceId([5; 8]))
            .await;
        assert!(
            matches!(unknown, Err(StoreError::UnknownPairedDevice { .. })),
            "{unknown:?}"
        );
        store
            .remove_paired_device(session_id, device_id)
            .await
            .unwrap();
        assert!(store.paired_device([20; 32]).await.unwrap().is_none());

        end(&store, session_id).await.unwrap();
        assert_eq!(store.browser_count(session_id).await.unwrap(), 0);
        assert!(store.session_by_browser([11; 32]).await.unwrap().is_none());
        let after_end = store.redeem_invite(redemption(13)).await;
        assert!(
            matches!(after_end, Err(StoreError::SessionEnded { .. })),
            "{after_end:?}"
        );
        store.close().await;
    });
}

#[test]
fn postgres_challenge_taken_on_other_store() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let issuing = open_store(&database, dir.path()).await;
        let taking = open_store(&database, dir.path()).await;
        let now = now_millis();
        let challenge = NewChallenge {
            challenge_hash: [7; 32],
            invite_token_hash: [1; 32],
            issued_at: now,
        };
        let presented = PresentedChallenge {
            challenge_hash: [7; 32],
            invite_token_hash: [1; 32],
            presented_at: now,
        };

        issuing.issue_challenge(challenge).await.unwrap();
        assert_eq!(taking.challenge_count().await.unwrap(), 1);
        taking.take_challenge(presented.clone()).await.unwrap();
        for store in [&taking, &issuing] {
            let again = store.take_challenge(presented.clone()).await;
            assert!(
                matches!(again, Err(StoreError::InviteChallengeRejected { .. })),
                "{again:?}"
            );
        }
        assert_eq!(issuing.challenge_count().await.unwrap(), 0);
        issuing.close().await;
        taking.close().await;
    });
}

#[test]
fn postgres_frames_are_sealed_at_rest() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = open_store(&database, dir.path()).await;
        let session_id = SessionId::random();
        store.create_session(new_session(session_id)).await.unwrap();
        let record = frame(session_id, 0, 1, 0);
        let plaintext = record.delivery[8..].to_vec();
        append(&store, record).await.unwrap();

        let stored = blocking(|| {
            connect(&database)
                .query_one(
                    "SELECT frame FROM frames WHERE session_id = ?1",
                    db_params![session_id.as_bytes()],
                    |row| row.get::<Vec<u8>>(0),
                )
                .unwrap()
        });
        assert_eq!(stored.len(), plaintext.len() + SEAL_OVERHEAD);
        assert!(
            !stored
                .windows(plaintext.len())
                .any(|window| window == plaintext),
            "the stored frame contains its plaintext"
        );
        let mut opened = stored;
        store
            .keys()
            .data_keys()
            .frame_cipher(session_id.as_bytes())
            .open_in_place(0, &mut opened)
            .unwrap();
        assert_eq!(opened, plaintext);
        let fingerprint = store.keys().kek_fingerprint();
        store.close().await;
        drop(store);

        let again = open_store(&database, dir.path()).await;
        assert_eq!(again.keys().kek_fingerprint(), fingerprint);
        assert!(!again.keys().is_new());
        let frames = again
            .frames_between(session_id, 0, 1, 16, usize::MAX)
            .await
            .unwrap();
        assert_eq!(frames[0].delivery[8..], plaintext[..]);
        again.close().await;

        let other = KeySource::Environment(KeyEncryptionKey::generate());
        let wrong = Store::open(dir.path(), database.backend(), &other).await;
        assert!(
            matches!(&wrong, Err(StoreError::AtRest(error)) if matches!(**error, AtRestError::WrongKey { .. })),
            "{:?}",
            wrong.map(|_| ())
        );
    });
}

#[test]
fn postgres_nodes_opening_together_migrate_once() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (first, second) = tokio::join!(
            Store::open(dir.path(), database.backend(), &KeySource::Development),
            Store::open(dir.path(), database.backend(), &KeySource::Development),
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(
            first.keys().kek_fingerprint(),
            second.keys().kek_fingerprint()
        );
        assert_ne!(
            first.keys().is_new(),
            second.keys().is_new(),
            "exactly one node makes the data key"
        );
        let (version, keys) = blocking(|| {
            let db = connect(&database);
            (
                schema_pg::schema_version(&db).unwrap(),
                count(&db, "SELECT COUNT(*) FROM at_rest_keys"),
            )
        });
        assert_eq!(version, schema_pg::SCHEMA_VERSION);
        assert_eq!(keys, 1);

        // A frame sealed by one node opens on the other.
        let session_id = SessionId::random();
        first.create_session(new_session(session_id)).await.unwrap();
        append(&first, frame(session_id, 0, 1, 0)).await.unwrap();
        let frames = second
            .frames_between(session_id, 0, 1, 16, usize::MAX)
            .await
            .unwrap();
        assert_eq!(frames.len(), 1);
        first.close().await;
        second.close().await;
    });
}

#[test]
fn postgres_audit_chain_verifies_append_only() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = open_store(&database, dir.path()).await;
        let key = Arc::new(audit::key::AuditKey::load_or_create(dir.path()).unwrap());
        let log = AuditLog::new(
            store.clone(),
            key.clone(),
            CheckpointPolicy { every_entries: 3 },
        );
        for index in 0..5 {
            let event = Event::new(Action::SessionStarted, "dev_test")
                .session(format!("session-{index}"))
                .detail("max_browsers", 1);
            log.record_committed(event).await.unwrap();
        }
        log.sign_heads().await.unwrap();
        store.close().await;

        let backend = database.backend().clone();
        let path = dir.path().to_path_buf();
        blocking(move || {
            audit::record_direct(
                &path,
                &backend,
                Event::new(Action::RetentionRun, "admin-cli"),
            )
            .unwrap();
            let report = audit::verify::verify_database(&path, &backend, None).unwrap();
            assert!(report.is_ok(), "{report:?}");
            assert!(report.problems.is_empty(), "{:?}", report.problems);
            let application = &report.streams[&audit::Stream::Application];
            assert_eq!(application.entries, 5);
            assert_eq!(application.covered_through, Some(5));
        });

        blocking(|| {
            let db = connect(&database);
            let cases = [
                (
                    "UPDATE audit_entries SET actor = 'someone else'",
                    "audit entries are append-only: UPDATE is rejected",
                ),
                (
                    "DELETE FROM audit_entries",
                    "only a retention run may delete entries",
                ),
                (
                    "DELETE FROM audit_checkpoints",
                    "only a retention run may delete checkpoints",
                ),
                (
                    "TRUNCATE audit_entries",
                    "audit entries are append-only: TRUNCATE is rejected",
                ),
            ];
            for (sql, message) in cases {
                let error = db.execute(sql, db_params![]).unwrap_err();
                assert!(error.is_constraint(), "{sql}: {error}");
                assert!(error.to_string().contains(message), "{sql}: {error}");
            }
            assert_eq!(count(&db, "SELECT COUNT(*) FROM audit_entries"), 6);

            db.batch("ALTER TABLE audit_anchors DISABLE TRIGGER audit_anchors_reject_delete")
                .unwrap();
            let report =
                audit::verify::verify_database(dir.path(), database.backend(), None).unwrap();
            assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
            assert!(
                report.problems[0].contains("audit_anchors_reject_delete"),
                "{:?}",
                report.problems
            );
        });
    });
}

#[test]
fn postgres_retention_anchors_expired_audit_entries() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = writer_db(&database, dir.path());
    let key = audit::key::AuditKey::load_or_create(dir.path()).unwrap();
    let t0 = 1_767_225_600_000;
    for index in 0..4 {
        let event = Event::new(Action::SessionStarted, "dev_test").session(index);
        audit::append_events(&db, &key, CheckpointPolicy::default(), &[event], t0).unwrap();
    }
    let now = t0 + 10 * 366 * 24 * 60 * 60 * 1000;
    let outcome = audit::retention::run_once(
        &db,
        &key,
        audit::RetentionPolicy::default(),
        now,
        "admin-cli",
    )
    .unwrap();
    assert_eq!(outcome.audit_entries[&audit::Stream::Application], 4);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM audit_anchors"), 1);
    let report = audit::verify::verify_database(dir.path(), database.backend(), None).unwrap();
    assert!(report.is_ok(), "{report:?}");
}

#[test]
fn postgres_lost_connection_is_survived() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = open_store(&database, dir.path()).await;
        let session_id = SessionId::random();
        store.create_session(new_session(session_id)).await.unwrap();

        // The writer's idle connection is gone. Nothing of the next batch
        // ran on it, so the batch begins again on a new connection.
        assert!(blocking(|| database.terminate_connections()) > 0);
        append(&store, frame(session_id, 0, 1, 0)).await.unwrap();

        // While the database refuses connections, reads and writes fail.
        blocking(|| {
            database.allow_connections(false);
            database.terminate_connections();
        });
        for _ in 0..READ_CONNECTIONS {
            assert!(store.check_readable().await.is_err());
        }
        let refused = append(&store, frame(session_id, 1, 1, 1)).await;
        assert!(
            refused.is_err(),
            "a write succeeded while the database was down"
        );

        // Once it is back, the connections reopen after their backoff.
        blocking(|| database.allow_connections(true));
        let started = Instant::now();
        while store.check_readable().await.is_err() {
            assert!(
                started.elapsed() < RECOVERY_TIMEOUT,
                "reads did not recover"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut next = append(&store, frame(session_id, 1, 1, 1)).await;
        while next.is_err() {
            assert!(
                started.elapsed() < RECOVERY_TIMEOUT,
                "writes did not recover: {next:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            next = append(&store, frame(session_id, 1, 1, 1)).await;
        }
        assert_eq!(
            blocking(|| stored_offsets(&database, session_id)),
            vec![0, 1]
        );
        store.close().await;
    });
}

#[test]
fn postgres_key_rotation_rewraps_data_key() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (db, keys) = writer_db(&database, dir.path());
    drop(keys);
    let old = KeyEncryptionKey::read_file(&dir.path().join(at_rest::DEV_KEY_FILE)).unwrap();
    let new = KeyEncryptionKey::generate();

    let stranger = KeyEncryptionKey::generate();
    let refused = at_rest::rotate(&db, &stranger, "test", &new, 2).unwrap_err();
    assert!(matches!(refused, AtRestError::WrongKey { .. }), "{refused}");
    let fingerprint = at_rest::rotate(&db, &old, "test", &new, 2).unwrap();
    assert_eq!(fingerprint, new.fingerprint());
    drop(db);

    let source = KeySource::Environment(new);
    let (_, reopened) =
        super::super::open::open_keyed_db(dir.path(), database.backend(), &source).unwrap();
    assert_eq!(reopened.kek_fingerprint(), fingerprint);
    assert!(!reopened.is_new());
}

/// Columns that SQLite declares TEXT but that hold sealed values.
const SEALED_TEXT_COLUMNS: [(&str, &str); 3] = [
    ("organizations", "name"),
    ("devices", "name"),
    ("pending_logins", "device_name"),
];

/// A column as (table, column, PostgreSQL type, not null).
type Column = (String, String, String, bool);

/// Lists every column of the SQLite schema, with the PostgreSQL type it
/// maps to, sorted and leaving out SQLite's own tables.
fn sqlite_columns(conn: &Connection) -> Vec<Column> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut columns = Vec::new();
    for table in tables {
        let mut statement = conn
            .prepare("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1)")
            .unwrap();
        let rows = statement
            .query_map([&table], |row| {
                let not_null: i64 = row.get(2)?;
                let primary_key: i64 = row.get(3)?;
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    not_null == 1 || primary_key > 0,
                ))
            })
            .unwrap();
        for row in rows {
            let (column, declared, not_null) = row.unwrap();
            let sealed = SEALED_TEXT_COLUMNS.contains(&(table.as_str(), column.as_str()));
            let mapped = match declared.as_str() {
                "INTEGER" => "bigint",
                "BLOB" => "bytea",
                "TEXT" if sealed => "bytea",
                "TEXT" => "text",
                other => panic!(
                    "column {table}.{column} has unmapped type {other}: add its PostgreSQL type"
                ),
            };
            columns.push((table.clone(), column, mapped.to_owned(), not_null));
        }
    }
    columns.sort();
    columns
}

#[test]
fn postgres_schema_has_every_sqlite_column() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (conn, _) = open_keyed_writer(dir.path(), &KeySource::Development).unwrap();
    let expected = sqlite_columns(&conn);
    assert!(expected.len() > 50, "{expected:?}");

    let (db, _) = writer_db(&database, dir.path());
    let mut found: Vec<Column> = db
        .query_all(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable = 'NO'
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name <> 'schema_version'",
            db_params![],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .unwrap();
    found.sort();
    assert_eq!(found, expected);
}
