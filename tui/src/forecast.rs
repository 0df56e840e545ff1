//! Will the quota last? A pace forecast per OAuth account and window (5 h, 7 d), from the unified
//! quota headers the daemon reports: utilisation (0.0-1.0) and the window's reset time.
//!
//! # The formula
//! - The window started `length` before it resets: `elapsed = (now - (reset - length)) / length`.
//! - The burn rate `r` (utilisation per millisecond) is the slope over the recent samples (the
//!   first and last seen in the last [`RECENT`]), when they span at least [`MIN_SPAN`] and rose;
//!   otherwise the average since the window started, `used / (now - start)`.
//! - Projected at reset: `used + r * (reset - now)`. Below 1.0 the account is **on pace**.
//!   Otherwise it **reaches 100 %** at `now + (1 - used) / r`, that long before the reset.
//! - For the pool: headroom is the sum of `1 - used` over the accounts, the total burn the sum
//!   of their rates; the headroom lasts `headroom / total burn` at the current pace.

use std::time::Duration;

use neurolink_shared::time::Millis;

/// Samples older than this do not shape the current burn rate.
pub const RECENT: Duration = Duration::from_secs(15 * 60);
/// Recent samples must span at least this long to be a rate.
pub const MIN_SPAN: Duration = Duration::from_secs(60);

pub const FIVE_HOURS: Duration = Duration::from_secs(5 * 3600);
pub const SEVEN_DAYS: Duration = Duration::from_secs(7 * 86_400);

/// One quota window as last reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// 0.0-1.0.
    pub used: f64,
    pub reset_at_ms: Millis,
    pub length: Duration,
}

/// The verdict for one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Nothing known yet, or the window already reset.
    Unknown,
    /// Stays under 100 % until it resets; `at_reset` is the projected utilisation then.
    OnPace { at_reset: f64 },
    /// Reaches 100 % at `at_ms`, `before_reset` ahead of the reset.
    Exhausts {
        at_ms: Millis,
        before_reset: Duration,
    },
}

/// The burn rate of a window in utilisation per millisecond (see the module docs).
pub fn burn_rate(window: &Window, samples: &[(Millis, f64)], now: Millis) -> f64 {
    let recent: Vec<&(Millis, f64)> = samples
        .iter()
        .filter(|(t, _)| now.saturating_sub(*t) <= RECENT.as_millis() as u64)
        .collect();
    if let (Some(first), Some(last)) = (recent.first(), recent.last()) {
        let span = last.0.saturating_sub(first.0);
        if span >= MIN_SPAN.as_millis() as u64 && last.1 >= first.1 {
            return (last.1 - first.1) / span as f64;
        }
    }
    let start = window
        .reset_at_ms
        .saturating_sub(window.length.as_millis() as u64);
    let elapsed = now.saturating_sub(start);
    if elapsed == 0 {
        return 0.0;
    }
    window.used.max(0.0) / elapsed as f64
}

/// The forecast for `window` at `now`, from its `samples` (time, utilisation), oldest first.
pub fn forecast(window: &Window, samples: &[(Millis, f64)], now: Millis) -> Pace {
    if window.reset_at_ms <= now {
        return Pace::Unknown;
    }
    let rate = burn_rate(window, samples, now);
    let left = window.reset_at_ms - now;
    if window.used >= 1.0 {
        return Pace::Exhausts {
            at_ms: now,
            before_reset: Duration::from_millis(left),
        };
    }
    let at_reset = window.used + rate * left as f64;
    if at_reset < 1.0 || rate <= 0.0 {
        return Pace::OnPace { at_reset };
    }
    let to_full = ((1.0 - window.used) / rate).round() as u64;
    Pace::Exhausts {
        at_ms: now + to_full,
        before_reset: Duration::from_millis(left.saturating_sub(to_full)),
    }
}

