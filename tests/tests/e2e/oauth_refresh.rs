//! OAuth refresh (issue: accounts and OAuth): single-flight, 401 retries, cooldown after five,
//! disable after fifteen failures, refresh at start, adoption of tokens rotated elsewhere, and
//! the rotated refresh token always on disk before use. The fake token endpoint counts reuses.

use std::time::Duration;

use neurolink_shared::token_store;
use neurolink_tests::fake_anthropic::{Behavior, FakeAnthropic};
use neurolink_tests::fake_oauth::FakeOAuth;
use neurolink_tests::harness::{http, now_ms, spawn_messages, token_store_with, Daemon, TestHome};

const HOUR_MS: i64 = 3_600_000;

struct Setup {
    fake: FakeAnthropic,
    oauth: FakeOAuth,
    home: TestHome,
}

/// One OAuth account `alice` (access `at-0`, refresh `rt-0` expiring at `expires_at`) plus, when
/// `with_key`, an API-key account `b` after it (fill-first).
async fn setup(expires_at: i64, with_key: bool) -> Setup {
    let fake = FakeAnthropic::start().await.unwrap();
    let oauth = FakeOAuth::start().await.unwrap();
    oauth.register("rt-0");
    let home = TestHome::new().unwrap();
    home.write(
        "tokens.json",
        &token_store_with(&[("alice", "at-0", "rt-0", expires_at)]),
    )
    .unwrap();
    let mut cfg = format!(
        "routing: {{strategy: fill-first}}\nproviders:\n  anthropic: {{baseUrl: \"{}\"}}\n  anthropic-oauth: {{tokenUrl: \"{}\"}}\n",
        fake.url(),
        oauth.token_url()
    );
    if with_key {
        cfg.push_str("accounts:\n  anthropic:\n    - {name: b, apiKey: key-b}\n");
    }
    home.write_config(&cfg).unwrap();
    Setup { fake, oauth, home }
}

fn stored(home: &TestHome) -> serde_json::Value {
    let text = std::fs::read_to_string(home.neurolink_home().join("tokens.json")).unwrap();
    let (json, _) = token_store::decode(&text, home.path().to_str().unwrap()).unwrap();
    serde_json::from_str(&json).unwrap()
}

