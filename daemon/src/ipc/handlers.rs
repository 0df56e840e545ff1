//! One function per IPC method: `(app, params) -> Result<Value, RpcError>`.

use std::sync::Arc;

use neurolink_shared::ipc::{codes, Event, RpcError, PROTOCOL_VERSION, TOPICS};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::login::{self, LoginFlow, Method, PendingLogin, Placement, Urls};
use crate::pool::{AccountId, Credential, Source};
use crate::server::{status, App};

pub async fn handle(
    app: &Arc<App>,
    method: &str,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    match method {
        "hello" => Ok(
            json!({"protocol": PROTOCOL_VERSION, "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id()}),
        ),
        "status" => Ok(status::summary(app)),
        "accounts.list" => Ok(json!({ "accounts": status::accounts(app) })),
        "accounts.refresh" => refresh(app, label(params)?).await,
        "accounts.enable" => enable(app, label(params)?).await,
        "accounts.disable" => disable(app, label(params)?).await,
        "accounts.reset" => reset(app, label(params)?),
        "auth.login.start" => login_start(app, parse(params)?),
        "auth.login.complete" => login_complete(app, parse(params)?).await,
        "logs.tail" => {
            let p: TailParams = parse_or_default(params)?;
            Ok(json!({ "records": app.recent(p.limit.unwrap_or(50)) }))
        }
        "config.reload" => crate::reload::reload(app)
            .await
            .map_err(|e| RpcError::new(codes::FAILED, e)),
        "shutdown" => Ok(json!({"ok": true})),
        other => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!(
                "unknown method `{other}` (daemon {}); methods: {}",
                env!("CARGO_PKG_VERSION"),
                neurolink_shared::ipc::METHODS.join(", ")
            ),
        )),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(params: Option<Value>) -> Result<T, RpcError> {
    let v = params.unwrap_or(Value::Null);
    serde_json::from_value(v)
        .map_err(|e| RpcError::new(codes::INVALID_PARAMS, format!("invalid params: {e}")))
}

fn parse_or_default<T: for<'de> Deserialize<'de> + Default>(
    params: Option<Value>,
) -> Result<T, RpcError> {
    match params {
        None | Some(Value::Null) => Ok(T::default()),
        p => parse(p),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelParams {
    label: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TailParams {
    limit: Option<usize>,
}

/// `subscribe`'s topics (all when none are named).
pub fn topics(params: Option<&Value>) -> Result<Vec<String>, RpcError> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct P {
        topics: Option<Vec<String>>,
    }
    let p: P = parse_or_default(params.cloned())?;
    let topics = p
        .topics
        .unwrap_or_else(|| TOPICS.iter().map(|t| t.to_string()).collect());
    if let Some(bad) = topics.iter().find(|t| !TOPICS.contains(&t.as_str())) {
        return Err(RpcError::new(
            codes::INVALID_PARAMS,
            format!("unknown topic `{bad}` (topics: {})", TOPICS.join(", ")),
        ));
    }
    Ok(topics)
}

fn label(params: Option<Value>) -> Result<String, RpcError> {
    parse::<LabelParams>(params).map(|p| p.label)
}

fn find(app: &App, label: &str) -> Result<AccountId, RpcError> {
    app.pool()
        .accounts()
        .iter()
        .position(|a| a.spec.label == label)
        .ok_or_else(|| {
            RpcError::new(
                codes::NO_SUCH_ACCOUNT,
                format!("no account labelled `{label}`"),
            )
        })
}

fn view(app: &App, id: AccountId) -> Value {
    let view = status::account_view(&app.pool(), id, app.now_ms());
    serde_json::to_value(view).unwrap_or(Value::Null)
}

async fn refresh(app: &Arc<App>, label: String) -> Result<Value, RpcError> {
    let id = find(app, &label)?;
    let cell = match app.pool().account(id).map(|a| a.spec.credential.clone()) {
        Some(Credential::OAuth(cell)) => cell,
        _ => {
            return Err(RpcError::new(
                codes::FAILED,
                format!("`{label}` is an API key; API keys do not refresh"),
            ))
        }
    };
    app.refresher
        .refresh(&cell, true)
        .await
        .map_err(|e| RpcError::new(codes::FAILED, format!("refreshing `{label}` failed: {e}")))?;
    app.emit(Event::Accounts {
        label: label.clone(),
        change: "refreshed".into(),
        state: "active".into(),
    });
    Ok(view(app, id))
}

/// Persist `disabled` on a stored login (so it survives restarts and other processes see it).
async fn persist_disabled(app: &App, label: &str, reason: Option<&str>) -> Result<(), RpcError> {
    let store = neurolink_shared::token_store::Store::for_paths(&app.settings.paths);
    let (label, reason) = (label.to_string(), reason.map(str::to_string));
    let r = tokio::task::spawn_blocking(move || {
        store.update(|f| match f.entry(&label) {
            Some(mut e) => {
                match &reason {
                    Some(r) => e.disable(r),
                    None => e.enable(),
                }
                f.set_entry(&label, &e).map_err(|e| e.to_string())
            }
            None => Err(format!("anthropic:{label} is not in tokens.json")),
        })
    })
    .await
    .map_err(|e| RpcError::new(codes::INTERNAL, e.to_string()))?;
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RpcError::new(codes::FAILED, e)),
        Err(e) => Err(RpcError::new(codes::FAILED, e.to_string())),
    }
}

async fn enable(app: &Arc<App>, label: String) -> Result<Value, RpcError> {
    let id = find(app, &label)?;
    let source = app.pool().account(id).map(|a| a.spec.source);
    if source == Some(Source::Config)
        && app
            .pool()
            .account(id)
            .is_some_and(|a| a.spec.disabled.is_some())
    {
        return Err(RpcError::new(
            codes::FAILED,
            format!("`{label}` has enabled: false in the config file; change it there"),
        ));
    }
    if source == Some(Source::TokenStore) {
        persist_disabled(app, &label, None).await?;
        let _ = crate::store_watch::reload(app).await;
    }
    app.pool().enable(id);
    app.emit(Event::Accounts {
        label,
        change: "enabled".into(),
        state: "active".into(),
    });
    Ok(view(app, id))
}

async fn disable(app: &Arc<App>, label: String) -> Result<Value, RpcError> {
    let id = find(app, &label)?;
    let reason = "disabled over IPC; enable with `neurolink auth enable` or accounts.enable";
    if app.pool().account(id).map(|a| a.spec.source) == Some(Source::TokenStore) {
        persist_disabled(app, &label, Some(reason)).await?;
    }
    app.pool().disable(id, reason.to_string());
    app.emit(Event::Accounts {
        label,
        change: "disabled".into(),
        state: "disabled".into(),
    });
    Ok(view(app, id))
}

fn reset(app: &Arc<App>, label: String) -> Result<Value, RpcError> {
    let id = find(app, &label)?;
    app.pool().reset(id);
    app.emit(Event::Accounts {
        label,
        change: "reset".into(),
        state: "active".into(),
    });
    Ok(view(app, id))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginStart {
    #[serde(default)]
    label: Option<String>,
    /// `oauth` (default) or `create-api-key`.
    #[serde(default)]
    method: Option<String>,
}

fn login_start(app: &Arc<App>, p: LoginStart) -> Result<Value, RpcError> {
    let method = match p.method.as_deref().unwrap_or("oauth") {
        "oauth" => Method::OAuth,
        "create-api-key" => Method::CreateApiKey,
        other => {
            return Err(RpcError::new(
                codes::INVALID_PARAMS,
                format!("method `{other}` cannot be started here (oauth or create-api-key; add API keys with `neurolink auth login`)"),
            ))
        }
    };
    let flow = LoginFlow::start(
        method,
        Urls::from_config(&app.config().providers.anthropic_oauth),
    )
    .map_err(|e| RpcError::new(codes::FAILED, e.to_string()))?;
    let url = flow.authorize_url.clone();
    let mut id_bytes = [0u8; 12];
    getrandom::fill(&mut id_bytes).map_err(|e| RpcError::new(codes::INTERNAL, e.to_string()))?;
    let login_id: String = id_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let now = app.now_ms();
    let mut logins = app.logins.lock().unwrap_or_else(|p| p.into_inner());
    logins.retain(|_, l| now.saturating_sub(l.started_ms) < login::PENDING_LOGIN_TTL_MS);
    logins.insert(
        login_id.clone(),
        PendingLogin {
            flow,
            placement: Placement {
                label: p.label,
                add: true,
            },
            started_ms: now,
        },
    );
    Ok(json!({"authorizeUrl": url, "loginId": login_id}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LoginComplete {
    login_id: String,
    code: String,
}

async fn login_complete(app: &Arc<App>, p: LoginComplete) -> Result<Value, RpcError> {
    let pending = app
        .logins
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&p.login_id)
        .ok_or_else(|| {
            RpcError::new(
                codes::INVALID_PARAMS,
                format!(
                    "no pending login `{}` (expired or already completed)",
                    p.login_id
                ),
            )
        })?;
    let account = pending
        .flow
        .complete(&app.runtime().client, &p.code)
        .await
        .map_err(|e| RpcError::new(codes::FAILED, e.to_string()))?;
    let store = neurolink_shared::token_store::Store::for_paths(&app.settings.paths);
    let placement = pending.placement;
    let label =
        tokio::task::spawn_blocking(move || login::store_account(&store, &account, &placement))
            .await
            .map_err(|e| RpcError::new(codes::INTERNAL, e.to_string()))?
            .map_err(|e| RpcError::new(codes::FAILED, e.to_string()))?;
    let _ = crate::store_watch::reload(app).await;
    let id = find(app, &label)?;
    app.emit(Event::Accounts {
        label,
        change: "added".into(),
        state: "active".into(),
    });
    Ok(json!({ "account": view(app, id) }))
}
