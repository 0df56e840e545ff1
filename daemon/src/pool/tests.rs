//! Every row of docs/design.md §3's table, with time moved by hand.

use std::time::Duration;

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::outcome::NetworkKind;

fn key(label: &str) -> AccountSpec {
    let credential = Credential::api_key(Secret::new(format!("sk-{label}")));
    AccountSpec::new(label, Source::Config, credential)
}

fn pool(labels: &[&str], strategy: Strategy) -> Pool {
    Pool::new(labels.iter().map(|l| key(l)).collect(), strategy)
}

const T0: Millis = 1_700_000_000_000;

fn rate_limited(secs: Option<u64>) -> Outcome {
    Outcome::RateLimited {
        retry_after: secs.map(Duration::from_secs),
    }
}

#[test]
fn fill_first_sticks_to_the_first_healthy_account() {
    let mut p = pool(&["a", "b", "c"], Strategy::FillFirst);
    for _ in 0..3 {
        assert_eq!(p.pick(T0, None, &[]), Pick::Use(0));
    }
    assert_eq!(p.pick(T0, None, &[0]), Pick::Use(1));
}

#[test]
fn round_robin_rotates_and_honours_weights() {
    let mut p = pool(&["a", "b", "c"], Strategy::RoundRobin);
    let order: Vec<_> = (0..6).map(|_| p.pick(T0, None, &[])).collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2].map(Pick::Use));

    let mut specs = vec![key("heavy"), key("light")];
    specs[0].weight = 3;
    let mut p = Pool::new(specs, Strategy::RoundRobin);
    let picks: Vec<_> = (0..8).map(|_| p.pick(T0, None, &[])).collect();
    let heavy = picks.iter().filter(|x| **x == Pick::Use(0)).count();
    assert_eq!(heavy, 6, "3:1 weights over 8 picks: {picks:?}");
    // Smooth: the light account is not starved into a run at the end.
    assert_eq!(picks[..4].iter().filter(|x| **x == Pick::Use(1)).count(), 1);
}

#[test]
fn success_resets_the_backoff_level() {
    let mut p = pool(&["a"], Strategy::FillFirst);
    p.report(0, &rate_limited(None), T0);
    p.report(0, &rate_limited(None), T0 + 2_000);
    assert_eq!(p.accounts()[0].health.backoff_level, 2);
    p.report(0, &Outcome::Success, T0 + 10_000);
    assert_eq!(p.accounts()[0].health.backoff_level, 0);
    p.report(0, &rate_limited(None), T0 + 20_000);
    assert_eq!(
        p.accounts()[0].health.cooldown_until,
        Some(T0 + 20_000 + 1_000)
    );
}

#[test]
fn rate_limit_cools_with_retry_after_then_doubles() {
    let clock = ManualClock::at(T0);
    let mut p = pool(&["a", "b"], Strategy::FillFirst);
    p.report(0, &rate_limited(Some(5)), clock.now_ms());
    assert_eq!(
        p.state(0, clock.now_ms()),
        State::Cooling { until: T0 + 5_000 }
    );
    assert_eq!(p.pick(clock.now_ms(), None, &[]), Pick::Use(1));
    clock.advance(Duration::from_millis(4_999));
    assert_eq!(p.pick(clock.now_ms(), None, &[]), Pick::Use(1));
    clock.advance(Duration::from_millis(1));
    assert_eq!(p.pick(clock.now_ms(), None, &[]), Pick::Use(0));
    // Second 429 in a row: level 1 doubles the base.
    p.report(0, &rate_limited(Some(5)), clock.now_ms());
    assert_eq!(
        p.accounts()[0].health.cooldown_until,
        Some(clock.now_ms() + 10_000)
    );
    // Without retry-after the base is 1 s: level 2 -> 4 s.
    p.report(0, &rate_limited(None), clock.now_ms());
    assert_eq!(
        p.accounts()[0].health.cooldown_until,
        Some(clock.now_ms() + 4_000)
    );
}

