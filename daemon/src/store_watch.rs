//! Accounts changed by another process (`neurolink auth login|enable|disable|logout`, NeuroLink,
//! a refresh by the CLI) reach the running daemon without a restart.
//!
//! The token files are polled (their size and modification time, once a second) rather than
//! watched with inotify: other processes replace them by rename, which inotify reports on the
//! folder rather than the file, and a stat per second costs nothing.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use neurolink_shared::ipc::{AccountChange, AccountState, Event};

use crate::accounts;
use crate::pool::Credential;
use crate::server::App;

/// How often the token files are checked.
pub const POLL: Duration = Duration::from_secs(1);

type Stamp = Option<(u64, SystemTime)>;

fn stamp(path: &std::path::Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

fn stamps(app: &App) -> (Stamp, Stamp) {
    let p = &app.settings.paths;
    (stamp(&p.tokens()), stamp(&p.legacy_credentials()))
}

pub async fn watch(app: Arc<App>) {
    let mut last = stamps(&app);
    loop {
        tokio::time::sleep(POLL).await;
        let now = stamps(&app);
        if now != last && reload(&app).await == Reconciled::Fully {
            // Only then: a change that could not be taken in yet is looked at again next poll.
            last = now;
        }
    }
}

/// Whether [`reload`] took in everything it read (a store that does not parse counts as taken
/// in: it is read again when it changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    Fully,
    /// Something must be read again: a refresh of ours was running on an account whose tokens
    /// may have changed on disk.
    Partly,
}

/// Rediscover accounts and bring the pool and the OAuth cells in line.
pub async fn reload(app: &Arc<App>) -> Reconciled {
    let (config, paths) = (app.config(), app.settings.paths.clone());
    let env_key = app
        .settings
        .env_api_key
        .as_ref()
        .map(|k| k.expose().to_string());
    let now = app.now_ms();
    let found = match tokio::task::spawn_blocking(move || {
        accounts::discover(&config, &paths, env_key, now)
    })
    .await
    {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("re-reading accounts failed: {e}");
            return Reconciled::Partly;
        }
    };
    for w in &found.warnings {
        tracing::warn!("{w}");
    }
    if found.store_unreadable {
        // Half-written by hand, or corrupted: keep serving what we had until it is fixed.
        tracing::warn!("keeping the accounts already loaded until tokens.json reads again");
        // Read again when it changes, not every poll.
        return Reconciled::Fully;
    }
    // Tokens changed on disk (a new login, or a refresh by another process): adopt them, unless a
    // refresh of ours is running, which re-reads the store itself.
    let mut relogged = std::collections::HashSet::new();
    let mut outcome = Reconciled::Fully;
    {
        let pool = app.pool();
        for spec in &found.specs {
            let Credential::OAuth(new) = &spec.credential else {
                continue;
            };
            let Some(old) = pool.accounts().iter().find(|a| a.spec.label == spec.label) else {
                continue;
            };
            let Credential::OAuth(cell) = &old.spec.credential else {
                continue;
            };
            let Ok(_flight) = cell.flight.try_lock() else {
                outcome = Reconciled::Partly;
                continue;
            };
            let (disk, mem) = (new.tokens(), cell.tokens());
            let new_tokens = disk.access.expose() != mem.access.expose()
                || disk.refresh.as_ref().map(|r| r.expose())
                    != mem.refresh.as_ref().map(|r| r.expose());
            if new_tokens {
                cell.set(disk);
                cell.failures.store(0, std::sync::atomic::Ordering::SeqCst);
                relogged.insert(spec.label.clone());
            } else if disk.expires_at_ms != mem.expires_at_ms {
                // Same tokens, corrected expiry: the store is the shared truth.
                cell.set(disk);
            }
        }
    }
    let enabled = found.enabled_by_user;
    let (added, removed) = app.change_accounts(|pool| {
        pool.reconcile(found.specs, &|label| {
            enabled.contains(label) || relogged.contains(label)
        })
    });
    for label in added {
        tracing::info!(account = %label, "account added");
        let state = app.state_of(&label);
        app.emit(Event::account(label, AccountChange::Added, state, None));
    }
    for label in removed {
        tracing::info!(account = %label, "account removed");
        app.emit(Event::account(
            label,
            AccountChange::Removed,
            AccountState::Disabled,
            None,
        ));
    }
    outcome
}
