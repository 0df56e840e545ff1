//! Request logs: a JSON line per request, `--debug` exchanges with every secret masked, cleanup.

use std::time::{Duration, Instant, SystemTime};

use neurolink_tests::fake_anthropic::{Behavior, FakeAnthropic};
use neurolink_tests::fake_oauth::FakeOAuth;
use neurolink_tests::harness::{http, message_body, now_ms, token_store_with, Daemon, TestHome};

fn log_lines(home: &TestHome, prefix: &str, want: usize) -> Vec<serde_json::Value> {
    let dir = home.neurolink_home().join("logs");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut lines = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(prefix) && !name.starts_with(&format!("{prefix}debug")) {
                    let text = std::fs::read_to_string(e.path()).unwrap();
                    lines.extend(
                        text.lines()
                            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
                    );
                }
            }
        }
        if lines.len() >= want || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_per_request_with_attempts_and_tokens() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&neurolink_tests::harness::config_with_keys(
        &fake.url(),
        "fill-first",
        &[("a", "key-a"), ("b", "key-b")],
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    fake.script("key-a", 1, Behavior::error(529, "overloaded_error", "busy"));
    let r = d.message(true).await;
    r.text().await.unwrap();
    let r = d.message(false).await;
    assert_eq!(r.status(), 200);
    let lines = log_lines(&home, "proxy-", 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first = &lines[0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], "/v1/messages");
    assert_eq!(first["model"], "claude-sonnet-4-5");
    assert_eq!(first["stream"], true);
    assert_eq!(first["account"], "b");
    assert_eq!(first["status"], 200);
    assert_eq!(
        first["attempts"],
        serde_json::json!([{"account":"a","outcome":"server_error"},{"account":"b","outcome":"success"}])
    );
    assert_eq!(first["inputTokens"], 25);
    assert_eq!(first["outputTokens"], 12);
    assert!(first["ttfbMs"].as_u64().is_some() && first["totalMs"].as_u64().is_some());
    assert!(first["requestId"].as_str().unwrap().starts_with("req_nl_"));
    assert_eq!(lines[1]["stream"], false);
    assert!(
        lines[1].get("errorClass").is_none(),
        "a complete JSON answer is not a disconnect: {}",
        lines[1]
    );
    assert!(first.get("errorClass").is_none(), "{first}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = home.neurolink_home().join("logs");
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            assert_eq!(
                e.metadata().unwrap().permissions().mode() & 0o777,
                0o600,
                "{:?}",
                e.path()
            );
        }
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_never_contain_a_secret() {
    const OAUTH: &str = "oat-SECRET-access-token-0123456789";
    const REFRESH: &str = "ort-SECRET-refresh-token-0123456789";
    const KEY: &str = "sk-ant-api03-SECRET-config-key-0123456789";
    const PROXY_KEY: &str = "proxy-SECRET-auth-key-0123456789";
    const PASTED: &str = "sk-ant-api03-SECRET-pasted-in-a-prompt-0123";
    let fake = FakeAnthropic::start().await.unwrap();
    let oauth = FakeOAuth::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write(
        "tokens.json",
        &token_store_with(&[("alice", OAUTH, REFRESH, now_ms() + 5 * 3_600_000)]),
    )
    .unwrap();
    home.write_config(&format!(
        "routing: {{strategy: round-robin}}\nserver: {{authKey: \"${{PROXY_KEY}}\"}}\nproviders:\n  anthropic: {{baseUrl: \"{}\"}}\n  anthropic-oauth: {{tokenUrl: \"{}\"}}\naccounts:\n  anthropic:\n    - {{name: key, apiKey: \"${{K}}\"}}\n",
        fake.url(),
        oauth.token_url()
    ))
    .unwrap();
    let d = Daemon::start(&home, &["--debug"], &[("PROXY_KEY", PROXY_KEY), ("K", KEY)]).unwrap();
    let mut body = message_body(false);
    body["messages"][0]["content"] = format!("my key is {PASTED}, keep it safe").into();
    for (i, header) in ["x-api-key", "authorization"].iter().enumerate() {
        let value = if *header == "authorization" {
            format!("Bearer {PROXY_KEY}")
        } else {
            PROXY_KEY.to_string()
        };
        for stream in [false, true] {
            let mut b = body.clone();
            b["stream"] = stream.into();
            let r = http()
                .post(format!("{}/v1/messages", d.url))
                .header(*header, &value)
                .header("cookie", "session=SECRET-cookie-0123456789")
                .json(&b)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "request {i}");
            r.text().await.unwrap();
        }
    }
    // A request with the wrong proxy key is refused (and its key never logged either).
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .header("x-api-key", "wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        fake.count(OAUTH) > 0 && fake.count(KEY) > 0,
        "both accounts served"
    );
    let lines = log_lines(&home, "proxy-", 5);
    assert_eq!(lines.len(), 5, "{lines:?}");
    let refused = lines
        .iter()
        .find(|l| l["errorClass"] == "proxy_auth")
        .expect("the refused request is logged");
    assert_eq!(refused["status"], 401);
    // Wait for the debug file too, then scan everything under logs/.
    let dir = home.neurolink_home().join("logs");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = String::new();
    while Instant::now() < deadline {
        all.clear();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap());
        }
        if all.matches("\"type\":\"exchange\"").count() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        all.matches("\"type\":\"exchange\"").count() >= 4,
        "debug log written: {all}"
    );
    for secret in [OAUTH, REFRESH, KEY, PROXY_KEY, PASTED, "SECRET-cookie"] {
        assert!(!all.contains(secret), "{secret} leaked into the logs");
    }
    assert!(all.contains("my key is"), "bodies are logged, masked");
    assert!(
        all.contains("anthropic-ratelimit-requests-remaining"),
        "response headers are logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_logs_are_removed_at_start() {
    let home = TestHome::new().unwrap();
    let dir = home.neurolink_home().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, days) in [
        ("proxy-2020-01-01.jsonl", 30u64),
        ("proxy-debug-2020-01-02.jsonl", 8),
        ("proxy-recent.jsonl", 1),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, "{}\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
            .unwrap();
    }
    let _d = Daemon::start(&home, &[], &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.join("proxy-2020-01-01.jsonl").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.join("proxy-2020-01-01.jsonl").exists());
    assert!(!dir.join("proxy-debug-2020-01-02.jsonl").exists());
    assert!(dir.join("proxy-recent.jsonl").exists());
}
