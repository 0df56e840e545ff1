//! `neurolink auth …` against the same files a running daemon uses.

use std::time::Duration;

use neurolink_tests::fake_anthropic::FakeAnthropic;
use neurolink_tests::fake_oauth::FakeOAuth;
use neurolink_tests::harness::{
    command, http, now_ms, spawn_messages, token_store_with, Daemon, TestHome,
};

const HOUR_MS: i64 = 3_600_000;

fn config(fake: &FakeAnthropic, oauth: &FakeOAuth) -> String {
    format!(
        "routing: {{strategy: fill-first}}\nproviders:\n  anthropic: {{baseUrl: \"{}\"}}\n  anthropic-oauth: {{tokenUrl: \"{}\"}}\n",
        fake.url(),
        oauth.token_url()
    )
}

fn auth(home: &TestHome, args: &[&str]) -> std::process::Output {
    command(home).arg("auth").args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_refresh_next_to_a_refreshing_daemon_uses_each_token_once() {
    let fake = FakeAnthropic::start().await.unwrap();
    let oauth = FakeOAuth::start().await.unwrap();
    oauth.register("rt-0");
    oauth.set_delay(Duration::from_millis(500));
    let home = TestHome::new().unwrap();
    home.write(
        "tokens.json",
        &token_store_with(&[("alice", "at-0", "rt-0", now_ms() + 10 * 60_000)]),
    )
    .unwrap();
    home.write_config(&config(&fake, &oauth)).unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();

    let requests: Vec<_> = spawn_messages(&http(), &d.url, 20);
    let cli_home_out = tokio::task::spawn_blocking({
        let mut c = command(&home);
        c.args(["auth", "refresh", "anthropic"]);
        move || c.output().unwrap()
    });
    for r in requests {
        assert_eq!(r.await.unwrap().unwrap(), 200);
    }
    let out = cli_home_out.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        oauth.refreshes(),
        1,
        "one exchange between the two processes"
    );
    assert_eq!(oauth.reuses(), 0, "no refresh token used twice");
    assert_eq!(oauth.unknown(), 0);
    assert_eq!(fake.count("at-1"), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_and_disable_reach_the_running_daemon() {
    let fake = FakeAnthropic::start().await.unwrap();
    let oauth = FakeOAuth::start().await.unwrap();
    oauth.register("rt-0");
    oauth.fail_next(&[500; 15]);
    let home = TestHome::new().unwrap();
    home.write(
        "tokens.json",
        &token_store_with(&[("alice", "at-0", "rt-0", now_ms() + 30 * 60_000)]),
    )
    .unwrap();
    home.write_config(&config(&fake, &oauth)).unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    for _ in 0..15 {
        d.message(false).await;
    }
    assert_eq!(d.account("alice").await.unwrap()["state"], "disabled");

    let out = auth(&home, &["enable", "anthropic:alice"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = d
        .wait_account("alice", Duration::from_secs(5), |a| a["state"] == "active")
        .await
        .unwrap();
    assert_eq!(
        a["state"], "active",
        "auth enable reached the daemon without a restart"
    );
    let r = d.message(false).await;
    assert_eq!(r.status(), 200);

    let out = auth(&home, &["disable", "alice"]);
    assert!(out.status.success());
    let a = d
        .wait_account("alice", Duration::from_secs(5), |a| {
            a["state"] == "disabled"
        })
        .await
        .unwrap();
    assert_eq!(a["state"], "disabled");
    assert!(
        a["disabledReason"]
            .as_str()
            .unwrap()
            .contains("auth enable"),
        "{a}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_added_and_logged_out_elsewhere_are_picked_up() {
    let fake = FakeAnthropic::start().await.unwrap();
    let oauth = FakeOAuth::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&config(&fake, &oauth)).unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    assert_eq!(d.message(false).await.status(), 401);
    // Another process logs in.
    home.write(
        "tokens.json",
        &token_store_with(&[("bob", "at-bob", "rt-bob", now_ms() + 5 * HOUR_MS)]),
    )
    .unwrap();
    d.wait_account("bob", Duration::from_secs(5), |a| a["state"] == "active")
        .await
        .unwrap();
    assert_eq!(d.message(false).await.status(), 200);
    assert_eq!(fake.count("at-bob"), 1);

    let out = auth(&home, &["logout", "--label", "bob"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_account("bob", Duration::from_secs(5), |a| a["state"] == "disabled")
        .await
        .unwrap();
    assert_eq!(d.message(false).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_status_and_cleanup() {
    let fake = FakeAnthropic::start().await.unwrap();
    let oauth = FakeOAuth::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write(
        "tokens.json",
        &token_store_with(&[
            ("alice@example.com", "at-a", "rt-a", now_ms() + 5 * HOUR_MS),
            ("old", "at-old", "rt-old", now_ms() + HOUR_MS),
        ]),
    )
    .unwrap();
    home.write_config(
        &(config(&fake, &oauth) + "accounts:\n  anthropic:\n    - {name: key, apiKey: \"${K}\"}\n"),
    )
    .unwrap();
    home.write(
        "account-quotas.json",
        r#"{"alice@example.com":{"sessionUsed":0.42,"sessionStatus":"allowed","sessionResetAt":1,"weeklyUsed":0.18,"weeklyStatus":"allowed","weeklyResetAt":2,"fallbackPercentage":0.5,"overageStatus":"rejected","lastUpdated":3}}"#,
    )
    .unwrap();
    assert!(auth(&home, &["disable", "old"]).status.success());

    let out = command(&home)
        .args(["auth", "list", "--format", "json"])
        .env("K", "sk-ant-api03-xxxxxxxxxxxxxxxxxxxxxxxx")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let accounts = v["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 3);
    let alice = &accounts[0];
    assert_eq!(alice["email"], "alice@example.com");
    assert_eq!(alice["kind"], "oauth");
    assert_eq!(alice["state"], "active");
    assert_eq!(alice["quota5h"], 0.42);
    assert_eq!(alice["quota7d"], 0.18);
    assert!(
        alice["expiresIn"].as_str().unwrap().starts_with("in 4h")
            || alice["expiresIn"].as_str().unwrap().starts_with("in 5h")
    );
    assert_eq!(accounts[1]["state"], "disabled");
    assert_eq!(accounts[2]["kind"], "api_key");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("xxxxxxxx"),
        "no secret in the listing"
    );

    let out = command(&home)
        .args(["auth", "list"])
        .env("K", "k")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("LABEL"), "{text}");
    assert!(text.contains("42%") && text.contains("18%"), "{text}");

    let out = command(&home)
        .args(["auth", "status", "--format", "json"])
        .env("K", "k")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["accounts"].as_u64(), v["usable"].as_u64()),
        (Some(3), Some(2))
    );

    // Without --force and without a terminal it only lists.
    let out = auth(&home, &["cleanup"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--force"));
    let out = auth(&home, &["cleanup", "--force"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed 1 account"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = home.tokens().unwrap().to_string();
    assert!(
        text.contains("alice") && !text.contains("anthropic:old"),
        "{text}"
    );
    assert!(
        text.contains("futureTopLevel"),
        "unknown fields survive the rewrite"
    );

    let out = auth(&home, &["enable", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no stored account `anthropic:nobody`"));
}
