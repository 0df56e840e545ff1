//! `neurolink doctor`: checks everything that makes the proxy work and says how to fix what does
//! not. Exit status 1 when any check finds a problem.

use std::process::ExitCode;
use std::time::Duration;

use neurolink_shared::config::{self, EnvSource};
use neurolink_shared::ipc::IpcClient;
use neurolink_shared::paths::{self, Paths};
use serde::Serialize;
use serde_json::Value;

use super::OutputFormat;
use crate::lifecycle;
use crate::pool::Credential;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Problem,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    level: Level,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn check(name: &'static str, level: Level, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name,
        level,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

pub fn run(format: OutputFormat, network: bool) -> ExitCode {
    let paths = Paths::from_env();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return super::output::fail(e),
    };
    let checks = rt.block_on(async {
        let mut out = checks(&paths).await;
        if network {
            out.extend(upstreams(&paths).await);
        }
        out
    });
    let problems = checks.iter().filter(|c| c.level == Level::Problem).count();
    if format == OutputFormat::Json {
        let out = serde_json::json!({"checks": checks, "problems": problems});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for c in &checks {
            let mark = match c.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Problem => "FAIL",
            };
            println!("[{mark}] {}: {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("       fix: {fix}");
            }
        }
        println!(
            "\n{}",
            if problems == 0 {
                "no problems found".to_string()
            } else {
                format!("{problems} problem(s) found")
            }
        );
    }
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn checks(paths: &Paths) -> Vec<Check> {
    let mut out = Vec::new();
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);

    // Config.
    let cfg = match config::load(None, paths, &EnvSource::Process) {
        Ok(l) => {
            let where_ = l
                .path
                .as_ref()
                .map_or("no config file (defaults)".to_string(), |p| {
                    p.display().to_string()
                });
            if l.warnings.is_empty() {
                out.push(check("config", Level::Ok, format!("valid: {where_}"), None));
            } else {
                out.push(check(
                    "config",
                    Level::Warn,
                    format!("valid with warnings: {}", l.warnings.join("; ")),
                    Some("see `neurolink config check`"),
                ));
            }
            Some(l.config)
        }
        Err(e) => {
            out.push(check(
                "config",
                Level::Problem,
                e.to_string(),
                Some("fix the file at the line shown; `neurolink config check` re-checks it"),
            ));
            None
        }
    };

    // The daemon, over its socket.
    let state = lifecycle::read_state(paths);
    let daemon: Option<(Value, Value)> = async {
        let mut c =
            tokio::time::timeout(Duration::from_secs(2), IpcClient::connect(&paths.socket()))
                .await
                .ok()?
                .ok()?;
        let status = c
            .call_timeout("status", None, Duration::from_secs(3))
            .await
            .ok()?;
        let accounts = c
            .call_timeout("accounts.list", None, Duration::from_secs(3))
            .await
            .ok()?;
        Some((status, accounts))
    }
    .await;
    match (&daemon, &state) {
        (Some((s, _)), _) => out.push(check(
            "daemon",
            Level::Ok,
            format!("running (pid {}, http://{}:{}); socket {} answers", s["pid"], s["host"].as_str().unwrap_or("?"), s["port"], paths.socket().display()),
            None,
        )),
        (None, Some(st)) if lifecycle::pid_alive(st.pid) => out.push(check(
            "daemon",
            Level::Problem,
            format!("pid {} is running but its socket {} does not answer", st.pid, paths.socket().display()),
            Some("restart it: `neurolink proxy stop` (or kill the pid), then `neurolink proxy start`"),
        )),
        (None, Some(st)) => out.push(check(
            "daemon",
            Level::Warn,
            format!("not running; a stale proxy-state.json names dead pid {}", st.pid),
            Some("`neurolink proxy start` takes it over"),
        )),
        (None, None) => out.push(check("daemon", Level::Warn, "not running", Some("`neurolink proxy start`, or `neurolink proxy install` to run it as a service"))),
    }

    // Accounts: live view from the daemon when it runs, else from the files.
    if let Some(cfg) = &cfg {
        let found =
            crate::accounts::discover(cfg, paths, std::env::var("ANTHROPIC_API_KEY").ok(), now);
        let live: Vec<Value> = daemon
            .as_ref()
            .and_then(|(_, a)| a["accounts"].as_array().cloned())
            .unwrap_or_default();
        let quotas = neurolink_shared::quotas::read(&paths.quotas()).unwrap_or_default();
        if found.specs.is_empty() {
            out.push(check(
                "accounts",
                Level::Problem,
                "no Anthropic account",
                Some("`neurolink auth login anthropic`, or set ANTHROPIC_API_KEY"),
            ));
        }
        let mut usable = 0;
        for spec in &found.specs {
            let live = live.iter().find(|a| a["label"] == *spec.label);
            let mut notes = Vec::new();
            let mut level = Level::Ok;
            let mut fix = None;
            if let Some(reason) = &spec.disabled {
                level = Level::Warn;
                notes.push(format!("disabled: {reason}"));
                fix = Some(format!(
                    "`neurolink auth enable {}` or log in again",
                    spec.label
                ));
            }
            if let Credential::OAuth(cell) = &spec.credential {
                let left = cell.expires_at_ms() - i64::try_from(now).unwrap_or(i64::MAX);
                if left <= 0 && !cell.has_refresh_token() {
                    level = Level::Warn;
                    notes.push("token expired and cannot refresh".into());
                    fix = Some(format!(
                        "`neurolink auth login anthropic --add --label {}`",
                        spec.label
                    ));
                } else if left <= 0 {
                    notes.push("token expired; refreshes on next use".into());
                } else {
                    notes.push(format!(
                        "token expires {}",
                        super::auth::relative(
                            cell.expires_at_ms(),
                            i64::try_from(now).unwrap_or(0)
                        )
                    ));
                }
            }
            if let Some(a) = live {
                if a["state"] == "cooling" {
                    notes.push(format!("cooling for {} s more", a["cooldownRemainingSecs"]));
                }
                if a["state"] == "disabled" && spec.disabled.is_none() {
                    level = Level::Warn;
                    notes.push(format!(
                        "disabled by the daemon: {}",
                        a["disabledReason"].as_str().unwrap_or("?")
                    ));
                    fix = Some(format!(
                        "`neurolink auth enable {}` or log in again",
                        spec.label
                    ));
                }
            }
            if let Some(q) = quotas.get(&*spec.label) {
                notes.push(format!(
                    "5h window {:.0}%, 7d window {:.0}%",
                    q.session_used * 100.0,
                    q.weekly_used * 100.0
                ));
                if q.max_used() >= 0.9 && level == Level::Ok {
                    level = Level::Warn;
                }
            }
            if level == Level::Ok {
                usable += 1;
            }
            let detail = format!(
                "{} ({}): {}",
                spec.label,
                spec.credential.kind(),
                if notes.is_empty() {
                    "ok".into()
                } else {
                    notes.join("; ")
                }
            );
            out.push(Check {
                name: "account",
                level,
                detail,
                fix,
            });
        }
        if !found.specs.is_empty() && usable == 0 {
            out.push(check(
                "accounts",
                Level::Problem,
                "no account is usable right now",
                Some("enable one or log in again (see above)"),
            ));
        }
    }

    // Claude Code's settings.
    if let Some(path) = paths::claude_settings() {
        let url = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["env"]["ANTHROPIC_BASE_URL"].as_str().map(str::to_string));
        let ours = daemon.as_ref().map(|(s, _)| s["port"].as_u64());
        match (url, ours) {
            (None, _) => out.push(check(
                "claude settings",
                Level::Warn,
                format!("{} does not point Claude Code at the proxy", path.display()),
                Some("the proxy sets it while it runs (unless started with --no-settings)"),
            )),
            (Some(u), Some(Some(port))) if u.ends_with(&format!(":{port}")) => out.push(check(
                "claude settings",
                Level::Ok,
                format!("Claude Code uses {u}, where the proxy answers"),
                None,
            )),
            (Some(u), _) => {
                let answers = reqwest::Client::new()
                    .get(format!("{u}/health"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if answers {
                    out.push(check(
                        "claude settings",
                        Level::Ok,
                        format!("Claude Code uses {u}, which answers"),
                        None,
                    ));
                } else {
                    out.push(check(
                        "claude settings",
                        Level::Problem,
                        format!("Claude Code is pointed at {u} in {}, but nothing answers there", path.display()),
                        Some("start the proxy (`neurolink proxy start`), or remove env.ANTHROPIC_BASE_URL from that file"),
                    ));
                }
            }
        }
    }

    // The service.
    if let Some(home) = paths::home_dir() {
        let manager = crate::service::Manager::current();
        let file = crate::service::file_path(manager, &home);
        if file.exists() {
            out.push(check(
                "service",
                Level::Ok,
                format!("installed: {}", file.display()),
                None,
            ));
        } else {
            out.push(check(
                "service",
                Level::Ok,
                "not installed (the proxy runs only while started by hand)",
                None,
            ));
        }
    }

    // The port, when no daemon holds it.
    if daemon.is_none() {
        if let Some(cfg) = &cfg {
            let (host, port) = (cfg.server.host.value.clone(), cfg.server.port.0);
            match std::net::TcpListener::bind((host.as_str(), port)) {
                Ok(_) => out.push(check(
                    "port",
                    Level::Ok,
                    format!("{host}:{port} is free"),
                    None,
                )),
                Err(e) => out.push(check(
                    "port",
                    Level::Problem,
                    format!("{host}:{port} is not available: {e}"),
                    Some("stop what holds it, or pick another port with `--port` / server.port"),
                )),
            }
        }
    } else {
        out.push(check("port", Level::Ok, "held by the proxy", None));
    }

    // Logs.
    let size: u64 = std::fs::read_dir(paths.logs())
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let mb = size as f64 / 1_048_576.0;
    if size > crate::logs::rotate::MAX_TOTAL_BYTES {
        out.push(check(
            "logs",
            Level::Warn,
            format!("{} holds {mb:.1} MB", paths.logs().display()),
            Some("the proxy trims it to 500 MB hourly while it runs"),
        ));
    } else {
        out.push(check(
            "logs",
            Level::Ok,
            format!("{} holds {mb:.1} MB", paths.logs().display()),
            None,
        ));
    }
    out
}

