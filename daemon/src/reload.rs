//! Applying a changed config without a restart (`config.reload`, and the file watcher).
//!
//! The new config becomes a new [`Runtime`] that replaces the old one as a whole: the auth key,
//! the upstream base URL, the timeouts, the strategy, the quota threshold, the OAuth endpoints and
//! the accounts all change together. The listening address cannot change while running; a reload
//! that changes it says a restart is needed. A config that does not load, or that would leave a
//! non-loopback listener without an auth key, is reported and the old one stays.

use std::sync::Arc;

use neurolink_shared::config::{self, EnvSource, ProxyConfig};
use neurolink_shared::ipc::methods::ReloadResult;
use neurolink_shared::ipc::{DaemonEventKind, Event};
use serde_json::Value;

use crate::auth::endpoint::Endpoint;
use crate::server::{App, Runtime};

/// Re-read the config file and put it in force. Returns what was applied (`notes` name what
/// needs a restart), or the error (also sent to subscribers as a `config_invalid` event).
pub async fn reload(app: &Arc<App>) -> Result<ReloadResult, String> {
    let paths = app.settings.paths.clone();
    let explicit = app.settings.config_path.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        config::load(explicit.as_deref(), &paths, &EnvSource::Process)
    })
    .await
    .map_err(|e| e.to_string())?;
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => return Err(invalid(app, &e.to_string())),
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let new = loaded.config;
    let overrides = &app.settings.overrides;
    let (host, _) = &app.settings.listen;
    if !crate::daemon::is_loopback(host) && new.server.auth_key().is_none() {
        return Err(invalid(
            app,
            &format!("server.authKey is empty, but the proxy listens on {host}: anyone who can reach it could use your accounts"),
        ));
    }
    let old = app.runtime();
    let mut notes = Vec::new();
    if overrides.listen(&new) != app.settings.listen {
        notes.push("server.host/port changed: restart the proxy to listen there".to_string());
    }
    if overrides.strategy.is_some() && new.routing.strategy != old.config.routing.strategy {
        notes.push(
            "routing.strategy changed but --strategy was given on the command line; keeping it"
                .into(),
        );
    }
    let changed = changed_keys(&old.config, &new);
    let oauth = Endpoint::from_config(&new.providers.anthropic_oauth);
    let runtime = match Runtime::new(new, overrides, Some(&old)) {
        Ok(r) => r,
        Err(e) => return Err(invalid(app, &format!("cannot build the HTTP client: {e}"))),
    };
    {
        let mut pool = app.pool();
        pool.set_strategy(runtime.strategy);
        pool.set_quota_threshold(runtime.config.routing.quota_threshold.0);
    }
    app.refresher.set_endpoint(oauth);
    app.set_runtime(runtime);
    let _ = crate::store_watch::reload(app).await;
    let message = match (changed.is_empty(), notes.is_empty()) {
        (true, true) => "config reloaded (no change)".to_string(),
        (false, true) => format!("config reloaded: {}", changed.join(", ")),
        (_, false) => format!(
            "config reloaded: {}; {}",
            if changed.is_empty() {
                "nothing else changed".to_string()
            } else {
                changed.join(", ")
            },
            notes.join("; ")
        ),
    };
    tracing::info!("{message}");
    app.emit(Event::daemon(
        DaemonEventKind::ConfigReloaded,
        message.clone(),
    ));
    Ok(ReloadResult {
        applied: true,
        changed,
        warnings: loaded.warnings,
        notes,
    })
}

/// Log and announce a config that was not applied; returns the message.
fn invalid(app: &App, why: &str) -> String {
    let message = format!("config not reloaded, the old one stays: {why}");
    tracing::warn!("{message}");
    app.emit(Event::daemon(
        DaemonEventKind::ConfigInvalid,
        message.clone(),
    ));
    message
}

/// The `section.key` names whose values differ (secrets compared, never shown).
fn changed_keys(old: &ProxyConfig, new: &ProxyConfig) -> Vec<String> {
    let mut out = Vec::new();
    if old.server.auth_key().map(|k| k.expose()) != new.server.auth_key().map(|k| k.expose()) {
        out.push("server.authKey".to_string());
    }
    let secrets_of = |c: &ProxyConfig| -> Vec<Option<String>> {
        c.accounts
            .anthropic
            .iter()
            .map(|a| a.api_key.as_ref().map(|k| k.value.expose().to_string()))
            .collect()
    };
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return out;
    };
    for (section, av) in &a {
        let bv = b.get(section).unwrap_or(&Value::Null);
        match (av, bv) {
            (Value::Object(ao), Value::Object(bo)) => {
                for (key, x) in ao {
                    if bo.get(key) != Some(x) && !(section == "server" && key == "authKey") {
                        out.push(format!("{section}.{key}"));
                    }
                }
                for key in bo.keys().filter(|k| !ao.contains_key(*k)) {
                    out.push(format!("{section}.{key}"));
                }
            }
            _ if av != bv => out.push(section.clone()),
            _ => {}
        }
    }
    if secrets_of(old) != secrets_of(new) && !out.iter().any(|k| k.starts_with("accounts")) {
        out.push("accounts.anthropic".to_string());
    }
    out
}
