//! Gaps found by an adversarial run (reliability and security issue, section 1): each pinned by
//! what the client gets and what the upstream saw.

use std::time::{Duration, Instant};

use neurolink_tests::fake_anthropic::{Behavior, FakeAnthropic};
use neurolink_tests::harness::{http, message_body, proxy_with_keys, Daemon, TestHome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn daemon_with(
    fake: &FakeAnthropic,
    keys: &[(&str, &str)],
    extra: &str,
) -> (TestHome, Daemon) {
    proxy_with_keys(&fake.url(), keys, extra, &["--no-settings"]).unwrap()
}

fn first_event_error() -> Behavior {
    Behavior::Raw {
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream; charset=utf-8".into())],
        body: b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_first_event_is_an_error_moves_to_the_next_account() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = daemon_with(&fake, &[("a", "key-a"), ("b", "key-b")], "").await;
    fake.script("key-a", 1, first_event_error());
    let r = d.message(true).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.starts_with("event: message_start"), "{text}");
    assert_eq!((fake.count("key-a"), fake.count("key-b")), (1, 1));
    // Nothing else could serve: the client gets the error as an error answer, not a 200.
    fake.script("key-a", 1, first_event_error());
    fake.script("key-b", 1, first_event_error());
    let r = d.message(true).await;
    assert_eq!(r.status(), 529);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_account_refused_answers_an_authentication_error_with_what_to_do() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = daemon_with(&fake, &[("a", "key-a"), ("b", "key-b")], "").await;
    for key in ["key-a", "key-b"] {
        fake.script(
            key,
            1,
            Behavior::error(401, "authentication_error", "invalid x-api-key"),
        );
    }
    assert_eq!(
        d.message(false).await.status(),
        401,
        "the last upstream answer"
    );
    // Both now wait out the 5-minute auth cooldown: that is not a rate limit.
    let r = d.message(false).await;
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("neurolink auth status"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_excluded_on_every_account_is_an_invalid_request_naming_the_rule() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&format!(
        "providers:\n  anthropic: {{baseUrl: \"{}\"}}\naccounts:\n  anthropic:\n    - {{name: a, apiKey: key-a, excludedModels: [\"claude-opus-*\"]}}\n",
        fake.url()
    ))
    .unwrap();
    let d = Daemon::start(&home, &["--no-settings"], &[]).unwrap();
    let mut body = message_body(false);
    body["model"] = "claude-opus-4-1".into();
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("claude-opus-4-1") && message.contains("claude-opus-*"),
        "{message}"
    );
    assert_eq!(fake.count("key-a"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_with_two_model_keys_is_refused() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = daemon_with(&fake, &[("a", "key-a")], "").await;
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .header("content-type", "application/json")
        .body(r#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"the \"model\" says hi"}],"model":"claude-opus-4-1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("model"),
        "{v}"
    );
    assert_eq!(fake.count("key-a"), 0);
    // A quoted "model" inside a message is no second key.
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .header("content-type", "application/json")
        .body(r#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"the \"model\": says hi"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_auth_key_status_needs_it_and_health_says_little() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = daemon_with(
        &fake,
        &[("alice@example.com", "key-a")],
        "server: {authKey: proxy-secret}\n",
    )
    .await;
    let r = http()
        .get(format!("{}/status", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let text = r.text().await.unwrap();
    assert!(!text.contains("alice"), "{text}");
    let r = http()
        .get(format!("{}/status", d.url))
        .header("x-api-key", "proxy-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("alice@example.com"));
    let r = http()
        .get(format!("{}/health", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ok");
    assert!(v.get("strategy").is_none(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = daemon_with(&fake, &[("a", "key-a")], "").await;
    let addr = d.authority();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        format!("POST /v1/messages HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 40000000\r\n\r\n{{").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut answer))
        .await
        .expect("an answer without sending the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request_too_large"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = daemon_with(&fake, &[("a", "key-a")], "").await;
    fake.script("key-a", 1, Behavior::error(500, "api_error", "boom"));
    assert_eq!(d.message(false).await.status(), 500);
    // The failed attempt is logged (a warning line); wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen: Vec<String> = d.startup.clone();
    while !seen
        .iter()
        .any(|l| l.contains("WARN") || l.contains("attempt failed"))
    {
        assert!(Instant::now() < deadline, "no log line: {seen:?}");
        seen.extend(d.drain_output());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen.iter().all(|l| !l.contains('\u{1b}')), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_for_the_soonest_account_within_max_wait() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = daemon_with(&fake, &[("a", "key-a")], "").await;
    fake.script(
        "key-a",
        1,
        Behavior::error(429, "rate_limit_error", "slow down").with_header("retry-after", "1"),
    );
    assert_eq!(
        d.message(false).await.status(),
        429,
        "the upstream's own 429"
    );
    // The only account is back within a second, well inside the default max-wait (5 s).
    let started = Instant::now();
    assert_eq!(d.message(false).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited");

    // max-wait 0: the 429 at once.
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&format!(
        "routing: {{strategy: fill-first, max-wait: 0}}\nproviders:\n  anthropic: {{baseUrl: \"{}\"}}\naccounts:\n  anthropic:\n    - {{name: a, apiKey: key-a}}\n",
        fake.url()
    ))
    .unwrap();
    let d = Daemon::start(&home, &["--no-settings"], &[]).unwrap();
    fake.script(
        "key-a",
        1,
        Behavior::error(429, "rate_limit_error", "slow down").with_header("retry-after", "30"),
    );
    assert_eq!(d.message(false).await.status(), 429);
    let r = d.message(false).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

/// A client's connection is closed by the server within `within` (EOF or reset on read).
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_idle_connections_and_too_many_connections_are_cut() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = daemon_with(
        &fake,
        &[("a", "key-a")],
        // 3 s, not 1: the eight held connections must outlive the ninth's connect on busy
        // cores (with 1 s, one CI run saw a held one cut first and the ninth served, not 503).
        "server: {clientHeaderTimeoutSecs: 3, maxConnections: 8}\n",
    )
    .await;
    let addr = d.authority();

    // Headers at a trickle: cut after the header timeout.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(10)).await,
        "slow headers were not cut"
    );

    // An idle keep-alive connection after one request: closed too.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(format!("GET /health HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)).await,
        "idle connection kept"
    );

    // Past the cap: an Anthropic-shaped 503, while the held ones stay open; normal requests are
    // served again once they go.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // A partial request keeps the connection busy (until the header timeout).
        c.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        held.push(c);
    }
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), extra.read_to_end(&mut answer))
        .await
        .expect("an answer above the cap")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("overloaded_error") && answer.contains("maxConnections"),
        "{answer}"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ok = tokio::time::timeout(
            Duration::from_secs(2),
            http().get(format!("{}/health", d.url)).send(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .is_some_and(|r| r.status() == 200);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not recover after the held connections went"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d.message(false).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_coming_gets_a_408() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = daemon_with(
        &fake,
        &[("a", "key-a")],
        "server: {clientBodyTimeoutSecs: 1}\n",
    )
    .await;
    let addr = d.authority();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        format!("POST /v1/messages HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"model\":").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut answer))
        .await
        .expect("an answer to a stalled body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("timeout_error"), "{answer}");
    assert_eq!(fake.count("key-a"), 0);
}
