//! The PostgreSQL connection: placeholders rewritten, statements prepared
//! once per connection, and a lost connection opened again with backoff.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use postgres::{Client, Config, NoTls, Statement};

use super::value::Value;
use super::DbError;

/// First pause after a failed attempt to open the connection.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Maximum pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Time an attempt to open the connection may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time the connection and its startup exchange may take together.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle time after which the connection sends TCP keepalive probes.
pub(super) const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// Time that sent data may stay unacknowledged before the connection fails.
pub(super) const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Milliseconds a statement waits for a lock, the store's advisory write
/// lock included, before it fails.
pub(super) const LOCK_TIMEOUT_MS: u64 = 10_000;

/// The connection's state in a transaction. PostgreSQL rejects every
/// statement after one fails inside a transaction, and its COMMIT then rolls
/// back without an error, so the connection remembers the failure and
/// reports it instead. A connection lost inside a transaction is not opened
/// again until the transaction's end, so no later statement of it runs
/// outside the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TxState {
    /// No transaction.
    Idle,
    /// A transaction in which every statement so far succeeded.
    Open,
    /// A statement of the transaction failed, so only its end, or a rollback
    /// to a savepoint, may follow.
    Failed,
    /// The connection was lost inside the transaction.
    Lost,
}

/// A PostgreSQL connection that reopens itself after a loss.
pub(crate) struct PgConnection {
    config: Config,
    state: RefCell<State>,
}

struct State {
    client: Option<Client>,
    transaction: TxState,
    statements: HashMap<String, Statement>,
    backoff: Duration,
    next_attempt: Option<Instant>,
}

impl PgConnection {
    /// Opens a connection with `config`.
    pub(super) fn open(config: Config) -> Result<PgConnection, DbError> {
        let client = connect(&config)?;
        Ok(PgConnection {
            config,
            state: RefCell::new(State {
                client: Some(client),
                transaction: TxState::Idle,
                statements: HashMap::new(),
                backoff: FIRST_BACKOFF,
                next_attempt: None,
            }),
        })
    }

    /// Runs `call` on the open client, opening it again first when it was
    /// lost and the next attempt is due. A call that fails on a closed
    /// connection drops the client and its statements.
    fn with_client<T>(
        &self,
        call: impl FnOnce(&mut Client, &mut HashMap<String, Statement>) -> Result<T, postgres::Error>,
    ) -> Result<T, DbError> {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        match state.transaction {
            TxState::Lost => return Err(DbError::TransactionLost),
            TxState::Failed => return Err(DbError::TransactionFailed),
            TxState::Idle | TxState::Open => {}
        }
        if state.client.as_ref().is_some_and(Client::is_closed) {
            state.client = None;
            if state.transaction == TxState::Open {
                state.transaction = TxState::Lost;
                return Err(DbError::TransactionLost);
            }
        }
        if state.client.is_none() {
            if let Some(due) = state.next_attempt {
                let now = Instant::now();
                if now < due {
                    return Err(DbError::Unavailable {
                        retry_in: due - now,
                    });
                }
            }
            state.statements.clear();
            match connect(&self.config) {
                Ok(client) => {
                    tracing::info!("PostgreSQL connection opened again");
                    state.client = Some(client);
                    state.backoff = FIRST_BACKOFF;
                    state.next_attempt = None;
                }
                Err(error) => {
                    state.next_attempt = Some(Instant::now() + state.backoff);
                    state.backoff = (state.backoff * 2).min(MAX_BACKOFF);
                    return Err(error);
                }
            }
        }
        let Some(client) = state.client.as_mut() else {
            return Err(DbError::Unavailable {
                retry_in: Duration::ZERO,
            });
        };
        let outcome = call(client, &mut state.statements);
        if let Err(error) = &outcome {
            let lost = error.is_closed() || client.is_closed() || ends_session(error);
            if lost {
                tracing::warn!("PostgreSQL connection lost");
                state.client = None;
                state.next_attempt = None;
            }
            if state.transaction == TxState::Open {
                state.transaction = if lost { TxState::Lost } else { TxState::Failed };
            }
        }
        outcome.map_err(DbError::from)
    }

    /// Returns the connection's transaction state.
    pub(super) fn transaction(&self) -> TxState {
        self.state.borrow().transaction
    }

