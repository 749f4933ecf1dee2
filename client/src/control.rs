//! Local control of a running `sealcast publish` by other `sealcast`
//! commands of the same user on the same device, on Unix and Windows.
//!
//! Each session has a control directory, `control/<session id>/` in the key
//! store. The process that publishes to the session, or that ends it, holds
//! an exclusive advisory lock on `publisher.lock` there for as long as it
//! runs (`flock` on Unix, `LockFileEx` on Windows) and writes its process id
//! to `publisher.pid`. The operating system releases the lock when the
//! process exits, however it exits, so a lock file left by a crashed process
//! is recognised: when a process can take the lock, no publisher runs,
//! whatever the files contain.
//!
//! Another command sends a request by writing a file `end-<id>.request`,
//! `stop-<id>.request` or `rotate-<id>.request` into the directory, where
//! `<id>` is 16 random hex digits. The publisher scans the directory every [`POLL_INTERVAL`] and
//! confirms a rotation with `rotate-<id>.done`, which contains the new key
//! epoch. Entries that are neither regular files nor symbolic links, such
//! as directories, are left in place and never read as requests. No file
//! contains key material. On Unix the directory is mode 0700
//! and its files 0600, so other local users can neither send requests nor
//! read them.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::time::{Interval, MissedTickBehavior};

use sealcast_protocol::SessionId;

use crate::error::ClientError;
use crate::keystore::{create_private_dir, write_private_file, KeyStore};

/// Interval at which a publisher scans for requests, and at which the
/// requesting command checks for the outcome.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

const CONTROL_DIR: &str = "control";
const LOCK_FILE: &str = "publisher.lock";
const PID_FILE: &str = "publisher.pid";
const REQUEST_EXTENSION: &str = "request";
const DONE_EXTENSION: &str = "done";
const END_PREFIX: &str = "end-";
const ROTATE_PREFIX: &str = "rotate-";
const STOP_PREFIX: &str = "stop-";
/// Hex digits of the random part of a request name.
const REQUEST_ID_DIGITS: usize = 16;

/// A request to a running publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// End the session as `sealcast publish --end` does.
    End,
    /// Close the stream with a signed checkpoint and stop publishing, but
    /// keep the session and its key, because another device takes it over.
    Stop,
    /// Rotate the session key as SIGUSR1 does, then confirm it under `id`.
    Rotate {
        /// Request name without extension, for example `rotate-0123456789abcdef`.
        id: String,
    },
}

/// The kind of a request that [`send_request`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// See [`ControlRequest::End`].
    End,
    /// See [`ControlRequest::Stop`].
    Stop,
    /// See [`ControlRequest::Rotate`].
    Rotate,
}

/// Whether a publisher of a session runs on this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherState {
    /// Nothing holds the control lock.
    NotRunning,
    /// A process holds the control lock.
    Running {
        /// Its process id, when its pid file could be read.
        pid: Option<u32>,
    },
}

/// The outcome of [`ControlLock::try_acquire`].
#[derive(Debug)]
pub enum LockAttempt {
    /// This process now holds the lock.
    Acquired(ControlLock),
    /// Another process holds the lock.
    Held {
        /// Its process id, when its pid file could be read.
        pid: Option<u32>,
    },
}

/// The held control lock of one session. Dropping it removes the pid file
/// this process wrote and releases the lock.
#[derive(Debug)]
pub struct ControlLock {
    dir: PathBuf,
    // Closing the file releases the lock. `None` once released.
    file: Option<File>,
    wrote_pid: bool,
}

/// Returns the control directory of a session.
pub fn control_dir(store: &KeyStore, session_id: &SessionId) -> PathBuf {
    store.dir().join(CONTROL_DIR).join(session_id.to_string())
}

