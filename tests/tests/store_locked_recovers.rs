//! A relay whose database another process keeps locked for longer than the
//! relay's 5 s busy timeout acknowledges no frame it could not commit. It
//! closes the sockets with 1011 naming the lock, counts `locked` store
//! failures, rejects a new session with 503 and keeps running. Once the
//! lock is released it delivers the whole transcript.
//!
//! The test itself is the other process: its own SQLite connection to
//! `relay.db` runs `BEGIN EXCLUSIVE` and holds the write lock until the
//! relay has reported the fault for 2 s.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rusqlite::Connection;
use sealcast_tests::faults::load_consultation;
use sealcast_tests::process::RelayProcess;
use sealcast_tests::store::DATABASE_FILE;
use sealcast_tests::store_fault::FaultRun;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_database_acknowledges_nothing_and_recovers() {
    let test = "locked_database_acknowledges_nothing_and_recovers";
    let consultation = load_consultation(test, 11);
    let data = tempfile::tempdir().unwrap();
    let mut relay = RelayProcess::start(data.path(), "127.0.0.1:0", &[]);
    let run = FaultRun::start(&relay, &consultation).await;

    let lock = Connection::open(data.path().join(DATABASE_FILE)).unwrap();
    lock.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    run.observe_fault(&mut relay, "locked", "database locked")
        .await;

    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    run.finish(&mut relay, &consultation, "locked", "database locked")
        .await;
}
