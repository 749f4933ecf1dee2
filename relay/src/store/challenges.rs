//! Invite challenges: one row per live challenge with the SHA-256 hash of
//! its bytes, the hash of the invite token it was issued for and the time
//! it expires. Every relay node on the data directory writes and takes rows
//! here, so a challenge issued by one node can be redeemed on another. The
//! limits and their reasons are in [`crate::invites::challenges`].
//!
//! Both writes run in the writer's write transaction, which holds SQLite's
//! write lock, or the PostgreSQL advisory write lock, against the other
//! nodes' connections too. So the limit checks and the insert see one
//! state, and of two nodes taking the same challenge only the first finds
//! its row.

use super::StoreError;
use crate::credentials::{hashes_match, CredentialHash};
use crate::db::{db_params, Db};
use crate::invites::challenges::{lifetime_millis, ChallengeRejected, MAX_PER_TOKEN, MAX_TOTAL};

/// Schema migration that adds the table. `challenge_id` grows with each
/// insert, so it orders a token's live challenges from oldest to newest.
pub(super) const MIGRATION: &str = "CREATE TABLE invite_challenges (
        challenge_id INTEGER PRIMARY KEY,
        challenge_hash BLOB NOT NULL UNIQUE,
        invite_token_hash BLOB NOT NULL,
        expires_at INTEGER NOT NULL
    );

    CREATE INDEX invite_challenges_by_token ON invite_challenges (invite_token_hash);
    CREATE INDEX invite_challenges_by_expiry ON invite_challenges (expires_at);";

/// A challenge to store, issued at `issued_at` (Unix milliseconds).
#[derive(Debug, Clone)]
pub(crate) struct NewChallenge {
    pub(crate) challenge_hash: CredentialHash,
    pub(crate) invite_token_hash: CredentialHash,
    pub(crate) issued_at: i64,
}

/// A challenge presented with an invite token at `presented_at` (Unix milliseconds).
#[derive(Debug, Clone)]
pub(crate) struct PresentedChallenge {
    pub(crate) challenge_hash: CredentialHash,
    pub(crate) invite_token_hash: CredentialHash,
    pub(crate) presented_at: i64,
}

/// Deletes the expired challenges, makes room among the token's live ones
/// and stores the new one. Fails with [`StoreError::InviteChallengesFull`]
/// when [`MAX_TOTAL`] live challenges remain after the expired ones are gone.
pub(super) fn insert(db: &Db, challenge: &NewChallenge) -> Result<(), StoreError> {
    delete_expired(db, challenge.issued_at)?;
    if count(db)? >= MAX_TOTAL as u64 {
        return Err(StoreError::InviteChallengesFull);
    }
    drop_oldest_of_token(db, &challenge.invite_token_hash)?;

    let expires_at = challenge.issued_at.saturating_add(lifetime_millis());
    db.execute(
        "INSERT INTO invite_challenges (challenge_hash, invite_token_hash, expires_at)
         VALUES (?1, ?2, ?3)",
        db_params![
            challenge.challenge_hash,
            challenge.invite_token_hash,
            expires_at,
        ],
    )
    .map_err(StoreError::db("store an invite challenge"))?;
    Ok(())
}

/// Deletes a presented challenge and checks it. The row is gone also when
/// the check fails with [`StoreError::InviteChallengeRejected`].
pub(super) fn take(db: &Db, presented: &PresentedChallenge) -> Result<(), StoreError> {
    // SQLite makes every change of a statement with RETURNING during its
    // first step (SQLite documentation of RETURNING), which `query_opt` runs.
    let row = db
        .query_opt(
            "DELETE FROM invite_challenges WHERE challenge_hash = ?1
             RETURNING invite_token_hash, expires_at",
            db_params![presented.challenge_hash],
            |row| Ok((row.get::<Vec<u8>>(0)?, row.get::<i64>(1)?)),
        )
        .map_err(StoreError::db("take an invite challenge"))?;

    let rejected = |reason| Err(StoreError::InviteChallengeRejected { reason });
    let Some((token_hash, expires_at)) = row else {
        return rejected(ChallengeRejected::Unknown);
    };
    if !hashes_match(&token_hash, &presented.invite_token_hash) {
        return rejected(ChallengeRejected::OtherInvite);
    }
    if presented.presented_at >= expires_at {
        return rejected(ChallengeRejected::Expired);
    }
    Ok(())
}