impl ControlLock {
    /// Takes the control lock of a session without waiting, creating the
    /// control directory and the lock file where they are missing.
    pub fn try_acquire(
        store: &KeyStore,
        session_id: &SessionId,
    ) -> Result<LockAttempt, ClientError> {
        let root = store.dir().join(CONTROL_DIR);
        create_private_dir(&root)?;
        let dir = control_dir(store, session_id);
        create_private_dir(&dir)?;

        let path = dir.join(LOCK_FILE);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&path)
            .map_err(|err| ClientError::io("open lock file", &path, err))?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => Ok(LockAttempt::Acquired(ControlLock {
                dir,
                file: Some(file),
                wrote_pid: false,
            })),
            Err(fs4::TryLockError::WouldBlock) => Ok(LockAttempt::Held {
                pid: read_pid(&dir),
            }),
            Err(fs4::TryLockError::Error(err)) => Err(ClientError::io("lock", &path, err)),
        }
    }

    /// Writes this process's id to the pid file, so that other commands can
    /// name the process that holds the lock.
    pub fn write_pid(&mut self) -> Result<(), ClientError> {
        let path = self.dir.join(PID_FILE);
        write_private_file(&path, format!("{}\n", std::process::id()).as_bytes())?;
        self.wrote_pid = true;
        Ok(())
    }

    /// Deletes the requests and confirmations that earlier processes left.
    pub fn clear_requests(&self) -> Result<(), ClientError> {
        // Directories and other entries that are not files stay in place.
        for (path, _) in list_files(&self.dir)?.files {
            let extension = path.extension().and_then(|extension| extension.to_str());
            if matches!(extension, Some(REQUEST_EXTENSION | DONE_EXTENSION)) {
                remove_if_present(&path)?;
            }
        }
        Ok(())
    }

    /// Releases the lock and deletes the control directory once the
    /// session has ended. The lock is released first because on Windows an
    /// open file can keep its directory from being deleted. A process can take the released lock before
    /// the deletion only if it loaded the session before the key was
    /// shredded, and such a process finds the session file gone. A failure
    /// is logged, because the session has ended all the same and a leftover
    /// directory does no harm.
    pub fn remove_dir(mut self) {
        self.file = None;
        self.wrote_pid = false;
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), error = %err, "failed to delete the control directory of an ended session");
            }
        }
    }

    /// Returns the control directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for ControlLock {
    fn drop(&mut self) {
        if self.wrote_pid {
            let path = self.dir.join(PID_FILE);
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::debug!(path = %path.display(), error = %err, "failed to delete the pid file");
            }
        }
    }
}

/// Minimum time between two warnings about entries that are not regular files.
const SKIPPED_ENTRY_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The publisher's end of the control channel: the held lock and the
/// requests that arrive.
#[derive(Debug)]
pub struct ControlChannel {
    lock: ControlLock,
    /// Scan cadence, started by the first [`ControlChannel::recv`]. It lives
    /// in the channel, so that a caller that drops the future of `recv`
    /// keeps the next scan due at the same instant instead of restarting a
    /// full wait.
    poll: Option<Interval>,
    /// When the last warning about a skipped entry was logged.
    skipped_warned_at: Option<Instant>,
}

impl ControlChannel {
    /// Takes the control lock of a session for a publisher, writes the pid
    /// file and deletes requests left from earlier runs. Fails when another
    /// process publishes to or ends the session on this device.
    pub fn open(store: &KeyStore, session_id: &SessionId) -> Result<Self, ClientError> {
        let mut lock = match ControlLock::try_acquire(store, session_id)? {
            LockAttempt::Acquired(lock) => lock,
            LockAttempt::Held { pid } => {
                return Err(ClientError::PublisherRunning {
                    session_id: session_id.to_string(),
                    process: describe_process(pid),
                })
            }
        };
        lock.write_pid()?;
        lock.clear_requests()?;
        Ok(ControlChannel {
            lock,
            poll: None,
            skipped_warned_at: None,
        })
    }

    /// Waits for the next request. A rotation request file is deleted
    /// before it is returned, so that each one is handled once. An end
    /// request stays until the control directory is deleted.
    ///
    /// Cancel safe: a request is taken only after the last await, and a
    /// dropped call leaves the next scan due when it was, because
    /// [`Interval::tick`] is cancel safe.
    pub async fn recv(&mut self) -> Result<ControlRequest, ClientError> {
        loop {
            self.poll_interval().tick().await;
            if let Some(request) = self.take_request()? {
                return Ok(request);
            }
        }
    }

