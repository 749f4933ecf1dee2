//! Editing the `frames` table of a stopped relay's SQLite database directly,
//! as someone who has taken over the relay, its at-rest key included, could.
//!
//! Frames are sealed at rest, so [`FrameStore`] opens and seals them with the
//! relay's data key: edits made this way pass the relay's at-rest check and
//! reach followers, whose own checks must catch them. The `raw_` methods
//! edit the sealed blobs without the key, as a thief of the database file
//! could. Open a [`FrameStore`] only while the relay is stopped, and drop it
//! before the relay starts again.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};
use sealcast_protocol::{FrameHeader, SessionId, StreamId};
use sealcast_relay::at_rest::{self, DataKeys, KeySource};

/// File name of the relay's database inside its data directory.
pub const DATABASE_FILE: &str = "relay.db";

/// The frames a relay stored, opened for editing.
pub struct FrameStore {
    conn: Connection,
    keys: std::sync::Arc<DataKeys>,
}

impl FrameStore {
    /// Opens the database in a stopped relay's data directory, with the
    /// development at-rest key the relay made there.
    pub fn open(data_dir: &Path) -> Self {
        FrameStore::open_with_key(data_dir, &KeySource::Development)
    }

    /// Opens the database in a stopped relay's data directory, with the
    /// at-rest key from `source`.
    pub fn open_with_key(data_dir: &Path, source: &KeySource) -> Self {
        let keys = at_rest::unlock_existing(data_dir, source)
            .unwrap_or_else(|err| panic!("failed to unlock the at-rest key: {err}"));
        let path = data_dir.join(DATABASE_FILE);
        let conn = Connection::open(&path)
            .unwrap_or_else(|err| panic!("failed to open {}: {err}", path.display()));
        FrameStore {
            conn,
            keys: keys.data_keys().clone(),
        }
    }

    /// Returns the session's stored offsets in order.
    pub fn offsets(&self, session: SessionId) -> Vec<u64> {
        let mut statement = self
            .conn
            .prepare("SELECT frame_offset FROM frames WHERE session_id = ?1 ORDER BY frame_offset")
            .expect("the frames table exists");
        statement
            .query_map(params![session.as_bytes().as_slice()], |row| {
                row.get::<_, i64>(0)
            })
            .expect("frame offsets are readable")
            .map(|offset| offset.expect("offset is an integer") as u64)
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
        self.conn
            .query_row(
                "SELECT frame FROM frames WHERE session_id = ?1 AND frame_offset = ?2",
                params![session.as_bytes().as_slice(), offset as i64],
                |row| row.get(0),
            )
            .unwrap_or_else(|err| panic!("no frame at offset {offset} of {session}: {err}"))
    }

    /// Returns the sequence numbers stored for `stream`, in offset order.
    pub fn stream_seqs(&self, session: SessionId, stream: StreamId) -> Vec<u64> {
        stored_seqs(&self.conn, session, stream)
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
        let changed = self
            .conn
            .execute(
                "UPDATE frames SET frame = ?3 WHERE session_id = ?1 AND frame_offset = ?2",
                params![session.as_bytes().as_slice(), offset as i64, blob],
            )
            .expect("frame update succeeds");
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
        self.conn
            .execute(
                "INSERT INTO frames (session_id, frame_offset, stream_id, seq, kind, final_count,
                    received_at, frame)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    session.as_bytes().as_slice(),
                    offset as i64,
                    row_stream.as_bytes().as_slice(),
                    header.seq as i64,
                    header.kind.to_byte(),
                    header.final_count as i64,
                    now_millis(),
                    sealed,
                ],
            )
            .expect("frame insert succeeds");
        offset
    }
}

/// Returns the sequence numbers of `stream` stored in the database of a
/// running or stopped relay, in offset order. It reads only the unsealed
/// `seq` column, so it needs no at-rest key, and opens the file read-only.
pub fn running_stream_seqs(data_dir: &Path, session: SessionId, stream: StreamId) -> Vec<u64> {
    let path = data_dir.join(DATABASE_FILE);
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|err| panic!("failed to open {} read-only: {err}", path.display()));
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout is set");
    stored_seqs(&conn, session, stream)
}

fn stored_seqs(conn: &Connection, session: SessionId, stream: StreamId) -> Vec<u64> {
    let mut statement = conn
        .prepare(
            "SELECT seq FROM frames WHERE session_id = ?1 AND stream_id = ?2
             ORDER BY frame_offset",
        )
        .expect("the frames table exists");
    statement
        .query_map(
            params![session.as_bytes().as_slice(), stream.as_bytes().as_slice()],
            |row| row.get::<_, i64>(0),
        )
        .expect("sequence numbers are readable")
        .map(|seq| seq.expect("seq is an integer") as u64)
        .collect()
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
