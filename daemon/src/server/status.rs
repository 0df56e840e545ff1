//! `/health` and `/status` bodies. Secrets never appear here: accounts are shown by label and kind.

use serde_json::{json, Value};

use super::App;
use crate::clock::rfc3339;
use crate::clock::Millis;
use crate::pool::{AccountId, Counters, Credential, Pool, State};

fn uptime_secs(app: &App) -> f64 {
    app.now_ms().saturating_sub(app.settings.started_at_ms) as f64 / 1000.0
}

/// NeuroLink's `/health` shape (`neurolink-files.md` §9).
pub fn health(app: &App) -> Value {
    json!({
        "status": "ok",
        "ready": true,
        "acceptingConnections": true,
        "strategy": app.settings.strategy.as_str(),
        "passthrough": false,
        "version": env!("CARGO_PKG_VERSION"),
        "startedAt": rfc3339(app.settings.started_at_ms),
        "uptime": uptime_secs(app),
        "healthPath": "/health",
        "statusPath": "/status",
    })
}

/// One account as `/status`, `accounts.list` and the dashboard show it.
pub fn account_view(pool: &Pool, id: AccountId, now: Millis) -> Value {
    let Some(a) = pool.account(id) else {
        return Value::Null;
    };
    let (state, until) = match pool.state(id, now) {
        State::Active => ("active", None),
        State::Cooling { until } => ("cooling", Some(until)),
        State::Disabled => ("disabled", None),
    };
    json!({
        "label": a.spec.label,
        "kind": a.spec.credential.kind(),
        "source": a.spec.source,
        "weight": a.spec.weight,
        "state": state,
        "cooldownUntil": until.map(rfc3339),
        "cooldownRemainingSecs": until.map(|u| (u - now).div_ceil(1000)),
        "backoffLevel": a.health.backoff_level,
        "quota": a.health.quota.as_ref().map(|q| json!({
            "fiveHour": q.session_used,
            "fiveHourStatus": q.session_status,
            "fiveHourResetAt": q.session_reset_at,
            "sevenDay": q.weekly_used,
            "sevenDayStatus": q.weekly_status,
            "sevenDayResetAt": q.weekly_reset_at,
            "overageStatus": q.overage_status,
            "updatedAt": u64::try_from(q.last_updated).ok().map(rfc3339),
        })),
        "tokenExpiresAt": match &a.spec.credential {
            Credential::OAuth(cell) => u64::try_from(cell.expires_at_ms()).ok().map(rfc3339),
            Credential::ApiKey(_) => None,
        },
        "disabledReason": pool.disabled_reason(id),
        "lastError": a.health.last_error,
        "excludedModels": a.spec.excluded_models,
        "counters": a.counters,
    })
}

/// Every account's view.
pub fn accounts(app: &App) -> Vec<Value> {
    let now = app.now_ms();
    let pool = app.pool();
    (0..pool.accounts().len())
        .map(|id| account_view(&pool, id, now))
        .collect()
}

/// The daemon without its accounts: what `status` over IPC returns.
pub fn summary(app: &App) -> Value {
    let mut totals = Counters::default();
    let (count, usable) = {
        let pool = app.pool();
        let now = app.now_ms();
        for a in pool.accounts() {
            totals.absorb(&a.counters);
        }
        let usable = (0..pool.accounts().len())
            .filter(|&id| pool.state(id, now) == State::Active)
            .count();
        (pool.accounts().len(), usable)
    };
    let config = app.config();
    json!({
        "status": "running",
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "host": app.settings.host,
        "port": app.settings.port,
        "strategy": app.pool().strategy().as_str(),
        "startedAt": rfc3339(app.settings.started_at_ms),
        "uptime": uptime_secs(app),
        "fallbackChain": config.routing.fallback_chain,
        "accountCount": count,
        "usableAccounts": usable,
        "totals": totals,
    })
}

/// `/status`: the summary plus every account.
pub fn status(app: &App) -> Value {
    let mut v = summary(app);
    v["accounts"] = Value::Array(accounts(app));
    v
}