    /// Returns the scan cadence, starting it on the first call so that the
    /// first scan comes one [`POLL_INTERVAL`] after it.
    fn poll_interval(&mut self) -> &mut Interval {
        self.poll.get_or_insert_with(|| {
            let mut poll = tokio::time::interval_at(
                tokio::time::Instant::now() + POLL_INTERVAL,
                POLL_INTERVAL,
            );
            // A publisher busy for longer than one interval scans once when
            // it comes back, then every interval from there.
            poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
            poll
        })
    }

    /// Writes the confirmation of a rotation request with the new key epoch.
    pub fn confirm_rotation(&self, id: &str, key_epoch: u32) -> Result<(), ClientError> {
        let path = self.lock.dir.join(format!("{id}.{DONE_EXTENSION}"));
        write_private_file(&path, format!("{key_epoch}\n").as_bytes())
    }

    /// Deletes the control directory of the ended session and releases the lock.
    pub fn close_ended(self) {
        self.lock.remove_dir();
    }

    /// Scans the directory for one request, deleting invalid request files
    /// on the way. End requests come first, then stop requests, so that a
    /// rotation requested at the same time is not done in vain. A stop
    /// request file is deleted when it is taken.
    fn take_request(&mut self) -> Result<Option<ControlRequest>, ClientError> {
        let mut requests = Vec::new();
        let listing = list_files(&self.lock.dir)?;
        if let Some(skipped) = listing.skipped.first() {
            self.warn_skipped(skipped, listing.skipped.len());
        }
        for (path, name) in listing.files {
            if path.extension().and_then(|extension| extension.to_str()) != Some(REQUEST_EXTENSION)
            {
                continue;
            }
            match parse_request_name(&name) {
                Some(request) => requests.push((path, request)),
                None => {
                    tracing::warn!(path = %path.display(), "deleting an invalid control request: expected end-ID.request, stop-ID.request or rotate-ID.request with a 16-digit hex ID");
                    remove_if_present(&path)?;
                }
            }
        }
        let end = requests
            .iter()
            .any(|(_, request)| *request == ControlRequest::End);
        if end {
            return Ok(Some(ControlRequest::End));
        }
        if let Some(index) = requests
            .iter()
            .position(|(_, request)| *request == ControlRequest::Stop)
        {
            let (path, request) = requests.swap_remove(index);
            remove_if_present(&path)?;
            return Ok(Some(request));
        }
        // Names are random, so the order among rotations does not matter.
        match requests.pop() {
            Some((path, request)) => {
                remove_if_present(&path)?;
                Ok(Some(request))
            }
            None => Ok(None),
        }
    }

    /// Logs that `count` entries of the control directory, `first` among
    /// them, are not regular files and are left in place, at most once per
    /// [`SKIPPED_ENTRY_WARNING_INTERVAL`], because the scan runs every
    /// [`POLL_INTERVAL`].
    fn warn_skipped(&mut self, first: &Path, count: usize) {
        let now = Instant::now();
        let due = self
            .skipped_warned_at
            .is_none_or(|at| now.duration_since(at) >= SKIPPED_ENTRY_WARNING_INTERVAL);
        if !due {
            return;
        }
        self.skipped_warned_at = Some(now);
        tracing::warn!(
            path = %first.display(),
            count,
            "ignoring entries of the control directory that are neither regular files nor symbolic links: they are left in place, and no request is read from them"
        );
    }
}

/// Returns whether a process holds the control lock of a session, without
/// creating anything. The lock is taken and released at once when free.
pub fn publisher_state(
    store: &KeyStore,
    session_id: &SessionId,
) -> Result<PublisherState, ClientError> {
    let dir = control_dir(store, session_id);
    let path = dir.join(LOCK_FILE);
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(PublisherState::NotRunning),
        Err(err) => return Err(ClientError::io("open lock file", &path, err)),
    };
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => Ok(PublisherState::NotRunning),
        Err(fs4::TryLockError::WouldBlock) => Ok(PublisherState::Running {
            pid: read_pid(&dir),
        }),
        Err(fs4::TryLockError::Error(err)) => Err(ClientError::io("lock", &path, err)),
    }
}

