//! Time-based one-time passwords (RFC 6238) for the staff second factor.
//!
//! Codes are HMAC-SHA1, 6 digits, with a 30 s time step: the parameters every
//! authenticator app supports. The `totp-rs` crate computes the HMAC and the
//! RFC 4226 truncation. This module adds the secret type, the replay check
//! and the otpauth URI with its QR code.
//!
//! Three steps are accepted, so a guessed code is right with probability
//! 3 in 10^6: callers must rate-limit verification attempts per account.

use std::fmt;

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use rand::RngCore;
use subtle::ConstantTimeEq;
use thiserror::Error;
use totp_rs::{Algorithm, Builder};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Digits in a code.
pub(crate) const DIGITS: u8 = 6;

/// Length of a time step in seconds.
pub(crate) const STEP_SECONDS: u64 = 30;

/// Steps accepted on either side of the current one, for clock skew between
/// the relay and the authenticator (the value RFC 6238 section 5.2 recommends).
const SKEW_STEPS: u64 = 1;

/// Bytes in a generated secret: 160 bits, the length RFC 4226 section 4
/// recommends.
const SECRET_BYTES: usize = 20;

/// Shortest secret accepted: 128 bits, the minimum of RFC 4226 section 4.
const MIN_SECRET_BYTES: usize = 16;

/// Minimum width and height of the QR code image, in SVG user units.
const QR_MIN_SIZE: u32 = 240;

/// A failed TOTP operation.
#[derive(Debug, Error)]
pub(crate) enum TotpError {
    /// The code is not exactly six ASCII digits.
    #[error("invalid TOTP code: expected exactly 6 digits")]
    Malformed,
    /// The code matches none of the accepted time steps.
    #[error("TOTP code does not match: enter the current code from the authenticator app")]
    Mismatch,
    /// The code matches a time step at or before the last one accepted.
    #[error("TOTP code for step {step} was already used: wait for the next code")]
    Replayed {
        /// The time step the code matched.
        step: u64,
    },
    /// The secret is shorter than RFC 4226 allows.
    #[error("TOTP secret has {bytes} bytes: at least 16 are required")]
    SecretTooShort {
        /// Length of the rejected secret.
        bytes: usize,
    },
    /// The issuer or account name cannot be put in an otpauth URI label.
    #[error("invalid {field} for the authenticator URI: it must be non-empty and contain no ':'")]
    InvalidLabel {
        /// `issuer` or `account name`.
        field: &'static str,
    },
    /// `totp-rs` rejected the parameters or failed to build the URI.
    #[error("failed to compute the TOTP value: {0}")]
    Totp(#[from] totp_rs::TotpError),
    /// The URI does not fit in a QR code.
    #[error("failed to draw the QR code: {0}")]
    QrCode(#[from] qrcode::types::QrError),
}

/// The shared TOTP secret of one account.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct TotpSecret(Box<[u8]>);

impl TotpSecret {
    /// Makes a new 160-bit secret from the OS random number generator.
    pub(crate) fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES].into_boxed_slice();
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        TotpSecret(bytes)
    }

    /// Wraps a stored secret, rejecting one shorter than 128 bits.
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Result<Self, TotpError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(TotpError::SecretTooShort { bytes: bytes.len() });
        }
        Ok(TotpSecret(bytes.as_slice().into()))
    }

    /// Returns the raw secret, for the store.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Encodes the secret as unpadded upper-case base32 (RFC 4648), the
    /// form users type into an authenticator app by hand.
    pub(crate) fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(base32::encode(
            base32::Alphabet::Rfc4648 { padding: false },
            &self.0,
        ))
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([redacted])")
    }
}

/// Builds the `otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=ISSUER` URI
/// that authenticator apps scan. It leaves out the algorithm, digits and
/// period parameters because their defaults are SHA1, 6 and 30.
///
/// The URI contains the secret, so it is returned zeroizing.
pub(crate) fn otpauth_uri(
    secret: &TotpSecret,
    issuer: &str,
    account: &str,
) -> Result<Zeroizing<String>, TotpError> {
    check_label("issuer", issuer)?;
    check_label("account name", account)?;
    let totp = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_step_duration(STEP_SECONDS)
        .with_secret(secret.as_bytes())
        .with_issuer(Some(issuer))
        .with_account_name(account)
        .build()?;
    Ok(Zeroizing::new(totp.to_url()?))
}

