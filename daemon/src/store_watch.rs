//! Accounts changed by another process (`neurolink auth login|enable|disable|logout`, NeuroLink,
//! a refresh by the CLI) reach the running daemon without a restart.
//!
//! The NeuroLink home is watched (the folder, not the files: other processes replace the token
//! files by rename, which inotify reports on the folder), and a change of a token file's size or
//! modification time is what counts. The files are also looked at every [`SLOW_POLL`], for
//! filesystems that report nothing (network mounts), and every [`POLL`] when no watcher could be
//! set up or a change could not be taken in yet.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use neurolink_shared::ipc::{AccountChange, AccountState, Event};
use notify::Watcher;

use crate::accounts;
use crate::pool::Credential;
use crate::server::App;

/// How often the token files are looked at without a watcher, or after a change that could not
/// be taken in yet.
pub const POLL: Duration = Duration::from_secs(1);

/// How often they are looked at with a watcher, in case it misses something.
pub const SLOW_POLL: Duration = Duration::from_secs(30);

type Stamp = Option<(u64, SystemTime)>;

fn stamp(path: &std::path::Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

fn stamps(app: &App) -> (Stamp, Stamp) {
    let p = &app.settings.paths;
    (stamp(&p.tokens()), stamp(&p.legacy_credentials()))
}

/// A watcher of the home that wakes `changed` when a token file may have new content.
fn watcher(app: &App, changed: Arc<tokio::sync::Notify>) -> notify::Result<impl Watcher> {
    let p = &app.settings.paths;
    let names = [p.tokens(), p.legacy_credentials()].map(|f| f.file_name().map(|n| n.to_owned()));
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let ours = event
            .paths
            .iter()
            .any(|path| names.iter().any(|n| n.as_deref() == path.file_name()));
        if ours && crate::config_watch::can_change_content(&event.kind) {
            changed.notify_one();
        }
    })?;
    std::fs::create_dir_all(&p.home).map_err(notify::Error::io)?;
    watcher.watch(&p.home, notify::RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

pub async fn watch(app: Arc<App>) {
    let changed = Arc::new(tokio::sync::Notify::new());
    let watching = match watcher(&app, changed.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::debug!("token files polled every second: cannot watch the home ({e})");
            None
        }
    };
    let mut last = stamps(&app);
    let mut retry = false;
    loop {
        let wait = if watching.is_none() || retry {
            POLL
        } else {
            SLOW_POLL
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = changed.notified() => {}
        }
        let now = stamps(&app);
        // Only when it was taken in: a change that could not be yet is looked at again soon.
        retry = now != last && reload(&app).await == Reconciled::Partly;
        if !retry {
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