/// Writes a request for the running publisher of a session and returns its
/// id, the file name without extension.
pub fn send_request(
    store: &KeyStore,
    session_id: &SessionId,
    kind: RequestKind,
) -> Result<String, ClientError> {
    let prefix = match kind {
        RequestKind::End => END_PREFIX,
        RequestKind::Stop => STOP_PREFIX,
        RequestKind::Rotate => ROTATE_PREFIX,
    };
    let id = format!("{prefix}{:016x}", rand::random::<u64>());
    let dir = control_dir(store, session_id);
    write_private_file(&dir.join(format!("{id}.{REQUEST_EXTENSION}")), b"")?;
    Ok(id)
}

/// Withdraws a request that no publisher took. A missing file is no error.
pub fn withdraw_request(
    store: &KeyStore,
    session_id: &SessionId,
    id: &str,
) -> Result<(), ClientError> {
    let path = control_dir(store, session_id).join(format!("{id}.{REQUEST_EXTENSION}"));
    remove_if_present(&path)
}

/// Reads and deletes the confirmation of a rotation request, returning the
/// new key epoch, or `None` while it has not arrived.
pub fn take_rotation_confirmation(
    store: &KeyStore,
    session_id: &SessionId,
    id: &str,
) -> Result<Option<u32>, ClientError> {
    let path = control_dir(store, session_id).join(format!("{id}.{DONE_EXTENSION}"));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(ClientError::io("read", &path, err)),
    };
    let key_epoch = text.trim().parse::<u32>().map_err(|_| {
        ClientError::Internal(format!(
            "rotation confirmation {} does not contain a key epoch",
            path.display()
        ))
    })?;
    remove_if_present(&path)?;
    Ok(Some(key_epoch))
}

/// Names a process for messages: `process 1234`, or `another sealcast
/// process` when its id is unknown.
pub fn describe_process(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("process {pid}"),
        None => "another sealcast process".to_string(),
    }
}

/// Parses a request file name.
fn parse_request_name(name: &str) -> Option<ControlRequest> {
    let id = name.strip_suffix(&format!(".{REQUEST_EXTENSION}"))?;
    let (kind, random) = if let Some(random) = id.strip_prefix(END_PREFIX) {
        (RequestKind::End, random)
    } else if let Some(random) = id.strip_prefix(STOP_PREFIX) {
        (RequestKind::Stop, random)
    } else {
        (RequestKind::Rotate, id.strip_prefix(ROTATE_PREFIX)?)
    };
    let valid = random.len() == REQUEST_ID_DIGITS
        && random
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if !valid {
        return None;
    }
    Some(match kind {
        RequestKind::End => ControlRequest::End,
        RequestKind::Stop => ControlRequest::Stop,
        RequestKind::Rotate => ControlRequest::Rotate { id: id.to_string() },
    })
}

/// Reads the pid file of a control directory. The file can be missing or
/// stale, so the value only serves messages.
fn read_pid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The entries of a control directory, from [`list_files`].
struct Listing {
    /// Regular files and symbolic links, with their names. A symbolic link
    /// is handled like a file: deleting it removes the link, not its target.
    files: Vec<(PathBuf, String)>,
    /// Directories and other entries that are neither, which are left in place.
    skipped: Vec<PathBuf>,
}

/// Lists the entries of a directory with their names, skipping names that
/// are not UTF-8 and the temporary files of [`write_private_file`].
fn list_files(dir: &Path) -> Result<Listing, ClientError> {
    let entries =
        std::fs::read_dir(dir).map_err(|err| ClientError::io("list directory", dir, err))?;
    let mut listing = Listing {
        files: Vec::new(),
        skipped: Vec::new(),
    };
    for entry in entries {
        let entry = entry.map_err(|err| ClientError::io("list directory", dir, err))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        // `DirEntry::file_type` does not follow symbolic links.
        let file_type = entry
            .file_type()
            .map_err(|err| ClientError::io("read the type of", entry.path(), err))?;
        if file_type.is_file() || file_type.is_symlink() {
            listing.files.push((entry.path(), name));
        } else {
            listing.skipped.push(entry.path());
        }
    }
    Ok(listing)
}

