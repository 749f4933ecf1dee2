//! Parameters and column values, with one meaning on both engines.
//!
//! SQLite stores integers, text and blobs, and the PostgreSQL schema uses
//! `BIGINT`, `TEXT` and `BYTEA` for them. A [`Value`] is one of those or
//! NULL, and each engine binds and reads it in its own wire format.

use crate::db::DbError;

/// A parameter or column value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// SQL NULL.
    Null,
    /// A signed 64-bit integer. Booleans are 0 and 1.
    Integer(i64),
    /// UTF-8 text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

impl Value<'_> {
    /// Names the value's kind, for conversion errors.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Integer(_) => "integer",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }
}

/// A Rust value that binds as a statement parameter.
pub(crate) trait ToDb {
    /// Returns the value to bind.
    fn to_db(&self) -> Value<'_>;
}

/// A Rust value that a column converts into.
pub(crate) trait FromDb: Sized {
    /// Converts a column's value. `None` names what was expected, for the error.
    fn from_db(value: Value<'_>) -> Option<Self>;

    /// Names the expected kind, for conversion errors.
    const EXPECTED: &'static str;
}

impl<T: ToDb + ?Sized> ToDb for &T {
    fn to_db(&self) -> Value<'_> {
        (**self).to_db()
    }
}

impl<T: ToDb> ToDb for Option<T> {
    fn to_db(&self) -> Value<'_> {
        match self {
            Some(value) => value.to_db(),
            None => Value::Null,
        }
    }
}

impl ToDb for str {
    fn to_db(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToDb for String {
    fn to_db(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToDb for [u8] {
    fn to_db(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl ToDb for Vec<u8> {
    fn to_db(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl<const N: usize> ToDb for [u8; N] {
    fn to_db(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl ToDb for bool {
    fn to_db(&self) -> Value<'_> {
        Value::Integer(i64::from(*self))
    }
}

macro_rules! integer_to_db {
    ($($ty:ty),*) => {$(
        impl ToDb for $ty {
            fn to_db(&self) -> Value<'_> {
                Value::Integer(i64::from(*self))
            }
        }
    )*};
}

integer_to_db!(i64, i32, i16, i8, u32, u16, u8);

impl<T: FromDb> FromDb for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;

    fn from_db(value: Value<'_>) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            value => T::from_db(value).map(Some),
        }
    }
}

impl FromDb for String {
    const EXPECTED: &'static str = "text";

    fn from_db(value: Value<'_>) -> Option<Self> {
        match value {
            Value::Text(text) => Some(text.to_owned()),
            _ => None,
        }
    }
}

impl FromDb for Vec<u8> {
    const EXPECTED: &'static str = "blob";

    fn from_db(value: Value<'_>) -> Option<Self> {
        match value {
            Value::Blob(bytes) => Some(bytes.to_vec()),
            _ => None,
        }
    }
}

impl<const N: usize> FromDb for [u8; N] {
    const EXPECTED: &'static str = "fixed-size blob";

    fn from_db(value: Value<'_>) -> Option<Self> {
        match value {
            Value::Blob(bytes) => bytes.try_into().ok(),
            _ => None,
        }
    }
}

impl FromDb for bool {
    const EXPECTED: &'static str = "boolean integer";

    fn from_db(value: Value<'_>) -> Option<Self> {
        match value {
            Value::Integer(0) => Some(false),
            Value::Integer(1) => Some(true),
            _ => None,
        }
    }
}

macro_rules! integer_from_db {
    ($($ty:ty),*) => {$(
        impl FromDb for $ty {
            const EXPECTED: &'static str = concat!("integer in range of ", stringify!($ty));

            fn from_db(value: Value<'_>) -> Option<Self> {
                match value {
                    Value::Integer(number) => <$ty>::try_from(number).ok(),
                    _ => None,
                }
            }
        }
    )*};
}

integer_from_db!(i64, i32, u64, u32, u16, u8, usize);

/// Converts `value` of column `column`, or names the mismatch.
pub(crate) fn convert<T: FromDb>(column: usize, value: Value<'_>) -> Result<T, DbError> {
    T::from_db(value).ok_or(DbError::Conversion {
        column,
        expected: T::EXPECTED,
        found: value.kind(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_convert_within_range() {
        assert_eq!(convert::<u32>(0, Value::Integer(7)).unwrap(), 7);
        assert!(convert::<u32>(0, Value::Integer(-1)).is_err());
        assert!(convert::<u8>(0, Value::Integer(256)).is_err());
        assert_eq!(convert::<Option<i64>>(0, Value::Null).unwrap(), None);
        assert!(convert::<i64>(0, Value::Null).is_err());
    }

    #[test]
    fn blobs_convert_to_fixed_arrays_of_their_length_only() {
        assert_eq!(convert::<[u8; 2]>(1, Value::Blob(&[1, 2])).unwrap(), [1, 2]);
        let Err(DbError::Conversion { column, found, .. }) =
            convert::<[u8; 3]>(1, Value::Blob(&[1, 2]))
        else {
            panic!("a two-byte blob converted to three bytes");
        };
        assert_eq!((column, found), (1, "blob"));
        assert!(convert::<String>(0, Value::Blob(b"x")).is_err());
    }

    #[test]
    fn options_and_references_bind_their_value() {
        let text = String::from("a");
        assert_eq!(<&String as ToDb>::to_db(&&text), Value::Text("a"));
        assert_eq!(None::<u32>.to_db(), Value::Null);
        assert_eq!(Some(true).to_db(), Value::Integer(1));
        assert_eq!([1u8, 2].to_db(), Value::Blob(&[1, 2]));
    }
}
