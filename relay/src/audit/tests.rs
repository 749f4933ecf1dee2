//! Tests of the audit trail on a real database file: tampering as an
//! attacker with the file would do it, the triggers, retention and export.

use std::path::Path;

use rusqlite::{params, Connection};
use tempfile::TempDir;

use super::append::{append, checkpoint_heads, CheckpointPolicy};
use super::entry::{Entry, Stream, GENESIS_HASH};
use super::event::{Action, Event, ACTOR_RELAY};
use super::export::{export, verify_export, ExportRequest};
use super::key::AuditKey;
use super::retention::{run_once, RetentionPolicy};
use super::verify::{verify_database, Report};
use crate::at_rest::KeySource;
use crate::db::{Backend, Db};
use crate::store::{open_keyed_writer, DATABASE_FILE};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Base time of the tests: 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

struct Fixture {
    dir: TempDir,
    key: AuditKey,
    conn: Db,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::load_or_create(dir.path()).unwrap();
        let (conn, _keys) = open_keyed_writer(dir.path(), &KeySource::Development).unwrap();
        Fixture {
            dir,
            key,
            conn: Db::Sqlite(conn),
        }
    }

    /// Returns the fixture's SQLite connection, for raw SQL.
    fn sqlite(&self) -> &Connection {
        self.conn.as_sqlite().unwrap()
    }

    /// Appends `count` application events at time `at`, one transaction each.
    fn record(&mut self, count: usize, at: i64) {
        for index in 0..count {
            let event = Event::new(Action::SessionStarted, "dev_test")
                .session(format!("session-{index}"))
                .detail("max_browsers", 1);
            append(&self.conn, &self.key, policy(), &[event], at).unwrap();
        }
    }

    fn sign_heads(&mut self, at: i64) {
        checkpoint_heads(&self.conn, &self.key, at).unwrap();
    }

    fn verify(&self) -> Report {
        verify_database(self.dir.path(), &self.backend(), None).unwrap()
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn backend(&self) -> Backend {
        Backend::Sqlite(self.dir.path().join(DATABASE_FILE))
    }
}

fn policy() -> CheckpointPolicy {
    CheckpointPolicy { every_entries: 4 }
}

/// Opens the database as an attacker would and drops every audit trigger.
fn attacker(dir: &Path) -> Connection {
    let conn = Connection::open(dir.join("relay.db")).unwrap();
    for trigger in [
        "audit_entries_reject_update",
        "audit_entries_guard_delete",
        "audit_checkpoints_reject_update",
        "audit_checkpoints_guard_delete",
        "audit_anchors_reject_update",
        "audit_anchors_reject_delete",
    ] {
        conn.execute_batch(&format!("DROP TRIGGER {trigger}"))
            .unwrap();
    }
    conn
}

fn first_failure(report: &Report) -> (Stream, u64, String) {
    let failure = report
        .failures
        .first()
        .unwrap_or_else(|| panic!("verification passed: {report:?}"));
    (failure.stream, failure.seq, failure.problem.clone())
}

fn read_entry(conn: &Connection, seq: u64) -> Entry {
    let db = Db::Sqlite(Connection::open(conn.path().unwrap()).unwrap());
    let mut entry = None;
    crate::store::audit::for_each_entry(&db, Stream::Application, seq, seq, |found| {
        entry = Some(found);
        Ok::<_, crate::store::StoreError>(())
    })
    .unwrap();
    entry.unwrap()
}

fn insert_raw(conn: &Connection, entry: &Entry) {
    conn.execute(
        "INSERT INTO audit_entries (stream, seq, created_at, actor, action, source, session_id,
            subject, digest, details, prev_hash, hash)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            entry.stream.as_str(),
            entry.seq as i64,
            entry.created_at,
            entry.actor,
            entry.action,
            entry.source,
            entry.session_id,
            entry.subject,
            entry.digest,
            serde_json::to_string(&entry.details).unwrap(),
            entry.prev_hash.as_slice(),
            entry.hash.as_slice(),
        ],
    )
    .unwrap();
}

#[test]
fn intact_database_verifies() {
    let mut fixture = Fixture::new();
    fixture.record(10, T0);
    fixture.sign_heads(T0);
    let report = fixture.verify();
    assert!(report.is_ok(), "{report:?}");
    let summary = &report.streams[&Stream::Application];
    assert_eq!(summary.range, Some((1, 10)));
    assert_eq!(summary.covered_through, Some(10));
    // Every fourth entry signs the head, and the last call signs entry 10.
    assert_eq!(summary.checkpoints, 3);
}