fn remove_if_present(path: &Path) -> Result<(), ClientError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => Err(ClientError::io("delete", path, err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, KeyStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path().join("state")).unwrap();
        (dir, store)
    }

    #[test]
    fn request_names_parse() {
        assert_eq!(
            parse_request_name("end-0123456789abcdef.request"),
            Some(ControlRequest::End)
        );
        assert_eq!(
            parse_request_name("stop-0123456789abcdef.request"),
            Some(ControlRequest::Stop)
        );
        assert_eq!(
            parse_request_name("rotate-0123456789abcdef.request"),
            Some(ControlRequest::Rotate {
                id: "rotate-0123456789abcdef".into()
            })
        );
        for invalid in [
            "end.request",
            "end-0123.request",
            "end-0123456789ABCDEF.request",
            "rotate-0123456789abcdef.done",
            "stop-0123456789abcdef.done",
            "pause-0123456789abcdef.request",
            "rotate-0123456789abcdeg.request",
        ] {
            assert_eq!(parse_request_name(invalid), None, "{invalid}");
        }
    }

    #[test]
    fn second_lock_is_refused_while_held() {
        let (_dir, store) = store();
        let session_id = SessionId([7; 16]);
        let channel = ControlChannel::open(&store, &session_id).unwrap();
        assert_eq!(
            publisher_state(&store, &session_id).unwrap(),
            PublisherState::Running {
                pid: Some(std::process::id())
            }
        );
        let err = ControlChannel::open(&store, &session_id).unwrap_err();
        assert!(
            matches!(&err, ClientError::PublisherRunning { process, .. } if *process == format!("process {}", std::process::id())),
            "{err}"
        );

        drop(channel);
        assert_eq!(
            publisher_state(&store, &session_id).unwrap(),
            PublisherState::NotRunning
        );
        // The lock file stays, and a new publisher takes it over.
        assert!(control_dir(&store, &session_id).join(LOCK_FILE).exists());
        assert!(!control_dir(&store, &session_id).join(PID_FILE).exists());
        ControlChannel::open(&store, &session_id).unwrap();
    }

    #[test]
    fn missing_directory_means_not_running() {
        let (_dir, store) = store();
        let session_id = SessionId([8; 16]);
        assert_eq!(
            publisher_state(&store, &session_id).unwrap(),
            PublisherState::NotRunning
        );
        assert!(!control_dir(&store, &session_id).exists());
    }

    #[tokio::test]
    async fn requests_arrive_end_first_and_once() {
        let (_dir, store) = store();
        let session_id = SessionId([9; 16]);
        let mut channel = ControlChannel::open(&store, &session_id).unwrap();
        let rotate = send_request(&store, &session_id, RequestKind::Rotate).unwrap();
        assert_eq!(
            channel.recv().await.unwrap(),
            ControlRequest::Rotate { id: rotate.clone() }
        );
        channel.confirm_rotation(&rotate, 3).unwrap();
        assert_eq!(
            take_rotation_confirmation(&store, &session_id, &rotate).unwrap(),
            Some(3)
        );
        assert_eq!(
            take_rotation_confirmation(&store, &session_id, &rotate).unwrap(),
            None
        );

        send_request(&store, &session_id, RequestKind::Rotate).unwrap();
        send_request(&store, &session_id, RequestKind::Stop).unwrap();
        assert_eq!(channel.recv().await.unwrap(), ControlRequest::Stop);
        // A stop request is taken once: the rotation comes next.
        assert!(matches!(
            channel.recv().await.unwrap(),
            ControlRequest::Rotate { .. }
        ));

        send_request(&store, &session_id, RequestKind::Stop).unwrap();
        send_request(&store, &session_id, RequestKind::End).unwrap();
        assert_eq!(channel.recv().await.unwrap(), ControlRequest::End);
        channel.close_ended();
        assert!(!control_dir(&store, &session_id).exists());
    }

    #[tokio::test]
    async fn invalid_request_is_deleted() {
        let (_dir, store) = store();
        let session_id = SessionId([10; 16]);
        let mut channel = ControlChannel::open(&store, &session_id).unwrap();
        let invalid = control_dir(&store, &session_id).join("stop-now.request");
        std::fs::write(&invalid, b"").unwrap();
        let rotate = send_request(&store, &session_id, RequestKind::Rotate).unwrap();
        assert_eq!(
            channel.recv().await.unwrap(),
            ControlRequest::Rotate { id: rotate }
        );
        assert!(!invalid.exists());
    }

    #[test]
    fn stale_requests_are_cleared_on_open() {
        let (_dir, store) = store();
        let session_id = SessionId([11; 16]);
        drop(ControlChannel::open(&store, &session_id).unwrap());
        let left = send_request(&store, &session_id, RequestKind::End).unwrap();
        let dir = control_dir(&store, &session_id);
        assert!(dir.join(format!("{left}.request")).exists());

        let channel = ControlChannel::open(&store, &session_id).unwrap();
        assert!(!dir.join(format!("{left}.request")).exists());
        assert_eq!(channel.lock.dir(), dir);
    }

    #[tokio::test]
    async fn cancelled_recv_keeps_poll_cadence() {
        let (_dir, store) = store();
        let session_id = SessionId([13; 16]);
        let mut channel = ControlChannel::open(&store, &session_id).unwrap();
        let rotate = send_request(&store, &session_id, RequestKind::Rotate).unwrap();
        // A caller whose other branch wins every 30 ms drops each `recv`
        // before a full poll interval passed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut request = None;
        while request.is_none() && tokio::time::Instant::now() < deadline {
            let attempt = tokio::time::timeout(Duration::from_millis(30), channel.recv()).await;
            if let Ok(received) = attempt {
                request = Some(received.unwrap());
            }
        }
        assert_eq!(request, Some(ControlRequest::Rotate { id: rotate }));
    }

    #[tokio::test]
    async fn directories_are_skipped_and_kept() {
        let (_dir, store) = store();
        let session_id = SessionId([14; 16]);
        drop(ControlChannel::open(&store, &session_id).unwrap());
        let dir = control_dir(&store, &session_id);
        let named_like_request = dir.join("rotate-0123456789abcdef.request");
        let invalid_name = dir.join("pause.request");
        std::fs::create_dir(&named_like_request).unwrap();
        std::fs::create_dir(&invalid_name).unwrap();

        // Opening clears requests, and leaves directories alone.
        let mut channel = ControlChannel::open(&store, &session_id).unwrap();
        let stop = send_request(&store, &session_id, RequestKind::Stop).unwrap();
        assert_eq!(channel.recv().await.unwrap(), ControlRequest::Stop);
        assert!(!dir.join(format!("{stop}.request")).exists());
        assert!(named_like_request.is_dir());
        assert!(invalid_name.is_dir());

        // Scans go on past the directories.
        let rotate = send_request(&store, &session_id, RequestKind::Rotate).unwrap();
        assert_eq!(
            channel.recv().await.unwrap(),
            ControlRequest::Rotate { id: rotate }
        );
        assert!(named_like_request.is_dir());
        assert!(channel.skipped_warned_at.is_some());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn symlink_request_is_deleted_not_followed() {
        let (dir, store) = store();
        let session_id = SessionId([15; 16]);
        let mut channel = ControlChannel::open(&store, &session_id).unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"kept").unwrap();
        let link = control_dir(&store, &session_id).join("stop-0123456789abcdef.request");
        std::os::unix::fs::symlink(&target, &link).unwrap();

        assert_eq!(channel.recv().await.unwrap(), ControlRequest::Stop);
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"kept");
    }

    #[cfg(unix)]
    #[test]
    fn control_files_are_private() {
        use std::os::unix::fs::PermissionsExt;

        let (_dir, store) = store();
        let session_id = SessionId([12; 16]);
        let _channel = ControlChannel::open(&store, &session_id).unwrap();
        let id = send_request(&store, &session_id, RequestKind::Rotate).unwrap();
        let dir = control_dir(&store, &session_id);
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.dir().join(CONTROL_DIR)), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(LOCK_FILE)), 0o600);
        assert_eq!(mode(&dir.join(PID_FILE)), 0o600);
        assert_eq!(mode(&dir.join(format!("{id}.request"))), 0o600);
    }
}
