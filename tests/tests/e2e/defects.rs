//! Defects found by outside testing, each pinned where a user met it: the release behaviour of
//! the real binary, over real HTTP and the real control socket.

use std::process::Stdio;
use std::time::Duration;

use neurolink_shared::ipc::{DaemonEventKind, Event, IpcClient};
use neurolink_tests::fake_anthropic::{Behavior, FakeAnthropic};
use neurolink_tests::harness::{
    command, config_with_keys, http, message_body, proxy_with_keys, Daemon, TestHome,
};
use serde_json::json;

/// A client that gives up instead of hanging with a deadlocked daemon.
fn patient() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn post_message(url: &str) -> reqwest::Response {
    patient()
        .post(format!("{url}/v1/messages"))
        .json(&message_body(false))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the daemon did not answer: {e}"))
}

async fn socket(home: &TestHome) -> IpcClient {
    IpcClient::connect(&home.neurolink_home().join("daemon.sock"))
        .await
        .unwrap()
}

/// Item 1: with `--debug`, a request that gets no account used to deadlock the daemon (the pool
/// lock was held while the debug logger took it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_mode_answers_requests_no_account_can_take_and_keeps_serving() {
    // No account at all.
    let home = TestHome::new().unwrap();
    let mut d = Daemon::start(&home, &["--debug", "--no-settings"], &[]).unwrap();
    assert_eq!(post_message(&d.url).await.status(), 401);
    assert_eq!(post_message(&d.url).await.status(), 401);
    let health = patient()
        .get(format!("{}/health", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let mut c = socket(&home).await;
    assert_eq!(c.call("status", None).await.unwrap()["accountCount"], 0);
    assert!(d.terminate(Duration::from_secs(15)).unwrap().success());

    // Every account cooling, then tried and failing.
    let fake = FakeAnthropic::start().await.unwrap();
    let (home, mut d) = proxy_with_keys(
        &fake.url(),
        &[("a", "key-a")],
        "",
        &["--debug", "--no-settings"],
    )
    .unwrap();
    fake.script(
        "key-a",
        1,
        Behavior::error(429, "rate_limit_error", "slow down").with_header("retry-after", "60"),
    );
    assert_eq!(
        post_message(&d.url).await.status(),
        429,
        "the upstream's 429"
    );
    let r = post_message(&d.url).await;
    assert_eq!(r.status(), 429, "all cooling");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(d.status().await.unwrap()["accountCount"], 1);
    assert!(d.terminate(Duration::from_secs(15)).unwrap().success());
    // The debug log has the refused exchanges.
    let logs = std::fs::read_dir(home.neurolink_home().join("logs")).unwrap();
    let debug = logs
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("proxy-debug-"))
        .expect("a debug log");
    let text = std::fs::read_to_string(debug.path()).unwrap();
    assert!(text.lines().count() >= 2, "{text}");
}

/// Item 2: reading the config file (an editor, `cat`, `config check`, the reload itself) used to
/// fire the watcher, about three reloads a second, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_config_reloads_nothing_and_one_edit_reloads_once() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    let config = home
        .write_config(&config_with_keys(
            &fake.url(),
            "fill-first",
            &[("a", "key-a")],
        ))
        .unwrap();
    let _d = Daemon::start(&home, &["--no-settings"], &[]).unwrap();
    let mut sub = socket(&home).await;
    sub.call("subscribe", Some(json!({"topics": ["daemon"]})))
        .await
        .unwrap();

    for _ in 0..20 {
        std::fs::read(&config).unwrap();
    }
    for _ in 0..2 {
        let out = command(&home).args(["config", "check"]).output().unwrap();
        assert!(out.status.success());
    }
    // Proving an absence takes a quiet period; it can only make this test pass wrongly, never
    // fail wrongly. Before the fix, events came within a second.
    let quiet = tokio::time::timeout(Duration::from_secs(2), sub.next_event()).await;
    assert!(
        quiet.is_err(),
        "reading caused {:?}",
        quiet.map(|n| n.map(|n| n.params))
    );

    // One real edit: one reload, and no loop after it.
    home.write_config(&config_with_keys(
        &fake.url(),
        "round-robin",
        &[("a", "key-a")],
    ))
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), sub.next_event())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&n.params, Event::Daemon { kind, .. } if *kind == DaemonEventKind::ConfigReloaded),
        "{:?}",
        n.params
    );
    let quiet = tokio::time::timeout(Duration::from_secs(2), sub.next_event()).await;
    assert!(
        quiet.is_err(),
        "the reload reloaded again: {:?}",
        quiet.map(|n| n.map(|n| n.params))
    );
    // Touching the file without changing it is not a change either.
    let text = std::fs::read(&config).unwrap();
    std::fs::write(&config, text).unwrap();
    let quiet = tokio::time::timeout(Duration::from_secs(2), sub.next_event()).await;
    assert!(
        quiet.is_err(),
        "same bytes reloaded: {:?}",
        quiet.map(|n| n.map(|n| n.params))
    );
}