/// How long `--network` waits for each upstream's answer.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);

/// `--network`: one request to each Anthropic base URL in use, with the proxy's own client.
async fn upstreams(paths: &Paths) -> Vec<Check> {
    let Ok(loaded) = config::load(None, paths, &EnvSource::Process) else {
        return Vec::new(); // The config check already says why.
    };
    let cfg = loaded.config;
    let mut bases = vec![cfg.providers.anthropic.base_url.value.clone()];
    for a in &cfg.accounts.anthropic {
        if let Some(url) = &a.base_url {
            if !bases.contains(&url.value) {
                bases.push(url.value.clone());
            }
        }
    }
    let roots = match crate::upstream::trust::ExtraRoots::from_config(&cfg.server) {
        Ok(r) => r,
        Err(e) => return vec![check("upstream", Level::Problem, e, None)],
    };
    let client = match crate::upstream::client::UpstreamClient::new(NETWORK_TIMEOUT, &roots) {
        Ok(c) => c,
        Err(e) => return vec![check("upstream", Level::Problem, e, None)],
    };
    let mut out = Vec::new();
    for base in bases {
        out.push(reach(&client, &base).await);
    }
    out
}

/// `GET <base>/v1/models` without credentials: any HTTP answer (a 401, most likely) shows the
/// network, proxies and TLS let the proxy through.
async fn reach(client: &crate::upstream::client::UpstreamClient, base: &str) -> Check {
    let url = format!("{}/v1/models", base.trim_end_matches('/'));
    let Ok(uri) = url.parse::<http::Uri>() else {
        return check(
            "upstream",
            Level::Problem,
            format!("{base} is not a URL"),
            None,
        );
    };
    let mut req = http::Request::new(http_body_util::Full::new(bytes::Bytes::new()));
    *req.uri_mut() = uri;
    let started = std::time::Instant::now();
    match tokio::time::timeout(NETWORK_TIMEOUT, client.send(req)).await {
        Ok(Ok(r)) => check(
            "upstream",
            Level::Ok,
            format!(
                "{base} answers (HTTP {} over {:?}, {} ms)",
                r.status().as_u16(),
                r.version(),
                started.elapsed().as_millis()
            ),
            None,
        ),
        Ok(Err(e)) => {
            let chain = crate::upstream::error_chain(&e);
            let fix = crate::upstream::trust::hint_for(&chain).unwrap_or(
                "check the network; behind a proxy, set HTTPS_PROXY (for a service: in its \
                 unit or plist environment)",
            );
            check(
                "upstream",
                Level::Problem,
                format!("{base}: {chain}"),
                Some(fix),
            )
        }
        Err(_) => check(
            "upstream",
            Level::Problem,
            format!("{base}: no answer within {} s", NETWORK_TIMEOUT.as_secs()),
            Some("check the network; behind a proxy, set HTTPS_PROXY"),
        ),
    }
}
