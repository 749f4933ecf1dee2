//! Editing the `frames` table of a stopped relay's database directly, as
//! someone who has taken over the relay, its at-rest key included, could.
//! The database is the SQLite file in the data directory, or the data
//! directory's PostgreSQL database when the tests run on PostgreSQL (see
//! [`crate::database`]).
//!
//! Frames are sealed at rest, so [`FrameStore`] opens and seals them with the
//! relay's data key: edits made this way pass the relay's at-rest check and
//! reach followers, whose own checks must catch them. The `raw_` methods
//! edit the sealed blobs without the key, as a thief of the database file
//! could. Open a [`FrameStore`] only while the relay is stopped, and drop it
//! before the relay starts again.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use sealcast_protocol::{FrameHeader, SessionId, StreamId};
use sealcast_relay::at_rest::{self, DataKeys, KeySource};

use crate::database;

/// File name of the relay's database inside its data directory.
pub const DATABASE_FILE: &str = "relay.db";

/// A statement parameter.
#[derive(Debug, Clone)]
enum Param {
    Bytes(Vec<u8>),
    Integer(i64),
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Bytes(bytes) => bytes.to_sql(),
            Param::Integer(number) => number.to_sql(),
        }
    }
}

/// A connection to the relay's database on either engine.
enum Store {
    Sqlite(Connection),
    Postgres(String),
}

impl Store {
    fn open(data_dir: &Path, read_only: bool) -> Store {
        match database::database_url(data_dir) {
            Some(url) => Store::Postgres(url),
            None => {
                let path = data_dir.join(DATABASE_FILE);
                let flags = if read_only {
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                } else {
                    rusqlite::OpenFlags::default()
                };
                let conn = Connection::open_with_flags(&path, flags)
                    .unwrap_or_else(|err| panic!("failed to open {}: {err}", path.display()));
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .expect("busy timeout is set");
                Store::Sqlite(conn)
            }
        }
    }

    /// Runs a query with SQLite placeholders and returns its first column
    /// as integers.
    fn integers(&self, sql: &str, params: Vec<Param>) -> Vec<i64> {
        match self {
            Store::Sqlite(conn) => {
                let mut statement = conn.prepare(sql).expect("the query prepares");
                statement
                    .query_map(rusqlite::params_from_iter(params.iter()), |row| row.get(0))
                    .expect("the query runs")
                    .map(|value| value.expect("the column is an integer"))
                    .collect()
            }
            Store::Postgres(url) => {
                let sql = sql.replace('?', "$");
                database::with_client(url, move |client| {
                    let params = postgres_params(&params);
                    client
                        .query(&sql, &params_refs(&params))
                        .expect("the query runs")
                        .iter()
                        .map(|row| row.get::<_, i64>(0))
                        .collect()
                })
            }
        }
    }

    /// Runs a query and returns its first column of its first row as bytes.
    fn bytes(&self, sql: &str, params: Vec<Param>) -> Option<Vec<u8>> {
        match self {
            Store::Sqlite(conn) => {
                let mut statement = conn.prepare(sql).expect("the query prepares");
                let mut rows = statement
                    .query(rusqlite::params_from_iter(params.iter()))
                    .expect("the query runs");
                rows.next()
                    .expect("the row is readable")
                    .map(|row| row.get(0).expect("the column is a blob"))
            }
            Store::Postgres(url) => {
                let sql = sql.replace('?', "$");
                database::with_client(url, move |client| {
                    let params = postgres_params(&params);
                    client
                        .query_opt(&sql, &params_refs(&params))
                        .expect("the query runs")
                        .map(|row| row.get::<_, Vec<u8>>(0))
                })
            }
        }
    }

    /// Runs a statement and returns the rows it changed.
    fn execute(&self, sql: &str, params: Vec<Param>) -> u64 {
        match self {
            Store::Sqlite(conn) => conn
                .execute(sql, rusqlite::params_from_iter(params.iter()))
                .expect("the statement runs") as u64,
            Store::Postgres(url) => {
                let sql = sql.replace('?', "$");
                database::with_client(url, move |client| {
                    let params = postgres_params(&params);
                    client
                        .execute(&sql, &params_refs(&params))
                        .expect("the statement runs")
                })
            }
        }
    }
}

