//! The store: the SQLite file `relay.db` in the data directory, or a
//! PostgreSQL database that several relay nodes share.
//!
//! A dedicated writer thread owns the node's only write connection and
//! commits every queued write in one transaction (group commit), completing
//! each write's callback after COMMIT returns. Reads go through a small pool
//! of connections on the blocking thread pool, never on async threads. The
//! statements are written once for both engines through [`crate::db`].
//!
//! | module | job |
//! | --- | --- |
//! | [`open`] | opening connections, unlocking the data key, migrating |
//! | [`schema`] | SQLite pragmas and migrations |
//! | [`schema_pg`] | the PostgreSQL schema and its versions |
//! | [`writer`] | the writer thread, write operations and group commit |
//! | [`reader`] | the read connection pool and queries |
//! | [`browsers`] | browsers that redeemed an invite, and their follow credentials |
//! | [`paired`] | devices that joined by pairing, their follow credentials and later wrapped keys |
//! | [`challenges`] | invite challenges, shared by every relay node on the data directory |
//! | [`fault`] | classes of store failure for metrics and error reasons |
//! | [`audit`] | audit entries, checkpoints, anchors and their append-only triggers |

pub(crate) mod audit;
mod browsers;
mod challenges;
mod fault;
mod open;
mod paired;
mod reader;
mod schema;
mod schema_pg;
mod writer;

pub(crate) use challenges::{NewChallenge, PresentedChallenge};
pub(crate) use fault::StoreFault;
#[cfg(test)]
pub(crate) use open::open_keyed_writer;
pub(crate) use open::{open_extra_writer, open_keyed_db, open_migrated_writer};
pub(crate) use schema::BUSY_TIMEOUT;
#[cfg(test)]
pub(crate) use schema::{migrate_to, AT_REST_VERSION};

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use sealcast_protocol::paired_keys::DeviceId;
use sealcast_protocol::{FrameKind, SessionId, StreamId};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::at_rest::{AtRestError, DatabaseKeys, KeySource};
use crate::credentials::CredentialHash;
use crate::db::{db_params, Backend, Db, DbError};
use crate::invites::challenges::{ChallengeRejected, MAX_TOTAL};
pub(crate) use paired::MAX_KEY_EPOCH_STEP;
use reader::ReadPool;
pub(crate) use writer::{Completion, WriteOp, WritePermit};

/// File name of the database inside the data directory.
pub(crate) const DATABASE_FILE: &str = "relay.db";

/// Writes that may wait for the writer thread before senders are held back.
const WRITE_QUEUE_CAPACITY: usize = 1024;

/// Read connections, and so concurrent reads, of each relay node.
const READ_CONNECTIONS: usize = 4;

