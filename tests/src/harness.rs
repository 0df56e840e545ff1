//! Run the real `neurolink` binary in a temporary home and talk to it over HTTP.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// `cargo build --release` of these `(package, binary)` pairs: the benchmarks run release binaries
/// that `cargo run` of this package does not build.
pub fn build_release(targets: &[(&str, &str)]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["build", "--release"];
    for (package, bin) in targets {
        args.extend(["-p", package, "--bin", bin]);
    }
    eprintln!("building ({})...", args.join(" "));
    let status = Command::new(cargo)
        .args(&args)
        .status()
        .map_err(|e| anyhow::anyhow!("running cargo build: {e}"))?;
    if !status.success() {
        anyhow::bail!("the release build failed");
    }
    Ok(())
}

/// A temporary `NEUROLINK_HOME` (also used as `HOME`, so nothing touches the real one).
pub struct TestHome {
    pub dir: tempfile::TempDir,
    /// Files the test wrote itself, with their content: skipped by the secret scan while unchanged.
    planted: Mutex<HashMap<PathBuf, Option<Vec<u8>>>>,
}

impl TestHome {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            planted: Mutex::default(),
        })
    }

    /// Write `content` at `path` (anywhere under the home) as the test's own input: the secret
    /// scan skips it while it is unchanged.
    pub fn plant(&self, path: &Path, content: &[u8]) -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, content)?;
        self.planted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_path_buf(), Some(content.to_vec()));
        Ok(())
    }

    /// `tokens.json`, decoded (obfuscated or plain).
    pub fn tokens(&self) -> anyhow::Result<serde_json::Value> {
        let text = std::fs::read_to_string(self.neurolink_home().join("tokens.json"))?;
        let home = self.path().to_string_lossy();
        let (json, _) = neurolink_shared::token_store::decode(&text, &home)
            .map_err(|e| anyhow::anyhow!("tokens.json: {e}"))?;
        Ok(serde_json::from_str(&json)?)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn neurolink_home(&self) -> PathBuf {
        self.dir.path().join(".neurolink")
    }

    /// Write `proxy-config.yaml` in the home.
    pub fn write_config(&self, yaml: &str) -> std::io::Result<PathBuf> {
        let p = self.neurolink_home().join("proxy-config.yaml");
        self.plant(&p, yaml.as_bytes())?;
        Ok(p)
    }

    /// Write a file under the NeuroLink home.
    ///
    /// NeuroLink's legacy single-account file, `anthropic-credentials.json`, is plain JSON by its
    /// format, and the proxy refreshes it in place (so NeuroLink itself keeps working): the scan
    /// skips it whatever it holds.
    pub fn write(&self, name: &str, content: &str) -> std::io::Result<PathBuf> {
        let p = self.neurolink_home().join(name);
        self.plant(&p, content.as_bytes())?;
        if name == "anthropic-credentials.json" {
            self.planted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(p.clone(), None);
        }
        Ok(p)
    }
}

/// The secret scan (`crate::secrets`): no file the run wrote under the home shows a secret the
/// fakes issued or were given. Skipped when the test already failed.
impl Drop for TestHome {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let planted = self.planted.lock().unwrap_or_else(|p| p.into_inner());
        let found = crate::secrets::scan(self.dir.path(), &planted);
        assert!(
            found.is_empty(),
            "secrets in plain text under the temp home: {found:#?}"
        );
    }
}

/// The `neurolink` binary: `$NEUROLINK_BIN`, else next to the running test or bench executable
/// (`target/<profile>/neurolink`). `cargo test --workspace` builds it, because the daemon crate has
/// integration tests of its own.
pub fn neurolink_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NEUROLINK_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(format!("neurolink{}", std::env::consts::EXE_SUFFIX))
}

/// A `neurolink` command with a clean environment pointing at `home`: no real API key, `HOME` and
/// `NEUROLINK_HOME` in the temp dir.
///
/// Safety net: `HTTPS_PROXY` points at a closed loopback port, so a test that forgot to point an
/// `https://` default (Anthropic, the OAuth hosts) at a fake fails at once instead of reaching
/// out. Every fake is plain `http://` on 127.0.0.1 and is reached directly.
pub fn command(home: &TestHome) -> Command {
    let mut c = Command::new(neurolink_bin());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("NEUROLINK_HOME", home.neurolink_home())
        .env("NEUROLINK_LOG", "info")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost");
    c
}

/// A running daemon; killed and reaped on drop.
pub struct Daemon {
    pub child: Child,
    pub url: String,
    /// Everything the daemon wrote to stdout and stderr so far is readable from here.
    pub output: mpsc::Receiver<String>,
    /// What it printed before it was listening.
    pub startup: Vec<String>,
}

