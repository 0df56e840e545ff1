//! Real clients through the proxy, installed by the suite itself: the official TypeScript SDK
//! (`@anthropic-ai/sdk`, under node) and Claude Code (`@anthropic-ai/claude-code`), pinned in
//! `tests/node/package-lock.json` and installed with `npm ci` into `target/node-clients` on first
//! run (reused while the lock file is unchanged). The Python SDK's test is in `sdk.rs`.
//!
//! Claude Code runs as `claude -p ... --output-format json` in a private network namespace
//! (`unshare -rn`, see `tests/python/private_network.py`) whose one way out is a Unix-socket bridge
//! to the daemon: it reaches the proxy and nothing else. Where the OS refuses a namespace the test
//! says so in its output and runs Claude Code with the host's network (every address it is given
//! is still loopback). What it sends is written down in `docs/clients.md`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use neurolink_tests::fake_anthropic::{Behavior, FakeAnthropic};
use neurolink_tests::harness::proxy_with_keys;

use crate::sdk::workspace;

/// The installed clients: the folder holding `node_modules` and Claude Code's native binary.
struct NodeClients {
    dir: PathBuf,
    claude: PathBuf,
}

/// Install (or reuse) the pinned clients. Panics with what to do when npm is missing.
fn node_clients() -> NodeClients {
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    let source = workspace().join("tests/node");
    let dir = workspace().join("target/node-clients");
    let lock = std::fs::read(source.join("package-lock.json")).unwrap();
    let installed_lock = std::fs::read(dir.join("package-lock.json")).ok();
    let ready = installed_lock.as_deref() == Some(&lock[..])
        && dir
            .join("node_modules/@anthropic-ai/sdk/package.json")
            .is_file()
        && find_claude(&dir).is_some();
    if !ready {
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(source.join(f), dir.join(f)).unwrap();
        }
        // No install scripts: Claude Code's only copies its native binary over a placeholder,
        // and `find_claude` runs that binary from its platform package directly.
        let out = Command::new("npm")
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--loglevel=error",
            ])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("npm: {e}: the test command needs Node.js 18+ and npm (see the README)")
            });
        assert!(
            out.status.success(),
            "npm ci in {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let claude = find_claude(&dir).unwrap_or_else(|| {
        panic!(
            "no Claude Code binary for this platform under {}/node_modules/@anthropic-ai",
            dir.display()
        )
    });
    NodeClients { dir, claude }
}

/// Claude Code's native binary from its platform package (`claude-code-linux-x64`, `-musl`, ...):
/// the first one that runs here.
fn find_claude(dir: &Path) -> Option<PathBuf> {
    let scope = dir.join("node_modules/@anthropic-ai");
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&scope)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("claude-code-"))
        .map(|e| e.path().join("claude"))
        .filter(|p| p.is_file())
        .collect();
    candidates.sort();
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Run `program args` with a clean environment plus `env`, within `limit`; its stdout as JSON.
async fn run_json(
    program: &Path,
    args: &[&str],
    env: &[(&str, String)],
    cwd: &Path,
    limit: Duration,
) -> serde_json::Value {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish in {limit:?}", program.display()))
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} exited {}:\nstdout: {}\nstderr: {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}): {}",
            program.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_typescript_sdk_assembles_plain_streamed_and_tool_answers() {
    let clients = tokio::task::spawn_blocking(node_clients).await.unwrap();
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = proxy_with_keys(&fake.url(), &[("a", "key-a")], "", &[]).unwrap();

    // Node resolves the SDK from the script's folder upwards: the script runs beside node_modules.
    let script = clients.dir.join("sdk_check.mjs");
    std::fs::copy(workspace().join("tests/node/sdk_check.mjs"), &script).unwrap();
    let v = run_json(
        Path::new("node"),
        &[script.to_str().unwrap()],
        &[
            ("ANTHROPIC_BASE_URL", d.url.clone()),
            ("ANTHROPIC_API_KEY", "sdk-client-key".into()),
        ],
        &clients.dir,
        Duration::from_secs(60),
    )
    .await;

    crate::sdk::assert_sdk_assembled(&v, "APIError");

    let recorded = fake.recorded();
    assert_eq!(recorded.len(), 4);
    for r in &recorded {
        assert_eq!(r.headers["x-api-key"], "key-a");
        assert_eq!(
            r.headers["x-stainless-lang"], "js",
            "SDK headers are forwarded"
        );
    }
    assert_eq!(d.account("a").await.unwrap()["counters"]["successes"], 4);
}

/// Relay every connection to `socket` on to the daemon at `daemon` (host:port): the one way out
/// of Claude Code's private network.
async fn bridge(socket: &Path, daemon: String) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        while let Ok((mut inside, _)) = listener.accept().await {
            let daemon = daemon.clone();
            tokio::spawn(async move {
                if let Ok(mut proxy) = tokio::net::TcpStream::connect(daemon).await {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut proxy).await;
                }
            });
        }
    })
}

