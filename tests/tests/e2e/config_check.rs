//! `neurolink config check` on good and bad files.

use neurolink_tests::harness::{command, TestHome};

#[test]
fn valid_config_prints_effective_config_with_secrets_masked() {
    let home = TestHome::new().unwrap();
    home.write_config("accounts:\n  anthropic:\n    - name: work\n      apiKey: \"${WORK_KEY}\"\nrouting:\n  strategy: fill-first\n")
        .unwrap();
    let out = command(&home)
        .args(["config", "check", "--format", "json"])
        .env("WORK_KEY", "sk-ant-api03-verysecretvalue-0123456789")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("verysecretvalue"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(
        v["config"]["accounts"]["anthropic"][0]["apiKey"],
        "sk-ant-api03-…6789(39 chars)"
    );
    assert_eq!(v["config"]["server"]["port"], 55669);
    assert_eq!(v["config"]["routing"]["strategy"], "fill-first");
}

#[test]
fn invalid_config_names_file_line_column_and_key() {
    let home = TestHome::new().unwrap();
    let path = home.write_config("server:\n  port: not-a-port\n").unwrap();
    let out = command(&home).args(["config", "check"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:2:9", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("server.port"), "{stderr}");

    let out = command(&home)
        .args(["config", "check", "--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["line"], 2);
    assert_eq!(v["key"], "server.port");
}

#[test]
fn warnings_for_unknown_keys_and_literal_keys() {
    let home = TestHome::new().unwrap();
    home.write_config("accounts:\n  anthropic:\n    - name: w\n      apiKey: sk-ant-api03-literal-literal-literal\nsevrer: {}\n").unwrap();
    let out = command(&home).args(["config", "check"]).output().unwrap();
    assert!(out.status.success());
    // Warnings on stderr, the result (the effective config) on stdout.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":5:1: unknown key `sevrer` is ignored; did you mean `server`?"),
        "{stderr}"
    );
    assert!(stderr.contains("literal API key"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("effective config"), "{stdout}");
    assert!(!stdout.contains("literal-literal-literal"), "{stdout}");
    assert!(!stderr.contains("literal-literal-literal"), "{stderr}");

    // --strict fails on them.
    let out = command(&home)
        .args(["config", "check", "--strict"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--strict"));
    let out = command(&home)
        .args(["config", "check", "--strict", "--format", "json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);

    // Two default config files: the one in use is named.
    home.write("proxy-config.json", "{}").unwrap();
    let out = command(&home).args(["config", "check"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("proxy-config.json is ignored")
            && stderr.contains("proxy-config.yaml is the config in use"),
        "{stderr}"
    );
}

#[test]
fn missing_explicit_config_is_an_error() {
    let home = TestHome::new().unwrap();
    let out = command(&home)
        .args(["config", "check", "-c", "/nonexistent/x.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.yaml"));
}

#[test]
fn start_refuses_a_public_address_without_auth_key() {
    let home = TestHome::new().unwrap();
    let out = command(&home)
        .args(["proxy", "start", "-H", "0.0.0.0", "-p", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("authKey"));
}
