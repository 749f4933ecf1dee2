//! SQL functions that seal and open stored values, registered on each of the
//! relay's write connections, so that account queries and the at-rest
//! migration encrypt inside their SQL statements.
//!
//! | function | returns |
//! | --- | --- |
//! | `at_rest_seal(table, column, row_key, value)` | `value` sealed for that row and column |
//! | `at_rest_open_text(table, column, row_key, sealed)` | the value as text |
//! | `at_rest_open_blob(table, column, row_key, sealed)` | the value as a blob |
//! | `at_rest_email_hash(email)` | the keyed lookup hash of a normalized email address |
//! | `at_rest_seal_frame(session_id, offset, frame)` | a frame sealed as the writer thread seals it |
//! | `at_rest_kek_fingerprint()`, `at_rest_wrapped_dek()` | the stored form of the data key |
//!
//! Every function returns NULL for a NULL value. A value that fails to open
//! fails the statement, and SQLite's error carries the decryption error's
//! message.

use std::sync::Arc;

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::data_key::DataKeys;
use super::wrap::DatabaseKeys;
use crate::metrics::STORE_AT_REST_FAILURES;

/// Registers the functions on `conn`.
pub(crate) fn register(conn: &Connection, keys: &DatabaseKeys) -> rusqlite::Result<()> {
    let deterministic = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    // Sealing draws a random nonce, so its result differs on every call.
    let random = FunctionFlags::SQLITE_UTF8;

    let data = keys.keys.clone();
    conn.create_scalar_function("at_rest_seal", 4, random, move |ctx| {
        let Some(value) = bytes_or_null(ctx, 3)? else {
            return Ok(None);
        };
        let (table, column, row_key) = row_identity(ctx)?;
        Ok(Some(data.seal_value(table, column, row_key, value)))
    })?;

    let data = keys.keys.clone();
    conn.create_scalar_function("at_rest_open_text", 4, deterministic, move |ctx| {
        let Some(opened) = open(&data, ctx)? else {
            return Ok(None);
        };
        String::from_utf8(opened.to_vec())
            .map(Some)
            .map_err(|error| rusqlite::Error::UserFunctionError(error.into()))
    })?;

    let data = keys.keys.clone();
    conn.create_scalar_function("at_rest_open_blob", 4, deterministic, move |ctx| {
        Ok(open(&data, ctx)?.map(|opened| opened.to_vec()))
    })?;

    let data = keys.keys.clone();
    conn.create_scalar_function("at_rest_email_hash", 1, deterministic, move |ctx| {
        let email = ctx.get_raw(0).as_str_or_null()?;
        Ok(email.map(|email| data.email_hash(email).to_vec()))
    })?;

    let data = keys.keys.clone();
    conn.create_scalar_function("at_rest_seal_frame", 3, random, move |ctx| {
        let session_id: [u8; 16] = ctx
            .get_raw(0)
            .as_blob()?
            .try_into()
            .map_err(|_| user_error("at_rest_seal_frame needs a 16-byte session id"))?;
        let offset = u64::try_from(ctx.get::<i64>(1)?)
            .map_err(|_| user_error("at_rest_seal_frame needs an offset of 0 or more"))?;
        let frame = ctx.get_raw(2).as_blob()?;
        Ok(data.frame_cipher(&session_id).seal(offset, frame))
    })?;

    let fingerprint = keys.wrapped.kek_fingerprint;
    conn.create_scalar_function("at_rest_kek_fingerprint", 0, deterministic, move |_| {
        Ok(fingerprint.as_bytes().to_vec())
    })?;
    let wrapped = keys.wrapped.wrapped;
    conn.create_scalar_function("at_rest_wrapped_dek", 0, deterministic, move |_| {
        Ok(wrapped.to_vec())
    })
}

fn open(
    data: &Arc<DataKeys>,
    ctx: &Context<'_>,
) -> rusqlite::Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
    let Some(sealed) = bytes_or_null(ctx, 3)? else {
        return Ok(None);
    };
    let (table, column, row_key) = row_identity(ctx)?;
    match data.open_value(table, column, row_key, sealed) {
        Ok(opened) => Ok(Some(opened)),
        Err(error) => {
            metrics::counter!(STORE_AT_REST_FAILURES, "column" => format!("{table}.{column}"))
                .increment(1);
            tracing::error!(table, column, "stored value failed at-rest decryption");
            Err(rusqlite::Error::UserFunctionError(Box::new(error)))
        }
    }
}

/// Reads the table, column and primary key arguments.
fn row_identity<'a>(ctx: &'a Context<'_>) -> rusqlite::Result<(&'a str, &'a str, &'a [u8])> {
    let table = ctx.get_raw(0).as_str()?;
    let column = ctx.get_raw(1).as_str()?;
    let row_key = bytes_or_null(ctx, 2)?
        .ok_or_else(|| user_error("at-rest functions need a primary key that is not NULL"))?;
    Ok((table, column, row_key))
}

/// Reads a text or blob argument as bytes.
fn bytes_or_null<'a>(ctx: &'a Context<'_>, index: usize) -> rusqlite::Result<Option<&'a [u8]>> {
    match ctx.get_raw(index) {
        ValueRef::Null => Ok(None),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Ok(Some(bytes)),
        ValueRef::Integer(_) | ValueRef::Real(_) => Err(user_error(
            "at-rest functions take text or blob values, not numbers",
        )),
    }
}

fn user_error(message: &'static str) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(message.into())
}
