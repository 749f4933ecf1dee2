//! `Debug` output for values that must never reach a log: transcript text,
//! email addresses and device names. Types that hold them print
//! [`Redacted`] in their place.

use std::fmt;

/// Stands in for a redacted value in `Debug` output, printing `[redacted]`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_marker_without_quotes() {
        assert_eq!(format!("{:?}", Redacted), "[redacted]");
    }
}
