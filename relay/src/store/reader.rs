//! Read connections and the queries that run on them.
//!
//! Every query runs on tokio's blocking thread pool with one connection taken
//! from a small pool; a semaphore makes callers wait for a free connection.
//! SQLite read connections are read-only; PostgreSQL ones reopen themselves
//! after a lost connection, on the next query that finds it lost.

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use rusqlite::{Connection, OpenFlags};
use sealcast_protocol::{api, SessionId, StreamId};
use tokio::sync::Semaphore;

use super::schema::{prepare_reader, u64_from_sql};
use super::{SessionRecord, SessionTail, StoreError, StoredFrame, StreamTail};
use crate::at_rest::FrameCipher;
use crate::credentials::{hashes_match, CredentialHash};
use crate::db::{db_params, Backend, Db, Row};
use crate::metrics::STORE_AT_REST_FAILURES;

/// Frames that [`frames_between`] reads per query.
const FRAMES_PER_PAGE: usize = 32;

/// A fixed set of read connections.
#[derive(Clone)]
pub(super) struct ReadPool {
    connections: Arc<Connections>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    /// Opens `count` read connections to the database of `backend`.
    pub(super) fn open(backend: &Backend, count: usize) -> Result<ReadPool, StoreError> {
        let mut connections = Vec::with_capacity(count);
        for _ in 0..count {
            let db = match backend {
                Backend::Sqlite(path) => {
                    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                    let conn = Connection::open_with_flags(path, flags)
                        .map_err(StoreError::sqlite("open a read connection"))?;
                    prepare_reader(&conn)?;
                    Db::Sqlite(conn)
                }
                Backend::Postgres(_) => super::open::connect_postgres(backend)?,
            };
            connections.push(db);
        }
        Ok(ReadPool {
            connections: Arc::new(Connections(Mutex::new(connections))),
            permits: Arc::new(Semaphore::new(count)),
        })
    }

    /// Runs `query` on a pooled connection on the blocking thread pool.
    pub(super) async fn run<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::ReadTask("read pool closed".into()))?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let result = query(&conn);
            pool.put(conn);
            result
        })
        .await
        .map_err(|error| StoreError::ReadTask(error.to_string()))?
    }

    fn take(&self) -> Result<Db, StoreError> {
        self.lock()
            .pop()
            .ok_or_else(|| StoreError::ReadTask("no read connection free despite a permit".into()))
    }

    fn put(&self, conn: Db) {
        self.lock().push(conn);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Db>> {
        self.connections
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The pool's idle connections.
struct Connections(Mutex<Vec<Db>>);

const SESSION_COLUMNS: &str = "session_id, epoch, fingerprint, organization_id,
    invite_token_hash, ended_at, invite_verifier, created_by_user";

pub(super) fn session_by_id(
    db: &Db,
    session_id: &SessionId,
) -> Result<Option<SessionRecord>, StoreError> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?1");
    query_session(db, &sql, session_id.as_bytes())
}

pub(super) fn session_by_invite(
    db: &Db,
    invite_hash: &CredentialHash,
) -> Result<Option<SessionRecord>, StoreError> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE invite_token_hash = ?1");
    let record = query_session(db, &sql, invite_hash)?;
    Ok(record.filter(|record| hashes_match(&record.invite_token_hash, invite_hash)))
}

fn query_session(db: &Db, sql: &str, key: &[u8]) -> Result<Option<SessionRecord>, StoreError> {
    let row = db
        .query_opt(sql, db_params![key], session_columns)
        .map_err(StoreError::db("look up a session"))?;
    row.map(SessionColumns::into_record).transpose()
}

/// A session row before its blobs are checked.
struct SessionColumns {
    session_id: Vec<u8>,
    epoch: i64,
    fingerprint: Vec<u8>,
    organization_id: Option<String>,
    invite_token_hash: Vec<u8>,
    ended_at: Option<i64>,
    invite_verifier: Option<Vec<u8>>,
    created_by_user: Option<String>,
}

fn session_columns(row: &Row<'_>) -> Result<SessionColumns, crate::db::DbError> {
    Ok(SessionColumns {
        session_id: row.get(0)?,
        epoch: row.get(1)?,
        fingerprint: row.get(2)?,
        organization_id: row.get(3)?,
        invite_token_hash: row.get(4)?,
        ended_at: row.get(5)?,
        invite_verifier: row.get(6)?,
        created_by_user: row.get(7)?,
    })
}
impl SessionColumns {
    fn into_record(self) -> Result<SessionRecord, StoreError> {
        let session_id = <[u8; 16]>::try_from(self.session_id)
            .map_err(|_| StoreError::Corrupt { what: "session id" })?;
        let fingerprint =
            <[u8; 16]>::try_from(self.fingerprint).map_err(|_| StoreError::Corrupt {
                what: "fingerprint",
            })?;
        let invite_verifier = self
            .invite_verifier
            .map(<[u8; 32]>::try_from)
            .transpose()
            .map_err(|_| StoreError::Corrupt {
                what: "invite verifier",
            })?;
        Ok(SessionRecord {
            session_id: SessionId(session_id),
            epoch: u64_from_sql(self.epoch),
            fingerprint,
            organization_id: self.organization_id,
            invite_token_hash: self.invite_token_hash,
            invite_verifier,
            ended_at: self.ended_at,
            created_by_user: self.created_by_user,
        })
    }
}