/// A store failure. Cloneable because one failed commit fails every write in it.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The database failed.
    #[error("store failed to {action}: {source}")]
    Database {
        /// The store operation that failed.
        action: &'static str,
        /// The database's error.
        source: Arc<DbError>,
    },
    /// The database was written by a newer relay.
    #[error("store schema version {found} is newer than version {supported} of this relay: run a newer relay")]
    SchemaTooNew {
        /// Version in the file.
        found: i64,
        /// Latest version this build supports.
        supported: i64,
    },
    /// A frame would leave a gap in the session's offsets or follow its end.
    #[error("store rejected frame {offset} of session {session_id}: it does not directly follow the stored frames of a session that is still open")]
    FrameOutOfOrder {
        /// Session of the frame.
        session_id: SessionId,
        /// Offset the frame was given.
        offset: u64,
    },
    /// The database is not at this relay's schema version, and the
    /// connection cannot migrate it.
    #[error("store schema version {found} is not version {expected} of this relay: start the relay, or run an admin command with the at-rest key, once to migrate the database")]
    SchemaNotCurrent {
        /// Version in the file.
        found: i64,
        /// Version this build writes.
        expected: i64,
    },
    /// A frame's sequence number does not directly follow the stored frames
    /// of its stream: a duplicate or a gap.
    #[error("store rejected sequence number {seq} in session {session_id}: it does not directly follow the stored frames of its stream")]
    SequenceOutOfOrder {
        /// Session of the frame.
        session_id: SessionId,
        /// Sequence number the frame carries.
        seq: u64,
    },
    /// The session to end is unknown or already ended.
    #[error("session {session_id} cannot be ended: it is unknown or already ended")]
    NotEndable {
        /// The session.
        session_id: SessionId,
    },
    /// An invite cannot be redeemed by another browser.
    #[error("invite of session {session_id} was already redeemed by its maximum of {max_browsers} browsers")]
    BrowsersExhausted {
        /// The session.
        session_id: SessionId,
        /// Browsers the session admits.
        max_browsers: u32,
    },
    /// The session has ended, or is unknown, so its invite cannot be redeemed.
    #[error("session {session_id} has ended or is unknown: its invite cannot be redeemed")]
    SessionEnded {
        /// The session.
        session_id: SessionId,
    },
    /// A presented invite challenge was rejected. The store deleted it all the same.
    #[error("invite challenge rejected ({}): request a new challenge", .reason.label())]
    InviteChallengeRejected {
        /// Reason for the rejection.
        reason: ChallengeRejected,
    },
    /// No paired device of the session has this device id.
    #[error("no paired device {device_id} in this session")]
    UnknownPairedDevice {
        /// The device id.
        device_id: DeviceId,
    },
    /// A wrapped key's epoch is older than the newest one stored for its device.
    #[error("key epoch {key_epoch} is older than key epoch {newest}, which is already stored for this device")]
    StalePairedKey {
        /// Epoch of the rejected key.
        key_epoch: u32,
        /// Newest epoch stored for the device.
        newest: u32,
    },
    /// A wrapped key's epoch is more than [`paired::MAX_KEY_EPOCH_STEP`]
    /// above the device's newest known epoch.
    #[error("key epoch {key_epoch} is more than {} above key epoch {newest}, the newest known for this device", paired::MAX_KEY_EPOCH_STEP)]
    PairedKeyTooFar {
        /// Epoch of the rejected key.
        key_epoch: u32,
        /// Newest epoch stored for the device, or delivered by its pairing.
        newest: u32,
    },
    /// The store already contains the maximum of live invite challenges.
    #[error("store already contains {MAX_TOTAL} live invite challenges: retry once some expire")]
    InviteChallengesFull,
    /// A stored value does not fit its type.
    #[error("stored {what} is invalid: the database is damaged or was edited")]
    Corrupt {
        /// The value.
        what: &'static str,
    },
    /// The writer thread has stopped, because the relay is shutting down.
    #[error("store writer has stopped: the relay is shutting down")]
    WriterStopped,
    /// The writer thread could not be started.
    #[error("failed to start the store writer thread: {0}")]
    WriterThread(Arc<std::io::Error>),
    /// A read task on the blocking pool failed to run to completion.
    #[error("store read task failed: {0}")]
    ReadTask(String),
    /// The store settings of a command are invalid.
    #[error("{0}")]
    Settings(String),
    /// The at-rest key could not be loaded, or a stored value failed to decrypt.
    #[error(transparent)]
    AtRest(Arc<AtRestError>),
}

impl StoreError {
    /// Returns whether the store refused a write because of the request, not
    /// because it failed: such outcomes are not counted as write failures.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::BrowsersExhausted { .. }
                | StoreError::SessionEnded { .. }
                | StoreError::InviteChallengeRejected { .. }
                | StoreError::InviteChallengesFull
                | StoreError::UnknownPairedDevice { .. }
                | StoreError::StalePairedKey { .. }
                | StoreError::PairedKeyTooFar { .. }
        )
    }

    /// Wraps an at-rest error, for `map_err`.
    pub(crate) fn at_rest(error: AtRestError) -> StoreError {
        StoreError::AtRest(Arc::new(error))
    }

    /// Wraps a database error with what the store was doing, for `map_err`.
    pub(crate) fn db(action: &'static str) -> impl Fn(DbError) -> StoreError {
        move |source| StoreError::Database {
            action,
            source: Arc::new(source),
        }
    }

    /// Wraps an error of a bare SQLite connection with what the store was
    /// doing, for `map_err`.
    pub(crate) fn sqlite(action: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
        move |source| StoreError::Database {
            action,
            source: Arc::new(DbError::Sqlite(source)),
        }
    }
}

/// A store error inside [`crate::db::Db::savepoint`], which needs an error
/// type that a [`DbError`] converts into. `StoreError` itself has no such
/// conversion, so that each database call names its operation.
pub(crate) struct SavepointError(pub(crate) StoreError);