/// Draws `uri` as a QR code in a standalone SVG document.
///
/// NOTE: the QR encoder's intermediate buffers, which contain the URI, are
/// not zeroized.
pub(crate) fn qr_svg(uri: &str) -> Result<Zeroizing<String>, TotpError> {
    let code = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M)?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(QR_MIN_SIZE, QR_MIN_SIZE)
        .quiet_zone(true)
        .build();
    Ok(Zeroizing::new(image))
}

/// Checks `code` against the current time step and one step either side.
///
/// Returns the matched step, which the caller stores as the new
/// `last_used_step`: a code whose step is at or before `last_used_step` is
/// rejected as [`TotpError::Replayed`], so each code is accepted once.
pub(crate) fn verify(
    secret: &TotpSecret,
    code: &str,
    now_unix: u64,
    last_used_step: Option<u64>,
) -> Result<u64, TotpError> {
    if !is_well_formed(code) {
        return Err(TotpError::Malformed);
    }

    // Every step of the window is computed and compared in constant time,
    // so the time taken does not depend on which step, if any, matched.
    let current = now_unix / STEP_SECONDS;
    let mut matched = None;
    for step in current.saturating_sub(SKEW_STEPS)..=current.saturating_add(SKEW_STEPS) {
        let expected = code_at(
            secret.as_bytes(),
            Algorithm::SHA1,
            DIGITS,
            step.saturating_mul(STEP_SECONDS),
        )?;
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            matched = Some(step);
        }
    }

    let step = matched.ok_or(TotpError::Mismatch)?;
    if last_used_step.is_some_and(|last| step <= last) {
        return Err(TotpError::Replayed { step });
    }
    Ok(step)
}

/// Computes the code of the time step containing `unix_time` (RFC 6238
/// section 4), with the step length [`STEP_SECONDS`].
fn code_at(
    secret: &[u8],
    algorithm: Algorithm,
    digits: u8,
    unix_time: u64,
) -> Result<Zeroizing<String>, TotpError> {
    let totp = Builder::new()
        .with_algorithm(algorithm)
        .with_digits(digits)
        .with_step_duration(STEP_SECONDS)
        .with_secret(secret)
        .build()?;
    Ok(Zeroizing::new(totp.generate(unix_time).to_string()))
}

fn is_well_formed(code: &str) -> bool {
    code.len() == usize::from(DIGITS) && code.bytes().all(|byte| byte.is_ascii_digit())
}