#[test]
fn rate_limit_of_days_is_capped_at_ten_minutes() {
    let clock = ManualClock::at(T0);
    let mut p = pool(&["a"], Strategy::FillFirst);
    p.report(0, &rate_limited(Some(7 * 86_400)), clock.now_ms());
    assert_eq!(
        p.state(0, clock.now_ms()),
        State::Cooling {
            until: T0 + 600_000
        }
    );
    clock.advance(Duration::from_secs(600));
    assert_eq!(
        p.pick(clock.now_ms(), None, &[]),
        Pick::Use(0),
        "tried again after 10 min"
    );
}

#[test]
fn auth_failures_bench_for_five_minutes_without_escalating() {
    for status in [401, 402, 403] {
        let clock = ManualClock::at(T0);
        let mut p = pool(&["a", "b"], Strategy::FillFirst);
        p.report(0, &Outcome::AuthRejected { status }, clock.now_ms());
        assert_eq!(
            p.state(0, clock.now_ms()),
            State::Cooling {
                until: T0 + 300_000
            }
        );
        assert_eq!(p.accounts()[0].health.backoff_level, 0);
        clock.advance(Duration::from_secs(299));
        assert_eq!(p.pick(clock.now_ms(), None, &[]), Pick::Use(1));
        clock.advance(Duration::from_secs(1));
        assert_eq!(p.pick(clock.now_ms(), None, &[]), Pick::Use(0));
    }
}

#[test]
fn answers_for_the_client_and_transient_errors_do_not_cool() {
    let outcomes = [
        Outcome::Unretryable { status: 404 },
        Outcome::Unretryable { status: 400 },
        Outcome::PolicyRejected,
        Outcome::Transient { status: 529 },
        Outcome::Transient { status: 500 },
        Outcome::Network {
            kind: NetworkKind::Timeout,
        },
        Outcome::EmptyStream,
    ];
    for o in outcomes {
        let mut p = pool(&["a", "b"], Strategy::FillFirst);
        p.report(0, &o, T0);
        assert_eq!(p.state(0, T0), State::Active, "{o:?}");
        assert_eq!(p.accounts()[0].health.backoff_level, 0, "{o:?}");
        // Within the same request a transient failure moves on; the next request starts over.
        assert_eq!(p.pick(T0, None, &[0]), Pick::Use(1));
        assert_eq!(p.pick(T0, None, &[]), Pick::Use(0));
    }
}

#[test]
fn all_cooling_reports_the_earliest_recovery() {
    let mut p = pool(&["a", "b"], Strategy::RoundRobin);
    p.report(0, &rate_limited(Some(30)), T0);
    p.report(1, &rate_limited(Some(12)), T0 + 1_000);
    assert_eq!(
        p.pick(T0 + 2_000, None, &[]),
        Pick::Unavailable {
            retry_after_ms: Some(11_000),
            auth_only: false
        }
    );
}

#[test]
fn all_refused_is_told_apart_from_all_rate_limited() {
    let mut p = pool(&["a", "b"], Strategy::FillFirst);
    p.report(0, &Outcome::AuthRejected { status: 401 }, T0);
    p.report(1, &Outcome::AuthRejected { status: 403 }, T0);
    assert!(matches!(
        p.pick(T0 + 1, None, &[]),
        Pick::Unavailable {
            auth_only: true,
            ..
        }
    ));
    p.report(1, &rate_limited(Some(1)), T0);
    assert!(matches!(
        p.pick(T0 + 1, None, &[]),
        Pick::Unavailable {
            auth_only: false,
            ..
        }
    ));
}

