//! A lock file that lets one `sealcast` process at a time refresh a relay's
//! sign-in. Refresh tokens are single use, and the relay revokes the whole
//! sign-in when one is presented twice, so two processes must not both
//! refresh with the same token.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::error::ClientError;

/// Age after which a lock file is taken to be left by a crashed process.
/// It exceeds the 30 s HTTP request timeout of a refresh.
const STALE_AFTER: Duration = Duration::from_secs(60);
/// Maximum wait for another process to release the lock.
const MAX_WAIT: Duration = Duration::from_secs(70);
/// Pause between attempts to take the lock.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// A held lock. Dropping it deletes the lock file.
#[derive(Debug)]
pub(crate) struct RefreshLock {
    path: PathBuf,
}

impl RefreshLock {
    /// Creates the lock file at `path`, waiting while another process holds
    /// it and replacing one older than [`STALE_AFTER`].
    pub(crate) async fn acquire(path: PathBuf) -> Result<Self, ClientError> {
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            match create_exclusive(&path) {
                Ok(()) => return Ok(RefreshLock { path }),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(ClientError::io("create lock file", &path, err)),
            }
            if is_stale(&path) {
                tracing::warn!(path = %path.display(), "removing a stale refresh lock");
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if Instant::now() >= deadline {
                return Err(ClientError::RefreshLocked { path });
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }
}

impl Drop for RefreshLock {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %err, "failed to remove the refresh lock");
        }
    }
}

fn create_exclusive(path: &Path) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

fn is_stale(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|age| age > STALE_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_holder_waits_for_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.lock");
        let first = RefreshLock::acquire(path.clone()).await.unwrap();
        assert!(path.exists());

        let waiting = tokio::spawn(RefreshLock::acquire(path.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished());

        drop(first);
        let second = waiting.await.unwrap().unwrap();
        assert!(path.exists());
        drop(second);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn stale_lock_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.lock");
        let file = std::fs::File::create(&path).unwrap();
        let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(5);
        file.set_modified(old).unwrap();

        let lock = tokio::time::timeout(Duration::from_secs(5), RefreshLock::acquire(path.clone()))
            .await
            .expect("a stale lock blocked the refresh")
            .unwrap();
        drop(lock);
        assert!(!path.exists());
    }
}
