//! A relay whose data directory fills up while a consultation streams
//! acknowledges no frame it could not commit. It closes the sockets with
//! 1011 naming the full disk, counts `disk_full` store failures, rejects a
//! new session with 503 and keeps running. Once space returns it delivers
//! the whole transcript. The publisher resends what was not acknowledged.
//!
//! The data directory is a 16 MiB tmpfs that a ballast file fills, so
//! SQLite gets a real ENOSPC from the kernel. Mounting needs root, as CI
//! has. SQLite's `max_page_count` cannot stand in for it: that pragma is
//! set per connection, and the relay's own connections are out of the
//! test's reach. Without root the test prints that it was skipped, and
//! with `CI=true` it fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sealcast_tests::faults::load_consultation;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::store_fault::FaultRun;

/// Size of the tmpfs that contains the data directory.
const TMPFS_SIZE: &str = "16m";

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs at `path`, or returns why it could not.
    fn mount(path: &Path) -> Result<Tmpfs, String> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE},mode=0700")])
            .arg("tmpfs")
            .arg(path)
            .output()
            .map_err(|error| format!("mount failed to run: {error}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes `path` until the file system has no space left.
fn fill(path: &Path) {
    let mut ballast = File::create(path).unwrap();
    for chunk in [256 * 1024, 4096, 512] {
        let block = vec![0xa5u8; chunk];
        loop {
            match ballast.write_all(&block) {
                Ok(()) => {}
                Err(error) if error.raw_os_error() == Some(28) => break,
                Err(error) if error.kind() == ErrorKind::StorageFull => break,
                Err(error) => panic!("writing the ballast failed: {error}"),
            }
        }
    }
    let _ = ballast.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_acknowledges_nothing_and_recovers() {
    let test = "full_disk_acknowledges_nothing_and_recovers";
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let _tmpfs = match Tmpfs::mount(&data_dir) {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            let message = format!("{test}: skipped because a tmpfs cannot be mounted: {reason}");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
            eprintln!("{message}");
            return;
        }
    };

    let consultation = load_consultation(test, 7);
    let mut relay = RelayProcess::start(&data_dir, "127.0.0.1:0", &[]);
    let run = FaultRun::start(&relay, &consultation).await;

    let ballast = data_dir.join("ballast");
    fill(&ballast);
    run.observe_fault(&mut relay, "disk_full", "disk full")
        .await;

    std::fs::remove_file(&ballast).unwrap();
    run.finish(&mut relay, &consultation, "disk_full", "disk full")
        .await;
}
