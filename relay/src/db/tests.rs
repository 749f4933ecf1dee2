//! The same statements on both engines. PostgreSQL tests use the server
//! named by `SEALCAST_TEST_POSTGRES`; without it they are skipped, except
//! under CI, where they fail.

use super::*;

/// Opens a PostgreSQL connection for a test, or returns `None` to skip it.
pub(crate) fn test_postgres() -> Option<Db> {
    match std::env::var("SEALCAST_TEST_POSTGRES") {
        Ok(url) => Some(
            Backend::postgres(&url)
                .and_then(|backend| backend.connect_postgres().expect("a PostgreSQL backend"))
                .expect("SEALCAST_TEST_POSTGRES names a reachable server"),
        ),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("SEALCAST_TEST_POSTGRES must name a PostgreSQL server under CI")
        }
        Err(_) => {
            eprintln!("SEALCAST_TEST_POSTGRES is not set: PostgreSQL case skipped");
            None
        }
    }
}

fn engines() -> Vec<(Db, &'static str)> {
    let mut engines = vec![(
        Db::Sqlite(rusqlite::Connection::open_in_memory().unwrap()),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB, flag INTEGER)",
    )];
    if let Some(db) = test_postgres() {
        engines.push((
            db,
            "CREATE TEMPORARY TABLE t (id BIGINT PRIMARY KEY, name TEXT, data BYTEA, flag BIGINT)",
        ));
    }
    engines
}