/// A parameter as PostgreSQL binds it.
enum PostgresParam {
    Bytes(Vec<u8>),
    Integer(i64),
}

fn postgres_params(params: &[Param]) -> Vec<PostgresParam> {
    params
        .iter()
        .map(|param| match param {
            Param::Bytes(bytes) => PostgresParam::Bytes(bytes.clone()),
            Param::Integer(number) => PostgresParam::Integer(*number),
        })
        .collect()
}

fn params_refs(params: &[PostgresParam]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|param| match param {
            PostgresParam::Bytes(bytes) => bytes as &(dyn postgres::types::ToSql + Sync),
            PostgresParam::Integer(number) => number as &(dyn postgres::types::ToSql + Sync),
        })
        .collect()
}

fn session_param(session: SessionId) -> Param {
    Param::Bytes(session.as_bytes().to_vec())
}

fn offset_param(offset: u64) -> Param {
    Param::Integer(i64::try_from(offset).expect("offset fits a signed integer"))
}

/// The frames a relay stored, opened for editing.
pub struct FrameStore {
    store: Store,
    keys: Arc<DataKeys>,
}

impl FrameStore {
    /// Opens the database of a stopped relay's data directory, with the
    /// development at-rest key the relay made there.
    pub fn open(data_dir: &Path) -> Self {
        FrameStore::open_with_key(data_dir, &KeySource::Development)
    }

    /// Opens the database of a stopped relay's data directory, with the
    /// at-rest key from `source`.
    pub fn open_with_key(data_dir: &Path, source: &KeySource) -> Self {
        let database_url = database::database_url(data_dir);
        // On a thread of its own: the synchronous PostgreSQL client must not
        // run inside the tests' async runtime.
        let keys = std::thread::scope(|scope| {
            scope
                .spawn(|| at_rest::unlock_existing_at(data_dir, database_url.as_deref(), source))
                .join()
                .expect("the unlock thread does not panic")
        })
        .unwrap_or_else(|err| panic!("failed to unlock the at-rest key: {err}"));
        FrameStore {
            store: Store::open(data_dir, false),
            keys: keys.data_keys().clone(),
        }
    }

    /// Returns the session's stored offsets in order.
    pub fn offsets(&self, session: SessionId) -> Vec<u64> {
        self.store
            .integers(
                "SELECT frame_offset FROM frames WHERE session_id = ?1 ORDER BY frame_offset",
                vec![session_param(session)],
            )
            .into_iter()
            .map(|offset| offset as u64)
            .collect()
    }

    /// Returns the frame stored at `offset`, decrypted as the relay reads it.
    pub fn frame(&self, session: SessionId, offset: u64) -> Vec<u8> {
        let mut frame = self.raw_frame(session, offset);
        self.keys
            .frame_cipher(session.as_bytes())
            .open_in_place(offset, &mut frame)
            .unwrap_or_else(|err| panic!("frame at offset {offset} of {session}: {err}"));
        frame
    }

    /// Returns the sealed blob stored at `offset`.
    pub fn raw_frame(&self, session: SessionId, offset: u64) -> Vec<u8> {
        self.store
            .bytes(
                "SELECT frame FROM frames WHERE session_id = ?1 AND frame_offset = ?2",
                vec![session_param(session), offset_param(offset)],
            )
            .unwrap_or_else(|| panic!("no frame at offset {offset} of {session}"))
    }

    /// Returns the sequence numbers stored for `stream`, in offset order.
    pub fn stream_seqs(&self, session: SessionId, stream: StreamId) -> Vec<u64> {
        stored_seqs(&self.store, session, stream)
    }
    /// Returns the decoded header of the frame stored at `offset`.
    pub fn header(&self, session: SessionId, offset: u64) -> FrameHeader {
        FrameHeader::decode_frame(&self.frame(session, offset))
            .unwrap_or_else(|err| panic!("stored frame at offset {offset} is invalid: {err}"))
    }