fn check_label(field: &'static str, value: &str) -> Result<(), TotpError> {
    if value.is_empty() || value.contains(':') {
        return Err(TotpError::InvalidLabel { field });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds of RFC 6238 appendix B: the ASCII digits "1234567890"
    /// repeated to the hash's output length.
    const SEED_SHA1: &[u8] = b"12345678901234567890";
    const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
    const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    /// RFC 6238 appendix B: time, then the 8-digit codes for SHA1, SHA256
    /// and SHA512.
    const RFC_6238_VECTORS: &[(u64, &str, &str, &str)] = &[
        (59, "94287082", "46119246", "90693936"),
        (1_111_111_109, "07081804", "68084774", "25091201"),
        (1_111_111_111, "14050471", "67062674", "99943326"),
        (1_234_567_890, "89005924", "91819424", "93441116"),
        (2_000_000_000, "69279037", "90698825", "38618901"),
        (20_000_000_000, "65353130", "77737706", "47863826"),
    ];

    /// A fixed time in the middle of step 50_000_000.
    const NOW: u64 = 50_000_000 * STEP_SECONDS + 15;

    fn code(secret: &TotpSecret, unix_time: u64) -> String {
        code_at(secret.as_bytes(), Algorithm::SHA1, DIGITS, unix_time)
            .unwrap()
            .to_string()
    }

    #[test]
    fn rfc_6238_vectors_sha1() {
        for &(time, expected, _, _) in RFC_6238_VECTORS {
            let actual = code_at(SEED_SHA1, Algorithm::SHA1, 8, time).unwrap();
            assert_eq!(actual.as_str(), expected, "SHA1 at {time}");
        }
    }

    #[test]
    fn rfc_6238_vectors_sha256() {
        for &(time, _, expected, _) in RFC_6238_VECTORS {
            let actual = code_at(SEED_SHA256, Algorithm::SHA256, 8, time).unwrap();
            assert_eq!(actual.as_str(), expected, "SHA256 at {time}");
        }
    }

    #[test]
    fn rfc_6238_vectors_sha512() {
        for &(time, _, _, expected) in RFC_6238_VECTORS {
            let actual = code_at(SEED_SHA512, Algorithm::SHA512, 8, time).unwrap();
            assert_eq!(actual.as_str(), expected, "SHA512 at {time}");
        }
    }

    #[test]
    fn current_code_accepted() {
        let secret = TotpSecret::generate();
        let step = verify(&secret, &code(&secret, NOW), NOW, None).unwrap();
        assert_eq!(step, NOW / STEP_SECONDS);
    }

    #[test]
    fn skew_window_is_one_step() {
        let secret = TotpSecret::generate();
        let current = NOW / STEP_SECONDS;

        let previous = code(&secret, NOW - STEP_SECONDS);
        assert_eq!(verify(&secret, &previous, NOW, None).unwrap(), current - 1);

        let next = code(&secret, NOW + STEP_SECONDS);
        assert_eq!(verify(&secret, &next, NOW, None).unwrap(), current + 1);

        for offset in [2 * STEP_SECONDS, 10 * STEP_SECONDS] {
            let late = code(&secret, NOW - offset);
            let early = code(&secret, NOW + offset);
            // A random secret can give an out-of-window step the same code
            // as a step in the window; skip those rare cases.
            let window: Vec<String> = (0..3)
                .map(|i| code(&secret, NOW - STEP_SECONDS + i * STEP_SECONDS))
                .collect();
            if !window.contains(&late) {
                let result = verify(&secret, &late, NOW, None);
                assert!(matches!(result, Err(TotpError::Mismatch)), "{result:?}");
            }
            if !window.contains(&early) {
                let result = verify(&secret, &early, NOW, None);
                assert!(matches!(result, Err(TotpError::Mismatch)), "{result:?}");
            }
        }
    }

    #[test]
    fn window_at_time_zero() {
        let secret = TotpSecret::from_bytes(SEED_SHA1.to_vec()).unwrap();
        assert_eq!(verify(&secret, &code(&secret, 0), 0, None).unwrap(), 0);
        assert_eq!(verify(&secret, &code(&secret, 30), 0, None).unwrap(), 1);
    }

    #[test]
    fn replayed_code_rejected() {
        let secret = TotpSecret::generate();
        let current_code = code(&secret, NOW);
        let step = verify(&secret, &current_code, NOW, None).unwrap();

        let again = verify(&secret, &current_code, NOW, Some(step));
        assert!(matches!(again, Err(TotpError::Replayed { step: s }) if s == step));

        let previous = code(&secret, NOW - STEP_SECONDS);
        if previous != current_code {
            let older = verify(&secret, &previous, NOW, Some(step));
            assert!(
                matches!(older, Err(TotpError::Replayed { .. })),
                "{older:?}"
            );
        }

        let next = code(&secret, NOW + STEP_SECONDS);
        assert_eq!(verify(&secret, &next, NOW, Some(step)).unwrap(), step + 1);
    }

    #[test]
    fn malformed_codes_rejected() {
        let secret = TotpSecret::generate();
        let valid = code(&secret, NOW);
        let cases = [
            String::new(),
            "12345".to_owned(),
            "1234567".to_owned(),
            "12345a".to_owned(),
            " 123456".to_owned(),
            "123 456".to_owned(),
            "+12345".to_owned(),
            "١٢٣٤٥٦".to_owned(),
            format!("{valid}\n"),
            format!("{valid}0"),
        ];
        for case in cases {
            let result = verify(&secret, &case, NOW, None);
            assert!(
                matches!(result, Err(TotpError::Malformed)),
                "{case:?}: {result:?}"
            );
        }
    }

    #[test]
    fn wrong_code_rejected() {
        let secret = TotpSecret::generate();
        let window: Vec<String> = (0..3)
            .map(|i| code(&secret, NOW - STEP_SECONDS + i * STEP_SECONDS))
            .collect();
        let wrong = (0..1_000_000)
            .map(|n| format!("{n:06}"))
            .find(|candidate| !window.contains(candidate))
            .unwrap();
        let result = verify(&secret, &wrong, NOW, None);
        assert!(matches!(result, Err(TotpError::Mismatch)), "{result:?}");

        let other = TotpSecret::generate();
        let other_code = code(&other, NOW);
        if !window.contains(&other_code) {
            let result = verify(&secret, &other_code, NOW, None);
            assert!(matches!(result, Err(TotpError::Mismatch)), "{result:?}");
        }
    }

    #[test]
    fn secret_length_checked() {
        assert_eq!(TotpSecret::generate().as_bytes().len(), SECRET_BYTES);
        assert_ne!(
            TotpSecret::generate().as_bytes(),
            TotpSecret::generate().as_bytes()
        );

        let short = TotpSecret::from_bytes(vec![7; 15]);
        assert!(matches!(
            short,
            Err(TotpError::SecretTooShort { bytes: 15 })
        ));

        let minimal = TotpSecret::from_bytes(vec![7; 16]).unwrap();
        assert_eq!(minimal.as_bytes(), &[7; 16]);
    }

    #[test]
    fn secret_base32() {
        let secret = TotpSecret::from_bytes(SEED_SHA1.to_vec()).unwrap();
        assert_eq!(
            secret.to_base32().as_str(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        let secret = TotpSecret::from_bytes(SEED_SHA1.to_vec()).unwrap();
        assert_eq!(format!("{secret:?}"), "TotpSecret([redacted])");
    }

    #[test]
    fn otpauth_uri_round_trips() {
        let secret = TotpSecret::generate();
        let uri = otpauth_uri(&secret, "sealcast clinic", "dr.ada@clinic.example").unwrap();

        let prefix = "otpauth://totp/sealcast%20clinic:dr.ada%40clinic.example?";
        assert!(uri.starts_with(prefix), "{}", uri.as_str());
        assert!(uri.contains(&format!("secret={}", secret.to_base32().as_str())));
        assert!(uri.contains("issuer=sealcast%20clinic"));

        let parsed = totp_rs::Totp::from_url(uri.as_str()).unwrap();
        assert_eq!(parsed.algorithm(), Algorithm::SHA1);
        assert_eq!(parsed.digits(), 6);
        assert_eq!(parsed.step(), 30);
        assert_eq!(parsed.issuer(), Some("sealcast clinic"));
        assert_eq!(parsed.account_name(), "dr.ada@clinic.example");
        assert_eq!(parsed.secret().as_bytes(), secret.as_bytes());
        assert_eq!(parsed.generate(NOW).to_string(), code(&secret, NOW));
    }

    #[test]
    fn otpauth_uri_rejects_bad_labels() {
        let secret = TotpSecret::generate();
        let cases = [
            ("", "ada@clinic.example", "issuer"),
            ("sealcast:clinic", "ada@clinic.example", "issuer"),
            ("sealcast", "", "account name"),
            ("sealcast", "ada:x@clinic.example", "account name"),
        ];
        for (issuer, account, field) in cases {
            let result = otpauth_uri(&secret, issuer, account);
            assert!(
                matches!(result, Err(TotpError::InvalidLabel { field: f }) if f == field),
                "{issuer:?} {account:?}: {result:?}"
            );
        }
    }

    #[test]
    fn qr_svg_is_an_svg_document() {
        let secret = TotpSecret::generate();
        let uri = otpauth_uri(&secret, "sealcast", "ada@clinic.example").unwrap();
        let image = qr_svg(&uri).unwrap();
        assert!(image.contains("<svg"), "{}", image.as_str());
        assert!(image.ends_with("</svg>"));
        assert!(image.contains("<path"));
    }

    #[test]
    fn qr_svg_rejects_oversized_data() {
        let result = qr_svg(&"x".repeat(8_000));
        assert!(matches!(result, Err(TotpError::QrCode(_))), "{result:?}");
    }
}
