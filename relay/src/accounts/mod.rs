//! Staff accounts: TOTP second factor, recovery codes and sign-in mail.

pub(crate) mod mail;
pub(crate) mod recovery;
pub(crate) mod totp;
