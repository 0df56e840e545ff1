//! Applying a changed config without a restart (`config.reload`; the file watcher comes with the
//! lifecycle work). A config that does not load is reported and the old one stays.

use std::sync::Arc;

use neurolink_shared::config::{self, EnvSource};
use neurolink_shared::ipc::Event;
use serde_json::{json, Value};

use crate::server::App;

/// Re-read the config file; apply accounts, routing strategy and quota threshold. Returns what
/// changed, or the error (also sent to subscribers as a `config_invalid` event).
pub async fn reload(app: &Arc<App>) -> Result<Value, String> {
    let paths = app.settings.paths.clone();
    let explicit = app.settings.config_path.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        config::load(explicit.as_deref(), &paths, &EnvSource::Process)
    })
    .await
    .map_err(|e| e.to_string())?;
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            let message = format!("config not reloaded, the old one stays: {e}");
            tracing::warn!("{message}");
            app.emit(Event::Daemon {
                kind: "config_invalid".into(),
                message: message.clone(),
            });
            return Err(message);
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let new = loaded.config;
    let old = app.config();
    let mut notes = Vec::new();
    if new.server.port.0 != old.server.port.0 || new.server.host.value != old.server.host.value {
        notes.push("server.host/port changed: restart the proxy to listen there".to_string());
    }
    {
        let mut pool = app.pool();
        if app.settings.strategy_from_cli {
            if new.routing.strategy != old.routing.strategy {
                notes.push("routing.strategy changed but --strategy was given on the command line; keeping it".into());
            }
        } else {
            pool.set_strategy(new.routing.strategy.unwrap_or_default());
        }
        pool.set_quota_threshold(new.routing.quota_threshold.0);
    }
    app.set_config(new);
    crate::store_watch::reload(app).await;
    let message = if notes.is_empty() {
        "config reloaded".to_string()
    } else {
        format!("config reloaded; {}", notes.join("; "))
    };
    tracing::info!("{message}");
    app.emit(Event::Daemon {
        kind: "config_reloaded".into(),
        message: message.clone(),
    });
    Ok(json!({"applied": true, "warnings": loaded.warnings, "notes": notes}))
}