#[test]
fn a_model_no_enabled_account_serves_is_excluded() {
    let mut specs = vec![key("a"), key("b"), key("off")];
    specs[0].excluded_models = vec!["claude-opus-*".into()];
    specs[1].excluded_models = vec!["claude-opus-4-*".into(), "claude-haiku-*".into()];
    specs[2].disabled = Some("x".into());
    let mut p = Pool::new(specs, Strategy::FillFirst);
    assert_eq!(
        p.pick(T0, Some("claude-opus-4-1"), &[]),
        Pick::Excluded {
            patterns: vec!["claude-opus-*".into(), "claude-opus-4-*".into()]
        }
    );
    assert_eq!(p.pick(T0, Some("claude-sonnet-4-5"), &[]), Pick::Use(0));
}

#[test]
fn tried_accounts_are_exhausted_not_unavailable() {
    let mut p = pool(&["a", "b"], Strategy::FillFirst);
    assert_eq!(p.pick(T0, None, &[0, 1]), Pick::Exhausted);
    assert_eq!(
        Pool::new(Vec::new(), Strategy::FillFirst).pick(T0, None, &[]),
        Pick::NoAccounts
    );
}

#[test]
fn disabled_accounts_are_never_picked() {
    let mut specs = vec![key("off"), key("on")];
    specs[0].disabled = Some("enabled: false in config".into());
    let mut p = Pool::new(specs, Strategy::FillFirst);
    assert_eq!(p.pick(T0, None, &[]), Pick::Use(1));
    assert_eq!(p.state(0, T0), State::Disabled);
    let mut only_off = Pool::new(
        vec![AccountSpec {
            disabled: Some("x".into()),
            ..key("off")
        }],
        Strategy::FillFirst,
    );
    assert_eq!(
        only_off.pick(T0, None, &[]),
        Pick::Unavailable {
            retry_after_ms: None,
            auth_only: false
        }
    );
}

#[test]
fn excluded_models_keep_an_account_out() {
    let mut specs = vec![key("no-opus"), key("any")];
    specs[0].excluded_models = vec!["claude-opus-*".into()];
    let mut p = Pool::new(specs, Strategy::FillFirst);
    assert_eq!(p.pick(T0, Some("claude-opus-4-1"), &[]), Pick::Use(1));
    assert_eq!(p.pick(T0, Some("claude-sonnet-4-5"), &[]), Pick::Use(0));
}

#[test]
fn counters_track_attempts_errors_and_tokens() {
    let mut p = pool(&["a"], Strategy::FillFirst);
    p.begin(0);
    p.report(0, &Outcome::Transient { status: 503 }, T0);
    p.begin(0);
    p.report(0, &Outcome::Success, T0);
    p.add_usage(
        0,
        Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        },
    );
    let c = &p.accounts()[0].counters;
    assert_eq!(
        (c.requests, c.successes, c.errors["server_error"]),
        (2, 1, 1)
    );
    assert_eq!((c.input_tokens, c.output_tokens), (10, 5));
}

#[test]
fn glob_patterns() {
    assert!(glob_match("claude-opus-*", "claude-opus-4-1"));
    assert!(glob_match("*haiku*", "claude-3-5-haiku-2024"));
    assert!(glob_match("claude-?-x", "claude-3-x"));
    assert!(!glob_match("claude-opus-*", "claude-sonnet-4"));
    assert!(glob_match("exact", "exact"));
    assert!(!glob_match("exact", "exactly"));
    // Non-ASCII goes by characters: `?` is one character, not one byte.
    assert!(glob_match("mod?le-*", "modèle-1"));
    assert!(!glob_match("mod?le", "modèèle"));
    assert!(glob_match("*", ""));
    assert!(!glob_match("?", ""));
}