fn keyed_config(upstream: &str, auth_key: &str, host: &str, accounts: &[(&str, &str)]) -> String {
    let mut s = config_with_keys(upstream, "fill-first", accounts);
    s.push_str(&format!(
        "server:\n  authKey: {auth_key}\n  host: {host}\n  headersTimeoutSecs: 30\n"
    ));
    s
}

async fn status_with(url: &str, key: &str) -> u16 {
    patient()
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", key)
        .json(&message_body(false))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Item 3: a reload used to keep the old `server.authKey` and the old `providers.anthropic.baseUrl`
/// while saying "config reloaded".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotates_the_auth_key_and_moves_the_upstream() {
    let old_upstream = FakeAnthropic::start().await.unwrap();
    let new_upstream = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&keyed_config(
        &old_upstream.url(),
        "proxy-key-one",
        "127.0.0.1",
        &[("a", "key-a")],
    ))
    .unwrap();
    let d = Daemon::start(&home, &["--no-settings"], &[]).unwrap();
    assert_eq!(status_with(&d.url, "proxy-key-one").await, 200);
    assert_eq!(status_with(&d.url, "proxy-key-two").await, 401);
    assert_eq!(old_upstream.count("key-a"), 1);

    let mut sub = socket(&home).await;
    sub.call("subscribe", Some(json!({"topics": ["daemon"]})))
        .await
        .unwrap();
    home.write_config(&keyed_config(
        &new_upstream.url(),
        "proxy-key-two",
        "127.0.0.1",
        &[("a", "key-a"), ("b", "key-b")],
    ))
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), sub.next_event())
        .await
        .unwrap()
        .unwrap();
    let Event::Daemon { kind, message } = &n.params else {
        panic!("{:?}", n.params)
    };
    assert_eq!(*kind, DaemonEventKind::ConfigReloaded, "{message}");
    assert!(message.contains("server.authKey"), "{message}");
    assert!(
        !message.contains("proxy-key"),
        "no secret in the message: {message}"
    );

    assert_eq!(
        status_with(&d.url, "proxy-key-one").await,
        401,
        "old key refused"
    );
    assert_eq!(
        status_with(&d.url, "proxy-key-two").await,
        200,
        "new key accepted"
    );
    // Both the old account and the one the reload added go to the new base URL.
    // (/status needs the auth key now; the control socket does not.)
    let mut c = socket(&home).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = c.call("accounts.list", None).await.unwrap();
        let b_active = list["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["label"] == "b" && a["state"] == "active");
        if b_active {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b never active: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.call("accounts.disable", Some(json!({"label": "a"})))
        .await
        .unwrap();
    assert_eq!(status_with(&d.url, "proxy-key-two").await, 200);
    assert_eq!(new_upstream.count("key-a"), 1);
    assert_eq!(new_upstream.count("key-b"), 1);
    assert_eq!(old_upstream.count("key-a") + old_upstream.count("key-b"), 1);

    // What cannot change live says so.
    home.write_config(&keyed_config(
        &new_upstream.url(),
        "proxy-key-two",
        "localhost",
        &[("a", "key-a"), ("b", "key-b")],
    ))
    .unwrap();
    let r = c.call("config.reload", None).await.unwrap();
    let notes = r["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("restart")),
        "{r}"
    );
    // /health and /status read the same runtime: still up, still keyed.
    let health = patient()
        .get(format!("{}/health", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// Item 5: an upstream that dies inside an SSE event used to leave the client with half an
/// event followed by ours (`data:event: error`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_inside_an_event_ends_with_whole_events_then_an_error_event() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) =
        proxy_with_keys(&fake.url(), &[("a", "key-a")], "", &["--no-settings"]).unwrap();
    for cut in [1, 3, 4, 0] {
        fake.script("key-a", 1, Behavior::CutInside(cut));
        let r = patient()
            .post(format!("{}/v1/messages", d.url))
            .json(&message_body(true))
            .send()
            .await
            .unwrap();
        if cut == 0 {
            // No whole event arrived, so nothing was committed: the cut is a failed attempt
            // (another account would be tried) and, with one account, that failure is the answer.
            assert_eq!(r.status(), 502);
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"]["type"], "api_error", "{body}");
            continue;
        }
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        let events: Vec<&str> = text.split_terminator("\n\n").collect();
        assert!(text.ends_with("\n\n"), "{text:?}");
        assert_eq!(events.len(), cut + 1, "{text:?}");
        for e in &events {
            let mut lines = e.lines();
            let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            assert!(lines.next().is_none(), "{e:?}");
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["type"], name, "{e:?}");
        }
        let last: serde_json::Value =
            serde_json::from_str(events[cut].split("data: ").nth(1).unwrap()).unwrap();
        assert_eq!(last["type"], "error");
        assert_eq!(last["error"]["type"], "api_error");
    }
}

/// Item 6: the proxy's own error answers carried a `request-id` other than the request log's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_has_one_id_in_its_answer_and_its_log() {
    let home = TestHome::new().unwrap();
    let _d = {
        let d = Daemon::start(&home, &["--no-settings"], &[]).unwrap();
        let r = post_message(&d.url).await;
        assert_eq!(r.status(), 401);
        let header = r.headers()["request-id"].to_str().unwrap().to_string();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["request_id"], header);
        let mut c = socket(&home).await;
        let tail = c
            .call("logs.tail", Some(json!({"limit": 1})))
            .await
            .unwrap();
        assert_eq!(tail["records"][0]["requestId"], header, "{tail}");
        let message = body["error"]["message"].as_str().unwrap();
        // Item 9: the message names this home's config, and says logins are picked up live.
        assert!(
            message.contains(
                &home
                    .neurolink_home()
                    .join("proxy-config.yaml")
                    .display()
                    .to_string()
            ),
            "{message}"
        );
        assert!(!message.contains("restart the proxy"), "{message}");

        // A request refused for its body has one id too.
        let r = http()
            .post(format!("{}/v1/messages", d.url))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let header = r.headers()["request-id"].to_str().unwrap().to_string();
        let tail = c
            .call("logs.tail", Some(json!({"limit": 1})))
            .await
            .unwrap();
        assert_eq!(tail["records"][0]["requestId"], header, "{tail}");
        d
    };
}

