//! `proxy install|uninstall` as far as a test machine allows: the dry run, and a machine without
//! the service manager.

use neurolink_tests::harness::{command, TestHome};

#[test]
fn install_dry_run_prints_the_unit_and_the_commands() {
    let home = TestHome::new().unwrap();
    let out = command(&home)
        .args([
            "proxy",
            "install",
            "--dry-run",
            "-p",
            "55669",
            "-s",
            "fill-first",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if cfg!(target_os = "macos") {
        assert!(
            text.contains("<key>KeepAlive</key>") && text.contains("launchctl bootstrap gui/"),
            "{text}"
        );
    } else {
        assert!(text.contains("neurolink-proxy.service"), "{text}");
        assert!(
            text.contains("proxy start --port 55669 --strategy fill-first"),
            "{text}"
        );
        assert!(
            text.contains("Restart=on-failure") && text.contains("RestartSec=5"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "Environment=NEUROLINK_HOME={}",
                home.neurolink_home().display()
            )),
            "{text}"
        );
        assert!(
            text.contains("systemctl --user enable --now neurolink-proxy.service"),
            "{text}"
        );
    }
    let out = command(&home)
        .args(["proxy", "uninstall", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("would run"));
}

#[test]
fn without_a_service_manager_it_says_so_and_prints_the_file() {
    let home = TestHome::new().unwrap();
    let empty = home.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let out = command(&home)
        .env("PATH", &empty)
        .args(["proxy", "install"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not available on this machine"), "{err}");
    assert!(
        err.contains("proxy start") && err.contains("neurolink proxy start"),
        "{err}"
    );
}

/// What would break once the service runs without this shell is said before installing: a
/// binary in a cargo build folder, and a pool whose only account is the shell's
/// ANTHROPIC_API_KEY (with the command that stores it). Without a terminal nothing is asked.
#[test]
fn install_warns_about_a_build_folder_binary_and_a_shell_only_key() {
    let home = TestHome::new().unwrap();
    let out = command(&home)
        .args(["proxy", "install", "--dry-run"])
        .env("ANTHROPIC_API_KEY", "sk-ant-api03-shell-only-key")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The suite runs target/<profile>/neurolink, inside this workspace.
    assert!(
        stderr.contains("inside a cargo build folder")
            && stderr.contains("cargo install --locked --path daemon"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the service will not have it")
            && stderr.contains("neurolink auth login anthropic --method api-key --non-interactive"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("shell-only-key"),
        "the key itself is never shown"
    );

    // For scripts, the warnings are in the result.
    let out = command(&home)
        .args(["proxy", "install", "--dry-run", "--format", "json"])
        .env("ANTHROPIC_API_KEY", "sk-ant-api03-shell-only-key")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dryRun"], true);
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(2), "{v}");

    // With an account in the config, the shell's key is not the only one: no such warning.
    home.write_config("accounts:\n  anthropic:\n    - name: a\n      apiKey: ${KEY_A}\n")
        .unwrap();
    let out = command(&home)
        .args(["proxy", "install", "--dry-run"])
        .env("ANTHROPIC_API_KEY", "sk-ant-api03-shell-only-key")
        .env("KEY_A", "sk-ant-api03-config-key")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("the service will not have it"), "{stderr}");
}
