//! Unified quota headers: kept per account, written to `account-quotas.json`, shown in `/status`
//! and `auth list`, and used for routing; plus `out_of_credits` and `excludedModels` on logins.

use std::time::{Duration, Instant};

use neurolink_tests::fake_anthropic::{Behavior, FakeAnthropic};
use neurolink_tests::fake_oauth::FakeOAuth;
use neurolink_tests::harness::{
    command, http, message_body, now_ms, token_store_with, Daemon, TestHome,
};

const HOUR_MS: i64 = 3_600_000;

fn unified(five_hour: &str, seven_day: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "anthropic-ratelimit-unified-5h-utilization",
            five_hour.to_string(),
        ),
        ("anthropic-ratelimit-unified-5h-status", "allowed".into()),
        ("anthropic-ratelimit-unified-5h-reset", "1785518400".into()),
        (
            "anthropic-ratelimit-unified-7d-utilization",
            seven_day.to_string(),
        ),
        ("anthropic-ratelimit-unified-7d-status", "allowed".into()),
        ("anthropic-ratelimit-unified-7d-reset", "1786006800".into()),
        (
            "anthropic-ratelimit-unified-fallback-percentage",
            "0.5".into(),
        ),
        (
            "anthropic-ratelimit-unified-overage-status",
            "rejected".into(),
        ),
    ]
}

struct Two {
    fake: FakeAnthropic,
    _oauth: FakeOAuth,
    home: TestHome,
}

/// Two OAuth logins, `alice` then `bob`, fill-first.
async fn two_logins(extra_config: &str) -> Two {
    let fake = FakeAnthropic::start().await.unwrap();
    let oauth = FakeOAuth::start().await.unwrap();
    let home = TestHome::new().unwrap();
    let later = now_ms() + 5 * HOUR_MS;
    home.write(
        "tokens.json",
        &token_store_with(&[
            ("alice", "at-alice", "rt-a", later),
            ("bob", "at-bob", "rt-b", later),
        ]),
    )
    .unwrap();
    home.write_config(&format!(
        "routing: {{strategy: fill-first}}\nproviders:\n  anthropic: {{baseUrl: \"{}\"}}\n  anthropic-oauth: {{tokenUrl: \"{}\"}}\n{extra_config}",
        fake.url(),
        oauth.token_url()
    ))
    .unwrap();
    Two {
        fake,
        _oauth: oauth,
        home,
    }
}

async fn send(d: &Daemon, model: &str) -> reqwest::Response {
    let mut body = message_body(false);
    body["model"] = model.into();
    http()
        .post(format!("{}/v1/messages", d.url))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_headers_reach_the_file_status_list_and_routing() {
    let t = two_logins("").await;
    let alice = unified("0.8", "0.2");
    t.fake.set_answer_headers(
        "at-alice",
        &alice
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    let bob = unified("0.1", "0.3");
    t.fake.set_answer_headers(
        "at-bob",
        &bob.iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    let d = Daemon::start(&t.home, &[], &[]).unwrap();

    assert_eq!(send(&d, "claude-sonnet-4-5").await.status(), 200);
    assert_eq!(t.fake.count("at-alice"), 1, "fill-first starts with alice");
    // alice's 5h window is at 80%, past the 0.5 threshold: bob is preferred now.
    for _ in 0..3 {
        assert_eq!(send(&d, "claude-sonnet-4-5").await.status(), 200);
    }
    assert_eq!((t.fake.count("at-alice"), t.fake.count("at-bob")), (1, 3));

    let a = d.account("alice").await.unwrap();
    assert_eq!(a["quota"]["fiveHour"], 0.8);
    assert_eq!(a["quota"]["sevenDay"], 0.2);
    assert_eq!(a["quota"]["fiveHourResetAt"], 1785518400);

    // Written within the 5 s flush interval, never once per request.
    let path = t.home.neurolink_home().join("account-quotas.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["alice"]["sessionUsed"], 0.8);
    assert_eq!(v["alice"]["weeklyUsed"], 0.2);
    assert_eq!(v["alice"]["sessionStatus"], "allowed");
    assert_eq!(v["alice"]["overageStatus"], "rejected");
    assert_eq!(v["bob"]["sessionUsed"], 0.1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    let out = command(&t.home)
        .args(["auth", "list", "--format", "json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["accounts"][0]["quota5h"], 0.8);
    assert_eq!(list["accounts"][1]["quota7d"], 0.3);

    // After a restart, routing remembers alice is past the threshold.
    drop(d);
    let d = Daemon::start(&t.home, &[], &[]).unwrap();
    assert_eq!(send(&d, "claude-sonnet-4-5").await.status(), 200);
    assert_eq!(t.fake.count("at-bob"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_credits_moves_on_without_benching() {
    let t = two_logins("").await;
    t.fake.script(
        "at-alice",
        1,
        Behavior::error(429, "rate_limit_error", "out of credits").with_header(
            "anthropic-ratelimit-unified-overage-disabled-reason",
            "out_of_credits",
        ),
    );
    let d = Daemon::start(&t.home, &[], &[]).unwrap();
    assert_eq!(send(&d, "claude-sonnet-4-5").await.status(), 200);
    assert_eq!(t.fake.count("at-bob"), 1);
    let a = d.account("alice").await.unwrap();
    assert_eq!(a["state"], "active", "not benched");
    assert_eq!(a["counters"]["errors"]["out_of_credits"], 1);
    assert_eq!(send(&d, "claude-sonnet-4-5").await.status(), 200);
    assert_eq!(t.fake.count("at-alice"), 2, "alice serves the next request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_models_apply_to_stored_logins_by_label() {
    let t = two_logins(
        "accounts:\n  anthropic:\n    - {name: alice, excludedModels: [\"claude-opus-*\"]}\n",
    )
    .await;
    let d = Daemon::start(&t.home, &[], &[]).unwrap();
    assert_eq!(send(&d, "claude-opus-4-1").await.status(), 200);
    assert_eq!((t.fake.count("at-alice"), t.fake.count("at-bob")), (0, 1));
    assert_eq!(send(&d, "claude-sonnet-4-5").await.status(), 200);
    assert_eq!(t.fake.count("at-alice"), 1);
    assert_eq!(
        d.account("alice").await.unwrap()["excludedModels"][0],
        "claude-opus-*"
    );
}
