//! Plaintext padding to size buckets, so frame sizes reveal only a coarse
//! length class of the text.
//!
//! A padded plaintext is a 4-byte big-endian length `n`, then `n` bytes of
//! content, then zero bytes up to `256 << bucket` bytes in total. The smallest
//! bucket that fits is used.

use crate::error::ProtocolError;

/// Largest bucket index: `256 << 8` is 64 KiB.
pub const MAX_BUCKET: u8 = 8;

/// Size of the smallest bucket.
pub const MIN_PADDED_LEN: usize = 256;

/// Size of the largest bucket.
pub const MAX_PADDED_LEN: usize = MIN_PADDED_LEN << MAX_BUCKET;

/// Maximum content length that fits the largest bucket.
pub const MAX_CONTENT_LEN: usize = MAX_PADDED_LEN - 4;

/// Size in bytes of the padded plaintext for a bucket.
pub fn padded_len(bucket: u8) -> usize {
    MIN_PADDED_LEN << bucket.min(MAX_BUCKET)
}

/// Returns the smallest bucket that fits `content_len` bytes of content.
pub fn bucket_for(content_len: usize) -> Result<u8, ProtocolError> {
    (0..=MAX_BUCKET)
        .find(|&bucket| content_len + 4 <= padded_len(bucket))
        .ok_or(ProtocolError::PlaintextTooLarge {
            len: content_len,
            max: MAX_CONTENT_LEN,
        })
}

/// Pads `content` into the bucket the caller chose with [`bucket_for`].
pub fn pad(content: &[u8], bucket: u8) -> Result<Vec<u8>, ProtocolError> {
    let total = padded_len(bucket);
    if content.len() + 4 > total {
        return Err(ProtocolError::PlaintextTooLarge {
            len: content.len(),
            max: total - 4,
        });
    }
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(content.len() as u32).to_be_bytes());
    out.extend_from_slice(content);
    out.resize(total, 0);
    Ok(out)
}

/// Strips the padding, checking the length prefix and that every padding byte is zero.
pub fn unpad(padded: &[u8]) -> Result<&[u8], ProtocolError> {
    if padded.len() < 4 {
        return Err(ProtocolError::MalformedPlaintext(
            "shorter than its length prefix".into(),
        ));
    }
    let len = u32::from_be_bytes([padded[0], padded[1], padded[2], padded[3]]) as usize;
    let body = &padded[4..];
    if len > body.len() {
        return Err(ProtocolError::MalformedPlaintext(format!(
            "length prefix {len} exceeds the {} bytes present",
            body.len()
        )));
    }
    if body[len..].iter().any(|&byte| byte != 0) {
        return Err(ProtocolError::MalformedPlaintext("non-zero padding".into()));
    }
    Ok(&body[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_boundaries() {
        assert_eq!(bucket_for(0).unwrap(), 0);
        assert_eq!(bucket_for(252).unwrap(), 0);
        assert_eq!(bucket_for(253).unwrap(), 1);
        assert_eq!(bucket_for(MAX_CONTENT_LEN).unwrap(), MAX_BUCKET);
        assert!(bucket_for(MAX_CONTENT_LEN + 1).is_err());
    }

    #[test]
    fn pad_round_trip() {
        let padded = pad(b"hello", 0).unwrap();
        assert_eq!(padded.len(), 256);
        assert_eq!(unpad(&padded).unwrap(), b"hello");
    }

    #[test]
    fn unpad_rejects_nonzero_padding() {
        let mut padded = pad(b"hello", 0).unwrap();
        padded[200] = 1;
        assert!(unpad(&padded).is_err());
    }

    #[test]
    fn unpad_rejects_long_prefix() {
        let mut padded = pad(b"hello", 0).unwrap();
        padded[0] = 0xff;
        assert!(unpad(&padded).is_err());
    }
}
