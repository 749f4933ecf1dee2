//! Key rotation: per-epoch keys, the grace window for the previous epoch,
//! delivery of a rotated key through a pairing, and links that carry a
//! publisher key and an epoch.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed unwrap or panic is how a test reports a failure"
)]

use url::Url;

use sealcast_protocol::authorship::{AuthoredStream, PublisherKey};
use sealcast_protocol::invite::FollowInviteError;
use sealcast_protocol::pairing::{ClinicianPairing, JoinerPairing, KeyGrant};
use sealcast_protocol::rotation::{next_epoch_key, EpochError, EpochOpener, GRACE_FRAMES};
use sealcast_protocol::{
    FollowInvite, FrameHeader, FrameKind, InviteError, InviteLink, ProtocolError, SessionId,
    SessionKey, StreamId, StreamSealer,
};

const SESSION: SessionId = SessionId([0x5e; 16]);

fn epoch_key(epoch: u8) -> SessionKey {
    SessionKey::from_bytes([epoch.wrapping_add(0x40); 32])
}

/// Starts a stream of `epoch`, sealed with that epoch's key.
fn sealer(epoch: u8, stream: u8) -> StreamSealer {
    StreamSealer::with_stream_id(&epoch_key(epoch), SESSION, StreamId([stream; 16]))
        .with_key_epoch(u32::from(epoch))
}

fn frames(sealer: &mut StreamSealer, count: u64) -> Vec<Vec<u8>> {
    (0..count)
        .map(|index| {
            sealer
                .seal(FrameKind::Final, index.to_string().as_bytes())
                .unwrap()
        })
        .collect()
}

fn opener_with_epochs(epochs: &[u8]) -> EpochOpener {
    let mut opener = EpochOpener::new(epoch_key(epochs[0]), SESSION, u32::from(epochs[0]));
    for &epoch in &epochs[1..] {
        opener.add_key(u32::from(epoch), epoch_key(epoch)).unwrap();
    }
    opener
}

#[test]
fn sealer_writes_key_epoch() {
    let frame = sealer(3, 1).seal(FrameKind::Final, b"x").unwrap();
    assert_eq!(FrameHeader::decode(&frame).unwrap().key_epoch, 3);
    assert_eq!(frame[4..8], [0, 0, 0, 3]);
}

#[test]
fn new_epoch_opens_after_key_arrives() {
    let mut opener = opener_with_epochs(&[0]);
    let frame = frames(&mut sealer(1, 2), 1).remove(0);
    assert_eq!(
        opener.open(&frame).unwrap_err(),
        EpochError::UnknownEpoch(1)
    );

    opener.add_key(1, epoch_key(1)).unwrap();
    assert_eq!(opener.open(&frame).unwrap().header.key_epoch, 1);
    assert_eq!(opener.current_epoch(), 1);
}

#[test]
fn previous_epoch_opens_within_grace_window() {
    let mut opener = opener_with_epochs(&[0, 1]);
    let old = frames(&mut sealer(0, 1), 2);
    let new = frames(&mut sealer(1, 2), GRACE_FRAMES);
    opener.open(&old[0]).unwrap();

    for frame in &new[..new.len() - 1] {
        opener.open(frame).unwrap();
    }
    assert_eq!(opener.open(&old[1]).unwrap().header.key_epoch, 0);
}

#[test]
fn previous_epoch_expires_after_grace_window() {
    let mut opener = opener_with_epochs(&[0, 1]);
    let old = frames(&mut sealer(0, 1), 2);
    opener.open(&old[0]).unwrap();
    for frame in frames(&mut sealer(1, 2), GRACE_FRAMES) {
        opener.open(&frame).unwrap();
    }
    assert_eq!(
        opener.open(&old[1]).unwrap_err(),
        EpochError::ExpiredEpoch {
            epoch: 0,
            current: 1
        }
    );
}

#[test]
fn older_epochs_are_rejected_at_once() {
    let mut opener = opener_with_epochs(&[0, 1, 2]);
    let old = frames(&mut sealer(0, 1), 1);
    opener.open(&frames(&mut sealer(2, 3), 1)[0]).unwrap();
    assert_eq!(
        opener.open(&old[0]).unwrap_err(),
        EpochError::ExpiredEpoch {
            epoch: 0,
            current: 2
        }
    );
    assert_eq!(
        opener.add_key(0, epoch_key(0)).unwrap_err(),
        EpochError::ExpiredEpoch {
            epoch: 0,
            current: 2
        }
    );
}

#[test]
fn stream_cannot_change_epoch() {
    let mut opener = opener_with_epochs(&[0, 1]);
    let stream = StreamId([9; 16]);
    let first = StreamSealer::with_stream_id(&epoch_key(0), SESSION, stream)
        .seal(FrameKind::Final, b"a")
        .unwrap();
    let mut moved = StreamSealer::with_stream_id(&epoch_key(1), SESSION, stream).with_key_epoch(1);
    moved.seal(FrameKind::Final, b"a").unwrap();
    let second = moved.seal(FrameKind::Final, b"b").unwrap();

    opener.open(&first).unwrap();
    assert_eq!(
        opener.open(&second).unwrap_err(),
        EpochError::StreamChangedEpoch {
            stream: stream.to_string(),
            first: 0,
            found: 1
        }
    );
}