#[test]
fn values_round_trip_on_both_engines() {
    for (db, create) in engines() {
        db.batch(create).unwrap();
        let name: Option<&str> = Some("ä");
        let inserted = db
            .execute(
                "INSERT INTO t (id, name, data, flag) VALUES (?1, ?2, ?3, ?4)",
                db_params![i64::MAX, name, [0u8, 255].as_slice(), true],
            )
            .unwrap();
        assert_eq!(inserted, 1);
        db.execute(
            "INSERT INTO t (id, name, data, flag) VALUES (?1, ?2, ?3, ?4)",
            db_params![-1i64, None::<String>, None::<Vec<u8>>, false],
        )
        .unwrap();

        let rows = db
            .query_all(
                "SELECT id, name, data, flag FROM t WHERE id <> ?1 OR ?1 IS NULL ORDER BY id",
                db_params![0i64],
                |row| {
                    Ok((
                        row.get::<i64>(0)?,
                        row.get::<Option<String>>(1)?,
                        row.get::<Option<Vec<u8>>>(2)?,
                        row.get::<bool>(3)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (-1, None, None, false),
                (i64::MAX, Some("ä".into()), Some(vec![0, 255]), true)
            ]
        );
        let count = db
            .query_one("SELECT COUNT(*) FROM t", db_params![], |row| {
                row.get::<u32>(0)
            })
            .unwrap();
        assert_eq!(count, 2);
        let missing = db
            .query_opt("SELECT id FROM t WHERE id = ?1", db_params![5i64], |row| {
                row.get::<i64>(0)
            })
            .unwrap();
        assert_eq!(missing, None);
        let error = db
            .query_one(
                "SELECT name FROM t WHERE id = ?1",
                db_params![i64::MAX],
                |row| row.get::<Vec<u8>>(0),
            )
            .unwrap_err();
        assert!(
            matches!(error, DbError::Conversion { column: 0, .. }),
            "{error}"
        );
    }
}

#[test]
fn savepoints_keep_a_transaction_going_after_a_failed_write() {
    for (db, create) in engines() {
        db.batch(create).unwrap();
        let tx = db.begin_write().unwrap();
        tx.execute("INSERT INTO t (id) VALUES (?1)", db_params![1i64])
            .unwrap();
        let duplicate: Result<usize, DbError> = tx.savepoint(|db| {
            db.execute("INSERT INTO t (id) VALUES (?1)", db_params![2i64])?;
            db.execute("INSERT INTO t (id) VALUES (?1)", db_params![1i64])
        });
        let error = duplicate.unwrap_err();
        assert!(error.is_unique_violation(), "{error}");
        assert!(error.is_constraint(), "{error}");
        tx.execute("INSERT INTO t (id) VALUES (?1)", db_params![3i64])
            .unwrap();
        tx.commit().unwrap();
        let ids = db
            .query_all("SELECT id FROM t ORDER BY id", db_params![], |row| {
                row.get::<i64>(0)
            })
            .unwrap();
        assert_eq!(ids, vec![1, 3]);
    }
}

#[test]
fn a_transaction_with_a_failed_statement_does_not_commit() {
    for (db, create) in engines() {
        db.batch(create).unwrap();
        db.execute("INSERT INTO t (id) VALUES (1)", db_params![])
            .unwrap();
        let tx = db.begin_write().unwrap();
        tx.execute("INSERT INTO t (id) VALUES (2)", db_params![])
            .unwrap();
        assert!(tx
            .execute("INSERT INTO t (id) VALUES (1)", db_params![])
            .is_err());
        if db.is_postgres() {
            // PostgreSQL refuses the rest of the transaction, and the
            // commit reports the rollback.
            assert!(!tx.in_transaction());
            assert!(matches!(tx.commit(), Err(DbError::TransactionFailed)));
            let count = db
                .query_one("SELECT COUNT(*) FROM t", db_params![], |row| {
                    row.get::<i64>(0)
                })
                .unwrap();
            assert_eq!(count, 1);
        } else {
            // SQLite undoes the failed statement only.
            tx.commit().unwrap();
        }
    }
}

#[test]
fn dropped_transactions_roll_back() {
    for (db, create) in engines() {
        db.batch(create).unwrap();
        {
            let tx = db.begin_write().unwrap();
            tx.execute("INSERT INTO t (id) VALUES (7)", db_params![])
                .unwrap();
        }
        let count = db
            .query_one("SELECT COUNT(*) FROM t", db_params![], |row| {
                row.get::<i64>(0)
            })
            .unwrap();
        assert_eq!(count, 0);
    }
}

#[test]
fn a_connection_lost_in_a_transaction_fails_it_and_then_reopens() {
    let (Some(db), Some(killer)) = (test_postgres(), test_postgres()) else {
        return;
    };
    let pid = db
        .query_one("SELECT pg_backend_pid()", db_params![], |row| {
            row.get::<i32>(0)
        })
        .unwrap();
    db.batch("CREATE TEMPORARY TABLE t (id BIGINT PRIMARY KEY)")
        .unwrap();
    let tx = db.begin_write().unwrap();
    tx.execute("INSERT INTO t (id) VALUES (1)", db_params![])
        .unwrap();
    killer
        .query_one("SELECT pg_terminate_backend(?1)", db_params![pid], |row| {
            row.get::<bool>(0)
        })
        .unwrap();
    let error = tx
        .execute("INSERT INTO t (id) VALUES (2)", db_params![])
        .unwrap_err();
    assert!(error.is_unreachable(), "{error}");
    // Nothing of the transaction runs on a new connection.
    let error = tx
        .execute("INSERT INTO t (id) VALUES (3)", db_params![])
        .unwrap_err();
    assert!(matches!(error, DbError::TransactionLost), "{error}");
    assert!(matches!(tx.commit(), Err(DbError::TransactionLost)));

    let again = db
        .query_one("SELECT pg_backend_pid()", db_params![], |row| {
            row.get::<i32>(0)
        })
        .unwrap();
    assert_ne!(again, pid);
}

#[test]
fn postgres_errors_leave_out_key_values() {
    let Some(db) = test_postgres() else {
        return;
    };
    db.batch("CREATE TEMPORARY TABLE t (id TEXT PRIMARY KEY)")
        .unwrap();
    db.execute(
        "INSERT INTO t (id) VALUES (?1)",
        db_params!["private value"],
    )
    .unwrap();
    let error = db
        .execute(
            "INSERT INTO t (id) VALUES (?1)",
            db_params!["private value"],
        )
        .unwrap_err();
    let shown = error.to_string();
    assert!(shown.contains("23505"), "{shown}");
    assert!(!shown.contains("private value"), "{shown}");
}