#[test]
fn changed_entry_is_named() {
    let mut fixture = Fixture::new();
    fixture.record(6, T0);
    let conn = attacker(fixture.path());
    conn.execute(
        "UPDATE audit_entries SET actor = 'dev_other' WHERE stream = 'application' AND seq = 3",
        [],
    )
    .unwrap();

    let (stream, seq, problem) = first_failure(&fixture.verify());
    assert_eq!(stream, Stream::Application);
    assert_eq!(seq, 3);
    assert!(problem.contains("altered"), "{problem}");
}

#[test]
fn removed_entry_is_named() {
    let mut fixture = Fixture::new();
    fixture.record(6, T0);
    let conn = attacker(fixture.path());
    conn.execute(
        "DELETE FROM audit_entries WHERE stream = 'application' AND seq = 3",
        [],
    )
    .unwrap();

    let (stream, seq, problem) = first_failure(&fixture.verify());
    assert_eq!(stream, Stream::Application);
    assert_eq!(seq, 3);
    assert!(problem.contains("missing"), "{problem}");
}

#[test]
fn inserted_entry_is_named() {
    let mut fixture = Fixture::new();
    fixture.record(6, T0);
    let conn = attacker(fixture.path());
    // Make room at 3 by moving entries 3 to 6 up by one, through large
    // numbers so that the primary key never collides.
    conn.execute(
        "UPDATE audit_entries SET seq = seq + 1000001 WHERE stream = 'application' AND seq >= 3",
        [],
    )
    .unwrap();
    conn.execute(
        "UPDATE audit_entries SET seq = seq - 1000000 WHERE stream = 'application' AND seq > 1000000",
        [],
    )
    .unwrap();
    // A well-formed forged entry that links to entry 2.
    let previous = read_entry(&conn, 2);
    let mut forged = Entry {
        seq: 3,
        actor: "dev_forged".into(),
        prev_hash: previous.hash,
        ..previous.clone()
    };
    forged.hash = forged.compute_hash();
    insert_raw(&conn, &forged);

    // The forged entry itself is consistent. The entry after it carries a
    // sequence number it was not hashed with.
    let (stream, seq, problem) = first_failure(&fixture.verify());
    assert_eq!(stream, Stream::Application);
    assert_eq!(seq, 4);
    assert!(problem.contains("altered"), "{problem}");
}

#[test]
fn rehashed_insertion_fails_at_checkpoint() {
    let mut fixture = Fixture::new();
    fixture.record(6, T0);
    fixture.sign_heads(T0);
    let conn = attacker(fixture.path());

    // Rebuild the chain from entry 2 on with a forged entry at 2, with
    // correct hashes throughout: only the signed checkpoints can tell.
    let mut entries: Vec<Entry> = (1..=6).map(|seq| read_entry(&conn, seq)).collect();
    let mut forged = entries[1].clone();
    forged.actor = "dev_forged".into();
    entries.insert(1, forged);
    conn.execute("DELETE FROM audit_entries WHERE stream = 'application'", [])
        .unwrap();
    let mut prev = GENESIS_HASH;
    for (index, entry) in entries.iter_mut().enumerate() {
        entry.seq = index as u64 + 1;
        entry.prev_hash = prev;
        entry.hash = entry.compute_hash();
        prev = entry.hash;
        insert_raw(&conn, entry);
    }

    let (stream, seq, problem) = first_failure(&fixture.verify());
    assert_eq!(stream, Stream::Application);
    assert_eq!(seq, 4, "the first checkpoint signs entry 4");
    assert!(problem.contains("checkpoint"), "{problem}");
}

#[test]
fn reordered_entries_are_named() {
    let mut fixture = Fixture::new();
    fixture.record(6, T0);
    let conn = attacker(fixture.path());
    conn.execute_batch(
        "UPDATE audit_entries SET seq = 1000 WHERE stream = 'application' AND seq = 3;
        UPDATE audit_entries SET seq = 3 WHERE stream = 'application' AND seq = 4;
        UPDATE audit_entries SET seq = 4 WHERE stream = 'application' AND seq = 1000;",
    )
    .unwrap();

    let (stream, seq, _) = first_failure(&fixture.verify());
    assert_eq!(stream, Stream::Application);
    assert_eq!(seq, 3);
}

#[test]
fn truncated_tail_is_named_by_checkpoint() {
    let mut fixture = Fixture::new();
    fixture.record(6, T0);
    fixture.sign_heads(T0);
    let conn = attacker(fixture.path());
    conn.execute(
        "DELETE FROM audit_entries WHERE stream = 'application' AND seq >= 5",
        [],
    )
    .unwrap();

    let (stream, seq, problem) = first_failure(&fixture.verify());
    assert_eq!(stream, Stream::Application);
    assert_eq!(seq, 6);
    assert!(problem.contains("removed"), "{problem}");
}

