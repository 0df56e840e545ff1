//! Commands that talk to a running daemon over its control socket: `proxy stop`,
//! `proxy status`, `rpc`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use neurolink_shared::ipc::{ClientError, IpcClient};
use neurolink_shared::paths::Paths;
use serde_json::Value;

use super::OutputFormat;
use crate::lifecycle;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

/// `neurolink rpc METHOD [PARAMS_JSON]`: one call, the result as JSON on stdout. `subscribe`
/// prints each event as a line until the daemon stops or Ctrl-C.
pub fn rpc(method: &str, params: Option<&str>) -> ExitCode {
    let params: Option<Value> = match params.map(serde_json::from_str).transpose() {
        Ok(p) => p,
        Err(e) => return fail(format!("PARAMS_JSON is not JSON: {e}")),
    };
    let paths = Paths::from_env();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    rt.block_on(async {
        let mut client = match IpcClient::connect(&paths.socket()).await {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        match client
            .call_timeout(method, params, Duration::from_secs(60))
            .await
        {
            Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
            Err(ClientError::Remote(e)) => {
                eprintln!("error {}: {}", e.code, e.message);
                return ExitCode::FAILURE;
            }
            Err(e) => return fail(e),
        }
        if method == "subscribe" {
            loop {
                match client.next_event().await {
                    Ok(n) => println!("{}", serde_json::to_string(&n.params).unwrap_or_default()),
                    Err(ClientError::Closed) => break,
                    Err(e) => return fail(e),
                }
            }
        }
        ExitCode::SUCCESS
    })
}

/// `neurolink proxy stop`: ask the daemon to stop and wait until it has.
pub fn stop() -> ExitCode {
    let paths = Paths::from_env();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    rt.block_on(async {
        let pid = lifecycle::read_state(&paths).map(|s| s.pid);
        let mut client = match IpcClient::connect(&paths.socket()).await {
            Ok(c) => c,
            Err(_) => {
                println!(
                    "no neurolink proxy is running (nothing answers on {})",
                    paths.socket().display()
                );
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = client
            .call_timeout("shutdown", None, Duration::from_secs(10))
            .await
        {
            return fail(e);
        }
        // In-flight answers get up to 30 s to finish.
        let deadline = Instant::now() + crate::server::SHUTDOWN_GRACE + Duration::from_secs(5);
        while Instant::now() < deadline {
            let gone = pid.is_none_or(|p| !lifecycle::pid_alive(p)) && !paths.state().exists();
            if gone || (pid.is_none() && !paths.socket().exists()) {
                println!("stopped");
                return ExitCode::SUCCESS;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        fail("the daemon accepted the stop but is still running")
    })
}

/// `neurolink proxy status`: what the running daemon reports, or that none runs.
pub fn status(format: OutputFormat) -> ExitCode {
    let paths = Paths::from_env();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    rt.block_on(async {
        let mut client = match IpcClient::connect(&paths.socket()).await {
            Ok(c) => c,
            Err(_) => {
                if format == OutputFormat::Json {
                    println!("{}", serde_json::json!({"running": false}));
                } else {
                    println!("not running (start it with `neurolink proxy start`)");
                }
                return ExitCode::FAILURE;
            }
        };
        let summary = client
            .call_timeout("status", None, Duration::from_secs(5))
            .await;
        let accounts = client
            .call_timeout("accounts.list", None, Duration::from_secs(5))
            .await;
        let (Ok(mut summary), Ok(accounts)) = (summary, accounts) else {
            return fail("the daemon did not answer status");
        };
        summary["running"] = Value::Bool(true);
        summary["accounts"] = accounts["accounts"].clone();
        if format == OutputFormat::Json {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
            return ExitCode::SUCCESS;
        }
        let s = |v: &Value| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        };
        println!(
            "running: pid {}, http://{}:{}, {}, up {:.0} s",
            summary["pid"],
            s(&summary["host"]),
            summary["port"],
            s(&summary["strategy"]),
            summary["uptime"].as_f64().unwrap_or(0.0)
        );
        println!(
            "requests: {} ({} ok), tokens in/out: {}/{}",
            summary["totals"]["requests"],
            summary["totals"]["successes"],
            summary["totals"]["inputTokens"],
            summary["totals"]["outputTokens"]
        );
        for a in summary["accounts"].as_array().into_iter().flatten() {
            let extra = match s(&a["state"]).as_str() {
                "cooling" => format!(" ({} s left)", a["cooldownRemainingSecs"]),
                "disabled" => format!(" ({})", s(&a["disabledReason"])),
                _ => String::new(),
            };
            println!(
                "  {:<24} {:<8} {}{}",
                s(&a["label"]),
                s(&a["kind"]),
                s(&a["state"]),
                extra
            );
        }
        ExitCode::SUCCESS
    })
}
