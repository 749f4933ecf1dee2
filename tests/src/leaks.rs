//! Scanning bytes for secrets and transcript text in every encoding a careless
//! log line or store could hold them.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

/// A value that must not appear, with a label for the failure message.
#[derive(Debug, Clone)]
pub struct Needle {
    /// What the value is, for example `session key (base64url)`.
    pub label: String,
    /// The bytes to look for.
    pub bytes: Vec<u8>,
}

/// Returns every encoding of a binary secret worth looking for: raw, hex, and
/// the four base64 forms.
pub fn secret_needles(label: &str, secret: &[u8]) -> Vec<Needle> {
    let forms = [
        ("raw", secret.to_vec()),
        ("hex", hex_lower(secret).into_bytes()),
        ("base64", STANDARD.encode(secret).into_bytes()),
        (
            "base64 unpadded",
            STANDARD_NO_PAD.encode(secret).into_bytes(),
        ),
        ("base64url", URL_SAFE.encode(secret).into_bytes()),
        (
            "base64url unpadded",
            URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        ),
    ];
    forms
        .into_iter()
        .map(|(form, bytes)| Needle {
            label: format!("{label} ({form})"),
            bytes,
        })
        .collect()
}

/// Returns a text value, such as a token or a transcript phrase, as it would be written.
pub fn text_needle(label: &str, text: &str) -> Needle {
    Needle {
        label: label.to_string(),
        bytes: text.as_bytes().to_vec(),
    }
}

/// Returns the labels of the needles found in `haystack`.
pub fn find_leaks(haystack: &[u8], needles: &[Needle]) -> Vec<String> {
    needles
        .iter()
        .filter(|needle| !needle.bytes.is_empty() && contains(haystack, &needle.bytes))
        .map(|needle| needle.label.clone())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_encoding() {
        let secret = [0xfbu8; 32];
        let needles = secret_needles("key", &secret);
        for needle in &needles {
            let mut haystack = b"prefix ".to_vec();
            haystack.extend_from_slice(&needle.bytes);
            assert!(find_leaks(&haystack, &needles).contains(&needle.label));
        }
        assert!(find_leaks(b"nothing here", &needles).is_empty());
    }
}
