//! The real `neurolink-tui` in a pseudo-terminal against a real daemon: what a person at the
//! terminal sees after each thing they or others do.

use std::time::Duration;

use neurolink_tests::fake_anthropic::FakeAnthropic;
use neurolink_tests::harness::{cli_json, neurolink_bin, proxy_with_keys, Daemon, TestHome};
use neurolink_tests::pty::Terminal;

const WAIT: Duration = Duration::from_secs(20);

fn tui_bin() -> std::path::PathBuf {
    neurolink_bin().with_file_name(format!("neurolink-tui{}", std::env::consts::EXE_SUFFIX))
}

fn rpc(home: &TestHome, method: &str, params: &str) -> serde_json::Value {
    cli_json(home, &["rpc", method, params])
}

/// The screen line that shows `label` (an account row).
fn row<'a>(screen: &'a str, label: &str) -> &'a str {
    screen.lines().find(|l| l.contains(label)).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_requests_actions_and_the_daemon_coming_and_going() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (home, d) = proxy_with_keys(
        &fake.url(),
        &[("work", "key-work"), ("spare", "key-spare")],
        "",
        &["--no-settings"],
    )
    .unwrap();
    let neurolink_home = home.neurolink_home();
    let tui = Terminal::spawn(
        &tui_bin(),
        &[],
        &[
            ("HOME", home.path().as_os_str()),
            ("NEUROLINK_HOME", neurolink_home.as_os_str()),
        ],
        30,
        100,
    )
    .unwrap();
    tui.wait_for("● 127.0.0.1", WAIT).unwrap();

    // A request made through the proxy appears in the Requests view.
    tui.send("3").unwrap();
    tui.wait_for("No request yet", WAIT).unwrap();
    assert_eq!(d.message(false).await.status(), 200);
    let screen = tui.wait_for("claude-sonnet-4-5", WAIT).unwrap();
    assert!(
        row(&screen, "claude-sonnet-4-5").contains("200"),
        "{screen}"
    );
    assert!(
        row(&screen, "claude-sonnet-4-5").contains("work"),
        "{screen}"
    );

    // Disabling an account in the dashboard shows in `neurolink rpc accounts.list`.
    tui.send("2").unwrap();
    tui.wait_for("spare", WAIT).unwrap();
    tui.send("d").unwrap();
    tui.wait_for("Disable work?", WAIT).unwrap();
    tui.send("y").unwrap();
    tui.wait_until(WAIT, |s| row(s, "work").contains("disabled"))
        .unwrap_or_else(|s| panic!("work not shown disabled:\n{s}"));
    let listed = rpc(&home, "accounts.list", "{}");
    assert_eq!(listed["accounts"][0]["label"], "work");
    assert_eq!(listed["accounts"][0]["state"], "disabled");

    // A change made with `neurolink rpc` shows in the dashboard.
    rpc(&home, "accounts.enable", r#"{"label":"work"}"#);
    tui.wait_until(WAIT, |s| row(s, "work").contains("active"))
        .unwrap_or_else(|s| panic!("work not shown active again:\n{s}"));

    // Killing the daemon shows the no-daemon screen; a restarted one is picked up again.
    drop(d);
    tui.wait_for("No daemon is running", WAIT).unwrap();
    let d = Daemon::start(&home, &["--no-settings"], &[]).unwrap();
    let port = d.url.rsplit(':').next().unwrap().to_string();
    tui.wait_for(&format!("● 127.0.0.1:{port}"), WAIT).unwrap();
    tui.wait_until(WAIT, |s| row(s, "spare").contains("active"))
        .unwrap_or_else(|s| panic!("accounts not shown after the restart:\n{s}"));

    // q quits and gives the terminal back.
    let mut tui = tui;
    tui.send("q").unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !tui.exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard did not quit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
