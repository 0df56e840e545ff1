//! The official `anthropic` Python SDK through the proxy (`tests/python/sdk_check.py`): a plain
//! message, a streamed message and a streamed tool call, checked as the SDK assembled them; and
//! streamed tool calls that came from the OpenAI and Gemini fallbacks (`fallback_check.py`). The
//! `openai` SDK's test is in `openai_endpoint.rs`.
//!
//! The SDK lives in a venv under `target/sdk-venv`, created on first run from
//! `tests/python/requirements.txt` and reused afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;

use neurolink_tests::fake_anthropic::FakeAnthropic;
use neurolink_tests::harness::{proxy_with_keys, Daemon, TestHome};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's python, creating the venv and installing the SDKs when needed.
pub fn sdk_python() -> PathBuf {
    // Several tests want the venv at once: one creates it while the others wait.
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    let venv = workspace().join("target").join("sdk-venv");
    let python = venv.join("bin").join("python");
    let ready = python.is_file()
        && Command::new(&python)
            .args([
                "-c",
                "import anthropic, openai, sys; sys.exit(0 if (anthropic.__version__, openai.__version__) == ('2.14.0', '3.57.0') else 1)",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 -m venv");
        assert!(status.success(), "creating {} failed", venv.display());
        let out = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(workspace().join("tests/python/requirements.txt"))
            .output()
            .expect("pip install");
        assert!(
            out.status.success(),
            "pip install failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    python
}

/// Run `script` with the venv's `python` and `env` (no proxy from the environment); what it
/// printed, as JSON.
pub async fn run_script(
    python: PathBuf,
    script: PathBuf,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let name = script.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .envs(env)
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "{name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What an official SDK assembled from the fake's answers through the proxy (the scripts print
/// the same shape in Python and TypeScript): a plain message, a stream, a streamed tool call, and
/// a stream cut inside an event, which the SDK raises as `cut_error` (the API error the proxy
/// appended after the last whole event), never a parse error or a quiet end.
pub fn assert_sdk_assembled(v: &serde_json::Value, cut_error: &str) {
    assert_eq!(v["plain"]["text"], "Hello from the fake upstream.");
    assert_eq!(v["plain"]["stop_reason"], "end_turn");
    assert_eq!(v["plain"]["input_tokens"], 25);
    assert_eq!(v["plain"]["output_tokens"], 12);

    assert_eq!(
        v["streamed"]["deltas"],
        serde_json::json!(["Hello", " from", " the fake upstream."])
    );
    assert_eq!(v["streamed"]["text"], "Hello from the fake upstream.");
    assert_eq!(v["streamed"]["output_tokens"], 12);

    assert_eq!(v["tool"]["stop_reason"], "tool_use");
    assert_eq!(v["tool"]["text"], serde_json::json!(["Let me check."]));
    assert_eq!(v["tool"]["tool_name"], "Bash");
    assert_eq!(v["tool"]["tool_id"], "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(
        v["tool"]["tool_input"],
        serde_json::json!({"command": "ls -la"})
    );

    // A stream cut inside an event: the SDK raises the API error the proxy appended after the
    // last whole event (message_start, content_block_start, ping, then "Hello"), never a JSON
    // decode error or a quiet end.
    assert_eq!(v["cut"]["raised"], cut_error, "{}", v["cut"]);
    assert!(
        v["cut"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream stream failed"),
        "{}",
        v["cut"]
    );
    assert_eq!(v["cut"]["deltas"], serde_json::json!(["Hello"]));
}

/// The SDK scripts' environment: the proxy's address and a key the proxy replaces.
fn anthropic_env(url: &str) -> [(&'static str, &str); 2] {
    [
        ("ANTHROPIC_BASE_URL", url),
        ("ANTHROPIC_API_KEY", "sdk-client-key"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_assembles_plain_streamed_and_tool_answers() {
    let python = tokio::task::spawn_blocking(sdk_python).await.unwrap();
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = proxy_with_keys(&fake.url(), &[("a", "key-a")], "", &[]).unwrap();

    let script = workspace().join("tests/python/sdk_check.py");
    let v = run_script(python, script, &anthropic_env(&d.url)).await;

    assert_sdk_assembled(&v, "APIStatusError");

    // Every SDK request reached the fake with the account's key, never the SDK's.
    let recorded = fake.recorded();
    assert_eq!(recorded.len(), 4);
    for r in &recorded {
        assert_eq!(r.headers["x-api-key"], "key-a");
        assert!(!r.headers.contains_key("authorization"));
        assert!(
            r.headers.get("x-stainless-lang").is_some(),
            "SDK headers are forwarded"
        );
    }
    assert_eq!(d.account("a").await.unwrap()["counters"]["successes"], 4);
}

/// The SDK assembles streamed tool calls that came through the fallback chain: from OpenAI,
/// then (OpenAI failing) from Gemini.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_assembles_tool_calls_from_openai_and_gemini_fallbacks() {
    use neurolink_tests::fake_anthropic::Behavior;
    use neurolink_tests::fake_providers::{self, FakeProviders, Which};

    let python = tokio::task::spawn_blocking(sdk_python).await.unwrap();
    let fake = FakeAnthropic::start().await.unwrap();
    let providers = FakeProviders::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&format!(
        "routing:\n  max-wait: 0\n  fallback-chain:\n    - {{provider: openai, model: gpt-4o}}\n    - {{provider: google-ai, model: gemini-2.5-pro}}\nproviders:\n  anthropic:\n    baseUrl: {}\n  openai:\n    baseUrl: {}\n    apiKey: sk-test\n  google-ai:\n    baseUrl: {}\n    apiKey: g-test\naccounts:\n  anthropic:\n    - name: a\n      apiKey: key-a\n",
        fake.url(),
        providers.openai_url(),
        providers.gemini_url()
    ))
    .unwrap();
    fake.script(
        "key-a",
        1,
        Behavior::error(429, "rate_limit_error", "slow down").with_header("retry-after", "300"),
    );
    providers.script(Which::OpenAi, 1, fake_providers::Behavior::Normal);
    providers.script(
        Which::OpenAi,
        1,
        fake_providers::Behavior::Error {
            status: 503,
            body: r#"{"error":{"message":"busy"}}"#.into(),
        },
    );
    let d = Daemon::start(&home, &[], &[]).unwrap();

    let script = workspace().join("tests/python/fallback_check.py");
    let v = run_script(python, script, &anthropic_env(&d.url)).await;
    for which in ["openai", "gemini"] {
        let t = &v[which];
        assert_eq!(t["model"], "claude-sonnet-4-5", "{which}: {t}");
        assert_eq!(t["stop_reason"], "tool_use", "{which}: {t}");
        assert_eq!(t["tool_name"], "Bash", "{which}: {t}");
        assert_eq!(
            t["tool_input"],
            serde_json::json!({"command": "ls -la"}),
            "{which}: {t}"
        );
        assert_eq!(
            t["text"],
            serde_json::json!(["Let me check."]),
            "{which}: {t}"
        );
        assert_eq!(
            t["output_tokens"],
            fake_providers::COMPLETION_TOKENS,
            "{which}: {t}"
        );
    }
    assert_eq!(v["openai"]["tool_id"], "call_fake1");
    assert!(v["gemini"]["tool_id"]
        .as_str()
        .unwrap()
        .starts_with("toolu_"));
    assert_eq!(providers.count(Which::Gemini), 1);
    assert_eq!(fake.count("key-a"), 1, "the cooling account is not retried");
}
