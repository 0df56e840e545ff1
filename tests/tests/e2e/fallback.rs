//! The fallback chain and model mappings, end to end: every Anthropic account refusing, the
//! request translated to the fake OpenAI or Gemini, the answer translated back and checked as a
//! client reads it.

use std::time::Duration;

use neurolink_tests::fake_anthropic::{Behavior, FakeAnthropic};
use neurolink_tests::fake_providers::{self, FakeProviders, Which};
use neurolink_tests::harness::{cli_json, http, Daemon, TestHome};
use serde_json::{json, Value};

struct Setup {
    anthropic: FakeAnthropic,
    providers: FakeProviders,
    d: Daemon,
    home: TestHome,
}

/// Two Anthropic API-key accounts, OpenAI and Gemini on the fake, and `routing` YAML (indented
/// under `routing:`).
async fn setup(routing: &str, server: &str) -> Setup {
    let anthropic = FakeAnthropic::start().await.unwrap();
    let providers = FakeProviders::start().await.unwrap();
    let home = TestHome::new().unwrap();
    let config = format!(
        "routing:\n  strategy: fill-first\n  max-wait: 0\n{routing}\nproviders:\n  anthropic:\n    baseUrl: {}\n  openai:\n    baseUrl: {}\n    apiKey: sk-openai-test\n  google-ai:\n    baseUrl: {}\n    apiKey: gemini-test-key\n  openai-compatible:\n    local:\n      baseUrl: {}\nserver:\n  port: 0\n{server}\naccounts:\n  anthropic:\n    - name: a\n      apiKey: key-a\n    - name: b\n      apiKey: key-b\n",
        anthropic.url(),
        providers.openai_url(),
        providers.gemini_url(),
        providers.openai_url(),
    );
    home.write_config(&config).unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    Setup {
        anthropic,
        providers,
        d,
        home,
    }
}

/// Both Anthropic accounts answer the next request with a long 429.
fn all_rate_limited(s: &Setup) {
    for key in ["key-a", "key-b"] {
        s.anthropic.script(
            key,
            1,
            Behavior::error(429, "rate_limit_error", "slow down").with_header("retry-after", "120"),
        );
    }
}

fn tools() -> Value {
    json!([{"name": "Bash", "description": "Run a command", "input_schema": {
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
        "additionalProperties": false,
        "properties": {"command": {"type": "string"}}, "required": ["command"]}}])
}

async fn post(s: &Setup, body: &Value) -> reqwest::Response {
    http()
        .post(format!("{}/v1/messages", s.d.url))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The SSE events of a Claude stream as JSON, checked for the grammar on the way: message_start
/// first, blocks opened and closed in order, exactly one message_stop last.
fn claude_events(text: &str) -> Vec<Value> {
    let mut events = Vec::new();
    for raw in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        if raw.starts_with(':') {
            continue;
        }
        let data = raw
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap_or_else(|| panic!("event without data: {raw:?}"));
        events.push(serde_json::from_str::<Value>(data).unwrap());
    }
    assert_eq!(events[0]["type"], "message_start", "{text}");
    assert_eq!(events.last().unwrap()["type"], "message_stop", "{text}");
    let mut open: Option<u64> = None;
    let mut next = 0;
    for e in &events {
        match e["type"].as_str().unwrap() {
            "content_block_start" => {
                assert!(open.is_none(), "{text}");
                assert_eq!(e["index"], next, "{text}");
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => assert_eq!(e["index"].as_u64(), open, "{text}"),
            "content_block_stop" => assert_eq!(e["index"].as_u64(), open.take(), "{text}"),
            _ => {}
        }
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "message_stop")
            .count(),
        1
    );
    events
}

/// The tool calls of a Claude stream, each with its input assembled and parsed.
fn tool_calls(events: &[Value]) -> Vec<(String, String, Value)> {
    let mut calls = Vec::new();
    let mut current: Option<(String, String, String)> = None;
    for e in events {
        match e["type"].as_str().unwrap() {
            "content_block_start" if e["content_block"]["type"] == "tool_use" => {
                let b = &e["content_block"];
                current = Some((
                    b["id"].as_str().unwrap().into(),
                    b["name"].as_str().unwrap().into(),
                    String::new(),
                ));
            }
            "content_block_delta" => {
                if let Some((_, _, args)) = &mut current {
                    args.push_str(e["delta"]["partial_json"].as_str().unwrap_or_default());
                }
            }
            "content_block_stop" => {
                if let Some((id, name, args)) = current.take() {
                    calls.push((id, name, serde_json::from_str(&args).unwrap()));
                }
            }
            _ => {}
        }
    }
    calls
}

