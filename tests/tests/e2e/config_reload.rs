//! Hot reload: the config file is watched; valid changes apply, invalid ones are reported.

use std::time::{Duration, Instant};

use neurolink_shared::ipc::{DaemonEventKind, Event, IpcClient};
use neurolink_tests::fake_anthropic::FakeAnthropic;
use neurolink_tests::harness::{config_with_keys, Daemon, TestHome};
use serde_json::json;

async fn strategy(d: &Daemon) -> String {
    d.status().await.unwrap()["strategy"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_changes_apply_and_broken_ones_are_reported() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&config_with_keys(
        &fake.url(),
        "fill-first",
        &[("a", "key-a")],
    ))
    .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let mut sub = IpcClient::connect(&home.neurolink_home().join("daemon.sock"))
        .await
        .unwrap();
    sub.call("subscribe", Some(json!({"topics": ["daemon"]})))
        .await
        .unwrap();

    // A valid edit: new strategy, a second account.
    home.write_config(&config_with_keys(
        &fake.url(),
        "round-robin",
        &[("a", "key-a"), ("b", "key-b")],
    ))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while strategy(&d).await != "round-robin" && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(strategy(&d).await, "round-robin");
    let n = tokio::time::timeout(Duration::from_secs(5), sub.next_event())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&n.params, Event::Daemon { kind, .. } if *kind == DaemonEventKind::ConfigReloaded),
        "{:?}",
        n.params
    );
    d.wait_account("b", Duration::from_secs(5), |a| a["state"] == "active")
        .await
        .unwrap();
    for _ in 0..2 {
        d.message(false).await;
    }
    assert_eq!(
        (fake.count("key-a"), fake.count("key-b")),
        (1, 1),
        "round-robin over both"
    );

    // A broken edit: reported, and the config in force stays.
    home.write_config("routing: {strategy: fill-first\n")
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), sub.next_event())
        .await
        .unwrap()
        .unwrap();
    let Event::Daemon { kind, message } = &n.params else {
        panic!("{:?}", n.params)
    };
    assert_eq!(*kind, DaemonEventKind::ConfigInvalid);
    assert!(message.contains("proxy-config.yaml"), "{message}");
    assert_eq!(strategy(&d).await, "round-robin");
    assert_eq!(d.message(false).await.status(), 200);
}