/// Whether this OS lets an unprivileged process make a user and network namespace.
fn private_network_available() -> Result<(), String> {
    match Command::new("unshare").args(["-rn", "true"]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("unshare: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_answers_through_the_pool_from_a_private_network_also_after_a_429() {
    let clients = tokio::task::spawn_blocking(node_clients).await.unwrap();
    let fake = FakeAnthropic::start().await.unwrap();
    let (home, d) =
        proxy_with_keys(&fake.url(), &[("a", "key-a"), ("b", "key-b")], "", &[]).unwrap();

    let claude_home = home.path().join("claude-home");
    std::fs::create_dir_all(claude_home.join("config")).unwrap();
    let isolation = private_network_available();
    let _bridge = match &isolation {
        Ok(()) => {
            let daemon = d.authority();
            Some(bridge(&home.path().join("bridge.sock"), daemon).await)
        }
        Err(why) => {
            eprintln!(
                "NOTE: no private network namespace here ({why}); Claude Code runs with the \
                 host's network, pointed at the daemon on loopback"
            );
            None
        }
    };
    let claude = clients.claude.to_str().unwrap().to_string();
    let helper = workspace().join("tests/python/private_network.py");
    let bridge_socket = home.path().join("bridge.sock");
    let run_claude = |prompt: &'static str| {
        let (program, mut args): (PathBuf, Vec<String>) = match &isolation {
            Ok(()) => (
                PathBuf::from("unshare"),
                vec![
                    "-rn".into(),
                    "python3".into(),
                    helper.display().to_string(),
                    bridge_socket.display().to_string(),
                    "--".into(),
                    claude.clone(),
                ],
            ),
            Err(_) => (clients.claude.clone(), vec![]),
        };
        args.extend(["-p", prompt, "--output-format", "json"].map(String::from));
        let mut env = vec![
            ("HOME", claude_home.display().to_string()),
            (
                "CLAUDE_CONFIG_DIR",
                claude_home.join("config").display().to_string(),
            ),
            ("ANTHROPIC_API_KEY", "sk-ant-client-placeholder".to_string()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
            ("DISABLE_AUTOUPDATER", "1".to_string()),
            ("DISABLE_TELEMETRY", "1".to_string()),
            ("DISABLE_ERROR_REPORTING", "1".to_string()),
        ];
        if isolation.is_err() {
            env.push(("ANTHROPIC_BASE_URL", d.url.clone()));
        }
        let cwd = claude_home.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_json(&program, &args, &env, &cwd, Duration::from_secs(120)).await
        }
    };

    // First: the first account serves a whole agent turn. The fake answers a tool call (Bash),
    // Claude Code runs or refuses it and sends the result back, the fake ends with text.
    let v = run_claude("Say hello.").await;
    assert_eq!(v["is_error"], false, "{v}");
    assert_eq!(v["result"], "Hello from the fake upstream.", "{v}");
    let first = fake.recorded();
    assert!(
        first.len() >= 2,
        "a tool call and its result: {}",
        first.len()
    );
    assert!(first.iter().all(|r| r.credential == "key-a"));
    let last_body: serde_json::Value =
        serde_json::from_slice(&first[first.len() - 1].body).unwrap();
    assert!(
        last_body["messages"].to_string().contains("tool_result"),
        "Claude Code sent the tool's result back through the proxy"
    );
    let answered =
        &last_body["messages"][last_body["messages"].as_array().map_or(0, |m| m.len()) - 1];
    let shown: String = answered.to_string().chars().take(400).collect();
    eprintln!("Claude Code's tool result: {shown}");

    // Then the first account answers 429: the proxy moves to the second, Claude Code never sees it.
    fake.script(
        "key-a",
        1,
        Behavior::error(429, "rate_limit_error", "slow down").with_header("retry-after", "300"),
    );
    let v = run_claude("Say hello again.").await;
    assert_eq!(v["is_error"], false, "{v}");
    assert_eq!(v["result"], "Hello from the fake upstream.", "{v}");

    let recorded = fake.recorded();
    let second: Vec<&str> = recorded[first.len()..]
        .iter()
        .map(|r| r.credential.as_str())
        .collect();
    assert!(second.len() >= 3, "{second:?}");
    assert_eq!(second[0], "key-a", "the 429");
    assert!(
        second[1..].iter().all(|c| *c == "key-b"),
        "the rest on the second account: {second:?}"
    );
    assert_eq!(
        d.account("b").await.unwrap()["counters"]["successes"],
        second.len() - 1
    );
    let messages: Vec<_> = recorded.iter().collect();

    // What Claude Code sends (docs/clients.md), as the fake saw it through the proxy.
    for r in &messages {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path_and_query, "/v1/messages?beta=true");
        let header = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(header("user-agent").starts_with("claude-cli/"), "{r:?}");
        assert_eq!(header("x-app"), "cli");
        assert_eq!(header("anthropic-version"), "2023-06-01");
        assert!(
            header("anthropic-beta").contains("claude-code-20250219"),
            "{}",
            header("anthropic-beta")
        );
        assert!(
            !r.headers.contains_key("authorization"),
            "the client's credential is replaced"
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["stream"], true);
        assert!(body["tools"].as_array().is_some_and(|t| !t.is_empty()));
        eprintln!(
            "Claude Code: {} {} user-agent={:?} anthropic-beta={:?} model={} body keys={:?}",
            r.method,
            r.path_and_query,
            header("user-agent"),
            header("anthropic-beta"),
            body["model"],
            body.as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
        );
    }
}
