//! Rate limits of the routes that take a credential or an email address:
//! one budget per client address and one per account, both with
//! `governor`'s keyed GCRA limiter.
//!
//! The account budget is small, so guessing one account's second factor
//! or flooding one mailbox with sign-in links is slow from any number of
//! addresses. The address budget is larger because a clinic's staff may
//! share one address behind its router.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::invites::limiter::ClientLimiter;

/// Requests one address may send at once to the account routes.
pub(crate) const IP_BURST: u32 = 60;
/// Requests per minute one address may send once its burst is used.
pub(crate) const IP_PER_MINUTE: u32 = 60;
/// Requests about one account that may come at once.
pub(crate) const ACCOUNT_BURST: u32 = 10;
/// Requests per minute about one account once its burst is used.
pub(crate) const ACCOUNT_PER_MINUTE: u32 = 2;

/// Accounts tracked at once; past it, idle entries are dropped, and while
/// that leaves it full, requests are refused.
const MAX_TRACKED_ACCOUNTS: usize = 100_000;

/// Wait suggested while the table of tracked accounts is full.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The two budgets.
pub(crate) struct AccountLimits {
    by_ip: ClientLimiter,
    by_account: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for AccountLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountLimits")
            .field("tracked_accounts", &self.by_account.len())
            .finish_non_exhaustive()
    }
}

impl Default for AccountLimits {
    fn default() -> Self {
        AccountLimits {
            by_ip: ClientLimiter::with_quota(per_minute(IP_PER_MINUTE, IP_BURST)),
            by_account: DefaultKeyedRateLimiter::dashmap(per_minute(
                ACCOUNT_PER_MINUTE,
                ACCOUNT_BURST,
            )),
            clock: DefaultClock::default(),
        }
    }
}

fn per_minute(rate: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rate).allow_burst(burst)
}

/// The budget a request exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitScope {
    /// The client address's budget.
    Ip,
    /// The account's budget.
    Account,
}

impl LimitScope {
    /// Returns the metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            LimitScope::Ip => "ip",
            LimitScope::Account => "account",
        }
    }
}

impl AccountLimits {
    /// Counts one request from `client`.
    pub(crate) fn check_ip(&self, client: IpAddr) -> Result<(), Duration> {
        self.by_ip.check(client)
    }

    /// Counts one request about `account`, such as a normalized email
    /// address or a user id.
    pub(crate) fn check_account(&self, account: &str) -> Result<(), Duration> {
        if self.by_account.len() >= MAX_TRACKED_ACCOUNTS {
            self.by_account.retain_recent();
            if self.by_account.len() >= MAX_TRACKED_ACCOUNTS {
                return Err(FULL_RETRY_AFTER);
            }
        }
        self.by_account
            .check_key(&account.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Drops idle entries of both budgets.
    pub(crate) fn sweep(&self) {
        self.by_ip.sweep();
        self.by_account.retain_recent();
        self.by_account.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_budget_runs_out() {
        let limits = AccountLimits::default();
        for _ in 0..ACCOUNT_BURST {
            assert!(limits.check_account("a@clinic.example").is_ok());
        }
        let wait = limits.check_account("a@clinic.example").unwrap_err();
        assert!(wait > Duration::ZERO);
        assert!(limits.check_account("b@clinic.example").is_ok());
    }
}
