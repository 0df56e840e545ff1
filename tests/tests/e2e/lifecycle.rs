//! One daemon per home: double start refused, stale state taken over, `proxy stop|status`.

use std::time::Duration;

use neurolink_tests::harness::{command, Daemon, TestHome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_is_refused_and_stop_cleans_up() {
    let home = TestHome::new().unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.neurolink_home().join("proxy-state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["pid"], d.child.id());
    assert_eq!(state["host"], "127.0.0.1");
    assert_eq!(state["ready"], true);

    let second = command(&home)
        .args(["proxy", "start", "-p", "0"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("already running") && err.contains("neurolink proxy stop"),
        "{err}"
    );

    let out = command(&home)
        .args(["proxy", "status", "--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["running"], true);
    assert_eq!(v["pid"], d.child.id());

    let out = command(&home).args(["proxy", "stop"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!home.neurolink_home().join("proxy-state.json").exists());
    assert!(!home.neurolink_home().join("daemon.sock").exists());

    let out = command(&home)
        .args(["proxy", "status", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "LSB: program is not running");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["running"],
        false
    );
    let out = command(&home).args(["proxy", "stop"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no neurolink proxy is running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_state_file_is_taken_over() {
    let home = TestHome::new().unwrap();
    // A daemon that died without cleaning up: its pid is gone, its socket file is left behind.
    let dead = std::process::Command::new("true").spawn().unwrap();
    let pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    home.write(
        "proxy-state.json",
        &serde_json::json!({"pid": pid, "port": 1, "host": "127.0.0.1", "strategy": "fill-first", "startTime": "2026-01-01T00:00:00Z"}).to_string(),
    )
    .unwrap();
    home.write("daemon.sock", "").unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.neurolink_home().join("proxy-state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["pid"], d.child.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_removes_the_state_file() {
    let home = TestHome::new().unwrap();
    let mut d = Daemon::start(&home, &[], &[]).unwrap();
    assert!(home.neurolink_home().join("proxy-state.json").exists());
    let st = d.terminate(Duration::from_secs(15)).unwrap();
    assert!(st.success());
    assert!(!home.neurolink_home().join("proxy-state.json").exists());
    assert!(!home.neurolink_home().join("daemon.sock").exists());
}

#[test]
fn rpc_prints_results_and_names_errors() {
    let home = TestHome::new().unwrap();
    let out = command(&home).args(["rpc", "hello"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no daemon is listening"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = command(&home)
        .args(["rpc", "logs.tail", "{oops"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "bad usage");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the params argument is not JSON") && stderr.contains(r#"{"limit"?"#),
        "{stderr}"
    );
}
