//! A group commit's frames on PostgreSQL, written with a fixed number of
//! statements whatever their count.
//!
//! Every statement is a round trip to the server, so writing each frame on
//! its own makes the writer wait on the network once per frame. Here two
//! queries read the state of every session and stream that the frames
//! touch. Each frame is checked against that state in queue order, as the
//! per-frame statement checks it. Two statements then insert the accepted
//! frames and advance their streams from arrays. The writer holds the
//! store's advisory lock for the whole transaction, so no other node's
//! writes can change that state in between.

use std::collections::HashMap;

use sealcast_protocol::SessionId;

use super::super::schema::u64_to_sql;
use super::super::{FrameRecord, StoreError};
use crate::at_rest::FrameCiphers;
use crate::db::Db;

/// A session's state as the frames of the run advance it.
struct SessionState {
    open: bool,
    next_offset: i64,
}

/// A stream's state as the frames of the run advance it.
struct StreamState {
    next_seq: i64,
    last_offset: i64,
    advanced: bool,
}

/// The run's sessions by id.
type Sessions = HashMap<[u8; 16], SessionState>;

/// The run's streams by session id and stream id.
type Streams = HashMap<([u8; 16], [u8; 16]), StreamState>;

/// The accepted frames, one array per column.
#[derive(Default)]
struct FrameColumns {
    session_ids: Vec<Vec<u8>>,
    offsets: Vec<i64>,
    stream_ids: Vec<Vec<u8>>,
    seqs: Vec<i64>,
    kinds: Vec<i64>,
    final_counts: Vec<i64>,
    received_at: Vec<i64>,
    sealed: Vec<Vec<u8>>,
}

/// Stores `frames` in queue order and returns each frame's outcome. A frame
/// whose offset does not directly follow its session's stored frames, or
/// whose session has ended, fails with [`StoreError::FrameOutOfOrder`], and
/// one whose sequence number does not directly follow its stream's with
/// [`StoreError::SequenceOutOfOrder`], while the others are stored. The
/// outer error is a database failure, after which the transaction is lost.
pub(super) fn append_frames(
    db: &Db,
    ciphers: &mut FrameCiphers,
    frames: &[&FrameRecord],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut sessions = read_sessions(db, frames)?;
    let mut streams = read_streams(db, frames)?;

    let mut outcomes = Vec::with_capacity(frames.len());
    let mut columns = FrameColumns::default();
    for frame in frames {
        let outcome = accept(frame, &mut sessions, &mut streams);
        if let Ok((offset, seq, body)) = outcome {
            let sealed = ciphers.seal(frame.session_id.as_bytes(), frame.offset, body);
            columns
                .session_ids
                .push(frame.session_id.as_bytes().to_vec());
            columns.offsets.push(offset);
            columns.stream_ids.push(frame.stream_id.as_bytes().to_vec());
            columns.seqs.push(seq);
            columns.kinds.push(i64::from(frame.kind.to_byte()));
            columns.final_counts.push(u64_to_sql(frame.final_count));
            columns.received_at.push(frame.received_at);
            columns.sealed.push(sealed.to_vec());
        }
        outcomes.push(outcome.map(|_| ()));
    }

    if !columns.offsets.is_empty() {
        insert_frames(db, &columns)?;
        advance_streams(db, &streams)?;
    }
    Ok(outcomes)
}

/// Checks one frame against the run's state and advances the state when it
/// is accepted. Returns the frame's offset, sequence number and body.
fn accept<'a>(
    frame: &'a FrameRecord,
    sessions: &mut Sessions,
    streams: &mut Streams,
) -> Result<(i64, i64, &'a [u8]), StoreError> {
    let out_of_order = || StoreError::FrameOutOfOrder {
        session_id: frame.session_id,
        offset: frame.offset,
    };
    let offset = i64::try_from(frame.offset).map_err(|_| out_of_order())?;
    let seq = i64::try_from(frame.seq).map_err(|_| out_of_order())?;
    let body = frame.delivery.get(8..).ok_or_else(out_of_order)?;
    let session = sessions
        .get_mut(frame.session_id.as_bytes())
        .ok_or_else(out_of_order)?;
    if !session.open || offset != session.next_offset {
        return Err(out_of_order());
    }

    let key = (*frame.session_id.as_bytes(), *frame.stream_id.as_bytes());
    // A stream without stored frames starts at sequence number 0.
    let expected = streams.get(&key).map_or(0, |stream| stream.next_seq);
    if seq != expected {
        return Err(StoreError::SequenceOutOfOrder {
            session_id: frame.session_id,
            seq: frame.seq,
        });
    }
    session.next_offset += 1;
    streams.insert(
        key,
        StreamState {
            next_seq: seq + 1,
            last_offset: offset,
            advanced: true,
        },
    );
    Ok((offset, seq, body))
}

