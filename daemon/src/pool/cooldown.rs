//! What an [`Outcome`] costs the account that produced it: the cooldown half of docs/design.md §3.
//! The numbers live here and nowhere else.

use std::time::Duration;

use crate::outcome::Outcome;

/// Longest a 429 benches an account, however large `retry-after` or the backoff grows: a quota
/// window of days is re-probed within 10 minutes instead of leaving the account benched.
pub const RATE_LIMIT_CAP: Duration = Duration::from_secs(600);
/// 429 without `retry-after` starts from this.
pub const RATE_LIMIT_BASE: Duration = Duration::from_secs(1);
/// 401/402/403 bench the account this long.
pub const AUTH_COOLDOWN: Duration = Duration::from_secs(300);

/// What to do to the account's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Success: clear the backoff level.
    Reset,
    /// Bench for this long; `escalate` raises the backoff level afterwards.
    Cool { duration: Duration, escalate: bool },
    /// Leave health as it is.
    None,
}

/// The cooldown rule for `outcome` given the account's current backoff `level`.
pub fn effect(outcome: &Outcome, level: u32) -> Effect {
    match outcome {
        Outcome::Success => Effect::Reset,
        Outcome::RateLimited { retry_after } => Effect::Cool {
            duration: rate_limit_cooldown(*retry_after, level),
            escalate: true,
        },
        Outcome::AuthRejected { .. } => Effect::Cool {
            duration: AUTH_COOLDOWN,
            escalate: false,
        },
        Outcome::PolicyRejected
        | Outcome::OutOfCredits { .. }
        | Outcome::Unretryable { .. }
        | Outcome::Transient { .. }
        | Outcome::Network { .. }
        | Outcome::EmptyStream => Effect::None,
    }
}

/// `base * 2^level`, base = `retry-after` or 1 s, capped at 10 minutes.
pub fn rate_limit_cooldown(retry_after: Option<Duration>, level: u32) -> Duration {
    let base = retry_after.unwrap_or(RATE_LIMIT_BASE);
    let factor = 1u32.checked_shl(level.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor)
        .unwrap_or(RATE_LIMIT_CAP)
        .min(RATE_LIMIT_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_retry_after_or_one_second_to_ten_minutes() {
        assert_eq!(rate_limit_cooldown(None, 0), Duration::from_secs(1));
        assert_eq!(rate_limit_cooldown(None, 1), Duration::from_secs(2));
        assert_eq!(rate_limit_cooldown(None, 9), Duration::from_secs(512));
        assert_eq!(rate_limit_cooldown(None, 10), Duration::from_secs(600));
        assert_eq!(rate_limit_cooldown(None, 63), Duration::from_secs(600));
        assert_eq!(
            rate_limit_cooldown(Some(Duration::from_secs(7)), 0),
            Duration::from_secs(7)
        );
        assert_eq!(
            rate_limit_cooldown(Some(Duration::from_secs(7)), 2),
            Duration::from_secs(28)
        );
        // Days of retry-after are capped, so the account is probed again within 10 minutes.
        assert_eq!(
            rate_limit_cooldown(Some(Duration::from_secs(3 * 86_400)), 0),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn effects_follow_the_policy_table() {
        assert_eq!(effect(&Outcome::Success, 4), Effect::Reset);
        assert_eq!(
            effect(&Outcome::AuthRejected { status: 403 }, 3),
            Effect::Cool {
                duration: Duration::from_secs(300),
                escalate: false
            }
        );
        assert_eq!(effect(&Outcome::PolicyRejected, 0), Effect::None);
        assert_eq!(effect(&Outcome::Transient { status: 529 }, 0), Effect::None);
        assert_eq!(effect(&Outcome::EmptyStream, 0), Effect::None);
    }
}
