//! Recovery codes, which let a user whose TOTP device is lost sign in. Each
//! code is meant for one use: the caller deletes its hash once it matched.
//!
//! A code is 60 random bits written as 12 lower-case base32 characters
//! (RFC 4648 alphabet) in groups of four: `abcd-efgh-ijkl`. The user sees the
//! codes once and the store keeps only the SHA-256 of each code's 12
//! characters. Users may type a code in any case, with or without the
//! dashes, and with spaces.
//!
//! NOTE: an unsalted SHA-256 of 60 random bits costs about 2^59 hashes on
//! average to reverse, which is within reach of a well-funded attacker who
//! has stolen the store. Codes should be replaced after a store leak.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::credentials::{hashes_match, CredentialHash};

/// Characters in a code, without the dashes.
const CODE_CHARS: usize = 12;

/// Characters between two dashes of a displayed code.
const GROUP_CHARS: usize = 4;

/// Maximum length in bytes of a typed code. Longer input is rejected before
/// normalizing. A code with a separator after every character still fits.
const MAX_INPUT_BYTES: usize = 64;

/// One recovery code as shown to the user, `abcd-efgh-ijkl`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RecoveryCode(Zeroizing<String>);

impl RecoveryCode {
    /// Returns the code with its dashes, to show the user once.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryCode([redacted])")
    }
}

/// Makes `count` new codes and their hashes, in the same order.
pub(crate) fn generate(count: usize) -> (Vec<RecoveryCode>, Vec<CredentialHash>) {
    let mut codes = Vec::with_capacity(count);
    let mut hashes = Vec::with_capacity(count);
    for _ in 0..count {
        let canonical = random_canonical_code();
        hashes.push(hash_canonical(&canonical));
        codes.push(RecoveryCode(display_form(&canonical)));
    }
    (codes, hashes)
}

/// Returns the hash of a typed code, or `None` unless it is 12 characters of
/// the base32 alphabet once dashes and whitespace are removed.
pub(crate) fn normalize_and_hash(input: &str) -> Option<CredentialHash> {
    normalize(input).map(|canonical| hash_canonical(&canonical))
}

/// Tells a typed recovery code apart from a TOTP code entered in the same
/// field: true when [`normalize_and_hash`] would accept `input`.
pub(crate) fn looks_like_recovery_code(input: &str) -> bool {
    normalize(input).is_some()
}

/// Returns the index of the stored hash that `input` matches, comparing with
/// every stored hash in constant time.
// The store looks a code up by its hash instead, in `use_recovery_code`.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn find_match(input: &str, stored: &[CredentialHash]) -> Option<usize> {
    let presented = normalize_and_hash(input)?;
    let mut found = None;
    for (index, hash) in stored.iter().enumerate() {
        if hashes_match(hash, &presented) {
            found = Some(index);
        }
    }
    found
}

/// Draws 60 random bits and encodes them as 12 base32 characters: the first
/// 12 of the 13 that encode 64 bits.
fn random_canonical_code() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 8]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut_slice());
    let mut encoded = Zeroizing::new(base32::encode(
        base32::Alphabet::Rfc4648Lower { padding: false },
        bytes.as_slice(),
    ));
    encoded.truncate(CODE_CHARS);
    encoded
}

fn display_form(canonical: &str) -> Zeroizing<String> {
    let mut grouped = Zeroizing::new(String::with_capacity(CODE_CHARS + 2));
    for (index, character) in canonical.chars().enumerate() {
        if index > 0 && index % GROUP_CHARS == 0 {
            grouped.push('-');
        }
        grouped.push(character);
    }
    grouped
}

fn normalize(input: &str) -> Option<Zeroizing<String>> {
    if input.len() > MAX_INPUT_BYTES {
        return None;
    }
    let canonical: Zeroizing<String> = Zeroizing::new(
        input
            .chars()
            .filter(|&c| c != '-' && !c.is_whitespace())
            .map(|c| c.to_ascii_lowercase())
            .collect(),
    );
    let well_formed = canonical.len() == CODE_CHARS
        && canonical
            .bytes()
            .all(|byte| matches!(byte, b'a'..=b'z' | b'2'..=b'7'));
    well_formed.then_some(canonical)
}