#[test]
fn frame_under_wrong_epoch_key_fails_to_decrypt() {
    // Epoch 1 in the header, but sealed with the key of epoch 0.
    let mut opener = opener_with_epochs(&[0, 1]);
    let frame = StreamSealer::with_stream_id(&epoch_key(0), SESSION, StreamId([4; 16]))
        .with_key_epoch(1)
        .seal(FrameKind::Final, b"x")
        .unwrap();
    assert_eq!(
        opener.open(&frame).unwrap_err(),
        EpochError::Protocol(ProtocolError::Decrypt)
    );
    assert_eq!(opener.current_epoch(), 0);
}

#[test]
fn last_epoch_cannot_rotate() {
    assert_eq!(
        next_epoch_key(u32::MAX).unwrap_err(),
        EpochError::EpochExhausted(u32::MAX)
    );
    let (next, key) = next_epoch_key(4).unwrap();
    assert_eq!(next, 5);
    assert_ne!(
        key.expose_bytes(),
        next_epoch_key(4).unwrap().1.expose_bytes()
    );
}

#[test]
fn rotated_key_reaches_paired_follower() {
    // Pairing, then a rotation: the follower unwraps the new key and opens
    // the publisher's new stream, and the old stream's last checkpoint.
    let (joiner, commitment) = JoinerPairing::start();
    let (clinician, clinician_public) = ClinicianPairing::respond(commitment);
    let (joiner, joiner_public) = joiner.receive_clinician_key(clinician_public).unwrap();
    let clinician = clinician
        .receive_joiner_key(joiner_public)
        .unwrap()
        .confirm();
    let joiner = joiner.confirm();

    let secret = [0x21; 32];
    let mut old_stream =
        AuthoredStream::with_stream_id(&epoch_key(0), SESSION, StreamId([1; 16]), 0, &secret);
    let publisher = old_stream.publisher_key();
    let (epoch, rotated) = next_epoch_key(0).unwrap();
    let grant = KeyGrant {
        key_epoch: epoch,
        session_id: SESSION,
        session_key: rotated.clone(),
        publisher,
    };
    let received = joiner.unwrap_key(&clinician.wrap_key(&grant)).unwrap();
    assert_eq!(received.key_epoch, 1);

    let closing = old_stream.seal_checkpoint(true).unwrap();
    let mut new_stream =
        AuthoredStream::with_stream_id(&rotated, SESSION, StreamId([2; 16]), epoch, &secret);
    let segment = sealcast_protocol::TranscriptSegment {
        segment_id: 1,
        revision: 0,
        speaker: "doctor".into(),
        start_ms: 0,
        end_ms: 1,
        text: "after rotation".into(),
        is_final: true,
    };
    let new_frames = new_stream.seal_segment(&segment).unwrap();

    let mut opener = EpochOpener::new(epoch_key(0), SESSION, 0);
    opener
        .add_key(received.key_epoch, received.session_key)
        .unwrap();
    let opened = opener.open(&new_frames[0]).unwrap();
    assert_eq!(opened.segment().unwrap(), segment);
    assert_eq!(opener.open(&closing).unwrap().header.key_epoch, 0);
}

fn link(key: SessionKey) -> InviteLink {
    InviteLink {
        relay: Url::parse("https://relay.example:8443/").unwrap(),
        token: "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8".into(),
        key,
    }
}

fn publisher() -> PublisherKey {
    AuthoredStream::with_stream_id(&epoch_key(0), SESSION, StreamId([1; 16]), 0, &[0x21; 32])
        .publisher_key()
}

#[test]
fn follow_invite_round_trips() {
    for (publisher, key_epoch) in [(None, 0), (Some(publisher()), 0), (Some(publisher()), 7)] {
        let invite = FollowInvite {
            link: link(epoch_key(2)),
            publisher,
            key_epoch,
        };
        let parsed = FollowInvite::parse(&invite.to_url()).unwrap();
        assert_eq!(parsed.publisher, publisher);
        assert_eq!(parsed.key_epoch, key_epoch);
        assert_eq!(parsed.link.key.expose_bytes(), epoch_key(2).expose_bytes());
    }
}

#[test]
fn follow_invite_tolerates_escaped_fragment() {
    let invite = FollowInvite {
        link: link(epoch_key(0)),
        publisher: Some(publisher()),
        key_epoch: 3,
    };
    let escaped = invite.to_url().replace('#', "%23");
    let wrapped = format!("<{escaped}>");
    let parsed = FollowInvite::parse(&wrapped).unwrap();
    assert_eq!(parsed.publisher, Some(publisher()));
    assert_eq!(parsed.key_epoch, 3);
}

#[test]
fn follow_invite_rejects_bad_parameters() {
    let text = FollowInvite {
        link: link(epoch_key(0)),
        publisher: Some(publisher()),
        key_epoch: 0,
    }
    .to_url();
    let encoded = publisher().to_base64url();
    let cases = [
        (
            text.replace(&encoded, &encoded[..40]),
            FollowInviteError::InvalidPublisherKey,
        ),
        (
            text.replace(&encoded, &format!("+{}", &encoded[1..])),
            FollowInviteError::InvalidPublisherKey,
        ),
        (
            text.replace(&encoded, "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            FollowInviteError::InvalidPublisherKey,
        ),
        (format!("{text}&epoch=-1"), FollowInviteError::InvalidEpoch),
        (
            format!("{text}&epoch=4294967296"),
            FollowInviteError::InvalidEpoch,
        ),
        (
            text[..text.len() - 11].to_string(),
            FollowInviteError::Invite(InviteError::InvalidSecretLength(24)),
        ),
    ];
    for (candidate, expected) in cases {
        assert_eq!(
            FollowInvite::parse(&candidate).unwrap_err(),
            expected,
            "{candidate}"
        );
    }
}
