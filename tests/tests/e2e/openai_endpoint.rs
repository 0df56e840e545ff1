//! The OpenAI-compatible endpoint: `POST /v1/chat/completions` served by the pool's API-key
//! accounts (or the fallback chain), and `GET /v1/models` in OpenAI's shape, driven by the
//! official `openai` Python SDK (`tests/python/openai_check.py`) and by hand.

use neurolink_tests::fake_anthropic::FakeAnthropic;
use neurolink_tests::harness::{http, now_ms, token_store, Daemon, TestHome};
use serde_json::{json, Value};

use crate::sdk::{run_script, sdk_python, workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_sdk_streams_and_calls_tools_through_the_pool() {
    let python = tokio::task::spawn_blocking(sdk_python).await.unwrap();
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&format!(
        "routing:\n  model-mappings:\n    - {{from: fast-model, to: claude-3-5-haiku-20241022}}\nproviders:\n  anthropic:\n    baseUrl: {}\naccounts:\n  anthropic:\n    - {{name: a, apiKey: key-a}}\n",
        fake.url()
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let base = format!("{}/v1", d.url);
    let script = workspace().join("tests/python/openai_check.py");
    let v = run_script(python, script, &[("OPENAI_BASE_URL", &base)]).await;
    assert_eq!(v["plain"]["text"], "Hello from the fake upstream.");
    assert_eq!(v["plain"]["finish_reason"], "stop");
    assert_eq!(v["plain"]["completion_tokens"], 12);
    assert_eq!(
        v["streamed"]["deltas"],
        json!(["Hello", " from", " the fake upstream."])
    );
    assert_eq!(v["streamed"]["finish_reason"], "stop");
    assert_eq!(v["streamed"]["completion_tokens"], 12);
    assert_eq!(v["tool"]["finish_reason"], "tool_calls");
    assert_eq!(
        v["tool"]["calls"],
        json!([{"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "Bash", "arguments": {"command": "ls -la"}}])
    );
    let models: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(models.contains(&"fast-model"), "{models:?}");
    assert!(
        models.len() > 1,
        "Anthropic's models are listed too: {models:?}"
    );
    assert_eq!(v["error"]["status"], 400, "{}", v["error"]);

    // What Anthropic received: Claude requests with the account's key, none of the SDK's headers.
    let recorded = fake.recorded();
    let messages: Vec<_> = recorded
        .iter()
        .filter(|r| r.path_and_query.starts_with("/v1/messages"))
        .collect();
    assert_eq!(messages.len(), 3);
    for r in &messages {
        assert_eq!(r.headers["x-api-key"], "key-a");
        assert!(r.headers.get("x-stainless-lang").is_none());
        assert!(r.headers.contains_key("anthropic-version"));
    }
    let first: Value = serde_json::from_slice(&messages[0].body).unwrap();
    assert_eq!(first["system"], "Be brief.");
    assert_eq!(first["max_tokens"], 4096);
    // The request log has the endpoint's own path.
    let status = d.status().await.unwrap();
    assert_eq!(status["accounts"][0]["counters"]["successes"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_accounts_do_not_serve_the_openai_endpoint() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write(
        "tokens.json",
        &token_store(&[("me@example.com", "at-1", now_ms() + 3_600_000 * 5)]),
    )
    .unwrap();
    home.write_config(&format!(
        "providers:\n  anthropic:\n    baseUrl: {}\n",
        fake.url()
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let r = http()
        .post(format!("{}/v1/chat/completions", d.url))
        .json(
            &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API-key accounts and providers only"),
        "{e}"
    );
    assert_eq!(fake.recorded().len(), 0);
    // Claude Code's own endpoint still uses the subscription.
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_provider_serves_openai_clients_too() {
    use neurolink_tests::fake_providers::{self, FakeProviders, Which};
    let fake = FakeAnthropic::start().await.unwrap();
    let providers = FakeProviders::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&format!(
        "routing:\n  model-mappings:\n    - {{from: gemini-alias, to: gemini-2.5-flash, provider: google-ai}}\nproviders:\n  anthropic:\n    baseUrl: {}\n  google-ai:\n    baseUrl: {}\n    apiKey: g-test\n",
        fake.url(),
        providers.gemini_url()
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let r = http()
        .post(format!("{}/v1/chat/completions", d.url))
        .json(&json!({"model": "gemini-alias", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-neurolink-provider"], "google-ai");
    let text = r.text().await.unwrap();
    let mut content = String::new();
    for data in text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk", "{text}");
        content.push_str(
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default(),
        );
    }
    assert_eq!(content, fake_providers::TEXT_PIECES.concat());
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(providers.count(Which::Gemini), 1);
    assert_eq!(fake.recorded().len(), 0);
}