    /// Begins a transaction with `sql`, such as `BEGIN`, which may carry
    /// more statements of the transaction. When one of them fails, the
    /// transaction is rolled back and the error returned.
    pub(super) fn begin(&self, sql: &str) -> Result<(), DbError> {
        if self.transaction() != TxState::Idle {
            return Err(DbError::TransactionFailed);
        }
        match self.batch(sql) {
            // The server closed an idle connection, for example after a
            // restart. Nothing of the transaction ran, so it begins again
            // on a new connection.
            Err(DbError::Postgres(error)) if error.is_closed() || ends_session(&error) => {
                tracing::info!("PostgreSQL closed an idle connection: opening it again");
                self.batch(sql)
                    .inspect_err(|_| self.roll_back_failed_begin())?;
            }
            outcome => outcome.inspect_err(|_| self.roll_back_failed_begin())?,
        }
        self.state.borrow_mut().transaction = TxState::Open;
        Ok(())
    }

    /// Rolls back what a failed [`Self::begin`] began. Errors are ignored:
    /// on a lost connection the server has rolled it back already.
    fn roll_back_failed_begin(&self) {
        let _ = self.batch("ROLLBACK");
    }

    /// Ends the transaction with `sql` (`COMMIT` or `ROLLBACK`). A failed or
    /// lost transaction is rolled back and reported instead of committed.
    pub(super) fn end(&self, sql: &str) -> Result<(), DbError> {
        let state = self.transaction();
        let outcome = match state {
            TxState::Open => self.batch(sql),
            TxState::Failed => {
                self.state.borrow_mut().transaction = TxState::Open;
                let _ = self.batch("ROLLBACK");
                Err(DbError::TransactionFailed)
            }
            TxState::Lost => Err(DbError::TransactionLost),
            TxState::Idle => Ok(()),
        };
        self.state.borrow_mut().transaction = TxState::Idle;
        outcome
    }

    /// Rolls back to savepoint `name` after a statement of the transaction
    /// failed, so that the transaction goes on.
    pub(super) fn rollback_to(&self, name: &str) -> Result<(), DbError> {
        if self.transaction() == TxState::Failed {
            self.state.borrow_mut().transaction = TxState::Open;
        }
        self.batch(&format!("ROLLBACK TO {name}; RELEASE {name}"))
    }

    /// Runs statements without parameters, such as `BEGIN` or a migration.
    pub(super) fn batch(&self, sql: &str) -> Result<(), DbError> {
        self.with_client(|client, _| client.batch_execute(sql))
    }

    /// Runs a statement and returns the rows it changed.
    pub(super) fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<u64, DbError> {
        let params: Vec<PgParam<'_>> = params.iter().copied().map(PgParam).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|param| param as &(dyn ToSql + Sync))
            .collect();
        self.with_client(|client, statements| {
            let statement = prepared(client, statements, sql)?;
            client.execute(&statement, &refs)
        })
    }

    /// Runs a query and returns its rows.
    /// Runs a query with parameters of PostgreSQL's own types, such as
    /// arrays, written with `$1` placeholders.
    pub(super) fn query_native(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, DbError> {
        self.with_client(|client, statements| {
            let statement = prepared(client, statements, sql)?;
            client.query(&statement, params)
        })
    }

    pub(super) fn query(
        &self,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<Vec<postgres::Row>, DbError> {
        let params: Vec<PgParam<'_>> = params.iter().copied().map(PgParam).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|param| param as &(dyn ToSql + Sync))
            .collect();
        self.with_client(|client, statements| {
            let statement = prepared(client, statements, sql)?;
            client.query(&statement, &refs)
        })
    }
}

/// Whether the server ended the session with `error`, as it does after
/// `pg_terminate_backend`. The client may not have seen the socket close yet.
/// Opens a client with `config`, giving up after [`STARTUP_TIMEOUT`]. The
/// configured connect timeout covers only the TCP connection, so a server
/// that accepts it and then never responds to the startup would otherwise
/// block the caller for good. The attempt then goes on, on its own thread,
/// until the operating system ends the connection.
fn connect(config: &Config) -> Result<Client, DbError> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let config = config.clone();
    std::thread::Builder::new()
        .name("sealcast-db-connect".into())
        .spawn(move || {
            let _ = sender.send(config.connect(NoTls));
        })
        .map_err(|error| DbError::ConnectThread(error.to_string()))?;
    match receiver.recv_timeout(STARTUP_TIMEOUT) {
        Ok(connected) => Ok(connected?),
        Err(_) => Err(DbError::ConnectTimedOut {
            after: STARTUP_TIMEOUT,
        }),
    }
}

fn ends_session(error: &postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| {
        matches!(
            db.parsed_severity(),
            Some(postgres::error::Severity::Fatal | postgres::error::Severity::Panic)
        )
    })
}

