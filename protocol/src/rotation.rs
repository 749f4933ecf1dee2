//! Session key rotation.
//!
//! The clinician device can replace the session key during a session, for
//! example after removing a follower. Each key epoch has its own random
//! 32-byte key, named by the header's key epoch, and every stream and
//! derived value of that epoch comes from that key as in version 1. A stream
//! keeps one epoch: after a rotation the publisher closes its stream with a
//! signed checkpoint and publishes a new stream under the new epoch.
//!
//! A receiver opens frames of the newest epoch it has opened and, for a grace
//! window of [`GRACE_FRAMES`] frames of that epoch, frames of the epoch before
//! it. Older epochs are rejected and their keys dropped.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use thiserror::Error;

use crate::error::ProtocolError;
use crate::frame::{OpenedFrame, StreamOpener};
use crate::header::FrameHeader;
use crate::ids::{SessionId, StreamId};
use crate::keys::SessionKey;

/// Frames of a new epoch a receiver opens before it stops accepting frames
/// of the previous epoch.
///
/// The window is counted in frames rather than seconds for three reasons.
/// This crate reads no clock. A follower that catches up from stored history
/// applies the same window as one that follows live, so delivery timing
/// cannot change which frames open. And only a holder of the new key can
/// advance the count, so a holder of the old key alone cannot keep the
/// window open by sending frames. 64 frames cover the frames of the old epoch
/// still in flight when the new one starts: another device's stream that
/// has not received the new key yet, and resent unacknowledged frames.
/// NOTE: 64 is an estimate of a few seconds of publishing at about ten
/// frames a second. While the publisher is silent the window stays open.
pub const GRACE_FRAMES: u64 = 64;

/// A frame the epoch rules reject, or a frame that fails to open.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EpochError {
    /// The frame failed the checks of [`StreamOpener::open`].
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// No key of this epoch has been delivered to this receiver yet.
    #[error("no session key for key epoch {0}: wait for the rotated key or ask for a new link")]
    UnknownEpoch(u32),
    /// The frame's epoch is older than the receiver accepts.
    #[error("key epoch {epoch} has expired: this receiver now accepts epoch {current}")]
    ExpiredEpoch {
        /// Epoch of the frame.
        epoch: u32,
        /// Newest epoch the receiver has opened.
        current: u32,
    },
    /// A stream sealed frames under two epochs, which a correct sender never does.
    #[error("stream {stream} changed from key epoch {first} to {found}")]
    StreamChangedEpoch {
        /// Stream id.
        stream: String,
        /// Epoch of the stream's first opened frame.
        first: u32,
        /// Epoch of this frame.
        found: u32,
    },
    /// The key epoch cannot be increased further.
    #[error("key epoch {0} is the last one: start a new session")]
    EpochExhausted(u32),
}

/// Makes the key of the epoch after `current`, from the operating system's CSPRNG.
pub fn next_epoch_key(current: u32) -> Result<(u32, SessionKey), EpochError> {
    let next = current
        .checked_add(1)
        .ok_or(EpochError::EpochExhausted(current))?;
    Ok((next, SessionKey::generate()))
}

/// Opens frames of every epoch whose key a receiver has, applying the grace window.
pub struct EpochOpener {
    session_id: SessionId,
    openers: BTreeMap<u32, StreamOpener>,
    current: u32,
    opened_in_current: u64,
    stream_epochs: HashMap<StreamId, u32>,
}

impl EpochOpener {
    /// Creates a receiver with the key of `key_epoch`.
    pub fn new(key: SessionKey, session_id: SessionId, key_epoch: u32) -> Self {
        let mut openers = BTreeMap::new();
        openers.insert(key_epoch, StreamOpener::new(key, session_id));
        EpochOpener {
            session_id,
            openers,
            current: key_epoch,
            opened_in_current: 0,
            stream_epochs: HashMap::new(),
        }
    }

    /// Adds the key of another epoch, as unwrapped after a rotation. A key
    /// older than the previous epoch is rejected, and a key already held is kept.
    pub fn add_key(&mut self, key_epoch: u32, key: SessionKey) -> Result<(), EpochError> {
        if key_epoch.saturating_add(1) < self.current {
            return Err(EpochError::ExpiredEpoch {
                epoch: key_epoch,
                current: self.current,
            });
        }
        self.openers
            .entry(key_epoch)
            .or_insert_with(|| StreamOpener::new(key, self.session_id));
        Ok(())
    }

    /// Newest epoch this receiver has opened a frame of, or started with.
    pub fn current_epoch(&self) -> u32 {
        self.current
    }

    /// Returns whether this frame, or a later one of its stream, was already opened.
    pub fn already_seen(&self, header: &FrameHeader) -> bool {
        self.openers
            .get(&header.key_epoch)
            .is_some_and(|opener| opener.already_seen(header))
    }

    /// Opens a frame with the key its header names, then updates the epoch state.
    pub fn open(&mut self, frame: &[u8]) -> Result<OpenedFrame, EpochError> {
        let header = FrameHeader::decode_frame(frame)?;
        let epoch = header.key_epoch;
        self.check_epoch(&header)?;
        let opener = self
            .openers
            .get_mut(&epoch)
            .ok_or(EpochError::UnknownEpoch(epoch))?;
        let opened = opener.open(frame)?;

        self.stream_epochs.insert(header.stream_id, epoch);
        if epoch > self.current {
            self.current = epoch;
            self.opened_in_current = 0;
            // Keys older than the previous epoch can never open a frame again.
            self.openers
                .retain(|&held, _| held.saturating_add(1) >= epoch);
        }
        if epoch == self.current {
            self.opened_in_current = self.opened_in_current.saturating_add(1);
        }
        Ok(opened)
    }

    fn check_epoch(&self, header: &FrameHeader) -> Result<(), EpochError> {
        let epoch = header.key_epoch;
        if let Some(&first) = self.stream_epochs.get(&header.stream_id) {
            if first != epoch {
                return Err(EpochError::StreamChangedEpoch {
                    stream: header.stream_id.to_string(),
                    first,
                    found: epoch,
                });
            }
        }
        let previous_in_grace =
            epoch.saturating_add(1) == self.current && self.opened_in_current < GRACE_FRAMES;
        if epoch >= self.current || previous_in_grace {
            return Ok(());
        }
        Err(EpochError::ExpiredEpoch {
            epoch,
            current: self.current,
        })
    }
}

impl fmt::Debug for EpochOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochOpener")
            .field("session_id", &self.session_id)
            .field("current", &self.current)
            .field("epochs", &self.openers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