impl From<DbError> for SavepointError {
    fn from(source: DbError) -> SavepointError {
        SavepointError(StoreError::db("set, release or roll back a savepoint")(
            source,
        ))
    }
}

impl From<StoreError> for SavepointError {
    fn from(error: StoreError) -> SavepointError {
        SavepointError(error)
    }
}

/// A session as the relay creates it.
#[derive(Debug, Clone)]
pub(crate) struct NewSession {
    pub(crate) session_id: SessionId,
    pub(crate) epoch: u64,
    pub(crate) fingerprint: [u8; 16],
    pub(crate) invite_token_hash: CredentialHash,
    pub(crate) invite_verifier: Option<[u8; 32]>,
    /// Browsers that may redeem the invite.
    pub(crate) max_browsers: u32,
    pub(crate) created_at: i64,
    /// Organization of the clinician who created the session. Only store
    /// and hub tests leave it out.
    pub(crate) organization_id: Option<String>,
    /// The clinician who created the session.
    pub(crate) created_by_user: Option<String>,
    /// The device that created it, when the request came from a device.
    pub(crate) created_by_device: Option<String>,
}

/// A stored session.
#[derive(Debug, Clone)]
pub(crate) struct SessionRecord {
    pub(crate) session_id: SessionId,
    pub(crate) epoch: u64,
    pub(crate) fingerprint: [u8; 16],
    pub(crate) invite_token_hash: Vec<u8>,
    /// Organization the session belongs to. `None` for sessions created
    /// before accounts existed, which no staff member may manage.
    pub(crate) organization_id: Option<String>,
    /// The invite authentication key, when the clinician device sent one.
    pub(crate) invite_verifier: Option<[u8; 32]>,
    pub(crate) ended_at: Option<i64>,
    /// The staff user who created the session. `None` for sessions created
    /// before accounts existed.
    pub(crate) created_by_user: Option<String>,
}

/// A browser's redemption of an invite: the hash of its new follow credential.
#[derive(Debug, Clone)]
pub(crate) struct Redemption {
    pub(crate) session_id: SessionId,
    pub(crate) credential_hash: CredentialHash,
    pub(crate) created_at: i64,
}

/// A wrapped key of a later key epoch for one paired device.
#[derive(Debug, Clone)]
pub(crate) struct PairedKey {
    pub(crate) session_id: SessionId,
    pub(crate) device_id: DeviceId,
    pub(crate) key_epoch: u32,
    /// The 112-byte wrapped key, which names `key_epoch` in its first 4 bytes.
    pub(crate) wrapped_key: Vec<u8>,
    pub(crate) created_at: i64,
}

/// A frame to store, with the header fields the relay routes on.
#[derive(Debug, Clone)]
pub(crate) struct FrameRecord {
    pub(crate) session_id: SessionId,
    pub(crate) offset: u64,
    pub(crate) stream_id: StreamId,
    pub(crate) seq: u64,
    pub(crate) kind: FrameKind,
    pub(crate) final_count: u64,
    pub(crate) received_at: i64,
    /// The follow-socket message: the offset, then the frame. Only the frame is stored.
    pub(crate) delivery: Bytes,
}

/// A frame read back for a follower.
#[derive(Debug, Clone)]
pub(crate) struct StoredFrame {
    pub(crate) offset: u64,
    /// The follow-socket message: the offset, then the frame.
    pub(crate) delivery: Bytes,
}

/// End of a session's stored history.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionTail {
    /// Offset the next frame gets.
    pub(crate) next_offset: u64,
    /// Last stored frame of every stream.
    pub(crate) streams: Vec<StreamTail>,
}

/// The last stored frame of one stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamTail {
    pub(crate) stream_id: StreamId,
    pub(crate) last_seq: u64,
    pub(crate) last_offset: u64,
}

