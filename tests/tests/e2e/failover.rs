//! Every row of docs/design.md §3's policy table, end to end. The numbers themselves (doubling, caps)
//! are pinned with a hand-moved clock in `daemon/src/pool/tests.rs`; here each row's visible
//! effect is checked: who answered, who was tried, and the account's state in `/status`.

use std::time::Duration;

use neurolink_tests::fake_anthropic::{Behavior, FakeAnthropic};
use neurolink_tests::harness::{
    config_with_keys, http, message_body, send_message, Daemon, TestHome,
};

struct Pair {
    fake: FakeAnthropic,
    d: Daemon,
    _home: TestHome,
}

async fn pair(extra_config: &str) -> Pair {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    let cfg = config_with_keys(&fake.url(), "fill-first", &[("a", "key-a"), ("b", "key-b")])
        + extra_config;
    home.write_config(&cfg).unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    Pair {
        fake,
        d,
        _home: home,
    }
}

async fn send(p: &Pair, stream: bool) -> reqwest::Response {
    send_message(&p.d.url, stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_cools_the_account_and_moves_on() {
    let p = pair("").await;
    p.fake.script(
        "key-a",
        1,
        Behavior::error(429, "rate_limit_error", "slow down").with_header("retry-after", "30"),
    );
    let r = send(&p, false).await;
    assert_eq!(r.status(), 200);
    assert_eq!((p.fake.count("key-a"), p.fake.count("key-b")), (1, 1));
    let a = p.d.account("a").await.unwrap();
    assert_eq!(a["state"], "cooling");
    assert_eq!(a["backoffLevel"], 1);
    let left = a["cooldownRemainingSecs"].as_u64().unwrap();
    assert!(
        (28..=30).contains(&left),
        "retry-after 30 s at level 0 cools ~30 s, got {left}"
    );
    assert_eq!(a["counters"]["errors"]["rate_limit"], 1);
    // fill-first skips the cooling account without touching it.
    assert_eq!(send(&p, false).await.status(), 200);
    assert_eq!((p.fake.count("key-a"), p.fake.count("key-b")), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_of_days_is_capped_to_ten_minutes() {
    let p = pair("").await;
    p.fake.script(
        "key-a",
        1,
        Behavior::error(429, "rate_limit_error", "window").with_header("retry-after", "259200"),
    );
    assert_eq!(send(&p, false).await.status(), 200);
    let left = p.d.account("a").await.unwrap()["cooldownRemainingSecs"]
        .as_u64()
        .unwrap();
    assert!((595..=600).contains(&left), "capped at 600 s, got {left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_cooling_answers_429_with_the_earliest_recovery() {
    let p = pair("").await;
    p.fake.script(
        "key-a",
        1,
        Behavior::error(429, "rate_limit_error", "a").with_header("retry-after", "40"),
    );
    p.fake.script(
        "key-b",
        1,
        Behavior::error(429, "rate_limit_error", "b").with_header("retry-after", "20"),
    );
    let r = send(&p, false).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (18..=20).contains(&retry),
        "earliest recovery is b's ~20 s, got {retry}"
    );
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "rate_limit_error");
    // Nothing is sent upstream while everything cools.
    let r = send(&p, true).await;
    assert_eq!(r.status(), 429);
    assert_eq!(p.fake.total(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_rejection_goes_back_without_cooling() {
    let p = pair("").await;
    p.fake.script(
        "key-a",
        1,
        Behavior::error(429, "rate_limit_error", "Error"),
    );
    let r = send(&p, false).await;
    assert_eq!(r.status(), 429);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["message"], "Error");
    assert_eq!(
        p.fake.count("key-b"),
        0,
        "another account would get the same answer"
    );
    assert_eq!(p.d.account("a").await.unwrap()["state"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_bench_for_five_minutes() {
    for status in [401u16, 402, 403] {
        let p = pair("").await;
        p.fake.script(
            "key-a",
            1,
            Behavior::error(status, "authentication_error", "invalid x-api-key"),
        );
        assert_eq!(send(&p, false).await.status(), 200, "{status}");
        assert_eq!(p.fake.count("key-b"), 1);
        let a = p.d.account("a").await.unwrap();
        assert_eq!(a["state"], "cooling", "{status}");
        let left = a["cooldownRemainingSecs"].as_u64().unwrap();
        assert!((298..=300).contains(&left), "{status}: 5 min, got {left}");
        assert_eq!(a["backoffLevel"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_go_back_at_once() {
    let p = pair("").await;
    for (status, kind) in [
        (404u16, "not_found_error"),
        (400, "invalid_request_error"),
        (422, "invalid_request_error"),
    ] {
        p.fake.script(
            "key-a",
            1,
            Behavior::error(status, kind, "your request is wrong"),
        );
        let r = send(&p, false).await;
        assert_eq!(r.status(), status);
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], kind);
    }
    assert_eq!(p.fake.count("key-b"), 0);
    assert_eq!(p.d.account("a").await.unwrap()["state"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_rotate_without_cooling() {
    let p = pair("").await;
    let mut b_expected = 0;
    for status in [
        408u16, 500, 502, 503, 504, 520, 521, 522, 523, 524, 525, 526, 529,
    ] {
        p.fake.script(
            "key-a",
            1,
            Behavior::error(status, "api_error", "upstream trouble"),
        );
        assert_eq!(send(&p, false).await.status(), 200, "{status}");
        b_expected += 1;
        assert_eq!(p.fake.count("key-b"), b_expected, "{status} moves to b");
        assert_eq!(
            p.d.account("a").await.unwrap()["state"],
            "active",
            "{status} does not cool"
        );
    }
    for kind in ["api_error", "overloaded_error"] {
        p.fake.script("key-a", 1, Behavior::error(400, kind, "x"));
        assert_eq!(send(&p, false).await.status(), 200, "400 {kind}");
        b_expected += 1;
        assert_eq!(p.fake.count("key-b"), b_expected);
    }
    // fill-first comes back to a on the next request.
    let before = p.fake.count("key-a");
    assert_eq!(send(&p, false).await.status(), 200);
    assert_eq!(p.fake.count("key-a"), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_account_fails_the_last_upstream_answer_is_returned() {
    let p = pair("").await;
    p.fake.script(
        "key-a",
        1,
        Behavior::error(529, "overloaded_error", "Overloaded a"),
    );
    p.fake.script(
        "key-b",
        1,
        Behavior::error(503, "api_error", "Unavailable b"),
    );
    let r = send(&p, false).await;
    assert_eq!(r.status(), 503);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["message"], "Unavailable b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_first_chunk_rotates() {
    let p = pair("").await;
    p.fake.script("key-a", 1, Behavior::Empty);
    let r = send(&p, true).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("message_stop"));
    assert_eq!(p.fake.count("key-b"), 1);
    assert_eq!(
        p.d.account("a").await.unwrap()["counters"]["errors"]["empty_stream"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_error_rotates() {
    // Account a points at a port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    let cfg = format!(
        "routing: {{strategy: fill-first}}\nproviders: {{anthropic: {{baseUrl: {}}}}}\naccounts:\n  anthropic:\n    - {{name: a, apiKey: key-a, baseUrl: \"{dead_url}\"}}\n    - {{name: b, apiKey: key-b}}\n",
        fake.url()
    );
    home.write_config(&cfg).unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let r = d.message(false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(fake.count("key-b"), 1);
    let a = d.account("a").await.unwrap();
    assert_eq!(a["counters"]["errors"]["network"], 1);
    assert_eq!(a["state"], "active", "network errors do not cool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_before_headers_rotates() {
    let p = pair("server:\n  headersTimeoutSecs: 1\n").await;
    p.fake.script("key-a", 1, Behavior::Hang);
    let started = std::time::Instant::now();
    let r = send(&p, false).await;
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(p.fake.count("key-b"), 1);
    assert_eq!(
        p.d.account("a").await.unwrap()["counters"]["errors"]["timeout"],
        1
    );
    // The abandoned upstream request was cancelled.
    assert_eq!(p.fake.wait_cancels(1, Duration::from_secs(5)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&config_with_keys(
        &fake.url(),
        "round-robin",
        &[("a", "key-a"), ("b", "key-b"), ("c", "key-c")],
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    for _ in 0..6 {
        let r = d.message(false).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        (
            fake.count("key-a"),
            fake.count("key-b"),
            fake.count("key-c")
        ),
        (2, 2, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_strategy_overrides_config() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&config_with_keys(
        &fake.url(),
        "round-robin",
        &[("a", "key-a"), ("b", "key-b")],
    ))
    .unwrap();
    let d = Daemon::start(&home, &["-s", "fill-first"], &[]).unwrap();
    for _ in 0..3 {
        d.message(false).await;
    }
    assert_eq!((fake.count("key-a"), fake.count("key-b")), (3, 0));
    assert_eq!(d.status().await.unwrap()["strategy"], "fill-first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_and_excluded_accounts_are_skipped() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    let cfg = format!(
        "routing: {{strategy: fill-first}}\nproviders: {{anthropic: {{baseUrl: {}}}}}\naccounts:\n  anthropic:\n    - {{name: off, apiKey: key-off, enabled: false}}\n    - {{name: no-opus, apiKey: key-a, excludedModels: [\"claude-opus-*\"]}}\n    - {{name: b, apiKey: key-b}}\n",
        fake.url()
    );
    home.write_config(&cfg).unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let mut body = message_body(false);
    body["model"] = "claude-opus-4-1".into();
    http()
        .post(format!("{}/v1/messages", d.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            fake.count("key-off"),
            fake.count("key-a"),
            fake.count("key-b")
        ),
        (0, 0, 1)
    );
    d.message(false).await;
    assert_eq!(fake.count("key-a"), 1);
    assert_eq!(d.account("off").await.unwrap()["state"], "disabled");
}
