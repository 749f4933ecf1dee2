//! Known-answer tests of the X25519 and HKDF-SHA256 wrappers against the
//! test vectors published in RFC 7748 (sections 5.2 and 6.1) and RFC 5869
//! (appendix A, test cases 1 to 3), plus the low-order points that X25519
//! must reject.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failed unwrap or panic is how a test reports a failure"
)]

use sealcast_protocol::keys::hkdf_sha256;
use sealcast_protocol::pairing::{x25519, PairingError, PairingKeyPair};

fn bytes<const N: usize>(text: &str) -> [u8; N] {
    let decoded = hex::decode(text).unwrap();
    decoded
        .try_into()
        .unwrap_or_else(|value: Vec<u8>| panic!("{text} is {} bytes, not {N}", value.len()))
}

/// The u-coordinate of the X25519 base point.
const BASE_POINT: &str = "0900000000000000000000000000000000000000000000000000000000000000";

#[test]
fn x25519_rfc7748_section_5_2_vectors() {
    let cases = [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ];
    for (scalar, u, expected) in cases {
        let output = x25519(&bytes(scalar), &bytes(u)).unwrap();
        assert_eq!(hex::encode(output), expected, "scalar {scalar}");
    }
}

#[test]
fn x25519_rfc7748_iterated_vectors() {
    // RFC 7748 section 5.2 iterates k, u = X25519(k, u), k from the base
    // point. The 1,000,000-iteration value is left out, because it takes
    // minutes in an unoptimized test build.
    let mut k = bytes::<32>(BASE_POINT);
    let mut u = bytes::<32>(BASE_POINT);
    let checkpoints = [
        (
            1,
            "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079",
        ),
        (
            1_000,
            "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51",
        ),
    ];
    let mut done = 0;
    for (iterations, expected) in checkpoints {
        while done < iterations {
            let output = x25519(&k, &u).unwrap();
            u = k;
            k = output;
            done += 1;
        }
        assert_eq!(hex::encode(k), expected, "after {iterations} iterations");
    }
}

#[test]
fn x25519_rfc7748_section_6_1_exchange() {
    let alice_secret =
        bytes::<32>("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let bob_secret =
        bytes::<32>("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let alice_public = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
    let bob_public = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
    let shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

    let alice = PairingKeyPair::from_secret_bytes(&alice_secret);
    let bob = PairingKeyPair::from_secret_bytes(&bob_secret);
    assert_eq!(hex::encode(alice.public_key()), alice_public);
    assert_eq!(hex::encode(bob.public_key()), bob_public);
    let base = bytes::<32>(BASE_POINT);
    assert_eq!(
        hex::encode(x25519(&alice_secret, &base).unwrap()),
        alice_public
    );

    let alice_view = x25519(&alice_secret, &bob.public_key()).unwrap();
    let bob_view = x25519(&bob_secret, &alice.public_key()).unwrap();
    assert_eq!(hex::encode(alice_view), shared);
    assert_eq!(hex::encode(bob_view), shared);
}

#[test]
fn x25519_rejects_low_order_points() {
    // u-coordinates of low-order points: 0 (order 2), 1 and p - 1 (order 4),
    // the two of order 8, and p and p + 1, the non-canonical encodings of 0
    // and 1. A clamped scalar is a multiple of 8, so each gives all zeros.
    let low_order = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];
    let scalars = [[0x11u8; 32], [0xfe; 32], bytes(BASE_POINT)];
    for point in low_order {
        for scalar in &scalars {
            let result = x25519(scalar, &bytes(point));
            assert_eq!(result, Err(PairingError::NonContributory), "point {point}");
        }
    }
}

struct HkdfCase {
    name: &'static str,
    ikm: String,
    salt: Option<String>,
    info: String,
    okm: &'static str,
}

/// Returns the hex of `count` consecutive byte values starting at `first`.
fn counting(first: u8, count: u8) -> String {
    (0..count).map(|i| format!("{:02x}", first + i)).collect()
}

#[test]
fn hkdf_rfc5869_sha256_cases() {
    let cases = [
        HkdfCase {
            name: "A.1",
            ikm: "0b".repeat(22),
            salt: Some(counting(0x00, 13)),
            info: counting(0xf0, 10),
            okm: "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        },
        HkdfCase {
            name: "A.2",
            ikm: counting(0x00, 80),
            salt: Some(counting(0x60, 80)),
            info: counting(0xb0, 80),
            okm: "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c\
                  59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71\
                  cc30c58179ec3e87c14c01d5c1f3434f1d87",
        },
        HkdfCase {
            name: "A.3",
            ikm: "0b".repeat(22),
            salt: Some(String::new()),
            info: String::new(),
            okm: "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        },
    ];
    for case in cases {
        let ikm = hex::decode(&case.ikm).unwrap();
        let salt = case.salt.as_ref().map(|salt| hex::decode(salt).unwrap());
        let info = hex::decode(&case.info).unwrap();
        let mut okm = vec![0u8; case.okm.len() / 2];
        hkdf_sha256(salt.as_deref(), &ikm, &info, &mut okm).unwrap();
        assert_eq!(hex::encode(&okm), case.okm, "RFC 5869 {}", case.name);
    }
}

#[test]
fn hkdf_missing_salt_equals_empty_and_zero_salt() {
    let ikm = [0x0b; 22];
    let mut missing = [0u8; 42];
    let mut empty = [0u8; 42];
    let mut zeros = [0u8; 42];
    hkdf_sha256(None, &ikm, b"", &mut missing).unwrap();
    hkdf_sha256(Some(&[]), &ikm, b"", &mut empty).unwrap();
    hkdf_sha256(Some(&[0; 32]), &ikm, b"", &mut zeros).unwrap();
    assert_eq!(missing, empty);
    assert_eq!(missing, zeros);
}

#[test]
fn hkdf_rejects_output_over_255_hashes() {
    let mut fits = vec![0u8; 255 * 32];
    assert!(hkdf_sha256(None, b"ikm", b"info", &mut fits).is_ok());
    let mut too_long = vec![0u8; 255 * 32 + 1];
    assert!(hkdf_sha256(None, b"ikm", b"info", &mut too_long).is_err());
}
