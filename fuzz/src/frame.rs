//! Targets for the binary frame: the header checks the relay applies to a
//! published frame, opening with a known key, and the follow socket's
//! delivery envelope.

use sealcast_protocol::api::{decode_delivery, encode_delivery};
use sealcast_protocol::padding::{bucket_for, pad, unpad, MAX_CONTENT_LEN};
use sealcast_protocol::{
    FrameHeader, FrameKind, SessionId, SessionKey, StreamId, StreamOpener, StreamSealer, HEADER_LEN,
};

/// Session key that every seed frame is sealed with, as bytes.
const FUZZ_KEY: [u8; 32] = [0x5e; 32];

/// Session that every seed frame belongs to.
pub const FUZZ_SESSION: SessionId = SessionId([0x11; 16]);

/// Stream of the frames [`frame_open`] seals itself.
const SEALED_STREAM: StreamId = StreamId([0x22; 16]);

/// Returns the fixed session key that every seed frame is sealed with.
pub fn fuzz_key() -> SessionKey {
    SessionKey::from_bytes(FUZZ_KEY)
}

/// Decodes a header, and a whole frame with its length check, as the relay
/// does before it accepts a published frame. A header that decodes must
/// encode to the same bytes.
pub fn frame_header(data: &[u8]) {
    if let Ok(header) = FrameHeader::decode(data) {
        assert_eq!(
            header.encode()[..],
            data[..HEADER_LEN],
            "a decoded header encodes to other bytes"
        );
    }
    if let Ok(header) = FrameHeader::decode_frame(data) {
        assert_eq!(
            header.frame_len(),
            data.len(),
            "a frame passed the length check with another length"
        );
    }
}

/// Opens the input as consecutive frames of [`FUZZ_SESSION`], then seals the
/// input as frame content and opens it, then strips its padding.
pub fn frame_open(data: &[u8]) {
    open_frames(data);
    seal_and_open(data);
    unpad_and_pad(data);
}

/// Splits a follow-socket message into offset and frame and opens the frame.
/// A message that splits must encode back to the same bytes.
pub fn delivery(data: &[u8]) {
    let Some((offset, frame)) = decode_delivery(data) else {
        assert!(data.len() < 8, "a message of 8 bytes or more did not split");
        return;
    };
    assert_eq!(
        encode_delivery(offset, frame),
        data,
        "a split message encodes to other bytes"
    );

    let mut opener = StreamOpener::new(fuzz_key(), FUZZ_SESSION);
    if let Ok(opened) = opener.open(frame) {
        let _ = opened.segment();
    }
}

/// Opens each frame in turn with one opener, so that replay, reordering and
/// gap accounting see a sequence.
fn open_frames(data: &[u8]) {
    let mut opener = StreamOpener::new(fuzz_key(), FUZZ_SESSION);
    for frame in split_frames(data) {
        let Ok(opened) = opener.open(frame) else {
            continue;
        };
        assert!(
            opener.already_seen(&opened.header),
            "an opened frame is not marked as seen"
        );
        assert!(opener.open(frame).is_err(), "the same frame opened twice");
        let _ = opened.segment();
    }
}

/// Cuts concatenated frames at the length each header declares. A piece
/// without a valid header takes the rest of the input.
fn split_frames(mut data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while !data.is_empty() {
        let len = FrameHeader::decode(data)
            .map(|header| header.frame_len())
            .unwrap_or(data.len());
        let (frame, rest) = data.split_at(len.min(data.len()));
        frames.push(frame);
        data = rest;
    }
    frames
}

/// Seals the input after its first byte as content and opens it. The first
/// byte picks the frame kind (its value modulo 3) and, with bit 2, seals one
/// frame first that the opener never sees, so the opener must report a gap.
fn seal_and_open(data: &[u8]) {
    let Some((&selector, content)) = data.split_first() else {
        return;
    };
    let kind = match selector % 3 {
        0 => FrameKind::Interim,
        1 => FrameKind::Final,
        _ => FrameKind::EndOfSession,
    };
    let skip_first = selector & 0b100 != 0;

    let key = fuzz_key();
    let mut sealer = StreamSealer::with_stream_id(&key, FUZZ_SESSION, SEALED_STREAM);
    let mut opener = StreamOpener::new(key, FUZZ_SESSION);
    if skip_first && sealer.seal(FrameKind::Final, b"lost").is_err() {
        panic!("sealing a four-byte content failed");
    }
    let frame = match sealer.seal(kind, content) {
        Ok(frame) => frame,
        Err(_) => {
            assert!(
                content.len() > MAX_CONTENT_LEN,
                "sealing fitting content failed"
            );
            return;
        }
    };

    let opened = match opener.open(&frame) {
        Ok(opened) => opened,
        Err(error) => panic!("a freshly sealed frame did not open: {error}"),
    };
    assert_eq!(opened.content, content, "opened content differs");
    assert_eq!(opened.header.kind, kind, "opened kind differs");
    if skip_first {
        assert_eq!(
            opened.skipped_frames, 1,
            "the skipped frame was not counted"
        );
        assert_eq!(
            opened.chain_verified, None,
            "a chain with a gap was verified"
        );
    } else {
        assert_eq!(opened.skipped_frames, 0, "a gap was reported without one");
        assert_eq!(
            opened.chain_verified,
            Some(true),
            "the first frame's chain failed"
        );
    }
    let _ = opened.segment();
}

/// Strips padding from the input; content that comes out must pad and strip
/// back to itself.
fn unpad_and_pad(data: &[u8]) {
    let Ok(content) = unpad(data) else {
        return;
    };
    let padded = match bucket_for(content.len()).and_then(|bucket| pad(content, bucket)) {
        Ok(padded) => padded,
        Err(error) => panic!("content of {} bytes did not pad: {error}", content.len()),
    };
    assert_eq!(unpad(&padded), Ok(content), "padding did not round-trip");
}
