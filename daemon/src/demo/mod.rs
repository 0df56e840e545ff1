//! `neurolink demo`: the whole product in one command, touching nothing of the user's.
//!
//! A temporary `NEUROLINK_HOME` gets a config and a token store with three simulated accounts
//! (two Claude logins whose quotas move, one API key); a simulated Anthropic runs in this process
//! on 127.0.0.1 (`upstream.rs`); a real daemon runs against it (`proxy start --no-settings`, so
//! Claude Code's settings are never touched); steady traffic flows through it (`traffic.rs`); and
//! the dashboard opens on it. Quitting stops the daemon and removes the folder.

mod traffic;
mod upstream;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long the daemon may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What the demo was asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Without the dashboard: run this long, print what happened, stop.
    pub headless: Option<Duration>,
}

/// A temporary home, removed on drop.
struct TempHome(PathBuf);

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon child; stopped (SIGTERM, then kill) on drop.
struct DaemonChild(Child);

impl Drop for DaemonChild {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(options: DemoOptions) -> ExitCode {
    match demo(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo(options: DemoOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let home = TempHome(std::env::temp_dir().join(format!(
        "neurolink-demo-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )));
    neurolink_shared::atomic_file::create_private_dir(&home.0)
        .with_context(|| format!("creating {}", home.0.display()))?;
    let upstream = upstream::Upstream::new(neurolink_shared::time::now_ms() / 1000);
    let sim = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, upstream::router(upstream)).await;
        });
        Ok::<_, std::io::Error>(addr)
    })?;
    write_files(&home.0, &format!("http://{sim}"))?;
    let exe = std::env::current_exe().context("finding this program")?;
    let (daemon, url) = start_daemon(&exe, &home.0)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let stats = traffic::Stats::default();
    rt.spawn(traffic::run(url.clone(), stats.clone(), stop.clone()));
    let result = match options.headless {
        Some(duration) => rt.block_on(headless(&home.0, &url, duration, &stats)),
        None => {
            eprintln!("demo: daemon on {url}, files in {}", home.0.display());
            // The dashboard runs its own runtime on this thread; the demo's keeps serving the
            // simulated upstream and the traffic on its worker threads.
            neurolink_tui::run(neurolink_tui::Options {
                socket: home.0.join("daemon.sock"),
                daemon_bin: Some(exe),
                neurolink_home: Some(home.0.clone()),
            })
        }
    };
    stop.cancel();
    drop(daemon);
    rt.shutdown_timeout(Duration::from_secs(2));
    let removed = home.0.clone();
    drop(home);
    if options.headless.is_some() {
        println!(
            "stopped; removed {} ({})",
            removed.display(),
            if removed.exists() {
                "still there!"
            } else {
                "gone"
            }
        );
    }
    result
}

/// The config and token store of the three simulated accounts.
fn write_files(home: &Path, sim: &str) -> anyhow::Result<()> {
    let config = format!(
        "# neurolink demo: three simulated accounts against a simulated Anthropic on {sim}\n\
         routing:\n  strategy: round-robin\n  quota-threshold: 0.9\n\
         providers:\n  anthropic:\n    baseUrl: \"{sim}\"\n  anthropic-oauth:\n    tokenUrl: \"{sim}/v1/oauth/token\"\n\
         server:\n  tokenCheckSecs: 5\n\
         accounts:\n  anthropic:\n    - name: ci-key\n      apiKey: \"${{NEUROLINK_DEMO_KEY:-sk-ant-api03-demo-not-a-real-key}}\"\n"
    );
    neurolink_shared::atomic_file::write_private(
        &home.join("proxy-config.yaml"),
        config.as_bytes(),
    )
    .context("writing the demo config")?;
    let now = i64::try_from(neurolink_shared::time::now_ms()).unwrap_or(i64::MAX);
    let entry = |who: &str, expires: i64| {
        serde_json::json!({
            "tokens": {"accessToken": format!("demo-at-{who}-0"), "refreshToken": format!("demo-rt-{who}-0"),
                       "expiresAt": expires, "tokenType": "Bearer", "scope": "user:inference"},
            "createdAt": now, "lastAccessed": now
        })
    };
    let store = serde_json::json!({
        "version": "2.0",
        "lastModified": now,
        "providers": {
            // alice's token is fresh; bob's expires within the hour, so it is refreshed early on.
            "anthropic:alice@demo": entry("alice@demo", now + 8 * 3_600_000),
            "anthropic:bob@demo": entry("bob@demo", now + 40 * 60_000),
        }
    });
    neurolink_shared::atomic_file::write_private(
        &home.join("tokens.json"),
        store.to_string().as_bytes(),
    )
    .context("writing the demo token store")?;
    Ok(())
}

/// `neurolink proxy start` in the demo home; its log goes to `daemon.log` there.
fn start_daemon(exe: &Path, home: &Path) -> anyhow::Result<(DaemonChild, String)> {
    let log = std::fs::File::create(home.join("daemon.log")).context("creating daemon.log")?;
    let mut child = Command::new(exe)
        .args(["proxy", "start", "--port", "0", "--no-settings"])
        .env("NEUROLINK_HOME", home)
        .env_remove("ANTHROPIC_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting the demo daemon")?;
    let stdout = child.stdout.take().context("reading the daemon's output")?;
    let daemon = DaemonChild(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(url);
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(url) => Ok((daemon, url)),
        Err(_) => {
            let log = std::fs::read_to_string(home.join("daemon.log")).unwrap_or_default();
            bail!("the demo daemon did not start:\n{log}")
        }
    }
}

/// Run without a screen and report what happened (for scripts and tests).
async fn headless(
    home: &Path,
    url: &str,
    duration: Duration,
    stats: &traffic::Stats,
) -> anyhow::Result<()> {
    use neurolink_shared::ipc::{AccountChange, Connection, Event};
    println!("demo: daemon on {url}, files in {}", home.display());
    let (conn, mut events) = Connection::connect(&home.join("daemon.sock")).await?;
    conn.subscribe(None).await?;
    let mut changes: std::collections::BTreeMap<String, u64> = Default::default();
    let mut failovers = 0u64;
    let deadline = tokio::time::Instant::now() + duration;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Accounts { change, .. })) => {
                let name = match change {
                    AccountChange::Cooling => "cooling",
                    AccountChange::CooldownEnded => "cooldown_ended",
                    AccountChange::Refreshed => "refreshed",
                    _ => "other",
                };
                *changes.entry(name.to_string()).or_default() += 1;
            }
            Ok(Some(Event::Requests { record })) => {
                if record.attempts.len() > 1 {
                    failovers += 1;
                }
            }
            Ok(Some(Event::Daemon { .. })) => {}
            Ok(None) => bail!("the daemon went away"),
            Err(_) => break,
        }
    }
    let s = stats.snapshot();
    println!(
        "requests: {} sent, {} answered 2xx, {} failed; failovers: {failovers}",
        s.sent, s.ok, s.failed
    );
    for (k, v) in &changes {
        println!("account events {k}: {v}");
    }
    Ok(())
}
