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

/// Every command path, from the same definition the binary parses (`proxy start`, `auth list`, ...).
fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let mut p = path.to_vec();
            p.push(sub.get_name().to_string());
            walk(sub, &p, out);
            out.push(p);
        }
    }
    let mut out = Vec::new();
    walk(&neurolink_daemon::cli::command(), &[], &mut out);
    out
}

#[test]
fn every_help_says_what_the_exit_status_means() {
    let paths = command_paths();
    assert!(paths.len() > 20, "{paths:?}");
    for path in paths.iter().chain([&Vec::new()]) {
        let out = neurolink()
            .args(path)
            .arg("--help")
            .output()
            .expect("run neurolink");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{path:?}: {text}");
        assert!(text.contains("Exit status:"), "{path:?} --help: {text}");
        assert!(text.contains("--format"), "{path:?} takes --format: {text}");
    }
}

/// Run with `--format json`: the exit code and the one JSON document on stdout.
fn json_run(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = neurolink()
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("run neurolink");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"));
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn json_errors_are_one_object_on_stdout_with_a_nonzero_exit() {
    // A failure: exit 1, the message in an error object, nothing on stderr.
    let (code, v, stderr) = json_run(&["auth", "enable", "nobody"]);
    assert_eq!(code, 1);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nobody")),
        "{v}"
    );
    assert_eq!(stderr, "");

    // Bad usage: exit 2, and what clap would have said.
    let (code, v, _) = json_run(&["auth", "lsit"]);
    assert_eq!(code, 2);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("lsit")),
        "{v}"
    );
    assert!(
        v["error"]["usage"]
            .as_str()
            .is_some_and(|u| u.contains("list")),
        "{v}"
    );

    // No daemon: status exits 3 with `running: false`; stop fails saying so.
    let (code, v, _) = json_run(&["proxy", "status"]);
    assert_eq!(code, 3);
    assert_eq!(v["running"], false);
    let (code, v, _) = json_run(&["proxy", "stop"]);
    assert_eq!(code, 1);
    assert_eq!(v["error"]["running"], false, "{v}");

    // rpc params are checked before any daemon is asked, in the method's terms.
    let (code, v, _) = json_run(&["rpc", "logs.tail", r#"{"limit":"x"}"#]);
    assert_eq!(code, 2);
    let m = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("whole number") && m.contains(r#"{"limit"?"#),
        "{m}"
    );
    assert!(!m.contains("usize"), "{m}");
    let (code, v, _) = json_run(&["rpc", "status", "{bad"]);
    assert_eq!(code, 2);
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("not JSON")));

    // A result: exit 0, JSON.
    let (code, v, _) = json_run(&["auth", "list"]);
    assert_eq!(code, 0);
    assert!(v["accounts"].is_array(), "{v}");
    let (code, v, _) = json_run(&["auth", "cleanup"]);
    assert_eq!(code, 0);
    assert_eq!(v["removed"], serde_json::json!([]));
}