impl Drop for PgConnection {
    /// Closes the client on a thread of its own when the connection is
    /// dropped inside a tokio runtime: the synchronous client blocks on a
    /// runtime of its own to close, which tokio forbids on its threads. When
    /// no thread can start, the client is leaked rather than closed there,
    /// and the server ends the session when this process exits.
    fn drop(&mut self) {
        let Some(client) = self.state.get_mut().client.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (sender, receiver) = std::sync::mpsc::channel::<Client>();
        let closing = std::thread::Builder::new()
            .name("sealcast-db-close".into())
            .spawn(move || {
                if let Ok(client) = receiver.recv() {
                    drop(client);
                }
            });
        match closing {
            Ok(_) => {
                // The thread is running, so it receives the client.
                let _ = sender.send(client);
            }
            Err(error) => {
                tracing::error!(%error, "failed to start a thread to close a PostgreSQL connection");
                std::mem::forget(client);
            }
        }
    }
}

fn prepared(
    client: &mut Client,
    statements: &mut HashMap<String, Statement>,
    sql: &str,
) -> Result<Statement, postgres::Error> {
    if let Some(statement) = statements.get(sql) {
        return Ok(statement.clone());
    }
    let statement = client.prepare(&numbered_placeholders(sql))?;
    statements.insert(sql.to_owned(), statement.clone());
    Ok(statement)
}

/// Rewrites SQLite placeholders (`?1`, or `?` counted from 1) to
/// PostgreSQL's `$1`, leaving quoted text and identifiers alone.
pub(super) fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    let mut next_unnumbered = 1;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(open) => {
                out.push(c);
                if c == open {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                out.push('$');
                if chars.peek().is_some_and(char::is_ascii_digit) {
                    while let Some(digit) = chars.next_if(char::is_ascii_digit) {
                        out.push(digit);
                    }
                } else {
                    out.push_str(&next_unnumbered.to_string());
                    next_unnumbered += 1;
                }
            }
            None => out.push(c),
        }
    }
    out
}

/// A parameter that binds in the wire format of the type PostgreSQL
/// inferred for its placeholder.
#[derive(Debug)]
struct PgParam<'a>(Value<'a>);

impl ToSql for PgParam<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(number) => match *ty {
                Type::INT8 => number.to_sql(ty, out),
                Type::INT4 => i32::try_from(number)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(number)?.to_sql(ty, out),
                Type::BOOL => (number != 0).to_sql(ty, out),
                _ => Err(format!("an integer parameter cannot bind as {ty}").into()),
            },
            Value::Text(text) => text.to_sql(ty, out),
            Value::Blob(bytes) => bytes.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column read in its binary wire format, decoded by [`column_value`].
struct RawColumn<'a> {
    ty: Type,
    bytes: Option<&'a [u8]>,
}

impl<'a> FromSql<'a> for RawColumn<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(RawColumn {
            ty: ty.clone(),
            bytes: Some(raw),
        })
    }

    fn from_sql_null(ty: &Type) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(RawColumn {
            ty: ty.clone(),
            bytes: None,
        })
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Reads column `index` of `row` as a [`Value`].
pub(super) fn column_value<'a>(row: &'a postgres::Row, index: usize) -> Result<Value<'a>, DbError> {
    let raw: RawColumn<'a> = row.try_get(index)?;
    let Some(bytes) = raw.bytes else {
        return Ok(Value::Null);
    };
    let mismatch = |found: &'static str| DbError::Conversion {
        column: index,
        expected: "a BIGINT, INTEGER, SMALLINT, BOOLEAN, TEXT or BYTEA column",
        found,
    };
    let value = match raw.ty {
        Type::INT8 => Value::Integer(i64::from_be_bytes(
            bytes.try_into().map_err(|_| mismatch("a short BIGINT"))?,
        )),
        Type::INT4 => Value::Integer(i64::from(i32::from_be_bytes(
            bytes.try_into().map_err(|_| mismatch("a short INTEGER"))?,
        ))),
        Type::INT2 => Value::Integer(i64::from(i16::from_be_bytes(
            bytes.try_into().map_err(|_| mismatch("a short SMALLINT"))?,
        ))),
        Type::BOOL => Value::Integer(i64::from(bytes.first().is_some_and(|b| *b != 0))),
        Type::BYTEA => Value::Blob(bytes),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            Value::Text(std::str::from_utf8(bytes).map_err(|_| mismatch("text that is not UTF-8"))?)
        }
        _ => return Err(mismatch("a column of another type")),
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::numbered_placeholders;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            numbered_placeholders("SELECT ?1, ?12 FROM t WHERE a = ?2"),
            "SELECT $1, $12 FROM t WHERE a = $2"
        );
        assert_eq!(
            numbered_placeholders("VALUES (?, ?, '?', \"a?\")"),
            "VALUES ($1, $2, '?', \"a?\")"
        );
    }
}
