//! `neurolink auth login` end to end against the fake login page and token endpoint: the test
//! reads the printed URL, fetches it as a browser would, pastes the code, and the new account
//! serves a request through the running daemon.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::time::Duration;

use neurolink_tests::fake_anthropic::{Behavior, FakeAnthropic};
use neurolink_tests::fake_oauth::FakeOAuth;
use neurolink_tests::harness::{command, http, now_ms, token_store_with, Daemon, TestHome};

struct Env {
    fake: FakeAnthropic,
    oauth: FakeOAuth,
    home: TestHome,
}

async fn env() -> Env {
    let fake = FakeAnthropic::start().await.unwrap();
    let oauth = FakeOAuth::start().await.unwrap();
    let home = TestHome::new().unwrap();
    home.write_config(&format!(
        "providers:\n  anthropic: {{baseUrl: \"{}\"}}\n  anthropic-oauth:\n    authorizeUrl: \"{a}\"\n    consoleAuthorizeUrl: \"{a}\"\n    tokenUrl: \"{}\"\n    createApiKeyUrl: \"{}\"\n    redirectUri: \"http://127.0.0.1:1/callback\"\n",
        fake.url(),
        oauth.token_url(),
        oauth.create_api_key_url(),
        a = oauth.authorize_url(),
    ))
    .unwrap();
    Env { fake, oauth, home }
}

/// Start `auth login anthropic <args>`, read the URL it prints, "open" it, paste what the page
/// shows (optionally altered), and return the finished process output.
async fn browser_login(
    home: &TestHome,
    args: &[&str],
    alter: impl Fn(String) -> String,
) -> std::process::Output {
    let mut child: Child = command(home)
        .args(["auth", "login", "anthropic"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (url, rest) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let mut url = None;
        let mut seen = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(u) = line.trim().strip_prefix("http") {
                url = Some(format!("http{u}"));
                break;
            }
            seen.push(line);
        }
        (
            url.unwrap_or_else(|| panic!("no URL printed: {seen:?}")),
            lines,
        )
    })
    .await
    .unwrap();
    // The browser: the page answers with `code#state` after approval.
    let shown = http().get(&url).send().await.unwrap().text().await.unwrap();
    assert!(shown.contains('#'), "{shown}");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", alter(shown)).unwrap();
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err: Vec<String> = rest.map_while(Result::ok).collect();
    std::process::Output {
        stderr: err.join("\n").into_bytes(),
        ..out
    }
}