    /// Overwrites the frame at `offset`, sealed for that row as the relay
    /// seals it, leaving the row's other columns as they are.
    pub fn replace_frame(&self, session: SessionId, offset: u64, frame: &[u8]) {
        let sealed = self
            .keys
            .frame_cipher(session.as_bytes())
            .seal(offset, frame);
        self.replace_raw_frame(session, offset, &sealed);
    }

    /// Overwrites the sealed blob at `offset` with `blob` as it is.
    pub fn replace_raw_frame(&self, session: SessionId, offset: u64, blob: &[u8]) {
        let changed = self.store.execute(
            "UPDATE frames SET frame = ?3 WHERE session_id = ?1 AND frame_offset = ?2",
            vec![
                session_param(session),
                offset_param(offset),
                Param::Bytes(blob.to_vec()),
            ],
        );
        assert_eq!(changed, 1, "no frame at offset {offset} of {session}");
    }

    /// Inverts bit `bit` (0 is the least significant) of byte `byte` of the frame at `offset`.
    pub fn flip_bit(&self, session: SessionId, offset: u64, byte: usize, bit: u8) {
        let mut frame = self.frame(session, offset);
        assert!(
            byte < frame.len(),
            "byte {byte} is beyond the {}-byte frame at offset {offset}",
            frame.len()
        );
        frame[byte] ^= 1 << bit;
        self.replace_frame(session, offset, &frame);
    }

    /// Exchanges the sealed blobs at offsets `first` and `second` without
    /// the key, as a thief of the database file could.
    pub fn swap_raw_frames(&self, session: SessionId, first: u64, second: u64) {
        let first_blob = self.raw_frame(session, first);
        let second_blob = self.raw_frame(session, second);
        self.replace_raw_frame(session, first, &second_blob);
        self.replace_raw_frame(session, second, &first_blob);
    }

    /// Exchanges the frames at offsets `first` and `second`, each sealed
    /// again for its new row.
    pub fn swap_frames(&self, session: SessionId, first: u64, second: u64) {
        let first_frame = self.frame(session, first);
        let second_frame = self.frame(session, second);
        self.replace_frame(session, first, &second_frame);
        self.replace_frame(session, second, &first_frame);
    }

    /// Stores `frame` at the session's next offset and returns that offset.
    ///
    /// The row's kind, sequence number and final count come from the frame's
    /// header. `row_stream` goes into the row's `stream_id` column: the store
    /// allows one row per (stream, sequence number), so a copy of a stored
    /// frame needs another stream id there. The blob itself is unchanged.
    pub fn append_frame(&self, session: SessionId, frame: &[u8], row_stream: StreamId) -> u64 {
        let header = FrameHeader::decode_frame(frame)
            .unwrap_or_else(|err| panic!("appended frame is invalid: {err}"));
        let offset = self.offsets(session).last().map_or(0, |last| last + 1);
        let sealed = self
            .keys
            .frame_cipher(session.as_bytes())
            .seal(offset, frame);
        self.store.execute(
            "INSERT INTO frames (session_id, frame_offset, stream_id, seq, kind, final_count,
                received_at, frame)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            vec![
                session_param(session),
                offset_param(offset),
                Param::Bytes(row_stream.as_bytes().to_vec()),
                Param::Integer(header.seq as i64),
                Param::Integer(i64::from(header.kind.to_byte())),
                Param::Integer(header.final_count as i64),
                Param::Integer(now_millis()),
                Param::Bytes(sealed),
            ],
        );
        offset
    }
}

/// Returns the sequence numbers of `stream` stored in the database of a
/// running or stopped relay, in offset order. It reads only the unsealed
/// `seq` column, so it needs no at-rest key; a SQLite file is opened read-only.
pub fn running_stream_seqs(data_dir: &Path, session: SessionId, stream: StreamId) -> Vec<u64> {
    let store = Store::open(data_dir, true);
    stored_seqs(&store, session, stream)
}

fn stored_seqs(store: &Store, session: SessionId, stream: StreamId) -> Vec<u64> {
    store
        .integers(
            "SELECT seq FROM frames WHERE session_id = ?1 AND stream_id = ?2
             ORDER BY frame_offset",
            vec![
                session_param(session),
                Param::Bytes(stream.as_bytes().to_vec()),
            ],
        )
        .into_iter()
        .map(|seq| seq as u64)
        .collect()
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