#[test]
fn reconcile_keeps_ids_health_and_counters() {
    let mut p = pool(&["a", "b"], Strategy::FillFirst);
    p.report(0, &rate_limited(Some(30)), T0);
    p.begin(1);
    p.disable(1, "refresh failures".into());
    let (added, removed) = p.reconcile(vec![key("b"), key("c")], &|label| label == "b");
    assert_eq!(
        (added, removed),
        (vec!["c".to_string()], vec!["a".to_string()])
    );
    assert_eq!(p.accounts().len(), 3, "ids stay stable");
    assert_eq!(p.state(0, T0), State::Disabled, "a was removed");
    assert_eq!(p.disabled_reason(0), Some(REMOVED));
    assert_eq!(p.state(1, T0), State::Active, "b was enabled again");
    assert_eq!(p.accounts()[1].counters.requests, 1, "counters kept");
    assert_eq!(p.pick(T0, None, &[]), Pick::Use(1));
    assert_eq!(p.pick(T0, None, &[1]), Pick::Use(2));
    // Coming back: a is known again and usable.
    p.reconcile(vec![key("a"), key("b"), key("c")], &|_| false);
    assert_eq!(p.state(0, T0 + 31_000), State::Active);
}

fn quota(five_hour: f64, seven_day: f64) -> neurolink_shared::quotas::AccountQuota {
    neurolink_shared::quotas::AccountQuota {
        session_used: five_hour,
        weekly_used: seven_day,
        ..Default::default()
    }
}

#[test]
fn accounts_over_the_quota_threshold_come_last() {
    let mut p = pool(&["a", "b", "c"], Strategy::FillFirst).with_quota_threshold(0.5);
    p.set_quota(0, quota(0.8, 0.1));
    p.set_quota(1, quota(0.1, 0.51));
    assert_eq!(
        p.pick(T0, None, &[]),
        Pick::Use(2),
        "a (5h) and b (7d) are past 0.5"
    );
    p.set_quota(2, quota(0.9, 0.9));
    assert_eq!(
        p.pick(T0, None, &[]),
        Pick::Use(0),
        "all past it: normal order"
    );
    p.set_quota(1, quota(0.5, 0.5));
    assert_eq!(
        p.pick(T0, None, &[]),
        Pick::Use(1),
        "exactly at the threshold is not above it"
    );
    let mut rr = pool(&["a", "b", "c"], Strategy::RoundRobin);
    rr.set_quota(1, quota(0.7, 0.0));
    let picks: Vec<_> = (0..4).map(|_| rr.pick(T0, None, &[])).collect();
    assert!(!picks.contains(&Pick::Use(1)), "{picks:?}");
}

#[test]
fn out_of_credits_does_not_bench() {
    let mut p = pool(&["a", "b"], Strategy::FillFirst);
    p.report(0, &Outcome::OutOfCredits { status: 429 }, T0);
    assert_eq!(p.state(0, T0), State::Active);
    assert_eq!(p.pick(T0, None, &[0]), Pick::Use(1));
}

#[test]
fn an_account_tried_in_this_request_is_not_waited_for() {
    let mut p = pool(&["a"], Strategy::FillFirst);
    p.report(0, &rate_limited(Some(1)), T0);
    assert_eq!(p.pick(T0 + 1, None, &[0]), Pick::Exhausted);
    assert!(matches!(
        p.pick(T0 + 1, None, &[]),
        Pick::Unavailable {
            retry_after_ms: Some(_),
            ..
        }
    ));
}

/// Found by the soak: `a` failed without cooling (a 500) while `b` cooled for a second; the
/// request must be offered `b`'s wait, not end with `a`'s 500.
#[test]
fn an_untried_cooling_account_is_offered_even_when_a_tried_one_is_still_active() {
    let mut p = pool(&["a", "b"], Strategy::FillFirst);
    p.report(1, &rate_limited(Some(1)), T0);
    p.report(0, &Outcome::Transient { status: 500 }, T0);
    assert_eq!(p.state(0, T0), State::Active);
    assert_eq!(
        p.pick(T0 + 10, None, &[0]),
        Pick::Unavailable {
            retry_after_ms: Some(990),
            auth_only: false
        }
    );
    // Once b is back, it serves.
    assert_eq!(p.pick(T0 + 1000, None, &[0]), Pick::Use(1));
    // With nothing left to wait for, the request has tried everything.
    assert_eq!(p.pick(T0 + 1000, None, &[0, 1]), Pick::Exhausted);
}