/// Reads whether each session of `frames` is open and the offset its next
/// frame gets. Unknown sessions are left out.
fn read_sessions(db: &Db, frames: &[&FrameRecord]) -> Result<Sessions, StoreError> {
    let mut ids: Vec<&[u8]> = frames
        .iter()
        .map(|frame| frame.session_id.as_bytes().as_slice())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = db
        .query_postgres(
            "SELECT s.session_id, s.ended_at IS NULL,
                 COALESCE((SELECT MAX(f.frame_offset) + 1 FROM frames f
                           WHERE f.session_id = s.session_id), 0)
             FROM sessions s WHERE s.session_id = ANY($1)",
            &[&ids],
        )
        .map_err(StoreError::db("read the sessions of a batch's frames"))?;
    let mut sessions = HashMap::with_capacity(rows.len());
    for row in rows {
        let id: Vec<u8> = row.get(0);
        let id =
            <[u8; 16]>::try_from(id).map_err(|_| StoreError::Corrupt { what: "session id" })?;
        sessions.insert(
            id,
            SessionState {
                open: row.get(1),
                next_offset: row.get(2),
            },
        );
    }
    Ok(sessions)
}

/// Reads the next sequence number and last offset of each stream of
/// `frames` that has stored frames.
fn read_streams(db: &Db, frames: &[&FrameRecord]) -> Result<Streams, StoreError> {
    let mut keys: Vec<(&SessionId, &[u8])> = frames
        .iter()
        .map(|frame| (&frame.session_id, frame.stream_id.as_bytes().as_slice()))
        .collect();
    keys.sort_unstable_by(|a, b| (a.0.as_bytes(), a.1).cmp(&(b.0.as_bytes(), b.1)));
    keys.dedup();
    let session_ids: Vec<&[u8]> = keys.iter().map(|key| key.0.as_bytes().as_slice()).collect();
    let stream_ids: Vec<&[u8]> = keys.iter().map(|key| key.1).collect();
    let rows = db
        .query_postgres(
            "SELECT st.session_id, st.stream_id, st.next_seq, st.last_offset
             FROM streams st
             JOIN unnest($1::bytea[], $2::bytea[]) AS k(session_id, stream_id)
               ON st.session_id = k.session_id AND st.stream_id = k.stream_id",
            &[&session_ids, &stream_ids],
        )
        .map_err(StoreError::db("read the streams of a batch's frames"))?;
    let mut streams = HashMap::with_capacity(rows.len());
    for row in rows {
        let corrupt = |_| StoreError::Corrupt { what: "stream key" };
        let session: [u8; 16] = row.get::<_, Vec<u8>>(0).try_into().map_err(corrupt)?;
        let stream: [u8; 16] = row.get::<_, Vec<u8>>(1).try_into().map_err(corrupt)?;
        streams.insert(
            (session, stream),
            StreamState {
                next_seq: row.get(2),
                last_offset: row.get(3),
                advanced: false,
            },
        );
    }
    Ok(streams)
}

fn insert_frames(db: &Db, columns: &FrameColumns) -> Result<(), StoreError> {
    db.query_postgres(
        "INSERT INTO frames (session_id, frame_offset, stream_id, seq, kind, final_count,
             received_at, frame)
         SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bytea[], $4::bigint[],
             $5::bigint[], $6::bigint[], $7::bigint[], $8::bytea[])",
        &[
            &columns.session_ids,
            &columns.offsets,
            &columns.stream_ids,
            &columns.seqs,
            &columns.kinds,
            &columns.final_counts,
            &columns.received_at,
            &columns.sealed,
        ],
    )
    .map_err(StoreError::db("store a batch's frames"))?;
    Ok(())
}

/// Stores the new state of every stream that accepted a frame of the run.
fn advance_streams(db: &Db, streams: &Streams) -> Result<(), StoreError> {
    let advanced: Vec<_> = streams.iter().filter(|(_, state)| state.advanced).collect();
    let session_ids: Vec<&[u8]> = advanced.iter().map(|(key, _)| key.0.as_slice()).collect();
    let stream_ids: Vec<&[u8]> = advanced.iter().map(|(key, _)| key.1.as_slice()).collect();
    let next_seqs: Vec<i64> = advanced.iter().map(|(_, state)| state.next_seq).collect();
    let last_offsets: Vec<i64> = advanced
        .iter()
        .map(|(_, state)| state.last_offset)
        .collect();
    db.query_postgres(
        "INSERT INTO streams (session_id, stream_id, next_seq, last_offset)
         SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::bigint[])
         ON CONFLICT (session_id, stream_id)
         DO UPDATE SET next_seq = EXCLUDED.next_seq, last_offset = EXCLUDED.last_offset",
        &[&session_ids, &stream_ids, &next_seqs, &last_offsets],
    )
    .map_err(StoreError::db("advance a batch's streams"))?;
    Ok(())
}
