//! Commands that talk to a running daemon over its control socket: `proxy stop`,
//! `proxy status`, `rpc`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use neurolink_shared::ipc::methods::{self, NoParams};
use neurolink_shared::ipc::{AccountState, Call, ClientError, CredentialKind, IpcClient};
use neurolink_shared::paths::Paths;
use serde_json::Value;

use super::OutputFormat;
use crate::lifecycle;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

use super::output::{done, fail, fail_with};

/// `neurolink rpc METHOD [PARAMS_JSON]`: one call, the result as JSON on stdout. `subscribe`
/// prints each event as a line until the daemon stops or Ctrl-C.
pub fn rpc(method: &str, params: Option<&str>) -> ExitCode {
    let params: Option<Value> = match params.map(serde_json::from_str).transpose() {
        Ok(p) => p,
        Err(e) => {
            fail(format!(
                "the params argument is not JSON ({e}); `{method}` takes {}",
                neurolink_shared::ipc::methods::params_shape(method)
            ));
            return ExitCode::from(2);
        }
    };
    let paths = Paths::from_env();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    // Checked here first, so a mistake is told in terms of the method's params.
    if let Err(e) = Call::parse(method, params.clone()) {
        fail_with(&e.message, serde_json::json!({"code": e.code}));
        return ExitCode::from(2);
    }
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
                return fail_with(
                    format!("{} (code {})", e.message, e.code),
                    serde_json::json!({"code": e.code, "data": e.data}),
                );
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
                return fail_with(
                    format!(
                        "no neurolink proxy is running (nothing answers on {})",
                        paths.socket().display()
                    ),
                    serde_json::json!({"running": false}),
                );
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
                return done("stopped", serde_json::json!({"stopped": true, "pid": pid}));
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
                // As LSB `status` does: 3 = not running.
                return ExitCode::from(3);
            }
        };
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            let summary = client.request::<methods::Status>(&NoParams {}).await?;
            let accounts = client
                .request::<methods::AccountsList>(&NoParams {})
                .await?;
            Ok::<_, ClientError>((summary, accounts.accounts))
        })
        .await;
        let Ok(Ok((summary, accounts))) = answer else {
            return fail("the daemon did not answer status");
        };
        if format == OutputFormat::Json {
            let mut v = serde_json::to_value(&summary).unwrap_or(Value::Null);
            v["running"] = Value::Bool(true);
            v["accounts"] = serde_json::to_value(&accounts).unwrap_or(Value::Null);
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            return ExitCode::SUCCESS;
        }
        println!(
            "running: pid {}, http://{}:{}, {}, up {:.0} s",
            summary.pid, summary.host, summary.port, summary.strategy, summary.uptime
        );
        println!(
            "requests: {} ({} ok), tokens in/out: {}/{}",
            summary.totals.requests,
            summary.totals.successes,
            summary.totals.input_tokens,
            summary.totals.output_tokens
        );
        for a in &accounts {
            let extra = match a.state {
                AccountState::Cooling => {
                    format!(" ({} s left)", a.cooldown_remaining_secs.unwrap_or(0))
                }
                AccountState::Disabled => {
                    format!(" ({})", a.disabled_reason.as_deref().unwrap_or("disabled"))
                }
                AccountState::Active => String::new(),
            };
            let kind = match a.kind {
                CredentialKind::ApiKey => "api_key",
                CredentialKind::Oauth => "oauth",
            };
            println!(
                "  {:<24} {:<8} {}{}",
                a.label,
                kind,
                a.state.as_str(),
                extra
            );
        }
        ExitCode::SUCCESS
    })
}
