//! Time as people read it: RFC 3339 for files and the wire, short relative spans for screens.
//! Instants are Unix milliseconds (`u64`), like everywhere in the daemon.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds.
pub type Millis = u64;

/// The last instant RFC 3339 can write (9999-12-31T23:59:59.999Z). API keys "expire" at
/// `Number.MAX_SAFE_INTEGER` ms, far beyond it.
const MAX_RFC3339_MS: Millis = 253_402_300_799_999;

/// The wall clock now.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 text for a Unix-ms instant (clamped to year 9999), with milliseconds.
///
/// Every proxied request stamps its log record with this, so the calendar part is worked out
/// once per second per thread and kept: only the milliseconds are written each time.
pub fn rfc3339(ms: Millis) -> String {
    /// `YYYY-MM-DDTHH:MM:SS`: the part before the milliseconds.
    const PREFIX: usize = 19;
    thread_local! {
        /// The last second formatted on this thread, and its text.
        static LAST: std::cell::RefCell<(Millis, String)> =
            const { std::cell::RefCell::new((Millis::MAX, String::new())) };
    }
    let ms = ms.min(MAX_RFC3339_MS);
    let (secs, milli) = (ms / 1000, ms % 1000);
    LAST.with_borrow_mut(|(last, prefix)| {
        if *last != secs || prefix.len() != PREFIX {
            let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
            *prefix = whole.to_string();
            prefix.truncate(PREFIX);
            *last = secs;
        }
        let mut out = String::with_capacity(PREFIX + 5);
        out.push_str(prefix);
        out.push('.');
        for d in [milli / 100, milli / 10 % 10, milli % 10] {
            // `d` is one decimal digit.
            out.push(char::from(b'0' + d as u8));
        }
        out.push('Z');
        out
    })
}

/// The Unix-ms instant of RFC 3339 text (`None` when it does not parse).
pub fn parse_rfc3339(text: &str) -> Option<Millis> {
    let t = humantime::parse_rfc3339_weak(text.trim()).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
}

/// A span in its two largest units: `45s`, `3m 20s`, `2h 05m`, `3d 4h`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `then` relative to `now`: `in 3m 20s`, `2h 05m ago`, `now`.
pub fn relative(then: Millis, now: Millis) -> String {
    if then.abs_diff(now) < 1000 {
        return "now".into();
    }
    if then > now {
        format!("in {}", span(Duration::from_millis(then - now)))
    } else {
        format!("{} ago", span(Duration::from_millis(now - then)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_clamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            parse_rfc3339("2026-12-01T12:00:03.114Z"),
            Some(1_796_126_403_114)
        );
        assert_eq!(
            parse_rfc3339(&rfc3339(1_796_126_403_114)),
            Some(1_796_126_403_114)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn rfc3339_matches_humantime_across_seconds() {
        // The cached calendar part must never leak into another second, on any path.
        let base = 1_796_126_403_000;
        for ms in (base - 2_500..base + 2_500).step_by(7).chain([
            0,
            999,
            1_000,
            59_999,
            86_399_999,
            MAX_RFC3339_MS,
        ]) {
            let expected = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms))
                .to_string();
            assert_eq!(rfc3339(ms), expected, "{ms}");
        }
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(Duration::from_secs(45)), "45s");
        assert_eq!(span(Duration::from_secs(200)), "3m 20s");
        assert_eq!(span(Duration::from_secs(7500)), "2h 05m");
        assert_eq!(span(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
        assert_eq!(relative(10_000, 10_400), "now");
        assert_eq!(relative(210_000, 10_000), "in 3m 20s");
        assert_eq!(relative(10_000, 7_510_000), "2h 05m ago");
    }
}
