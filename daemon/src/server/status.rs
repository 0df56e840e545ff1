//! `/health` and `/status` bodies. Secrets never appear here: accounts are shown by label and kind.

use serde_json::{json, Value};

use super::App;
use crate::clock::rfc3339;
use crate::pool::State;

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

pub fn status(app: &App) -> Value {
    let now = app.now_ms();
    let pool = app.pool();
    let mut totals = crate::pool::Counters::default();
    let accounts: Vec<Value> = pool
        .accounts()
        .iter()
        .enumerate()
        .map(|(id, a)| {
            let c = &a.counters;
            totals.absorb(c);
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
                    crate::pool::Credential::OAuth(cell) => u64::try_from(cell.expires_at_ms()).ok().map(rfc3339),
                    crate::pool::Credential::ApiKey(_) => None,
                },
                "disabledReason": pool.disabled_reason(id),
                "lastError": a.health.last_error,
                "excludedModels": a.spec.excluded_models,
                "counters": c,
            })
        })
        .collect();
    json!({
        "status": "running",
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "host": app.settings.host,
        "port": app.settings.port,
        "strategy": app.settings.strategy.as_str(),
        "startedAt": rfc3339(app.settings.started_at_ms),
        "uptime": uptime_secs(app),
        "accounts": accounts,
        "totals": totals,
    })
}
