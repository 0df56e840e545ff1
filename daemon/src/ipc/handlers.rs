//! One function per IPC method, each answering its method's typed result
//! (`neurolink_shared::ipc::methods`).

use std::sync::Arc;

use neurolink_shared::ipc::methods::{
    AccountResult, AccountsResult, Call, HelloResult, LabelParams, LoginCompleteParams,
    LoginMethod, LoginStartParams, LoginStarted, LogsResult, ShutdownResult,
};
use neurolink_shared::ipc::{
    codes, AccountChange, AccountState, Event, RpcError, Topic, PROTOCOL_VERSION,
};
use serde::Serialize;
use serde_json::Value;

use crate::auth::login::{self, LoginFlow, Method, PendingLogin, Placement, Urls};
use crate::pool::{AccountId, Credential, Source};
use crate::server::{status, App};

/// Answer one call (`subscribe` is handled by the connection, which owns the event stream).
pub async fn handle(app: &Arc<App>, call: Call) -> Result<Value, RpcError> {
    match call {
        Call::Hello(_) => to_value(HelloResult {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
        }),
        Call::Status(_) => to_value(status::summary(app)),
        Call::AccountsList(_) => to_value(AccountsResult {
            accounts: status::accounts(app),
        }),
        Call::AccountsRefresh(LabelParams { label }) => account(app, refresh(app, label).await),
        Call::AccountsEnable(LabelParams { label }) => account(app, enable(app, label).await),
        Call::AccountsDisable(LabelParams { label }) => account(app, disable(app, label).await),
        Call::AccountsReset(LabelParams { label }) => account(app, reset(app, label)),
        Call::AuthLoginStart(p) => to_value(login_start(app, p)?),
        Call::AuthLoginComplete(p) => account(app, login_complete(app, p).await),
        Call::LogsTail(p) => to_value(LogsResult {
            records: app.recent(p.limit.unwrap_or(50)),
        }),
        Call::ConfigReload(_) => to_value(
            crate::reload::reload(app)
                .await
                .map_err(|e| RpcError::new(codes::FAILED, e))?,
        ),
        Call::Subscribe(_) => Err(RpcError::new(
            codes::INVALID_REQUEST,
            "already subscribed on this connection",
        )),
        Call::Shutdown(_) => to_value(ShutdownResult { ok: true }),
    }
}

fn to_value(v: impl Serialize) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(codes::INTERNAL, e.to_string()))
}

/// `{account}` for the account a method acted on.
fn account(app: &App, id: Result<AccountId, RpcError>) -> Result<Value, RpcError> {
    let id = id?;
    let view = status::account_view(&app.pool(), id, app.now_ms())
        .ok_or_else(|| RpcError::new(codes::INTERNAL, "the account vanished"))?;
    to_value(AccountResult { account: view })
}

/// The topics of a `subscribe` (all when none are named).
pub fn topics(call: &Call) -> Vec<Topic> {
    match call {
        Call::Subscribe(p) => p.topics.clone().unwrap_or_else(|| Topic::ALL.to_vec()),
        _ => Vec::new(),
    }
}

fn find(app: &App, label: &str) -> Result<AccountId, RpcError> {
    app.pool()
        .accounts()
        .iter()
        .position(|a| *a.spec.label == *label)
        .ok_or_else(|| {
            RpcError::new(
                codes::NO_SUCH_ACCOUNT,
                format!("no account labelled `{label}`"),
            )
        })
}

async fn refresh(app: &Arc<App>, label: String) -> Result<AccountId, RpcError> {
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
    let state = app.pool().state(id, app.now_ms()).view();
    app.emit(Event::account(label, AccountChange::Refreshed, state, None));
    Ok(id)
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

async fn enable(app: &Arc<App>, label: String) -> Result<AccountId, RpcError> {
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
    let state = {
        let mut pool = app.pool();
        pool.enable(id);
        pool.state(id, app.now_ms()).view()
    };
    app.emit(Event::account(label, AccountChange::Enabled, state, None));
    Ok(id)
}

async fn disable(app: &Arc<App>, label: String) -> Result<AccountId, RpcError> {
    let id = find(app, &label)?;
    let reason = "disabled over IPC; enable with `neurolink auth enable` or accounts.enable";
    if app.pool().account(id).map(|a| a.spec.source) == Some(Source::TokenStore) {
        persist_disabled(app, &label, Some(reason)).await?;
    }
    app.pool().disable(id, reason.to_string());
    app.emit(Event::account(
        label,
        AccountChange::Disabled,
        AccountState::Disabled,
        Some("disabled by a user".into()),
    ));
    Ok(id)
}

fn reset(app: &Arc<App>, label: String) -> Result<AccountId, RpcError> {
    let id = find(app, &label)?;
    let state = {
        let mut pool = app.pool();
        pool.reset(id);
        pool.state(id, app.now_ms()).view()
    };
    app.emit(Event::account(label, AccountChange::Reset, state, None));
    Ok(id)
}

fn login_start(app: &Arc<App>, p: LoginStartParams) -> Result<LoginStarted, RpcError> {
    let method = match p.method.unwrap_or(LoginMethod::Oauth) {
        LoginMethod::Oauth => Method::OAuth,
        LoginMethod::CreateApiKey => Method::CreateApiKey,
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
    Ok(LoginStarted {
        authorize_url: url,
        login_id,
    })
}

async fn login_complete(app: &Arc<App>, p: LoginCompleteParams) -> Result<AccountId, RpcError> {
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
            .map_err(|e| RpcError::new(codes::FAILED, e.to_string()))?
            .label;
    let _ = crate::store_watch::reload(app).await;
    let id = find(app, &label)?;
    let state = app.pool().state(id, app.now_ms()).view();
    app.emit(Event::account(label, AccountChange::Added, state, None));
    Ok(id)
}
