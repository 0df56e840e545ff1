//! The rows of the fault matrix (docs/reliability.md) that no other suite covers: each asserts
//! what the client got and what the upstream saw.

use std::time::{Duration, SystemTime};

use neurolink_tests::fake_anthropic::{Behavior, FakeAnthropic};
use neurolink_tests::fake_oauth::FakeOAuth;
use neurolink_tests::harness::{
    config_with_keys, http, message_body, now_ms, send_message, token_store_with, Daemon, TestHome,
};

struct Pair {
    fake: FakeAnthropic,
    d: Daemon,
    _home: TestHome,
}

/// Accounts `a` and `b` (fill-first) on the fake, plus `server` YAML lines.
async fn pair(server: &str) -> Pair {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    let mut cfg = config_with_keys(&fake.url(), "fill-first", &[("a", "key-a"), ("b", "key-b")]);
    if !server.is_empty() {
        cfg.push_str(&format!("server:\n{server}"));
    }
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
async fn rate_limit_with_an_http_date_cools_until_then() {
    let p = pair("").await;
    let when = SystemTime::now() + Duration::from_secs(90);
    p.fake.script(
        "key-a",
        1,
        Behavior::error(429, "rate_limit_error", "slow down")
            .with_header("retry-after", &httpdate::fmt_http_date(when)),
    );
    assert_eq!(send(&p, false).await.status(), 200);
    assert_eq!((p.fake.count("key-a"), p.fake.count("key-b")), (1, 1));
    let a = p.d.account("a").await.unwrap();
    assert_eq!(a["state"], "cooling");
    let left = a["cooldownRemainingSecs"].as_u64().unwrap();
    assert!(
        (85..=91).contains(&left),
        "an HTTP date 90 s ahead cools ~90 s, got {left}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_of_each_error_type() {
    let p = pair("").await;
    // Anthropic's error types: two say "the service", the rest "this request".
    let moves_on = ["api_error", "overloaded_error"];
    let answered = [
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "billing_error",
        "timeout_error",
    ];
    let mut b = 0;
    for kind in moves_on {
        p.fake.script("key-a", 1, Behavior::error(400, kind, "x"));
        assert_eq!(send(&p, false).await.status(), 200, "{kind}");
        b += 1;
        assert_eq!(
            p.fake.count("key-b"),
            b,
            "400 {kind} moves to the next account"
        );
    }
    for kind in answered {
        p.fake.script("key-a", 1, Behavior::error(400, kind, "x"));
        let r = send(&p, false).await;
        assert_eq!(r.status(), 400, "{kind}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], kind, "the upstream answer as it came");
        assert_eq!(p.fake.count("key-b"), b, "400 {kind} is answered at once");
    }
    assert_eq!(p.d.account("a").await.unwrap()["state"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_then_silence_before_the_first_event_rotates() {
    let p = pair("  idleTimeoutSecs: 1\n").await;
    p.fake
        .script("key-a", 1, Behavior::Slow(Duration::from_secs(3)));
    let r = send(&p, true).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("message_stop"),
        "b served the whole stream: {text}"
    );
    assert_eq!((p.fake.count("key-a"), p.fake.count("key-b")), (1, 1));
    assert_eq!(p.d.account("a").await.unwrap()["state"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_trickle_within_the_idle_limit_arrives_whole() {
    let p = pair("  idleTimeoutSecs: 5\n").await;
    p.fake
        .script("key-a", 1, Behavior::Slow(Duration::from_millis(150)));
    let r = send(&p, true).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let expected: String = neurolink_tests::sse::text_stream(
        "msg_x",
        "claude-sonnet-4-5",
        &["Hello", " from", " the fake upstream."],
    )
    .concat();
    // Same events (the id differs per answer).
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("message_start"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&text), strip(&expected));
    assert_eq!(p.fake.count("key-b"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_before_headers_rotates() {
    let p = pair("").await;
    p.fake.script("key-a", 1, Behavior::CloseBeforeHeaders);
    assert_eq!(send(&p, false).await.status(), 200);
    assert_eq!((p.fake.count("key-a"), p.fake.count("key-b")), (1, 1));
    let a = p.d.account("a").await.unwrap();
    assert_eq!(a["state"], "active");
    assert_eq!(a["counters"]["errors"]["network"], 1, "{a}");
    // Both closing: the client gets a 502 saying what happened.
    p.fake.script("key-a", 1, Behavior::CloseBeforeHeaders);
    p.fake.script("key-b", 1, Behavior::CloseBeforeHeaders);
    let r = send(&p, false).await;
    assert_eq!(r.status(), 502);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "api_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream request failed"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_from_upstream() {
    let p = pair("").await;
    // An error status with a body that is not JSON: the status decides.
    p.fake.script(
        "key-a",
        1,
        Behavior::Raw {
            status: 503,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"<html>upstream unavailable".to_vec(),
        },
    );
    assert_eq!(send(&p, false).await.status(), 200);
    assert_eq!(p.fake.count("key-b"), 1);
    // A 200 whose JSON is broken: relayed exactly as it came (the proxy never rewrites a body).
    p.fake.script(
        "key-a",
        1,
        Behavior::Raw {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{\"id\":\"msg_1\",\"content\":[{\"type\":\"te".to_vec(),
        },
    );
    let r = send(&p, false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        b"{\"id\":\"msg_1\",\"content\":[{\"type\":\"te"
    );
    // And the proxy keeps serving.
    assert_eq!(send(&p, false).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_both_ways() {
    let p = pair("").await;
    // From the client: an Anthropic-shaped 431, nothing sent upstream.
    let r = http()
        .post(format!("{}/v1/messages", p.d.url))
        .header("x-huge", "h".repeat(100 * 1024))
        .json(&message_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("KB"),
        "{e}"
    );
    assert_eq!(p.fake.total(), 0);
    // From upstream: a header the client library refuses is a failed attempt.
    p.fake.script(
        "key-a",
        1,
        Behavior::Raw {
            status: 200,
            headers: vec![("x-huge".into(), "h".repeat(1024 * 1024))],
            body: b"{}".to_vec(),
        },
    );
    assert_eq!(send(&p, false).await.status(), 200);
    assert_eq!(p.fake.count("key-b"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_failing_during_a_request_still_serves_while_the_token_is_valid() {
    let fake = FakeAnthropic::start().await.unwrap();
    let oauth = FakeOAuth::start().await.unwrap();
    oauth.register("rt-0");
    let home = TestHome::new().unwrap();
    // Valid for 30 more minutes: inside the one-hour refresh margin.
    home.write(
        "tokens.json",
        &token_store_with(&[("alice", "at-0", "rt-0", now_ms() + 30 * 60 * 1000)]),
    )
    .unwrap();
    home.write_config(&format!(
        "providers:\n  anthropic: {{baseUrl: \"{}\"}}\n  anthropic-oauth: {{tokenUrl: \"{}\"}}\nserver:\n  tokenCheckSecs: 3600\n",
        fake.url(),
        oauth.token_url()
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    oauth.fail_next(&[500, 500, 500]);
    let r = d.message(false).await;
    assert_eq!(r.status(), 200);
    let seen = fake.last().unwrap();
    assert_eq!(
        seen.headers["authorization"], "Bearer at-0",
        "the current token served"
    );
    assert!(
        oauth.failures_left() < 3,
        "a refresh was attempted and failed"
    );
    assert_eq!(oauth.refreshes(), 0);
    assert_eq!(oauth.reuses(), 0);
    let a = d.account("alice").await.unwrap();
    assert_eq!(a["state"], "active", "{a}");
}

/// Every test docs/reliability.md names exists, so the table cannot point at nothing.
#[test]
fn the_matrix_names_only_tests_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("../docs/reliability.md")).unwrap();
    let mut named = 0;
    for cell in doc.split('`') {
        let Some((file, function)) = cell.split_once("::") else {
            continue;
        };
        if !file.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            || !function
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let source = std::fs::read_to_string(root.join(format!("tests/e2e/{file}.rs")))
            .unwrap_or_else(|e| panic!("{file}.rs: {e}"));
        assert!(
            source.contains(&format!("fn {function}(")),
            "docs/reliability.md names {file}::{function}, which does not exist"
        );
        named += 1;
    }
    assert!(named >= 25, "{named}");
}

/// The soak's 30-second version: concurrency 32, 5 % upstream faults, two logins refreshing under
/// load. Nothing a retry could have saved reaches a client; no refresh token is used twice; the
/// process does not leak files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_second_soak() {
    let o = neurolink_tests::soak::Options {
        duration: Duration::from_secs(30),
        concurrency: 32,
        fault_rate: 0.05,
        seed: 11,
    };
    let r = neurolink_tests::soak::run(&o).await.unwrap();
    eprintln!("{r}");
    assert!(r.requests > 100, "{r}");
    assert_eq!(r.savable, 0, "{r}");
    assert_eq!(r.refresh_reuses, 0, "{r}");
    assert!(r.refreshes >= 2, "the logins refreshed under load: {r}");
    assert!(r.successes * 10 >= r.requests * 9, "{r}");
    // Connections (32 clients, their upstream pool) open in the first seconds; after that the
    // count stays flat.
    let [_, middle, end] = r.samples;
    assert!(end.open_files <= middle.open_files + 40, "{r}");
}
