//! `neurolink demo` without its screen: the simulated accounts show cooldowns, failovers and
//! refreshes within seconds, and nothing of the user's is touched or left behind.

use std::process::Stdio;
use std::time::Duration;

use neurolink_tests::harness::{command, TestHome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_cooldowns_failovers_and_refreshes_and_leaves_nothing() {
    let home = TestHome::new().unwrap();
    let tmp = home.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = tokio::process::Command::from(command(&home));
    cmd.args(["demo", "--headless", "20"])
        .env("TMPDIR", &tmp)
        .env_remove("NEUROLINK_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("the demo ends by itself")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |what: &str| -> u64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("account events {what}: ")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(count("cooling") >= 1, "{stdout}");
    assert!(count("refreshed") >= 1, "{stdout}");
    assert!(stdout.contains("(gone)"), "{stdout}");
    let failovers: u64 = stdout
        .split("failovers: ")
        .nth(1)
        .and_then(|s| s.trim().lines().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(failovers >= 1, "{stdout}");
    // Nothing left in the temp folder, nothing written to the user's homes.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    assert!(!home.path().join(".neurolink").exists());
    assert!(!home.path().join(".claude").exists());
}