pub(super) fn session_tail(db: &Db, session_id: &SessionId) -> Result<SessionTail, StoreError> {
    let key = session_id.as_bytes().as_slice();
    // One snapshot for both reads, so that a frame another node commits
    // between them cannot show up in the streams but not in the offsets.
    let db = db
        .begin_read()
        .map_err(StoreError::db("begin a read transaction"))?;
    let last_offset = db
        .query_one(
            "SELECT MAX(frame_offset) FROM frames WHERE session_id = ?1",
            db_params![key],
            |row| row.get::<Option<i64>>(0),
        )
        .map_err(StoreError::db("read a session's last offset"))?;
    let next_offset = match last_offset {
        Some(last) => offset_from_sql(last)? + 1,
        None => 0,
    };
    let streams = stream_tails(&db, key)?;
    db.commit()
        .map_err(StoreError::db("end a read transaction"))?;
    Ok(SessionTail {
        next_offset,
        streams,
    })
}

fn stream_tails(db: &Db, session_key: &[u8]) -> Result<Vec<StreamTail>, StoreError> {
    let rows = db
        .query_all(
            "SELECT stream_id, next_seq - 1, last_offset FROM streams
             WHERE session_id = ?1",
            db_params![session_key],
            |row| {
                Ok((
                    row.get::<Vec<u8>>(0)?,
                    row.get::<i64>(1)?,
                    row.get::<i64>(2)?,
                ))
            },
        )
        .map_err(StoreError::db("read a session's streams"))?;

    let mut streams = Vec::new();
    for (stream_id, seq, offset) in rows {
        let stream_id = <[u8; 16]>::try_from(stream_id)
            .map_err(|_| StoreError::Corrupt { what: "stream id" })?;
        streams.push(StreamTail {
            stream_id: StreamId(stream_id),
            last_seq: offset_from_sql(seq)?,
            last_offset: offset_from_sql(offset)?,
        });
    }
    Ok(streams)
}

/// Reads frames and decrypts them with `cipher`, the session's frame cipher.
pub(super) fn frames_between(
    db: &Db,
    cipher: &FrameCipher,
    session_id: &SessionId,
    from: u64,
    until: u64,
    max_frames: usize,
    max_bytes: usize,
) -> Result<Vec<StoredFrame>, StoreError> {
    let mut next = i64::try_from(from).unwrap_or(i64::MAX);
    let until = i64::try_from(until).unwrap_or(i64::MAX);
    let mut frames = Vec::new();
    let mut bytes = 0;
    // Pages of a few frames keep what is read beyond `max_bytes` small.
    while frames.len() < max_frames && next < until {
        let page_size = (max_frames - frames.len()).min(FRAMES_PER_PAGE);
        let rows = db
            .query_all(
                "SELECT frame_offset, frame FROM frames
                 WHERE session_id = ?1 AND frame_offset >= ?2 AND frame_offset < ?3
                 ORDER BY frame_offset LIMIT ?4",
                db_params![session_id.as_bytes(), next, until, page_size as i64],
                |row| Ok((row.get::<i64>(0)?, row.get::<Vec<u8>>(1)?)),
            )
            .map_err(StoreError::db("read frames"))?;
        let full = rows.len() == page_size;
        for (offset, mut frame) in rows {
            next = offset.saturating_add(1);
            let offset = offset_from_sql(offset)?;
            if let Err(failure) = cipher.open_in_place(offset, &mut frame) {
                metrics::counter!(STORE_AT_REST_FAILURES, "column" => "frames.frame").increment(1);
                tracing::error!(session_id = %session_id, offset, "stored frame failed at-rest decryption");
                return Err(StoreError::at_rest(failure));
            }
            bytes += frame.len();
            frames.push(StoredFrame {
                offset,
                delivery: Bytes::from(api::encode_delivery(offset, &frame)),
            });
            if bytes >= max_bytes {
                return Ok(frames);
            }
        }
        if !full {
            break;
        }
    }
    Ok(frames)
}

fn offset_from_sql(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        what: "offset or sequence number",
    })
}

/// Looks up the session of a follow credential with `query`, which selects
/// the stored hash and the session id by hash, and compares the hashes in
/// constant time. `action` names the lookup in errors.
pub(super) fn session_by_credential_hash(
    db: &Db,
    query: &'static str,
    action: &'static str,
    credential_hash: &CredentialHash,
) -> Result<Option<SessionRecord>, StoreError> {
    let row = db
        .query_opt(query, db_params![credential_hash], |row| {
            Ok((row.get::<Vec<u8>>(0)?, row.get::<Vec<u8>>(1)?))
        })
        .map_err(StoreError::db(action))?;

    let Some((stored_hash, session_id)) = row else {
        return Ok(None);
    };
    if !hashes_match(&stored_hash, credential_hash) {
        return Ok(None);
    }
    let session_id =
        <[u8; 16]>::try_from(session_id).map_err(|_| StoreError::Corrupt { what: "session id" })?;
    session_by_id(db, &SessionId(session_id))
}