impl Daemon {
    /// Start `neurolink proxy start -p 0 <args>` and wait (up to 20 s) for its listening line.
    ///
    /// This blocks the calling thread: fakes the daemon talks to during start-up must run on
    /// another runtime thread (`#[tokio::test(flavor = "multi_thread")]`).
    pub fn start(home: &TestHome, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut cmd = command(home);
        cmd.args(["proxy", "start", "-p", "0"]).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| {
            anyhow::anyhow!(
                "cannot run {}: {e} (build it with cargo build -p neurolink-daemon)",
                neurolink_bin().display()
            )
        })?;
        let (tx, rx) = mpsc::channel::<String>();
        for pipe in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let url = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        seen.push(line);
                        return Ok(Self {
                            child,
                            url,
                            output: rx,
                            startup: seen,
                        });
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    anyhow::bail!("daemon did not start; it printed:\n{}", seen.join("\n"));
                }
            }
        }
    }

    /// `127.0.0.1:PORT`: where the daemon listens, without the scheme (for raw connections
    /// and `Host` headers).
    pub fn authority(&self) -> String {
        self.url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, rest)| rest)
            .to_string()
    }

    /// Lines printed since the last call.
    pub fn drain_output(&self) -> Vec<String> {
        self.output.try_iter().collect()
    }

    pub async fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(http()
            .get(format!("{}/status", self.url))
            .send()
            .await?
            .json()
            .await?)
    }

    /// `POST /v1/messages` with [`message_body`] (streamed or not).
    pub async fn message(&self, stream: bool) -> reqwest::Response {
        http()
            .post(format!("{}/v1/messages", self.url))
            .json(&message_body(stream))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /v1/messages to {}: {e}", self.url))
    }

    /// The `/status` entry of the account labelled `label`.
    pub async fn account(&self, label: &str) -> anyhow::Result<serde_json::Value> {
        let s = self.status().await?;
        s["accounts"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["label"] == label).cloned())
            .ok_or_else(|| anyhow::anyhow!("no account {label} in {s}"))
    }

    /// Poll `/status` until the account `label` satisfies `ok`, or `timeout` passes; returns
    /// the last view of the account.
    pub async fn wait_account(
        &self,
        label: &str,
        timeout: Duration,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let a = self.account(label).await;
            if let Ok(a) = &a {
                if ok(a) {
                    return Ok(a.clone());
                }
            }
            if Instant::now() > deadline {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Send SIGTERM and wait up to `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                anyhow::bail!("daemon did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temp home whose config has API-key accounts `(name, key)` against `upstream`, fill-first,
/// plus `extra` YAML; the daemon started there with `args`.
pub fn proxy_with_keys(
    upstream: &str,
    keys: &[(&str, &str)],
    extra: &str,
    args: &[&str],
) -> anyhow::Result<(TestHome, Daemon)> {
    let home = TestHome::new()?;
    let mut config = config_with_keys(upstream, "fill-first", keys);
    config.push_str(extra);
    home.write_config(&config)?;
    let d = Daemon::start(&home, args, &[])?;
    Ok((home, d))
}

/// Run `neurolink args...` in `home`; it must succeed and print JSON, which is returned.
pub fn cli_json(home: &TestHome, args: &[&str]) -> serde_json::Value {
    let out = command(home)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("neurolink {args:?}: {e}"));
    assert!(
        out.status.success(),
        "neurolink {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("neurolink {args:?} printed no JSON: {e}"))
}

/// A config with API-key accounts `(name, key)` against `upstream`.
pub fn config_with_keys(upstream: &str, strategy: &str, keys: &[(&str, &str)]) -> String {
    let mut s = format!("routing:\n  strategy: {strategy}\nproviders:\n  anthropic:\n    baseUrl: {upstream}\naccounts:\n  anthropic:\n");
    for (name, key) in keys {
        s.push_str(&format!("    - name: {name}\n      apiKey: {key}\n"));
    }
    s
}

/// A plain-JSON `tokens.json` with OAuth accounts `(label, access token, expiresAt ms)`; each
/// has refresh token `rt-<label>`.
pub fn token_store(accounts: &[(&str, &str, i64)]) -> String {
    let with_refresh: Vec<_> = accounts
        .iter()
        .map(|(label, access, expires)| (*label, *access, format!("rt-{label}"), *expires))
        .collect();
    token_store_with(
        &with_refresh
            .iter()
            .map(|(l, a, r, e)| (*l, *a, r.as_str(), *e))
            .collect::<Vec<_>>(),
    )
}

/// A plain-JSON `tokens.json` with OAuth accounts `(label, access, refresh, expiresAt ms)`.
pub fn token_store_with(accounts: &[(&str, &str, &str, i64)]) -> String {
    let mut providers = serde_json::Map::new();
    for (label, access, refresh, expires) in accounts {
        crate::secrets::note(access);
        crate::secrets::note(refresh);
        providers.insert(
            format!("anthropic:{label}"),
            serde_json::json!({
                "tokens": {"accessToken": access, "refreshToken": refresh, "expiresAt": expires,
                           "tokenType": "Bearer", "scope": format!("user:inference email:{label}")},
                "createdAt": 1, "lastAccessed": 1, "keptField": "survives rewrites"
            }),
        );
    }
    serde_json::json!({"version": "2.0", "lastModified": 1, "providers": providers, "futureTopLevel": 7}).to_string()
}

/// Milliseconds since the Unix epoch, for `expiresAt` values.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A request body for `/v1/messages`.
pub fn message_body(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "say hi"}]
    })
}

/// One `POST /v1/messages` ([`message_body`]) to `base_url`, through [`http()`].
pub async fn send_message(base_url: &str, stream: bool) -> reqwest::Response {
    http()
        .post(format!("{base_url}/v1/messages"))
        .json(&message_body(stream))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the daemon did not answer: {e}"))
}

/// Start `n` concurrent non-streamed `POST /v1/messages` to `base_url`; each task yields the status.
pub fn spawn_messages(
    client: &reqwest::Client,
    base_url: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<reqwest::Result<reqwest::StatusCode>>> {
    (0..n)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{base_url}/v1/messages"));
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&message_body(false))
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect()
}

/// A plain HTTP client for tests (no proxy from the environment).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}