/// Every file under `dir`, relative.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Run a CLI command with no input; it must finish within 20 s.
async fn run_cli(home: &TestHome, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::from(command(home));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("neurolink {args:?} waited (for input?)"))
        .unwrap()
}

/// Item 7: `proxy setup --dry-run` used to start a real login, or with `--no-service` start the
/// proxy and rewrite Claude's settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_dry_run_changes_nothing_starts_nothing_and_asks_nothing() {
    let home = TestHome::new().unwrap();
    std::fs::create_dir_all(home.path().join(".claude")).unwrap();
    std::fs::write(home.path().join(".claude/settings.json"), "{\"env\": {}}\n").unwrap();
    let before = files_under(home.path());
    for args in [
        &["proxy", "setup", "--dry-run"][..],
        &["proxy", "setup", "--dry-run", "--no-service"],
        &["proxy", "setup", "--dry-run", "--method", "api-key"],
    ] {
        let out = run_cli(&home, args).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("would log in"), "{args:?}: {stdout}");
        if args.contains(&"--no-service") {
            assert!(stdout.contains("would run the proxy"), "{stdout}");
        } else {
            assert!(stdout.contains("would write"), "{stdout}");
        }
        assert_eq!(files_under(home.path()), before, "{args:?} wrote a file");
    }
    assert_eq!(
        std::fs::read_to_string(home.path().join(".claude/settings.json")).unwrap(),
        "{\"env\": {}}\n"
    );
}

/// Item 9: `neurolink rpc` panicked with a backtrace when its output pipe closed; `proxy start -c
/// missing.yaml` printed the OS error twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exits_quietly_on_a_closed_pipe_and_says_errors_once() {
    let home = TestHome::new().unwrap();
    let _d = Daemon::start(&home, &["--no-settings"], &[]).unwrap();
    // A reader that is gone before anything is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = command(&home)
        .args(["rpc", "logs.tail"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.trim().is_empty(), "{stderr}");

    let out = command(&home)
        .args(["proxy", "start", "-c", "missing.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
    assert!(stderr.contains("missing.yaml"), "{stderr}");
}