#[test]
fn forged_checkpoint_is_named() {
    let mut fixture = Fixture::new();
    fixture.record(3, T0);
    fixture.sign_heads(T0);
    let conn = attacker(fixture.path());
    conn.execute(
        "UPDATE audit_checkpoints SET signature = zeroblob(64) WHERE stream = 'application'",
        [],
    )
    .unwrap();

    let (stream, seq, problem) = first_failure(&fixture.verify());
    assert_eq!(stream, Stream::Application);
    assert_eq!(seq, 3);
    assert!(problem.contains("signature"), "{problem}");
}

#[test]
fn dropped_triggers_are_reported() {
    let mut fixture = Fixture::new();
    fixture.record(2, T0);
    drop(attacker(fixture.path()));
    let report = fixture.verify();
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(report.problems.len(), 6, "{report:?}");
}

#[test]
fn triggers_reject_update_and_delete() {
    let mut fixture = Fixture::new();
    fixture.record(4, T0);
    let conn = Connection::open(fixture.path().join("relay.db")).unwrap();

    for sql in [
        "UPDATE audit_entries SET actor = 'x' WHERE seq = 1",
        "DELETE FROM audit_entries WHERE seq = 1",
        "UPDATE audit_checkpoints SET created_at = 0",
        "DELETE FROM audit_checkpoints",
    ] {
        let error = conn.execute(sql, []).unwrap_err();
        assert!(error.to_string().contains("append-only"), "{sql}: {error}");
    }
    let report = fixture.verify();
    assert!(report.is_ok(), "{report:?}");
}

#[test]
fn guard_without_signed_anchor_does_not_allow_delete() {
    let mut fixture = Fixture::new();
    fixture.record(4, T0);
    let conn = Connection::open(fixture.path().join("relay.db")).unwrap();
    conn.execute(
        "INSERT INTO audit_retention_guard (stream, through_seq) VALUES ('application', 4)",
        [],
    )
    .unwrap();
    let error = conn
        .execute("DELETE FROM audit_entries WHERE seq <= 4", [])
        .unwrap_err();
    assert!(error.to_string().contains("append-only"), "{error}");
}

#[test]
fn anchors_reject_delete() {
    let mut fixture = Fixture::new();
    fixture.record(3, T0);
    let retention = RetentionPolicy {
        content: std::time::Duration::from_secs(86_400),
        audit: std::time::Duration::from_secs(86_400),
    };
    run_once(
        &fixture.conn,
        &fixture.key,
        retention,
        T0 + 2 * DAY_MS,
        ACTOR_RELAY,
    )
    .unwrap();
    let conn = Connection::open(fixture.path().join("relay.db")).unwrap();
    let error = conn.execute("DELETE FROM audit_anchors", []).unwrap_err();
    assert!(error.to_string().contains("append-only"), "{error}");
}

/// Inserts a session with frames and a browser credential, as the store would.
fn insert_session(
    conn: &Connection,
    id: u8,
    created_at: i64,
    ended_at: Option<i64>,
    frames_at: &[i64],
) {
    let session_id = [id; 16];
    conn.execute(
        "INSERT INTO sessions (session_id, epoch, fingerprint, invite_token_hash, created_at,
            ended_at)
        VALUES (?1, 1, ?2, ?3, ?4, ?5)",
        params![
            session_id.as_slice(),
            [0u8; 16].as_slice(),
            [id; 32].as_slice(),
            created_at,
            ended_at
        ],
    )
    .unwrap();
    for (offset, received_at) in frames_at.iter().enumerate() {
        conn.execute(
            "INSERT INTO frames (session_id, frame_offset, stream_id, seq, kind, final_count,
                received_at, frame)
            VALUES (?1, ?2, ?3, ?2, 1, 0, ?4, x'00')",
            params![
                session_id.as_slice(),
                offset as i64,
                [1u8; 16].as_slice(),
                received_at
            ],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO browser_credentials (credential_hash, session_id, created_at)
        VALUES (?1, ?2, ?3)",
        params![
            [id ^ 0xff; 32].as_slice(),
            session_id.as_slice(),
            created_at
        ],
    )
    .unwrap();
}

fn count(conn: &Connection, sql: &str, id: u8) -> i64 {
    conn.query_row(sql, [[id; 16].as_slice()], |row| row.get(0))
        .unwrap()
}