fn hash_canonical(canonical: &str) -> CredentialHash {
    Sha256::digest(canonical.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn is_display_form(code: &str) -> bool {
        let groups: Vec<&str> = code.split('-').collect();
        groups.len() == 3
            && groups.iter().all(|group| {
                group.len() == GROUP_CHARS
                    && group
                        .bytes()
                        .all(|byte| matches!(byte, b'a'..=b'z' | b'2'..=b'7'))
            })
    }

    #[test]
    fn generated_codes_have_display_form() {
        let (codes, hashes) = generate(10);
        assert_eq!(codes.len(), 10);
        assert_eq!(hashes.len(), 10);
        for code in &codes {
            assert!(is_display_form(code.expose()), "{}", code.expose());
        }
    }

    #[test]
    fn generated_codes_are_distinct() {
        let (codes, hashes) = generate(50);
        let texts: HashSet<&str> = codes.iter().map(RecoveryCode::expose).collect();
        assert_eq!(texts.len(), 50);
        let unique_hashes: HashSet<&CredentialHash> = hashes.iter().collect();
        assert_eq!(unique_hashes.len(), 50);
    }

    #[test]
    fn generate_zero_codes() {
        let (codes, hashes) = generate(0);
        assert!(codes.is_empty());
        assert!(hashes.is_empty());
    }

    #[test]
    fn hash_matches_typed_variants() {
        let (codes, hashes) = generate(1);
        let displayed = codes[0].expose();
        let bare = displayed.replace('-', "");
        let variants = [
            displayed.to_owned(),
            displayed.to_uppercase(),
            bare.clone(),
            bare.to_uppercase(),
            displayed.replace('-', " "),
            format!("  {displayed}\n"),
            format!("{}-{}", &bare[..6], &bare[6..]),
        ];
        for variant in variants {
            assert_eq!(normalize_and_hash(&variant), Some(hashes[0]), "{variant:?}");
            assert!(looks_like_recovery_code(&variant), "{variant:?}");
        }
    }

    #[test]
    fn hash_is_sha256_of_bare_code() {
        let expected: CredentialHash = Sha256::digest(b"abcdefghijkl").into();
        assert_eq!(normalize_and_hash("abcd-efgh-ijkl"), Some(expected));
    }

    #[test]
    fn malformed_inputs_rejected() {
        let cases = [
            "",
            "123456",
            "abcd-efgh-ijk",
            "abcd-efgh-ijklm",
            "abcd-efgh-ijk1",
            "abcd-efgh-ijk0",
            "abcd-efgh-ijk8",
            "abcd_efgh_ijkl",
            "abcd.efgh.ijkl",
            "abcd-efgh-ijké",
            "ａbcd-efgh-ijkl",
        ];
        for case in cases {
            assert_eq!(normalize_and_hash(case), None, "{case:?}");
            assert!(!looks_like_recovery_code(case), "{case:?}");
        }
        let long = format!("abcd-efgh-ijkl{}", " ".repeat(MAX_INPUT_BYTES));
        assert_eq!(normalize_and_hash(&long), None);
    }

    #[test]
    fn find_match_returns_index() {
        let (codes, hashes) = generate(5);
        for (index, code) in codes.iter().enumerate() {
            assert_eq!(find_match(code.expose(), &hashes), Some(index));
        }
        let (other, _) = generate(1);
        assert_eq!(find_match(other[0].expose(), &hashes), None);
        assert_eq!(find_match("not a code", &hashes), None);
        assert_eq!(find_match(codes[0].expose(), &[]), None);
    }

    #[test]
    fn code_debug_is_redacted() {
        let (codes, _) = generate(1);
        assert_eq!(format!("{:?}", codes[0]), "RecoveryCode([redacted])");
    }
}