fn stored(home: &TestHome) -> serde_json::Value {
    let text = std::fs::read_to_string(home.neurolink_home().join("tokens.json")).unwrap();
    let (json, _) =
        neurolink_shared::token_store::decode(&text, home.path().to_str().unwrap()).unwrap();
    serde_json::from_str(&json).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_login_adds_an_account_the_running_daemon_uses() {
    let e = env().await;
    e.oauth.set_email("carol@example.com");
    let d = Daemon::start(&e.home, &[], &[]).unwrap();
    let out = browser_login(
        &e.home,
        &["--method", "oauth", "--non-interactive", "--format", "json"],
        |s| s,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["label"], "carol@example.com");
    assert_eq!(v["kind"], "oauth");
    assert_eq!(e.oauth.exchanges(), 1);

    let s = stored(&e.home);
    let entry = &s["providers"]["anthropic:carol@example.com"];
    assert_eq!(entry["tokens"]["tokenType"], "Bearer");
    let access = entry["tokens"]["accessToken"].as_str().unwrap().to_string();
    assert!(entry["tokens"]["refreshToken"]
        .as_str()
        .unwrap()
        .starts_with("rt-"));
    assert!(entry["tokens"]["scope"]
        .as_str()
        .unwrap()
        .contains("email:carol@example.com"));
    assert!(entry["tokens"]["expiresAt"].as_i64().unwrap() > now_ms() + 7 * 3_600_000);

    d.wait_account("carol@example.com", Duration::from_secs(5), |a| {
        a["state"] == "active"
    })
    .await
    .unwrap();
    let r = d.message(false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(e.fake.count(&access), 1, "the new login served the request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_api_key_login_stores_the_minted_key() {
    let e = env().await;
    let out = browser_login(
        &e.home,
        &[
            "--method",
            "create-api-key",
            "--label",
            "minted",
            "--non-interactive",
        ],
        |s| s,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(e.oauth.keys_minted(), 1);
    let entry = &stored(&e.home)["providers"]["anthropic:minted"];
    assert_eq!(entry["tokens"]["accessToken"], "sk-ant-api03-minted-1");
    assert_eq!(entry["tokens"]["tokenType"], "api-key");
    assert_eq!(entry["tokens"]["expiresAt"], 9007199254740991i64);
    let d = Daemon::start(&e.home, &[], &[]).unwrap();
    let r = d.message(false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        e.fake.last().unwrap().headers["x-api-key"],
        "sk-ant-api03-minted-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_from_another_attempt_is_refused() {
    let e = env().await;
    let out = browser_login(&e.home, &["--method", "oauth", "--non-interactive"], |s| {
        let code = s.split('#').next().unwrap_or_default().to_string();
        format!("{code}#not-the-state")
    })
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("state does not match"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(e.oauth.exchanges(), 0);
    assert!(!e.home.neurolink_home().join("tokens.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_login_checks_the_key_first() {
    let e = env().await;
    e.fake.script(
        "sk-bad",
        1,
        Behavior::error(401, "authentication_error", "invalid x-api-key"),
    );
    let out = command(&e.home)
        .args([
            "auth",
            "login",
            "anthropic",
            "--method",
            "api-key",
            "--non-interactive",
            "--add",
            "--label",
            "k",
        ])
        .env("ANTHROPIC_API_KEY", "sk-bad")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!e.home.neurolink_home().join("tokens.json").exists());

    let out = command(&e.home)
        .args([
            "auth",
            "login",
            "anthropic",
            "--method",
            "api-key",
            "--non-interactive",
            "--add",
            "--label",
            "k",
        ])
        .env("ANTHROPIC_API_KEY", "sk-good")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = e.fake.last().unwrap();
    assert_eq!(seen.path_and_query, "/v1/models?limit=1");
    assert_eq!(
        stored(&e.home)["providers"]["anthropic:k"]["tokens"]["accessToken"],
        "sk-good"
    );

    let out = command(&e.home)
        .args(["auth", "login", "anthropic", "--non-interactive"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--method is required"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relogin_replaces_tokens_and_clears_disabled_and_without_add_replaces_the_default() {
    let e = env().await;
    let later = now_ms() + 3_600_000 * 5;
    e.home
        .write(
            "tokens.json",
            &token_store_with(&[
                ("first", "at-x", "rt-x", later),
                ("other", "at-y", "rt-y", later),
            ]),
        )
        .unwrap();
    assert!(command(&e.home)
        .args(["auth", "disable", "other"])
        .status()
        .unwrap()
        .success());
    // Same label again: tokens replaced, disabled cleared, the rest untouched.
    let out = browser_login(
        &e.home,
        &[
            "--method",
            "oauth",
            "--non-interactive",
            "--add",
            "--label",
            "other",
        ],
        |s| s,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = stored(&e.home);
    let other = &s["providers"]["anthropic:other"];
    assert_ne!(other["tokens"]["accessToken"], "at-y");
    assert!(other.get("disabled").is_none(), "{other}");
    assert!(s["providers"].get("anthropic:first").is_some());
    // No --add: the new login replaces the default (first) account.
    let out = browser_login(
        &e.home,
        &["--method", "oauth", "--non-interactive", "--label", "fresh"],
        |s| s,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = stored(&e.home);
    assert!(s["providers"].get("anthropic:first").is_none(), "{s}");
    assert!(s["providers"].get("anthropic:fresh").is_some());
    assert!(s["providers"].get("anthropic:other").is_some());
    assert_eq!(s["futureTopLevel"], 7, "unknown fields survive");
}

/// Run `auth login anthropic --method api-key <args>` with `key` in ANTHROPIC_API_KEY and stdin
/// closed; the output.
fn key_login(home: &TestHome, key: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = command(home);
    cmd.args(["auth", "login", "anthropic", "--method", "api-key"])
        .args(args)
        .stdin(Stdio::null());
    if let Some(k) = key {
        cmd.env("ANTHROPIC_API_KEY", k);
    }
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_login_is_clear_about_labels_terminals_networks_and_non_keys() {
    let e = env().await;
    // No label: the key's last characters name it.
    let out = key_login(
        &e.home,
        Some("sk-ant-api03-abcdWXYZ"),
        &["--non-interactive", "--add"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stored(&e.home)["providers"]
        .get("anthropic:key-WXYZ")
        .is_some());

    // Without --add, the replaced account is named.
    let out = key_login(
        &e.home,
        Some("sk-ant-api03-efgh1234"),
        &["--non-interactive"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Replaced the account `key-WXYZ`"),
        "{stderr}"
    );
    assert!(stderr.contains("--add"), "{stderr}");

    // No terminal to type in: say how, not "os error 6".
    let out = key_login(&e.home, None, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--non-interactive") && stderr.contains("ANTHROPIC_API_KEY"),
        "{stderr}"
    );
    assert!(!stderr.contains("os error"), "{stderr}");

    // Not a key: refused locally, nothing sent.
    let before = e.fake.recorded().len();
    for (bad, why) in [
        ("sk-ant-oat01-logintoken", "login token"),
        ("sk-ant-api03 with spaces", "paste the key alone"),
        ("ANTHROPIC_API_KEY=x", "shell assignment"),
    ] {
        let out = key_login(&e.home, Some(bad), &["--non-interactive", "--add"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert!(
            stderr.contains("not an API key") && stderr.contains(why),
            "{bad}: {stderr}"
        );
    }
    assert_eq!(
        e.fake.recorded().len(),
        before,
        "nothing was sent for a non-key"
    );

    // Anthropic unreachable: that is what the error says, and --no-verify stores the key anyway.
    let offline = TestHome::new().unwrap();
    offline
        .write_config("providers:\n  anthropic: {baseUrl: \"http://127.0.0.1:9\"}\n")
        .unwrap();
    let out = key_login(
        &offline,
        Some("sk-ant-api03-offline1"),
        &["--non-interactive", "--add"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("could not check the API key") && stderr.contains("--no-verify"),
        "{stderr}"
    );
    assert!(!stderr.contains("refused"), "{stderr}");
    let out = key_login(
        &offline,
        Some("sk-ant-api03-offline1"),
        &["--non-interactive", "--add", "--no-verify"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stored(&offline)["providers"]
        .get("anthropic:key-ine1")
        .is_some());
}
