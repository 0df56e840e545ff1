//! Claude Code's settings: pointed at the proxy on start, restored exactly on stop, SIGTERM, and
//! (by the guard) after `kill -9`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use neurolink_tests::harness::{command, Daemon, TestHome};

const ORIGINAL: &str = "{\n  \"model\": \"opus\",\n  \"env\": {\n    \"FOO\": \"bar\"\n  },\n  \"permissions\": {\n    \"allow\": [\"Bash(ls)\"]\n  }\n}\n";

fn claude_dir(home: &TestHome) -> PathBuf {
    home.path().join("claude-config")
}

fn write_settings(home: &TestHome, text: &str) -> PathBuf {
    let dir = claude_dir(home);
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("settings.json");
    std::fs::write(&p, text).unwrap();
    p
}

fn start(home: &TestHome, args: &[&str]) -> Daemon {
    let dir = claude_dir(home);
    Daemon::start(home, args, &[("CLAUDE_CONFIG_DIR", dir.to_str().unwrap())]).unwrap()
}

fn wait_for(path: &Path, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let now = std::fs::read_to_string(path).unwrap_or_default();
        if now == want || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn pointed_at(path: &Path, d: &Daemon) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(v["env"]["ANTHROPIC_BASE_URL"], d.url.as_str());
    assert_eq!(v["env"]["ENABLE_TOOL_SEARCH"], "true");
    assert_eq!(v["env"]["FOO"], "bar", "other keys kept");
    assert_eq!(v["model"], "opus");
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["model", "env", "permissions"], "key order kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_stop_restores_the_exact_file() {
    let home = TestHome::new().unwrap();
    let p = write_settings(&home, ORIGINAL);
    let d = start(&home, &[]);
    pointed_at(&p, &d);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.neurolink_home().join("proxy-state.json")).unwrap(),
    )
    .unwrap();
    assert!(state["guardPid"].as_u64().is_some());
    let dir = claude_dir(&home);
    let out = command(&home)
        .args(["proxy", "stop"])
        .env("CLAUDE_CONFIG_DIR", &dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), ORIGINAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restores_and_a_missing_file_stays_missing() {
    let home = TestHome::new().unwrap();
    let p = claude_dir(&home).join("settings.json");
    let mut d = start(&home, &[]);
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(v["env"]["ANTHROPIC_BASE_URL"], d.url.as_str());
    assert!(d.terminate(Duration::from_secs(15)).unwrap().success());
    assert!(!p.exists(), "there was no settings file before");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_restores_after_kill_9_within_five_seconds() {
    let home = TestHome::new().unwrap();
    let p = write_settings(&home, ORIGINAL);
    let mut d = start(&home, &[]);
    pointed_at(&p, &d);
    let killed = Instant::now();
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let now = wait_for(&p, ORIGINAL, Duration::from_secs(5));
    assert_eq!(now, ORIGINAL, "restored within 5 s");
    assert!(killed.elapsed() < Duration::from_secs(5));
    let state = home.neurolink_home().join("proxy-state.json");
    let deadline = Instant::now() + Duration::from_secs(5);
    while state.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(!state.exists(), "state file removed by the guard");
    // And a new daemon starts cleanly.
    let d2 = start(&home, &[]);
    pointed_at(&p, &d2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_settings_file_is_left_alone_and_no_settings_skips_it() {
    let home = TestHome::new().unwrap();
    let p = write_settings(&home, "{ not json");
    let d = start(&home, &[]);
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "{ not json");
    assert!(
        d.startup
            .iter()
            .any(|l| l.contains("Claude settings left unchanged")),
        "{:?}",
        d.startup
    );
    drop(d);

    let home = TestHome::new().unwrap();
    let p = write_settings(&home, ORIGINAL);
    let d = start(&home, &["--no-settings"]);
    assert_eq!(std::fs::read_to_string(&p).unwrap(), ORIGINAL);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.neurolink_home().join("proxy-state.json")).unwrap(),
    )
    .unwrap();
    assert!(state["guardPid"].is_null());
    drop(d);
}