#[test]
fn retention_deletes_exactly_expired_sessions() {
    let mut fixture = Fixture::new();
    let now = T0 + 40 * DAY_MS;
    // 1: ended 35 days ago. 2: open, last frame 31 days ago. 3: ended 2
    // days ago. 4: open, created long ago, last frame 1 day ago. 5: open,
    // created 40 days ago without frames.
    insert_session(
        fixture.sqlite(),
        1,
        T0,
        Some(now - 35 * DAY_MS),
        &[T0, T0 + DAY_MS],
    );
    insert_session(fixture.sqlite(), 2, T0, None, &[T0, now - 31 * DAY_MS]);
    insert_session(fixture.sqlite(), 3, T0, Some(now - 2 * DAY_MS), &[T0]);
    insert_session(fixture.sqlite(), 4, T0, None, &[T0, now - DAY_MS]);
    insert_session(fixture.sqlite(), 5, T0, None, &[]);
    fixture.record(3, T0);

    let retention = RetentionPolicy {
        content: std::time::Duration::from_secs(30 * 86_400),
        ..RetentionPolicy::default()
    };
    let outcome = run_once(&fixture.conn, &fixture.key, retention, now, ACTOR_RELAY).unwrap();
    assert_eq!(outcome.sessions, 3);
    assert_eq!(outcome.frames, 4);
    assert_eq!(outcome.browser_credentials, 3);

    let conn = fixture.sqlite();
    for (id, kept) in [(1, false), (2, false), (3, true), (4, true), (5, false)] {
        let sessions = count(
            conn,
            "SELECT COUNT(*) FROM sessions WHERE session_id = ?1",
            id,
        );
        let credentials = count(
            conn,
            "SELECT COUNT(*) FROM browser_credentials WHERE session_id = ?1",
            id,
        );
        let frames = count(
            conn,
            "SELECT COUNT(*) FROM frames WHERE session_id = ?1",
            id,
        );
        assert_eq!(sessions, i64::from(kept), "session {id}");
        assert_eq!(credentials, i64::from(kept), "credentials of session {id}");
        if !kept {
            assert_eq!(frames, 0, "frames of session {id}");
        } else {
            assert!(frames > 0, "frames of session {id}");
        }
    }

    // The run is itself an admin entry with its counts, and both chains verify.
    let report = fixture.verify();
    assert!(report.is_ok(), "{report:?}");
    let run: (String, String) = conn
        .query_row(
            "SELECT action, details FROM audit_entries WHERE stream = 'admin' ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(run.0, "retention.run");
    assert!(run.1.contains(r#""sessions_deleted":"3""#), "{}", run.1);
}

#[test]
fn audit_retention_keeps_chain_verifiable() {
    let mut fixture = Fixture::new();
    fixture.record(5, T0);
    fixture.record(3, T0 + 10 * DAY_MS);
    fixture.sign_heads(T0 + 10 * DAY_MS);

    let retention = RetentionPolicy {
        content: std::time::Duration::from_secs(86_400),
        audit: std::time::Duration::from_secs(5 * 86_400),
    };
    let now = T0 + 11 * DAY_MS;
    let outcome = run_once(&fixture.conn, &fixture.key, retention, now, ACTOR_RELAY).unwrap();
    assert_eq!(outcome.audit_entries[&Stream::Application], 5);

    let report = fixture.verify();
    assert!(report.is_ok(), "{report:?}");
    let summary = &report.streams[&Stream::Application];
    assert_eq!(summary.anchored_at, Some(5));
    assert_eq!(summary.range, Some((6, 8)));

    // New entries continue the chain after the anchor.
    fixture.record(2, now);
    fixture.sign_heads(now);
    let report = fixture.verify();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.streams[&Stream::Application].range, Some((6, 10)));

    // Removing more entries behind the anchor's back is detected.
    let conn = attacker(fixture.path());
    conn.execute(
        "DELETE FROM audit_entries WHERE stream = 'application' AND seq = 6",
        [],
    )
    .unwrap();
    let (stream, seq, problem) = first_failure(&fixture.verify());
    assert_eq!(stream, Stream::Application);
    assert_eq!(seq, 6);
    assert!(problem.contains("missing"), "{problem}");
}

#[test]
fn retention_of_whole_stream_continues_from_anchor() {
    let mut fixture = Fixture::new();
    fixture.record(3, T0);
    let retention = RetentionPolicy {
        content: std::time::Duration::from_secs(86_400),
        audit: std::time::Duration::from_secs(86_400),
    };
    let now = T0 + 2 * DAY_MS;
    run_once(&fixture.conn, &fixture.key, retention, now, ACTOR_RELAY).unwrap();
    fixture.record(1, now);
    let report = fixture.verify();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.streams[&Stream::Application].range, Some((4, 4)));
}

fn export_all(fixture: &Fixture, name: &str) -> std::path::PathBuf {
    let out = fixture.path().join(name);
    let request = ExportRequest {
        streams: Stream::ALL.to_vec(),
        from: None,
        to: None,
        out: out.clone(),
    };
    export(fixture.path(), &fixture.backend(), &request).unwrap();
    out
}

#[test]
fn export_verifies_offline() {
    let mut fixture = Fixture::new();
    fixture.record(6, T0);
    let out = export_all(&fixture, "audit.jsonl");

    let report = verify_export(&out, None).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.streams[&Stream::Application].range, Some((1, 6)));
    // The export itself is recorded in the admin stream.
    assert_eq!(report.streams[&Stream::Admin].entries, 1);

    let pinned = fixture.key.verifying_key();
    assert!(verify_export(&out, Some(pinned)).unwrap().is_ok());
}

