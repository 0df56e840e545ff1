//! `neurolink doctor`: healthy, broken config, Claude pointed at a dead proxy, no account.

use neurolink_tests::fake_anthropic::FakeAnthropic;
use neurolink_tests::harness::{command, config_with_keys, Daemon, TestHome};

fn doctor(home: &TestHome, extra_env: &[(&str, &str)]) -> (bool, serde_json::Value) {
    let mut c = command(home);
    c.args(["doctor", "--format", "json"]);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.success(), v)
}

fn find<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&config_with_keys(
        &fake.url(),
        "fill-first",
        &[("a", "${KEY_A}")],
    ))
    .unwrap();
    let _d = Daemon::start(&home, &[], &[("KEY_A", "key-a")]).unwrap();
    let (ok, v) = doctor(&home, &[("KEY_A", "key-a")]);
    assert!(ok, "{v:#}");
    assert_eq!(v["problems"], 0);
    assert_eq!(find(&v, "daemon")["level"], "ok");
    assert_eq!(find(&v, "claude settings")["level"], "ok", "{v:#}");
    assert_eq!(find(&v, "account")["level"], "ok");
    assert_eq!(find(&v, "port")["detail"], "held by the proxy");
}

#[test]
fn problems_are_named_with_their_fix_and_fail_the_exit_status() {
    let home = TestHome::new().unwrap();
    home.write_config("server: {port: nope}\n").unwrap();
    // Claude Code points at a proxy that is not there.
    let claude = home.path().join(".claude");
    std::fs::create_dir_all(&claude).unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    std::fs::write(
        claude.join("settings.json"),
        format!("{{\"env\":{{\"ANTHROPIC_BASE_URL\":\"{url}\"}}}}"),
    )
    .unwrap();
    let (ok, v) = doctor(&home, &[]);
    assert!(!ok);
    let config = find(&v, "config");
    assert_eq!(config["level"], "problem");
    assert!(
        config["detail"].as_str().unwrap().contains("server.port"),
        "{config}"
    );
    assert!(config["fix"].as_str().unwrap().contains("config check"));
    let settings = find(&v, "claude settings");
    assert_eq!(settings["level"], "problem");
    assert!(settings["detail"].as_str().unwrap().contains(&url));
    assert_eq!(find(&v, "daemon")["level"], "warn");

    home.write_config("routing: {strategy: fill-first}\n")
        .unwrap();
    let (ok, v) = doctor(&home, &[]);
    assert!(!ok);
    let accounts = find(&v, "accounts");
    assert_eq!(accounts["level"], "problem");
    assert!(accounts["fix"].as_str().unwrap().contains("auth login"));
    let text = command(&home).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("[FAIL] accounts") && text.contains("fix:"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_reaches_the_upstream_and_names_an_untrusted_certificate_s_fix() {
    use neurolink_tests::tls::{Alpn, TestCa};
    let ca = TestCa::new().unwrap();
    let fake = FakeAnthropic::start_tls(ca.acceptor(Alpn::Http2).unwrap())
        .await
        .unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&config_with_keys(
        &fake.url(),
        "fill-first",
        &[("a", "key-a")],
    ))
    .unwrap();
    let network = |home: &TestHome| {
        let out = command(home)
            .args(["doctor", "--network", "--format", "json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        find(&v, "upstream").clone()
    };

    // The command blocks this thread; the fake answers on the runtime's other one.
    let up = network(&home);
    assert_eq!(up["level"], "problem", "{up}");
    assert!(
        up["fix"].as_str().unwrap().contains("server.caFile"),
        "{up}"
    );

    home.write("ca.pem", &ca.ca_pem).unwrap();
    let mut config = config_with_keys(&fake.url(), "fill-first", &[("a", "key-a")]);
    config.push_str("server:\n  caFile: ca.pem\n");
    home.write_config(&config).unwrap();
    let up = network(&home);
    assert_eq!(up["level"], "ok", "{up}");
    let detail = up["detail"].as_str().unwrap();
    assert!(
        detail.contains(&fake.url()) && detail.contains("HTTP/2"),
        "{up}"
    );
    assert!(fake.total() >= 1, "the fake was asked");
}
