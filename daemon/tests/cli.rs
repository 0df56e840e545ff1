//! The binary's own command-line behaviour. (Being an integration test of this crate also makes
//! `cargo test --workspace` build `target/<profile>/neurolink`, which the end-to-end suite runs.)

use std::process::Command;

fn neurolink() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_neurolink"));
    let home = std::env::temp_dir().join(format!("nl-cli-{}", std::process::id()));
    c.env("NEUROLINK_HOME", &home).env("HOME", &home);
    c
}

#[test]
fn help_teaches_the_commands() {
    let out = neurolink().arg("--help").output().expect("run neurolink");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["proxy", "config", "ANTHROPIC_BASE_URL"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
    let out = neurolink()
        .args(["proxy", "start", "--help"])
        .output()
        .expect("run neurolink");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--port",
        "--host",
        "--strategy",
        "--config",
        "--quiet",
        "--debug",
        "--health-interval",
        "fill-first",
    ] {
        assert!(
            text.contains(flag),
            "proxy start --help lacks {flag}: {text}"
        );
    }
}

#[test]
fn bad_strategy_is_rejected_with_choices() {
    let out = neurolink()
        .args(["proxy", "start", "-s", "random"])
        .output()
        .expect("run neurolink");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("round-robin"), "{err}");
}

#[test]
fn version_completions_and_man_page() {
    let out = neurolink()
        .arg("--version")
        .output()
        .expect("run neurolink");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.starts_with(concat!("neurolink ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    // Built from this checkout: the commit is named.
    if std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.git")).exists() {
        assert!(text.contains("(commit "), "{text}");
    }
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef neurolink"),
        ("fish", "complete -c neurolink"),
    ] {
        let out = neurolink()
            .args(["completions", shell])
            .output()
            .expect("run neurolink");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(text.contains("proxy"), "{shell} completes subcommands");
    }
    let out = neurolink().arg("man").output().expect("run neurolink");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains(".TH neurolink 1"), "{text}");
    assert!(text.contains("completions"), "{text}");
    let out = neurolink()
        .args(["completions", "tcsh"])
        .output()
        .expect("run neurolink");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}