/// Counts the stored challenges, expired ones included until the next insert deletes them.
pub(super) fn count(db: &Db) -> Result<u64, StoreError> {
    let count = db
        .query_one(
            "SELECT COUNT(*) FROM invite_challenges",
            db_params![],
            |row| row.get::<i64>(0),
        )
        .map_err(StoreError::db("count the invite challenges"))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

fn delete_expired(db: &Db, now: i64) -> Result<(), StoreError> {
    db.execute(
        "DELETE FROM invite_challenges WHERE expires_at <= ?1",
        db_params![now],
    )
    .map_err(StoreError::db("delete expired invite challenges"))?;
    Ok(())
}

/// Deletes the token's oldest live challenges until a new one fits within
/// [`MAX_PER_TOKEN`].
fn drop_oldest_of_token(db: &Db, token_hash: &CredentialHash) -> Result<(), StoreError> {
    let keep_newest = i64::try_from(MAX_PER_TOKEN.saturating_sub(1)).unwrap_or(i64::MAX);
    db.execute(
        "DELETE FROM invite_challenges WHERE invite_token_hash = ?1
         AND challenge_id NOT IN (
             SELECT challenge_id FROM invite_challenges WHERE invite_token_hash = ?1
             ORDER BY challenge_id DESC LIMIT ?2
         )",
        db_params![token_hash, keep_newest],
    )
    .map_err(StoreError::db("drop a token's oldest invite challenges"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use rusqlite::{params, Connection};

    use crate::at_rest::{self, KeySource};
    use crate::db::Backend;
    use crate::store::{migrate_to, open_keyed_writer, Store, DATABASE_FILE};

    const TOKEN: CredentialHash = [1; 32];
    const OTHER_TOKEN: CredentialHash = [2; 32];
    const NOW: i64 = 1_700_000_000_000;

    fn new_challenge(challenge: u8, token: CredentialHash, issued_at: i64) -> NewChallenge {
        NewChallenge {
            challenge_hash: [challenge; 32],
            invite_token_hash: token,
            issued_at,
        }
    }

    fn presented(challenge: u8, token: CredentialHash, presented_at: i64) -> PresentedChallenge {
        PresentedChallenge {
            challenge_hash: [challenge; 32],
            invite_token_hash: token,
            presented_at,
        }
    }

    fn sqlite_backend(dir: &std::path::Path) -> Backend {
        Backend::Sqlite(dir.join(DATABASE_FILE))
    }

    fn rejection(result: Result<(), StoreError>) -> Option<ChallengeRejected> {
        match result {
            Err(StoreError::InviteChallengeRejected { reason }) => Some(reason),
            Ok(()) => None,
            Err(other) => panic!("unexpected store error: {other}"),
        }
    }

    /// Opens a migrated database in a new directory, as the writer thread does.
    fn migrated() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let (conn, _) = open_keyed_writer(dir.path(), &KeySource::Development).unwrap();
        (dir, Db::Sqlite(conn))
    }

    #[test]
    fn challenge_is_single_use() {
        let (_dir, conn) = migrated();
        insert(&conn, &new_challenge(7, TOKEN, NOW)).unwrap();
        assert_eq!(rejection(take(&conn, &presented(7, TOKEN, NOW))), None);
        assert_eq!(
            rejection(take(&conn, &presented(7, TOKEN, NOW))),
            Some(ChallengeRejected::Unknown)
        );
    }

    #[test]
    fn challenge_expires() {
        let (_dir, conn) = migrated();
        insert(&conn, &new_challenge(7, TOKEN, NOW)).unwrap();
        let later = NOW + lifetime_millis();
        assert_eq!(
            rejection(take(&conn, &presented(7, TOKEN, later))),
            Some(ChallengeRejected::Expired)
        );
        assert_eq!(count(&conn).unwrap(), 0);
    }

    #[test]
    fn challenge_is_bound_to_its_token() {
        let (_dir, conn) = migrated();
        insert(&conn, &new_challenge(7, TOKEN, NOW)).unwrap();
        assert_eq!(
            rejection(take(&conn, &presented(7, OTHER_TOKEN, NOW))),
            Some(ChallengeRejected::OtherInvite)
        );
        // Presenting it with the wrong token used it up.
        assert_eq!(
            rejection(take(&conn, &presented(7, TOKEN, NOW))),
            Some(ChallengeRejected::Unknown)
        );
    }

    #[test]
    fn token_keeps_its_newest_challenges() {
        let (_dir, conn) = migrated();
        let issued = u8::try_from(MAX_PER_TOKEN + 2).unwrap();
        for challenge in 0..issued {
            insert(&conn, &new_challenge(challenge, TOKEN, NOW)).unwrap();
        }
        insert(&conn, &new_challenge(100, OTHER_TOKEN, NOW)).unwrap();
        assert_eq!(count(&conn).unwrap(), MAX_PER_TOKEN as u64 + 1);

        for dropped in 0..issued - MAX_PER_TOKEN as u8 {
            assert_eq!(
                rejection(take(&conn, &presented(dropped, TOKEN, NOW))),
                Some(ChallengeRejected::Unknown),
                "challenge {dropped} should have been dropped"
            );
        }
        for kept in issued - MAX_PER_TOKEN as u8..issued {
            assert_eq!(
                rejection(take(&conn, &presented(kept, TOKEN, NOW))),
                None,
                "challenge {kept} should have been kept"
            );
        }
        assert_eq!(
            rejection(take(&conn, &presented(100, OTHER_TOKEN, NOW))),
            None
        );
    }

    #[test]
    fn insert_deletes_expired_challenges() {
        let (_dir, conn) = migrated();
        insert(&conn, &new_challenge(1, TOKEN, NOW)).unwrap();
        insert(&conn, &new_challenge(2, OTHER_TOKEN, NOW + 60_000)).unwrap();
        insert(
            &conn,
            &new_challenge(3, OTHER_TOKEN, NOW + lifetime_millis()),
        )
        .unwrap();
        assert_eq!(count(&conn).unwrap(), 2);
        assert_eq!(
            rejection(take(&conn, &presented(1, TOKEN, NOW))),
            Some(ChallengeRejected::Unknown)
        );
    }

    #[test]
    fn full_table_rejects_new_challenges() {
        let (_dir, conn) = migrated();
        let expires_at = NOW + lifetime_millis();
        let Db::Sqlite(sqlite) = &conn else {
            unreachable!("migrated() opens SQLite")
        };
        sqlite
            .execute(
                "WITH RECURSIVE numbers (n) AS (
                 SELECT 1 UNION ALL SELECT n + 1 FROM numbers WHERE n < ?1
             )
             INSERT INTO invite_challenges (challenge_hash, invite_token_hash, expires_at)
             SELECT CAST(n AS BLOB), ?2, ?3 FROM numbers",
                params![MAX_TOTAL as i64, TOKEN.as_slice(), expires_at],
            )
            .unwrap();
        assert_eq!(count(&conn).unwrap(), MAX_TOTAL as u64);

        let result = insert(&conn, &new_challenge(7, OTHER_TOKEN, NOW));
        assert!(
            matches!(result, Err(StoreError::InviteChallengesFull)),
            "{result:?}"
        );
        // Once they expire, there is room again.
        insert(&conn, &new_challenge(7, OTHER_TOKEN, expires_at)).unwrap();
        assert_eq!(count(&conn).unwrap(), 1);
    }

    #[tokio::test]
    async fn challenge_taken_on_other_store() {
        let dir = tempfile::tempdir().unwrap();
        let issuing = Store::open(
            dir.path(),
            &sqlite_backend(dir.path()),
            &KeySource::Development,
        )
        .await
        .unwrap();
        let taking = Store::open(
            dir.path(),
            &sqlite_backend(dir.path()),
            &KeySource::Development,
        )
        .await
        .unwrap();
        let now = crate::store::now_millis();

        issuing
            .issue_challenge(new_challenge(7, TOKEN, now))
            .await
            .unwrap();
        assert_eq!(taking.challenge_count().await.unwrap(), 1);
        let first = taking.take_challenge(presented(7, TOKEN, now)).await;
        assert_eq!(rejection(first), None);

        for store in [&taking, &issuing] {
            let again = store.take_challenge(presented(7, TOKEN, now)).await;
            assert_eq!(rejection(again), Some(ChallengeRejected::Unknown));
        }
        issuing.close().await;
        taking.close().await;
    }

    #[tokio::test]
    async fn version_7_database_gains_table() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
            let db = Db::Sqlite(conn);
            let keys = at_rest::unlock(&db, dir.path(), &KeySource::Development).unwrap();
            let conn = db.as_sqlite().unwrap();
            at_rest::sql::register(conn, &keys).unwrap();
            migrate_to(conn, 7).unwrap();
            let table = conn.prepare("SELECT 1 FROM invite_challenges");
            assert!(table.is_err(), "version 7 already has the table");
        }

        let store = Store::open(
            dir.path(),
            &sqlite_backend(dir.path()),
            &KeySource::Development,
        )
        .await
        .unwrap();
        let now = crate::store::now_millis();
        store
            .issue_challenge(new_challenge(7, TOKEN, now))
            .await
            .unwrap();
        let outcome = store.take_challenge(presented(7, TOKEN, now)).await;
        assert_eq!(rejection(outcome), None);
        store.close().await;

        let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, crate::store::schema::SCHEMA_VERSION);
    }
}