/// How long the pool's headroom lasts at the current total burn (`None`: nothing burns).
/// `windows` are `(used, rate)` pairs, one per account.
pub fn pool_headroom(windows: &[(f64, f64)]) -> (f64, Option<Duration>) {
    let headroom: f64 = windows.iter().map(|(u, _)| (1.0 - u).max(0.0)).sum();
    let burn: f64 = windows.iter().map(|(_, r)| r.max(0.0)).sum();
    let lasts = (burn > 0.0).then(|| Duration::from_millis((headroom / burn).round() as u64));
    (headroom, lasts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;
    const M: u64 = 60_000;

    fn five_hour(used: f64, reset_in: u64, now: Millis) -> Window {
        Window {
            used,
            reset_at_ms: now + reset_in,
            length: FIVE_HOURS,
        }
    }

    #[test]
    fn the_average_since_the_window_started_when_there_are_no_recent_samples() {
        let now = 100 * H;
        // 2 h into a 5 h window at 40 %: 20 % an hour.
        let w = five_hour(0.4, 3 * H, now);
        assert!((burn_rate(&w, &[], now) - 0.2 / H as f64).abs() < 1e-15);
        // 50 % after 2 h: 25 % an hour, full 2 h from now, 1 h before the reset.
        let w = five_hour(0.5, 3 * H, now);
        assert_eq!(
            forecast(&w, &[], now),
            Pace::Exhausts {
                at_ms: now + 2 * H,
                before_reset: Duration::from_millis(H)
            }
        );
    }

    #[test]
    fn recent_samples_give_the_current_pace() {
        let now = 100 * H;
        // 10 % over the last 10 minutes: 1 % a minute; 30 % used -> full in 70 min, and the
        // window resets in 4 h: 2 h 50 min before it.
        let w = five_hour(0.3, 4 * H, now);
        let samples = [(now - 10 * M, 0.2), (now - 5 * M, 0.25), (now, 0.3)];
        match forecast(&w, &samples, now) {
            Pace::Exhausts {
                at_ms,
                before_reset,
            } => {
                assert_eq!(at_ms, now + 70 * M);
                assert_eq!(before_reset, Duration::from_millis(4 * H - 70 * M));
            }
            other => panic!("{other:?}"),
        }
        // Flat for the last 10 minutes: on pace, staying at 30 %.
        let flat = [(now - 10 * M, 0.3), (now, 0.3)];
        assert_eq!(forecast(&w, &flat, now), Pace::OnPace { at_reset: 0.3 });
    }

    #[test]
    fn old_or_short_samples_fall_back_to_the_average() {
        let now = 100 * H;
        let w = five_hour(0.1, 4 * H, now);
        // One hour in at 10 %: 10 %/h, 4 h left -> 50 % at reset.
        let old = [(now - 2 * H, 0.0), (now - 90 * M, 0.05)];
        let short = [(now - 30_000, 0.09), (now, 0.1)];
        for s in [&old[..], &short[..]] {
            match forecast(&w, s, now) {
                Pace::OnPace { at_reset } => assert!((at_reset - 0.5).abs() < 1e-9, "{at_reset}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_full_or_reset_window() {
        let now = 100 * H;
        assert_eq!(
            forecast(&five_hour(1.0, H, now), &[], now),
            Pace::Exhausts {
                at_ms: now,
                before_reset: Duration::from_millis(H)
            }
        );
        let reset = Window {
            used: 0.5,
            reset_at_ms: now - 1,
            length: FIVE_HOURS,
        };
        assert_eq!(forecast(&reset, &[], now), Pace::Unknown);
    }

    #[test]
    fn pool_headroom_adds_up_accounts() {
        let per_hour = 0.1 / H as f64;
        // 0.6 + 0.2 left, burning 10 % + 10 % an hour: 4 hours.
        let (headroom, lasts) = pool_headroom(&[(0.4, per_hour), (0.8, per_hour)]);
        assert!((headroom - 0.8).abs() < 1e-9);
        assert_eq!(lasts, Some(Duration::from_millis(4 * H)));
        assert_eq!(pool_headroom(&[(0.4, 0.0)]).1, None);
    }
}
