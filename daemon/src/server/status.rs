//! `/health` and `/status` bodies. Secrets never appear here: accounts are shown by label and kind.

use serde_json::{json, Value};

use super::App;
use crate::clock::rfc3339;
use neurolink_shared::ipc::methods::StatusView;
use neurolink_shared::ipc::{AccountView, CountersView, CredentialKind, QuotaView};

use crate::clock::Millis;
use crate::pool::{AccountId, Counters, Credential, Pool, State};

fn uptime_secs(app: &App) -> f64 {
    app.now_ms().saturating_sub(app.settings.started_at_ms) as f64 / 1000.0
}

/// NeuroLink's `/health` shape (docs/formats.md lists the files; `/health` keeps NeuroLink's fields).
pub fn health(app: &App) -> Value {
    json!({
        "status": "ok",
        "ready": true,
        "acceptingConnections": true,
        "strategy": app.pool().strategy().as_str(),
        "passthrough": false,
        "version": env!("CARGO_PKG_VERSION"),
        "startedAt": rfc3339(app.settings.started_at_ms),
        "uptime": uptime_secs(app),
        "healthPath": "/health",
        "statusPath": "/status",
    })
}

/// One account as `/status`, `accounts.list` and the dashboard show it.
pub fn account_view(pool: &Pool, id: AccountId, now: Millis) -> Option<AccountView> {
    let a = pool.account(id)?;
    let state = pool.state(id, now);
    let until = match state {
        State::Cooling { until } => Some(until),
        State::Active | State::Disabled => None,
    };
    let c = &a.counters;
    Some(AccountView {
        label: a.spec.label.to_string(),
        kind: match a.spec.credential {
            Credential::ApiKey(_) => CredentialKind::ApiKey,
            Credential::OAuth(_) => CredentialKind::Oauth,
        },
        source: a.spec.source.view(),
        weight: a.spec.weight,
        state: state.view(),
        cooldown_until: until.map(rfc3339),
        cooldown_remaining_secs: until.map(|u| (u - now).div_ceil(1000)),
        backoff_level: a.health.backoff_level,
        quota: a.health.quota.as_ref().map(|q| QuotaView {
            five_hour: q.session_used,
            five_hour_status: q.session_status.clone(),
            five_hour_reset_at: q.session_reset_at,
            seven_day: q.weekly_used,
            seven_day_status: q.weekly_status.clone(),
            seven_day_reset_at: q.weekly_reset_at,
            overage_status: q.overage_status.clone(),
            updated_at: u64::try_from(q.last_updated).ok().map(rfc3339),
        }),
        token_expires_at: match &a.spec.credential {
            Credential::OAuth(cell) => u64::try_from(cell.expires_at_ms()).ok().map(rfc3339),
            Credential::ApiKey(_) => None,
        },
        disabled_reason: pool.disabled_reason(id).map(str::to_string),
        last_error: a.health.last_error.clone(),
        excluded_models: a.spec.excluded_models.clone(),
        counters: counters_view(c),
    })
}

/// Every account's view.
pub fn accounts(app: &App) -> Vec<AccountView> {
    let now = app.now_ms();
    let pool = app.pool();
    (0..pool.accounts().len())
        .filter_map(|id| account_view(&pool, id, now))
        .collect()
}

/// The daemon without its accounts: what `status` over IPC returns.
pub fn summary(app: &App) -> StatusView {
    let mut totals = Counters::default();
    let (count, usable, strategy) = {
        let pool = app.pool();
        let now = app.now_ms();
        for a in pool.accounts() {
            totals.absorb(&a.counters);
        }
        let usable = (0..pool.accounts().len())
            .filter(|&id| pool.state(id, now) == State::Active)
            .count();
        (pool.accounts().len(), usable, pool.strategy())
    };
    let config = app.config();
    StatusView {
        status: "running".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        host: app.settings.host.clone(),
        port: app.settings.port,
        strategy: strategy.as_str().into(),
        started_at: rfc3339(app.settings.started_at_ms),
        uptime: uptime_secs(app),
        fallback_chain: config
            .routing
            .fallback_chain
            .iter()
            .filter_map(|f| serde_json::to_value(f).ok())
            .collect(),
        account_count: count,
        usable_accounts: usable,
        totals: counters_view(&totals),
        providers: app.provider_stats.views(app.now_ms()),
    }
}

fn counters_view(c: &Counters) -> CountersView {
    CountersView {
        requests: c.requests,
        successes: c.successes,
        errors: c.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        input_tokens: c.input_tokens,
        output_tokens: c.output_tokens,
        cache_creation_input_tokens: c.cache_creation_input_tokens,
        cache_read_input_tokens: c.cache_read_input_tokens,
    }
}

/// `/status`: the summary plus every account.
pub fn status(app: &App) -> Value {
    let mut v = serde_json::to_value(summary(app)).unwrap_or(Value::Null);
    v["accounts"] = serde_json::to_value(accounts(app)).unwrap_or(Value::Null);
    v
}