/// Handle to the store, cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    backend: Backend,
    keys: DatabaseKeys,
    writes: mpsc::Sender<WriteOp>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<u64>>>,
    readers: ReadPool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database of `backend`, creating a SQLite file when it is
    /// missing, unlocks its data key with the key from `source`, migrates it
    /// and starts the writer thread. `data_dir` is where `source` finds or
    /// makes a development key file.
    pub(crate) async fn open(
        data_dir: &Path,
        backend: &Backend,
        source: &KeySource,
    ) -> Result<Store, StoreError> {
        let open_dir = data_dir.to_path_buf();
        let open_backend = backend.clone();
        let source = source.clone();
        let (db, readers, keys) = tokio::task::spawn_blocking(move || {
            open_connections(&open_dir, &open_backend, &source)
        })
        .await
        .map_err(|error| StoreError::ReadTask(error.to_string()))??;

        let (writes, queue) = mpsc::channel(WRITE_QUEUE_CAPACITY);
        let thread = writer::spawn(db, queue, keys.data_keys().clone())?;
        tracing::info!(
            backend = ?backend,
            kek_fingerprint = %keys.kek_fingerprint(),
            "store opened"
        );
        Ok(Store {
            inner: Arc::new(StoreInner {
                backend: backend.clone(),
                keys,
                writes,
                writer_thread: Mutex::new(Some(thread)),
                readers,
            }),
        })
    }

    /// Returns the database's at-rest keys.
    pub(crate) fn keys(&self) -> &DatabaseKeys {
        &self.inner.keys
    }

    /// Reserves a place in the writer's queue. Holding the permit lets a
    /// caller enqueue a write synchronously, for example under a lock that
    /// orders writes.
    pub(crate) async fn reserve(&self) -> Result<WritePermit<'_>, StoreError> {
        let permit = self
            .inner
            .writes
            .reserve()
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        Ok(WritePermit::new(permit))
    }

    /// Stores a new session.
    pub(crate) async fn create_session(&self, session: NewSession) -> Result<(), StoreError> {
        self.write(|done| WriteOp::CreateSession { session, done })
            .await
    }

    /// Stores a browser's follow credential if the session is open and admits
    /// another browser. Fails with [`StoreError::BrowsersExhausted`] or
    /// [`StoreError::SessionEnded`] otherwise, checked in the same transaction.
    pub(crate) async fn redeem_invite(&self, redemption: Redemption) -> Result<(), StoreError> {
        self.write(|done| WriteOp::RedeemInvite { redemption, done })
            .await
    }

    /// Looks up the session of a browser's follow credential by its hash,
    /// comparing in constant time.
    pub(crate) async fn session_by_browser(
        &self,
        credential_hash: CredentialHash,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.read(move |conn| browsers::session_by_credential(conn, &credential_hash))
            .await
    }

    /// Stores a paired device's follow credential with its device id and
    /// the key epoch of the key its pairing delivered, if the session is
    /// open. Fails with [`StoreError::SessionEnded`] otherwise.
    pub(crate) async fn pair_device(
        &self,
        device: Redemption,
        device_id: DeviceId,
        key_epoch: u32,
    ) -> Result<(), StoreError> {
        self.write(|done| WriteOp::PairDevice {
            device,
            device_id,
            key_epoch,
            done,
        })
        .await
    }

    /// Stores a wrapped key for a paired device. Fails with
    /// [`StoreError::UnknownPairedDevice`], [`StoreError::SessionEnded`],
    /// [`StoreError::StalePairedKey`] or [`StoreError::PairedKeyTooFar`],
    /// checked in the same transaction.
    pub(crate) async fn store_paired_key(&self, key: PairedKey) -> Result<(), StoreError> {
        self.write(|done| WriteOp::StorePairedKey { key, done })
            .await
    }

    /// Deletes a paired device's follow credential and wrapped keys. Fails
    /// with [`StoreError::UnknownPairedDevice`] when the session has no such device.
    pub(crate) async fn remove_paired_device(
        &self,
        session_id: SessionId,
        device_id: DeviceId,
    ) -> Result<(), StoreError> {
        self.write(|done| WriteOp::RemovePairedDevice {
            session_id,
            device_id,
            done,
        })
        .await
    }

    /// Looks up the session and device id of a paired device's follow
    /// credential by its hash, comparing in constant time.
    pub(crate) async fn paired_device(
        &self,
        credential_hash: CredentialHash,
    ) -> Result<Option<(SessionRecord, Option<DeviceId>)>, StoreError> {
        self.read(move |conn| paired::device_by_credential(conn, &credential_hash))
            .await
    }

    /// Returns a paired device's stored wrapped keys of epochs after `after`
    /// (all of them for `None`), oldest first.
    pub(crate) async fn paired_keys_after(
        &self,
        session_id: SessionId,
        device_id: DeviceId,
        after: Option<u32>,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read(move |conn| paired::keys_after(conn, &session_id, &device_id, after))
            .await
    }

    /// Stores a new invite challenge, after deleting the expired ones and
    /// the token's oldest beyond its limit. Fails with
    /// [`StoreError::InviteChallengesFull`] when the store has no room.
    pub(crate) async fn issue_challenge(&self, challenge: NewChallenge) -> Result<(), StoreError> {
        self.write(|done| WriteOp::IssueChallenge { challenge, done })
            .await
    }

    /// Deletes a presented invite challenge and checks that it was issued for
    /// the presented token and has not expired. Fails with
    /// [`StoreError::InviteChallengeRejected`] otherwise. A rejected
    /// challenge is deleted too, so no node accepts it again.
    pub(crate) async fn take_challenge(
        &self,
        presented: PresentedChallenge,
    ) -> Result<(), StoreError> {
        self.write(|done| WriteOp::TakeChallenge { presented, done })
            .await
    }

    /// Counts the stored invite challenges.
    #[cfg(test)]
    pub(crate) async fn challenge_count(&self) -> Result<u64, StoreError> {
        self.read(challenges::count).await
    }

    /// Counts the browsers that redeemed a session's invite.
    #[cfg(test)]
    pub(crate) async fn browser_count(&self, session_id: SessionId) -> Result<u64, StoreError> {
        self.read(move |conn| browsers::count(conn, &session_id))
            .await
    }

    /// Returns the public key that signed the newest audit checkpoint, if any.
    pub(crate) async fn newest_checkpoint_key(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(audit::newest_checkpoint_key).await
    }

    /// Runs a trivial query, to check that the store is readable.
    pub(crate) async fn check_readable(&self) -> Result<(), StoreError> {
        self.read(|db| {
            db.query_one("SELECT 1", db_params![], |_| Ok(()))
                .map_err(StoreError::db("run a health check query"))
        })
        .await
    }

    /// Looks a session up by id.
    pub(crate) async fn session(
        &self,
        session_id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.read(move |conn| reader::session_by_id(conn, &session_id))
            .await
    }

    /// Looks a session up by the hash of its invite token.
    pub(crate) async fn session_by_invite(
        &self,
        invite_hash: CredentialHash,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.read(move |conn| reader::session_by_invite(conn, &invite_hash))
            .await
    }

    /// Reads where a session's stored frames end.
    pub(crate) async fn session_tail(
        &self,
        session_id: SessionId,
    ) -> Result<SessionTail, StoreError> {
        self.read(move |conn| reader::session_tail(conn, &session_id))
            .await
    }

    /// Reads stored frames with offsets in `from..until`, at most `max_frames`
    /// of them and stopping after the first frame that reaches `max_bytes`.
    pub(crate) async fn frames_between(
        &self,
        session_id: SessionId,
        from: u64,
        until: u64,
        max_frames: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredFrame>, StoreError> {
        let cipher = self
            .inner
            .keys
            .data_keys()
            .frame_cipher(session_id.as_bytes());
        self.read(move |conn| {
            reader::frames_between(
                conn,
                &cipher,
                &session_id,
                from,
                until,
                max_frames,
                max_bytes,
            )
        })
        .await
    }

    /// Stops the writer thread after it commits everything queued before this call.
    pub(crate) async fn close(&self) {
        if let Ok(permit) = self.inner.writes.reserve().await {
            permit.send(WriteOp::Stop);
        }
        let thread = self
            .inner
            .writer_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(transactions)) => tracing::info!(transactions, "store closed"),
                _ => tracing::error!("store writer thread failed to stop cleanly"),
            }
        }
    }

    async fn write(&self, op: impl FnOnce(Completion) -> WriteOp) -> Result<(), StoreError> {
        let (sender, receiver) = oneshot::channel();
        let done: Completion = Box::new(move |result| {
            let _ = sender.send(result);
        });
        self.reserve().await?.send(op(done));
        receiver.await.map_err(|_| StoreError::WriterStopped)?
    }

    async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.inner.readers.run(query).await
    }
}

fn open_connections(
    data_dir: &Path,
    backend: &Backend,
    source: &KeySource,
) -> Result<(Db, ReadPool, DatabaseKeys), StoreError> {
    let (db, keys) = open::open_keyed_db(data_dir, backend, source)?;
    let readers = ReadPool::open(backend, READ_CONNECTIONS)?;
    Ok((db, readers, keys))
}

/// Returns the current time in Unix milliseconds, the unit of every stored time.
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