#[test]
fn export_of_time_range_is_covered() {
    let mut fixture = Fixture::new();
    fixture.record(3, T0);
    fixture.record(3, T0 + DAY_MS);
    fixture.record(3, T0 + 2 * DAY_MS);
    let out = fixture.path().join("range.jsonl");
    let request = ExportRequest {
        streams: vec![Stream::Application],
        from: Some(T0 + DAY_MS),
        to: Some(T0 + DAY_MS),
        out: out.clone(),
    };
    export(fixture.path(), &fixture.backend(), &request).unwrap();

    let report = verify_export(&out, None).unwrap();
    assert!(report.is_ok(), "{report:?}");
    let summary = &report.streams[&Stream::Application];
    // Entries 4 to 6 are in the range; the export runs on to entry 8, which
    // the checkpoint policy of every fourth entry signed.
    assert_eq!(summary.range, Some((4, 8)));
}

#[test]
fn tampered_export_fails() {
    let mut fixture = Fixture::new();
    fixture.record(6, T0);
    let out = export_all(&fixture, "audit.jsonl");
    let text = std::fs::read_to_string(&out).unwrap();

    let changed = text.replacen("dev_test", "dev_evil", 1);
    std::fs::write(&out, &changed).unwrap();
    let report = verify_export(&out, None).unwrap();
    let (stream, seq, _) = first_failure(&report);
    assert_eq!((stream, seq), (Stream::Application, 1));

    // Dropping the last entry of a stream leaves it without its checkpoint.
    let lines: Vec<&str> = text.lines().collect();
    let last_application = lines
        .iter()
        .rposition(|line| {
            line.contains(r#""type":"entry""#) && line.contains(r#""stream":"application""#)
        })
        .unwrap();
    let shortened: Vec<&str> = lines
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != last_application)
        .map(|(_, line)| *line)
        .collect();
    std::fs::write(&out, shortened.join("\n")).unwrap();
    let report = verify_export(&out, None).unwrap();
    let (stream, seq, problem) = first_failure(&report);
    assert_eq!((stream, seq), (Stream::Application, 6), "{problem}");

    // Another key than the pinned one is reported.
    std::fs::write(&out, &text).unwrap();
    let other = tempfile::tempdir().unwrap();
    let other_key = AuditKey::load_or_create(other.path())
        .unwrap()
        .verifying_key();
    let report = verify_export(&out, Some(other_key)).unwrap();
    assert!(!report.is_ok());
}

#[test]
fn malformed_export_names_the_line() {
    let mut fixture = Fixture::new();
    fixture.record(2, T0);
    let out = export_all(&fixture, "audit.jsonl");
    let text = std::fs::read_to_string(&out).unwrap();

    let broken = format!("{text}{{\"type\":\"entry\",\"stream\":\"application\"}}\n");
    std::fs::write(&out, broken).unwrap();
    let error = verify_export(&out, None).unwrap_err().to_string();
    let last_line = text.lines().count() + 1;
    assert!(error.contains(&format!("line {last_line}")), "{error}");

    let headless: String = text
        .lines()
        .skip(1)
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&out, headless).unwrap();
    let error = verify_export(&out, None).unwrap_err().to_string();
    assert!(error.contains("not a header"), "{error}");

    std::fs::write(&out, "").unwrap();
    let error = verify_export(&out, None).unwrap_err().to_string();
    assert!(error.contains("empty"), "{error}");
}
