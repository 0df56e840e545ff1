//! Byte-for-byte forwarding and the header rules of docs/design.md §5.

use neurolink_tests::fake_anthropic::{Behavior, FakeAnthropic};
use neurolink_tests::harness::{
    config_with_keys, http, message_body, token_store, Daemon, TestHome,
};
use sha2::{Digest, Sha256};

async fn one_key_proxy(fake: &FakeAnthropic) -> (TestHome, Daemon) {
    let home = TestHome::new().unwrap();
    home.write_config(&config_with_keys(
        &fake.url(),
        "fill-first",
        &[("a", "key-a")],
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    (home, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_message_passes_through_with_auth_swapped() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = one_key_proxy(&fake).await;
    let body = serde_json::to_vec(&message_body(false)).unwrap();
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .header("x-api-key", "client-side-key")
        .header("authorization", "Bearer client-side-token")
        .header("anthropic-beta", "claude-code-20250219")
        .header("x-stainless-os", "Linux")
        .header("x-app", "cli")
        .header("connection", "keep-alive")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["anthropic-ratelimit-requests-remaining"], "99");
    assert!(r.headers()["request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_fake_"));
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        answer["content"][0]["text"],
        "Hello from the fake upstream."
    );

    let seen = fake.last().unwrap();
    assert_eq!(seen.path_and_query, "/v1/messages?beta=true");
    assert_eq!(seen.body.as_ref(), body.as_slice(), "body bytes untouched");
    assert_eq!(seen.headers["x-api-key"], "key-a");
    assert!(
        !seen.headers.contains_key("authorization"),
        "client Authorization must not go upstream"
    );
    assert_eq!(
        seen.headers["anthropic-beta"], "claude-code-20250219",
        "no OAuth beta for API keys"
    );
    assert_eq!(
        seen.headers["anthropic-version"], "2023-06-01",
        "filled when absent"
    );
    assert_eq!(seen.headers["x-stainless-os"], "Linux");
    assert_eq!(seen.headers["x-app"], "cli");
    let host = seen.headers["host"].to_str().unwrap();
    assert_eq!(
        host,
        fake.addr.to_string(),
        "host is the upstream's, not the proxy's"
    );

    let acct = d.account("a").await.unwrap();
    assert_eq!(acct["counters"]["successes"], 1);
    assert_eq!(acct["counters"]["inputTokens"], 25);
    assert_eq!(acct["counters"]["outputTokens"], 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_version_and_query_are_kept() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = one_key_proxy(&fake).await;
    let r = http()
        .post(format!("{}/v1/messages?beta=true", d.url))
        .header("anthropic-version", "2026-10-21")
        .json(&message_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = fake.last().unwrap();
    assert_eq!(seen.path_and_query, "/v1/messages?beta=true");
    assert_eq!(seen.headers["anthropic-version"], "2026-10-21");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_account_uses_bearer_and_oauth_beta() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write(
        "tokens.json",
        &token_store(&[("alice@example.com", "oat-alice", i64::MAX / 2)]),
    )
    .unwrap();
    home.write_config(&format!(
        "providers:\n  anthropic:\n    baseUrl: {}\n",
        fake.url()
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .header("x-api-key", "whatever")
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        )
        .json(&message_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = fake.last().unwrap();
    assert_eq!(seen.headers["authorization"], "Bearer oat-alice");
    assert!(!seen.headers.contains_key("x-api-key"));
    assert_eq!(
        seen.headers["anthropic-beta"],
        "claude-code-20250219,interleaved-thinking-2025-05-14,oauth-2025-04-20"
    );
    let acct = d.account("alice@example.com").await.unwrap();
    assert_eq!(acct["kind"], "oauth");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_body_arrives_intact() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = one_key_proxy(&fake).await;
    let filler: String = (0..1_048_576)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({
        "model": "claude-sonnet-4-5", "max_tokens": 1, "stream": false,
        "messages": [{"role": "user", "content": filler}]
    }))
    .unwrap();
    assert!(body.len() > 1_048_576);
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = fake.last().unwrap();
    assert_eq!(seen.body.len(), body.len());
    assert_eq!(Sha256::digest(&seen.body), Sha256::digest(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_and_models_are_anthropics_own() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = one_key_proxy(&fake).await;
    let body = serde_json::json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "count me, please"}]});
    let direct: serde_json::Value = http()
        .post(format!("{}/v1/messages/count_tokens", fake.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let proxied: serde_json::Value = http()
        .post(format!("{}/v1/messages/count_tokens", d.url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(proxied, direct);
    assert!(proxied["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(fake.last().unwrap().headers["x-api-key"], "key-a");
    assert_eq!(
        fake.last().unwrap().path_and_query,
        "/v1/messages/count_tokens?beta=true"
    );

    let models: serde_json::Value = http()
        .get(format!("{}/v1/models?limit=5", d.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "claude-sonnet-4-5-20250929");
    assert_eq!(fake.last().unwrap().path_and_query, "/v1/models?limit=5");
    let acct = d.account("a").await.unwrap();
    assert_eq!(
        acct["counters"]["inputTokens"], 0,
        "count_tokens answers are not usage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_is_never_mismatched() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = one_key_proxy(&fake).await;
    // The client asks for compression; the proxy asks upstream for identity so it can read usage.
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .json(&message_body(true))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    let text = r.text().await.unwrap();
    assert!(text.contains("message_stop"));
    assert_eq!(fake.last().unwrap().headers["accept-encoding"], "identity");
    assert_eq!(
        d.account("a").await.unwrap()["counters"]["outputTokens"],
        12
    );

    // An upstream that compresses anyway: header and bytes reach the client unchanged.
    let gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4];
    fake.script(
        "key-a",
        1,
        Behavior::Raw {
            status: 200,
            headers: vec![("content-encoding".into(), "gzip".into())],
            body: gz.clone(),
        },
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = client
        .post(format!("{}/v1/messages", d.url))
        .json(&message_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.bytes().await.unwrap().as_ref(), gz.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_auth_key_is_required_and_never_forwarded() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    let cfg = config_with_keys(&fake.url(), "fill-first", &[("a", "key-a")])
        + "server:\n  authKey: \"${PROXY_KEY}\"\n";
    home.write_config(&cfg).unwrap();
    let d = Daemon::start(
        &home,
        &[],
        &[("PROXY_KEY", "local-proxy-secret-0123456789")],
    )
    .unwrap();
    let url = format!("{}/v1/messages", d.url);
    let r = http()
        .post(&url)
        .json(&message_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "authentication_error");
    assert_eq!(fake.total(), 0);
    for (name, value) in [
        ("x-api-key", "local-proxy-secret-0123456789"),
        ("authorization", "Bearer local-proxy-secret-0123456789"),
    ] {
        let r = http()
            .post(&url)
            .header(name, value)
            .json(&message_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        let seen = fake.last().unwrap();
        assert_eq!(seen.headers["x-api-key"], "key-a");
        assert!(!seen.headers.contains_key("authorization"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_accounts_answers_401_naming_the_fix() {
    let home = TestHome::new().unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let r = d.message(false).await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_nl_"));
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "authentication_error");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("ANTHROPIC_API_KEY") && msg.contains("neurolink auth login"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_api_key_is_an_account() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&format!(
        "providers:\n  anthropic:\n    baseUrl: {}\n",
        fake.url()
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[("ANTHROPIC_API_KEY", "sk-from-env")]).unwrap();
    let r = d.message(false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(fake.last().unwrap().headers["x-api-key"], "sk-from-env");
    assert_eq!(d.account("env").await.unwrap()["source"], "environment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_and_unknown_paths_get_anthropic_errors() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = one_key_proxy(&fake).await;
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    let r = http()
        .head(format!("{}/api/hello", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The wrong method on a known path: Anthropic's shape, with the method to use.
    let r = http()
        .get(format!("{}/v1/messages", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(
        e["error"]["message"],
        "GET /v1/messages is not served; use POST"
    );
    assert_eq!(fake.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_status_never_show_secrets() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&config_with_keys(
        &fake.url(),
        "round-robin",
        &[("a", "sk-ant-api03-SECRETSECRETSECRET")],
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let health: serde_json::Value = http()
        .get(format!("{}/health", d.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let status = d.status().await.unwrap();
    assert_eq!(status["strategy"], "round-robin");
    assert!(status["uptime"].as_f64().unwrap() >= 0.0);
    assert_eq!(status["accounts"][0]["state"], "active");
    assert!(!status.to_string().contains("SECRETSECRET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    use http_body_util::BodyExt;
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = one_key_proxy(&fake).await;
    // One client connection, as Claude Code keeps one alive: it is served by one thread of
    // the proxy, whose upstream pool must reuse one upstream connection. (A client opening
    // several connections may meet several serving threads, each with its own pool.)
    let addr = d.authority();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut client, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    for stream in [
        false, true, false, true, false, false, true, false, false, true,
    ] {
        let body = serde_json::to_vec(&message_body(stream)).unwrap();
        let request = http::Request::post("/v1/messages")
            .header("host", &addr)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        client.ready().await.unwrap();
        let r = client.send_request(request).await.unwrap();
        assert_eq!(r.status(), 200);
        r.into_body().collect().await.unwrap();
    }
    assert_eq!(fake.total(), 10);
    assert_eq!(
        fake.connections(),
        1,
        "ten sequential requests on one client connection share one upstream connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obfuscated_neurolink_token_store_is_read() {
    use neurolink_shared::token_store;
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    // Written exactly as NeuroLink writes it: XOR with the key derived from $HOME, then base64.
    let plain = token_store(&[("bob@example.com", "oat-bob", i64::MAX / 2)]);
    let encoded = token_store::encode(&plain, home.path().to_str().unwrap());
    home.write("tokens.json", &encoded).unwrap();
    home.write_config(&format!(
        "providers:\n  anthropic:\n    baseUrl: {}\n",
        fake.url()
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let r = d.message(false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        fake.last().unwrap().headers["authorization"],
        "Bearer oat-bob"
    );
    assert_eq!(
        d.account("bob@example.com").await.unwrap()["source"],
        "token-store"
    );
    // Read-only: the file is exactly as it was.
    assert_eq!(
        std::fs::read_to_string(home.neurolink_home().join("tokens.json")).unwrap(),
        encoded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_32_mb_get_413_without_reaching_upstream() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = one_key_proxy(&fake).await;
    // Sent chunked, without a declared length: the limit is found while reading. (A declared
    // length over it is refused before the upload: reliability.rs.)
    let chunks = (0..33).map(|i| {
        let n = if i < 32 { 1024 * 1024 } else { 1 };
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; n]))
    });
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["type"], "request_too_large");
    assert_eq!(fake.total(), 0);
}
