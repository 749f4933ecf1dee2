//! The audit trail of a relay child process: reading its entries from the
//! database file, tampering with them as an attacker with the file would,
//! and running the `sealcast-relay audit` commands.

use std::path::Path;
use std::process::{Command, Output};

use rusqlite::Connection;

use crate::process::binary_path;

/// The append-only triggers of the audit tables.
const TRIGGERS: [&str; 6] = [
    "audit_entries_reject_update",
    "audit_entries_guard_delete",
    "audit_checkpoints_reject_update",
    "audit_checkpoints_guard_delete",
    "audit_anchors_reject_update",
    "audit_anchors_reject_delete",
];

/// One audit entry as stored, with the columns the tests look at.
#[derive(Debug, Clone)]
pub struct StoredEntry {
    /// Position in the stream.
    pub seq: i64,
    /// Who acted.
    pub actor: String,
    /// What happened.
    pub action: String,
    /// The session concerned.
    pub session_id: Option<String>,
    /// Source address.
    pub source: Option<String>,
    /// The details, as stored JSON.
    pub details: String,
}

/// Reads every entry of `stream` in `data_dir`'s database, in order.
pub fn entries(data_dir: &Path, stream: &str) -> Vec<StoredEntry> {
    let conn = Connection::open(data_dir.join("relay.db")).expect("relay.db opens");
    let mut statement = conn
        .prepare(
            "SELECT seq, actor, action, session_id, source, details FROM audit_entries
            WHERE stream = ?1 ORDER BY seq",
        )
        .expect("audit entries query prepares");
    statement
        .query_map([stream], |row| {
            Ok(StoredEntry {
                seq: row.get(0)?,
                actor: row.get(1)?,
                action: row.get(2)?,
                session_id: row.get(3)?,
                source: row.get(4)?,
                details: row.get(5)?,
            })
        })
        .expect("audit entries are read")
        .collect::<Result<_, _>>()
        .expect("audit entries are read")
}

/// Opens `data_dir`'s database and drops the audit triggers, as an
/// attacker with write access to the file would before editing entries.
pub fn open_as_attacker(data_dir: &Path) -> Connection {
    let conn = Connection::open(data_dir.join("relay.db")).expect("relay.db opens");
    for trigger in TRIGGERS {
        conn.execute_batch(&format!("DROP TRIGGER {trigger}"))
            .expect("trigger is dropped");
    }
    conn
}

/// Runs `sealcast-relay audit ARGS...` and returns its output.
pub fn audit_command(args: &[&str]) -> Output {
    Command::new(binary_path("sealcast-relay"))
        .arg("audit")
        .args(args)
        .output()
        .expect("failed to run sealcast-relay audit")
}

/// Runs `sealcast-relay audit verify --data-dir DIR` and returns its output.
pub fn verify_data_dir(data_dir: &Path) -> Output {
    let dir = data_dir.to_str().expect("data directory path is UTF-8");
    crate::database::relay_command(data_dir)
        .args(["audit", "verify", "--data-dir", dir])
        .output()
        .expect("failed to run sealcast-relay audit")
}