async fn send(d: &Daemon) -> reqwest::Response {
    d.message(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_on_an_expiring_token_refresh_once() {
    let s = setup(now_ms() + 10 * 60_000, false).await;
    s.oauth.set_delay(Duration::from_millis(200));
    let d = Daemon::start(&s.home, &[], &[]).unwrap();
    let tasks: Vec<_> = spawn_messages(&http(), &d.url, 50);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    assert_eq!(s.oauth.refreshes(), 1, "single-flight");
    assert_eq!(s.oauth.reuses(), 0);
    assert_eq!(
        s.fake.count("at-1"),
        50,
        "every request used the refreshed token"
    );
    assert_eq!(s.fake.count("at-0"), 0);
    let v = stored(&s.home);
    let e = &v["providers"]["anthropic:alice"];
    assert_eq!(e["tokens"]["accessToken"], "at-1");
    assert_eq!(
        e["tokens"]["refreshToken"], "rt-1",
        "the rotated refresh token is on disk"
    );
    assert!(e["tokens"]["expiresAt"].as_i64().unwrap() > now_ms() + 7 * HOUR_MS);
    assert_eq!(e["keptField"], "survives rewrites");
    assert_eq!(v["futureTopLevel"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_refreshes_and_retries_the_same_account() {
    let s = setup(now_ms() + 5 * HOUR_MS, true).await;
    s.fake.script(
        "at-0",
        1,
        Behavior::error(401, "authentication_error", "token revoked"),
    );
    let d = Daemon::start(&s.home, &[], &[]).unwrap();
    assert_eq!(send(&d).await.status(), 200);
    assert_eq!(
        (
            s.fake.count("at-0"),
            s.fake.count("at-1"),
            s.fake.count("key-b")
        ),
        (1, 1, 0)
    );
    assert_eq!(s.oauth.refreshes(), 1);
    assert_eq!(d.account("alice").await.unwrap()["state"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failed_401_retries_cool_the_account_five_minutes() {
    let s = setup(now_ms() + 5 * HOUR_MS, true).await;
    for token in ["at-0", "at-1", "at-2", "at-3", "at-4", "at-5"] {
        s.fake.script(
            token,
            1,
            Behavior::error(401, "authentication_error", "still no"),
        );
    }
    let d = Daemon::start(&s.home, &[], &[]).unwrap();
    assert_eq!(send(&d).await.status(), 200, "served by the next account");
    assert_eq!(s.oauth.refreshes(), 5, "refresh and retry up to 5 times");
    assert_eq!(s.oauth.reuses(), 0);
    assert_eq!(s.fake.count("key-b"), 1);
    let a = d.account("alice").await.unwrap();
    assert_eq!(a["state"], "cooling");
    let left = a["cooldownRemainingSecs"].as_u64().unwrap();
    assert!((298..=300).contains(&left), "5 min, got {left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_refresh_failures_disable_the_account_for_good() {
    // Valid for 30 more minutes, so each request tries a refresh first and still gets served.
    let s = setup(now_ms() + 30 * 60_000, false).await;
    s.oauth.fail_next(&[500; 15]);
    let d = Daemon::start(&s.home, &[], &[]).unwrap();
    for i in 0..15 {
        assert_eq!(
            send(&d).await.status(),
            200,
            "request {i} still served by the valid token"
        );
    }
    let a = d.account("alice").await.unwrap();
    assert_eq!(a["state"], "disabled");
    assert_eq!(send(&d).await.status(), 401);
    let e = &stored(&s.home)["providers"]["anthropic:alice"];
    assert_eq!(e["disabled"], true);
    assert_eq!(e["disabledReason"], "refresh_failed");
    drop(d);
    let d = Daemon::start(&s.home, &[], &[]).unwrap();
    assert_eq!(
        d.account("alice").await.unwrap()["state"],
        "disabled",
        "still disabled after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_refreshed_at_start() {
    let s = setup(now_ms() - 60_000, false).await;
    let d = Daemon::start(&s.home, &[], &[]).unwrap();
    assert_eq!(s.oauth.refreshes(), 1);
    assert_eq!(d.account("alice").await.unwrap()["state"], "active");
    assert_eq!(send(&d).await.status(), 200);
    assert_eq!(s.fake.count("at-1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_whose_refresh_fails_at_start_is_disabled() {
    let s = setup(now_ms() - 60_000, false).await;
    s.oauth.fail_next(&[400]);
    let d = Daemon::start(&s.home, &[], &[]).unwrap();
    let a = d.account("alice").await.unwrap();
    assert_eq!(a["state"], "disabled");
    assert!(
        a["disabledReason"].as_str().unwrap().contains("refresh"),
        "{a}"
    );
    assert_eq!(
        stored(&s.home)["providers"]["anthropic:alice"]["disabledReason"],
        "refresh_failed"
    );
    assert_eq!(send(&d).await.status(), 401);
    assert_eq!(s.fake.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rotated_by_another_process_are_adopted_not_refreshed() {
    let s = setup(now_ms() + 5 * HOUR_MS, false).await;
    let d = Daemon::start(&s.home, &[], &[]).unwrap();
    // Another process (the CLI, NeuroLink) refreshed and wrote new tokens; at-0 is now revoked.
    s.oauth.register("rt-elsewhere");
    s.home
        .write(
            "tokens.json",
            &token_store_with(&[(
                "alice",
                "at-elsewhere",
                "rt-elsewhere",
                now_ms() + 8 * HOUR_MS,
            )]),
        )
        .unwrap();
    s.fake.script(
        "at-0",
        1,
        Behavior::error(401, "authentication_error", "revoked"),
    );
    assert_eq!(send(&d).await.status(), 200);
    assert_eq!(s.fake.count("at-elsewhere"), 1);
    assert_eq!(
        s.oauth.refreshes(),
        0,
        "the other process's tokens were used, not refreshed again"
    );
    assert_eq!(s.oauth.reuses(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stops_parsing_is_left_alone_and_accounts_keep_serving() {
    let s = setup(now_ms() + 5 * HOUR_MS, false).await;
    let d = Daemon::start(&s.home, &[], &[]).unwrap();
    assert_eq!(send(&d).await.status(), 200);
    let path = s.home.neurolink_home().join("tokens.json");
    std::fs::write(&path, "{ \"version\": \"2.0\", oops").unwrap();
    // Give the watcher time to see it (it polls every second), then keep serving.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(send(&d).await.status(), 200);
    assert_eq!(d.account("alice").await.unwrap()["state"], "active");
    // A 401 now cannot persist a refresh: the token endpoint is not even called.
    s.fake.script(
        "at-0",
        1,
        neurolink_tests::fake_anthropic::Behavior::error(401, "authentication_error", "x"),
    );
    let _ = send(&d).await;
    assert_eq!(
        s.oauth.refreshes(),
        0,
        "no refresh whose result could not be saved"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{ \"version\": \"2.0\", oops",
        "never overwritten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_credentials_are_refreshed_in_place() {
    let fake = FakeAnthropic::start().await.unwrap();
    let oauth = FakeOAuth::start().await.unwrap();
    oauth.register("rt-legacy");
    let home = TestHome::new().unwrap();
    let legacy = serde_json::json!({
        "type": "oauth",
        "oauth": {"accessToken": "at-legacy", "refreshToken": "rt-legacy", "expiresAt": now_ms() + 10 * 60_000, "tokenType": "Bearer"},
        "provider": "anthropic", "subscriptionTier": "max", "email": "lee@example.com", "createdAt": 1, "updatedAt": 1
    });
    home.write("anthropic-credentials.json", &legacy.to_string())
        .unwrap();
    home.write_config(&format!(
        "providers:\n  anthropic: {{baseUrl: \"{}\"}}\n  anthropic-oauth: {{tokenUrl: \"{}\"}}\n",
        fake.url(),
        oauth.token_url()
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    assert_eq!(send(&d).await.status(), 200);
    assert_eq!(fake.count("at-1"), 1);
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.neurolink_home().join("anthropic-credentials.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(v["oauth"]["accessToken"], "at-1");
    assert_eq!(v["oauth"]["refreshToken"], "rt-1");
    assert_eq!(v["subscriptionTier"], "max", "other fields kept");
    assert!(v["updatedAt"].as_i64().unwrap() > 1);
}

/// `chattr +i` makes a file immutable even for root, so its replacement by rename fails: the
/// closest a test gets to a full or read-only disk. Returns false where the filesystem lacks it.
fn set_immutable(path: &std::path::Path, on: bool) -> bool {
    std::process::Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_that_cannot_be_saved_is_kept_in_memory_and_saved_later() {
    let s = setup(now_ms() + 10 * 60_000, false).await;
    let d = Daemon::start(&s.home, &[], &[]).unwrap();
    let path = s.home.neurolink_home().join("tokens.json");
    if !set_immutable(&path, true) {
        eprintln!("chattr is not available here; the write-failure path is not exercised");
        return;
    }
    // The refresh spends rt-0 and gets rt-1, which cannot reach the disk now.
    let r = send(&d).await;
    set_immutable(&path, false);
    assert_eq!(r.status(), 200, "served from memory");
    assert_eq!(s.fake.count("at-1"), 1);
    assert_eq!(s.oauth.refreshes(), 1);
    assert_eq!(
        stored(&s.home)["providers"]["anthropic:alice"]["tokens"]["refreshToken"],
        "rt-0",
        "the write failed"
    );
    // The next request retries the write; nothing is refreshed again.
    assert_eq!(send(&d).await.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while stored(&s.home)["providers"]["anthropic:alice"]["tokens"]["refreshToken"] != "rt-1"
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        stored(&s.home)["providers"]["anthropic:alice"]["tokens"]["refreshToken"],
        "rt-1",
        "saved once possible"
    );
    assert_eq!(s.oauth.refreshes(), 1);
    assert_eq!(
        s.oauth.reuses(),
        0,
        "the spent token was never presented again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_cooling_accounts_are_refreshed_in_the_background() {
    let fake = FakeAnthropic::start().await.unwrap();
    let oauth = FakeOAuth::start().await.unwrap();
    oauth.register("rt-0");
    let home = TestHome::new().unwrap();
    // Valid for 2 hours: no refresh at start or before the request below.
    home.write(
        "tokens.json",
        &token_store_with(&[("alice", "at-0", "rt-0", now_ms() + 2 * HOUR_MS)]),
    )
    .unwrap();
    home.write_config(&format!(
        "server: {{tokenCheckSecs: 1}}\nproviders:\n  anthropic: {{baseUrl: \"{}\"}}\n  anthropic-oauth: {{tokenUrl: \"{}\"}}\n",
        fake.url(),
        oauth.token_url()
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    // The account goes cooling (a quota window), then nothing is sent to it.
    fake.script(
        "at-0",
        1,
        Behavior::error(429, "rate_limit_error", "window").with_header("retry-after", "600"),
    );
    assert_eq!(send(&d).await.status(), 429);
    assert_eq!(d.account("alice").await.unwrap()["state"], "cooling");
    // Time passes: its token is now within the hour (the store says so; the daemon picks up the
    // corrected expiry), and the background check, every second here, refreshes it.
    home.write(
        "tokens.json",
        &token_store_with(&[("alice", "at-0", "rt-0", now_ms() + 30 * 60_000)]),
    )
    .unwrap();
    // Wait for what can be seen: the rotated token on disk (the fake counts the refresh before
    // the daemon has written its result, so the count alone would race the write).
    let saved = |home: &TestHome| {
        stored(home)["providers"]["anthropic:alice"]["tokens"]["refreshToken"] == "rt-1"
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !saved(&home) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saved(&home), "refreshed while cooling, without a request");
    assert_eq!(oauth.refreshes(), 1);
    assert_eq!(oauth.reuses(), 0);
    assert_eq!(
        d.account("alice").await.unwrap()["state"],
        "cooling",
        "still waiting out its window"
    );
}