fn stop_reason(events: &[Value]) -> Value {
    events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .map(|e| e["delta"]["stop_reason"].clone())
        .unwrap()
}

fn last_record(home: &TestHome) -> Value {
    let v = cli_json(home, &["rpc", "logs.tail"]);
    let records = v["records"].as_array().or(v.as_array()).cloned().unwrap();
    records.last().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_account_rate_limited_the_chain_answers_plain_text() {
    let s = setup(
        "  fallback-chain:\n    - {provider: openai, model: gpt-4o}\n",
        "",
    )
    .await;
    all_rate_limited(&s);
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "say hi"}]});
    let r = post(&s, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-neurolink-provider"], "openai");
    assert_eq!(r.headers()["x-neurolink-model"], "gpt-4o");
    let text = r.text().await.unwrap();
    let events = claude_events(&text);
    assert_eq!(events[0]["message"]["model"], "claude-sonnet-4-5");
    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(deltas, fake_providers::TEXT_PIECES);
    assert_eq!(stop_reason(&events), "end_turn");
    let usage = &events[events.len() - 2]["usage"];
    assert_eq!(usage["input_tokens"], fake_providers::PROMPT_TOKENS);
    assert_eq!(usage["output_tokens"], fake_providers::COMPLETION_TOKENS);

    // Both accounts were tried first; OpenAI got the translated request with its own key.
    assert_eq!(
        (s.anthropic.count("key-a"), s.anthropic.count("key-b")),
        (1, 1)
    );
    let sent = &s.providers.recorded()[0];
    assert_eq!(sent.headers["authorization"], "Bearer sk-openai-test");
    assert_eq!(sent.body["model"], "gpt-4o");
    assert_eq!(sent.body["stream_options"]["include_usage"], true);
    assert_eq!(
        sent.body["messages"],
        json!([{"role": "user", "content": "say hi"}])
    );

    let record = last_record(&s.home);
    assert_eq!(record["fallbackProvider"], "openai");
    assert_eq!(record["inputTokens"], fake_providers::PROMPT_TOKENS);
    let attempts: Vec<&str> = record["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(attempts, vec!["a", "b", "openai/gpt-4o"]);
    let status = s.d.status().await.unwrap();
    assert_eq!(status["providers"][0]["link"], "openai/gpt-4o");
    assert_eq!(status["providers"][0]["successes"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_tool_call_from_openai_keeps_its_arguments() {
    let s = setup(
        "  fallback-chain:\n    - {provider: openai, model: gpt-4o}\n",
        "",
    )
    .await;
    all_rate_limited(&s);
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true, "tools": tools(),
                      "messages": [{"role": "user", "content": "list files"}]});
    let text = post(&s, &body).await.text().await.unwrap();
    let events = claude_events(&text);
    assert_eq!(
        tool_calls(&events),
        vec![(
            "call_fake1".to_string(),
            "Bash".to_string(),
            json!({"command": "ls -la"})
        )]
    );
    assert_eq!(stop_reason(&events), "tool_use");
    // The arguments were streamed as they came, not collected: two fragments, two deltas.
    let fragments = events
        .iter()
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .count();
    assert_eq!(fragments, 2, "{text}");
    // The schema went through with the tool.
    let sent = &s.providers.recorded()[0].body;
    assert_eq!(sent["tools"][0]["function"]["name"], "Bash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_input_and_multi_turn_tools_through_gemini_keep_the_signature() {
    let s = setup(
        "  fallback-chain:\n    - {provider: google-ai, model: gemini-2.5-pro}\n",
        "",
    )
    .await;
    all_rate_limited(&s);
    let first = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true, "tools": tools(),
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this? Then list files."},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]});
    let r = post(&s, &first).await;
    assert_eq!(r.headers()["x-neurolink-provider"], "google-ai");
    let events = claude_events(&r.text().await.unwrap());
    let calls = tool_calls(&events);
    assert_eq!(calls.len(), 1);
    let (id, name, input) = &calls[0];
    assert!(id.starts_with("toolu_"), "{id}");
    assert_eq!(
        (name.as_str(), input),
        ("Bash", &json!({"command": "ls -la"}))
    );
    assert_eq!(stop_reason(&events), "tool_use");

    let sent = &s.providers.recorded()[0];
    assert_eq!(sent.headers["x-goog-api-key"], "gemini-test-key");
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        sent.body["contents"][0]["parts"][1]["inlineData"],
        json!({"mimeType": "image/png", "data": "iVBORw0KGgo="})
    );
    // Gemini's schema subset: no $schema, no additionalProperties.
    let params = &sent.body["tools"][0]["functionDeclarations"][0]["parameters"];
    assert!(params.get("$schema").is_none() && params.get("additionalProperties").is_none());

    // The next turn, as Claude Code sends it: the call and its result.
    let second = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": false, "tools": tools(),
        "messages": [
            first["messages"][0].clone(),
            {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "Bash", "input": input}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "a.txt"}]}]});
    all_rate_limited(&s);
    let r = post(&s, &second).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["content"][0]["text"], "Hello from the provider.");
    assert_eq!(answer["stop_reason"], "end_turn");
    let sent = &s.providers.recorded()[1].body;
    let model_turn = &sent["contents"][1]["parts"][0];
    assert_eq!(
        model_turn["thoughtSignature"],
        fake_providers::GEMINI_SIGNATURE
    );
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "Bash", "response": {"result": "a.txt"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_link_failing_the_second_answers() {
    let s = setup(
        "  fallback-chain:\n    - {provider: openai, model: gpt-4o}\n    - {provider: google-ai, model: gemini-2.5-flash}\n",
        "",
    )
    .await;
    s.providers.script(
        Which::OpenAi,
        1,
        fake_providers::Behavior::Error {
            status: 500,
            body: r#"{"error":{"message":"boom","type":"server_error"}}"#.into(),
        },
    );
    all_rate_limited(&s);
    let r = post(
        &s,
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": false,
                 "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-neurolink-provider"], "google-ai");
    let record = last_record(&s.home);
    let attempts: Vec<(String, String)> = record["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["account"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        attempts[2..],
        [
            ("openai/gpt-4o".to_string(), "server_error".to_string()),
            (
                "google-ai/gemini-2.5-flash".to_string(),
                "success".to_string()
            )
        ]
    );

    // Every link failing: the client gets the pool's 429 with its retry-after, as without a chain.
    s.providers.script(
        Which::OpenAi,
        1,
        fake_providers::Behavior::Error {
            status: 500,
            body: "{}".into(),
        },
    );
    s.providers.script(
        Which::Gemini,
        1,
        fake_providers::Behavior::Error {
            status: 503,
            body: r#"{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}"#.into(),
        },
    );
    let r = post(
        &s,
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
                 "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_gets_keep_alive_comments_between_events() {
    let s = setup(
        "  fallback-chain:\n    - {provider: local, model: qwen3}\n",
        "  streamKeepAliveSecs: 1\n",
    )
    .await;
    s.providers.script(
        Which::OpenAi,
        1,
        fake_providers::Behavior::StallAfterFirst(Duration::from_millis(2600)),
    );
    all_rate_limited(&s);
    let r = post(
        &s,
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true,
                 "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.headers()["x-neurolink-provider"], "local");
    let text = r.text().await.unwrap();
    assert!(text.contains("\n\n: keep-alive\n\n"), "{text}");
    // Comments sit between whole events: the stream still parses, start to stop.
    let events = claude_events(&text);
    assert_eq!(stop_reason(&events), "end_turn");
    // A local server needs no key: none was sent.
    assert!(!s.providers.recorded()[0]
        .headers
        .contains_key("authorization"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failing_mid_stream_ends_it_with_an_error_event() {
    let s = setup(
        "  fallback-chain:\n    - {provider: openai, model: gpt-4o}\n",
        "",
    )
    .await;
    s.providers
        .script(Which::OpenAi, 1, fake_providers::Behavior::CutAfter(2));
    all_rate_limited(&s);
    let text = post(
        &s,
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true,
                 "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .text()
    .await
    .unwrap();
    let last = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .last()
        .unwrap();
    assert!(last.starts_with("event: error\n"), "{text}");
    assert!(
        last.contains("openai"),
        "the error names the provider: {text}"
    );
    assert_eq!(last_record(&s.home)["errorClass"], "stream_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_model_goes_straight_to_its_provider() {
    let s = setup(
        "  model-mappings:\n    - {from: 'claude-3-5-haiku*', to: gemini-2.5-flash, provider: google-ai}\n  passthrough-models: ['claude-opus-*']\n  fallback-chain:\n    - {provider: openai, model: gpt-4o}\n",
        "",
    )
    .await;
    let r = post(
        &s,
        &json!({"model": "claude-3-5-haiku-20241022", "max_tokens": 64,
                 "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-neurolink-model"], "gemini-2.5-flash");
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["model"], "claude-3-5-haiku-20241022");
    assert_eq!(s.anthropic.count("key-a") + s.anthropic.count("key-b"), 0);

    // A passthrough model never falls back: every account refusing is the client's 429.
    all_rate_limited(&s);
    let r = post(
        &s,
        &json!({"model": "claude-opus-4-1", "max_tokens": 64,
                 "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert_eq!(s.providers.count(Which::OpenAi), 0);

    // A mapped provider's error is the client's, Anthropic-shaped, naming the provider.
    s.providers.script(
        Which::Gemini,
        1,
        fake_providers::Behavior::Error {
            status: 400,
            body: r#"{"error":{"code":400,"message":"bad schema","status":"INVALID_ARGUMENT"}}"#
                .into(),
        },
    );
    let r = post(
        &s,
        &json!({"model": "claude-3-5-haiku-20241022", "max_tokens": 64,
                 "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(e["error"]["message"], "google-ai: bad schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_of_mapped_models_is_a_real_count() {
    let s = setup(
        "  model-mappings:\n    - {from: claude-3-5-haiku*, to: gemini-2.5-flash, provider: google-ai}\n    - {from: gpt-alias, to: gpt-4o, provider: openai}\n    - {from: local-alias, to: qwen3, provider: local}\n  fallback-chain:\n    - {provider: google-ai, model: gemini-2.5-pro}\n",
        "",
    )
    .await;
    let count = |model: &str| {
        let url = format!("{}/v1/messages/count_tokens", s.d.url);
        let body = json!({"model": model, "system": "Be brief please.",
                          "messages": [{"role": "user", "content": "Hello, world! How are you today?"}]});
        async move { http().post(url).json(&body).send().await.unwrap() }
    };
    // Gemini counts itself: the fake counts words (3 system + 6 user).
    let r = count("claude-3-5-haiku-20241022").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-neurolink-token-count"],
        "gemini-count-tokens"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["input_tokens"], 9);
    let sent = s.providers.recorded().pop().unwrap();
    assert_eq!(sent.path, "/v1beta/models/gemini-2.5-flash:countTokens");
    assert_eq!(sent.headers["x-goog-api-key"], "gemini-test-key");

    // OpenAI's tokenizer, counted locally: nothing is sent to OpenAI.
    let r = count("gpt-alias").await;
    assert_eq!(
        r.headers()["x-neurolink-token-count"],
        "tiktoken-o200k_base"
    );
    let v: Value = r.json().await.unwrap();
    let n = v["input_tokens"].as_u64().unwrap();
    // system (1 + 4) + user (1 + 9) + 3 per message + 3: far from bytes / 4 either way.
    assert!((20..=30).contains(&n), "{n}");
    assert_eq!(s.providers.count(Which::OpenAi), 0);
    let r = count("local-alias").await;
    assert_eq!(
        r.headers()["x-neurolink-token-count"],
        "tiktoken-o200k_base-approximate"
    );

    // Every account cooling: the chain counts.
    all_rate_limited(&s);
    let r = count("claude-sonnet-4-5").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-neurolink-provider"], "google-ai");
    assert_eq!(
        r.headers()["x-neurolink-token-count"],
        "gemini-count-tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_echoing_its_key_never_shows_it() {
    let s = setup(
        "  model-mappings:\n    - {from: gpt-alias, to: gpt-4o, provider: openai}\n",
        "",
    )
    .await;
    s.providers.script(
        Which::OpenAi,
        1,
        fake_providers::Behavior::Error {
            status: 401,
            body: r#"{"error":{"message":"Incorrect API key provided: sk-openai-test","type":"invalid_request_error"}}"#.into(),
        },
    );
    let r = post(
        &s,
        &json!({"model": "gpt-alias", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 401);
    let text = r.text().await.unwrap();
    assert!(!text.contains("sk-openai-test"), "{text}");
    assert!(text.contains("Incorrect API key provided"), "{text}");
    let status = s.d.status().await.unwrap().to_string();
    assert!(!status.contains("sk-openai-test"), "{status}");
    // The request log has the request, and nothing of the key.
    let _ = last_record(&s.home);
    // The log writer takes its queue every 100 ms: wait for the line to reach the file.
    let dir = s.home.neurolink_home().join("logs");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let written = logs
            .iter()
            .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("gpt-alias")));
        if written || std::time::Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!logs.is_empty());
    for path in logs {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("sk-openai-test"), "{}", path.display());
    }
    for line in s.d.drain_output() {
        assert!(!line.contains("sk-openai-test"), "{line}");
    }
}
