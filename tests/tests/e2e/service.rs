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
            text.contains("<key>KeepAlive</key>") && text.contains("launchctl load -w"),
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
