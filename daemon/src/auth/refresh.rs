//! Refreshing an OAuth account's tokens without ever losing a rotated refresh token.
//!
//! - **Single-flight in the daemon.** Each account's refreshes run one at a time; a request that
//!   waited for another's refresh uses its result instead of starting a second one (a refresh
//!   token is good for one use).
//! - **Serialized across processes.** The refresh runs under the token store's file lock, after
//!   re-reading the entry: if another process (the `auth` CLI, NeuroLink) already rotated the
//!   tokens, they are adopted instead of refreshed.
//! - **Persist before use.** New tokens are written to disk before the access token is used. If the
//!   write fails, they are kept in memory, the failure is logged loudly, and the write is retried
//!   by [`Refresher::retry_unsaved`].

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use neurolink_shared::token_store::{self, Locked, Store};
use neurolink_shared::{atomic_file, Secret};

use super::endpoint::{self, Endpoint, Grant, RefreshError};
use super::{OAuthCell, Persist, Tokens};
use crate::clock::Clock;

/// What a successful call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// This call exchanged the refresh token.
    Exchanged,
    /// Another process had already rotated the tokens; they were adopted.
    Adopted,
    /// Another request of this daemon refreshed while this one waited, or nothing was needed.
    AlreadyFresh,
}

pub struct Refresher {
    client: reqwest::Client,
    /// Replaced by a config reload (`providers.anthropic-oauth`).
    endpoint: std::sync::RwLock<Endpoint>,
    store: Store,
    legacy: PathBuf,
    clock: Arc<dyn Clock>,
}

/// The entry as another process may have left it, read under the lock.
enum OnDisk {
    Store(Box<Locked>),
    Legacy {
        _lock: atomic_file::FileLock,
        value: serde_json::Value,
        path: PathBuf,
    },
}

impl Refresher {
    pub fn new(
        client: reqwest::Client,
        endpoint: Endpoint,
        store: Store,
        legacy: PathBuf,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            client,
            endpoint: std::sync::RwLock::new(endpoint),
            store,
            legacy,
            clock,
        }
    }

    /// The token endpoint in force.
    fn endpoint(&self) -> Endpoint {
        self.endpoint
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Use `endpoint` for the next refreshes (a config reload).
    pub fn set_endpoint(&self, endpoint: Endpoint) {
        *self.endpoint.write().unwrap_or_else(|p| p.into_inner()) = endpoint;
    }

    /// Refresh `cell` when its token expires within the hour, or always when `force` (after a
    /// 401). Failures are counted on the cell (see [`super::MAX_REFRESH_FAILURES`]).
    pub async fn refresh(
        &self,
        cell: &Arc<OAuthCell>,
        force: bool,
    ) -> Result<Refreshed, RefreshError> {
        let seen = cell.generation.load(Ordering::SeqCst);
        let _flight = cell.flight.lock().await;
        if cell.generation.load(Ordering::SeqCst) != seen {
            // A refresh finished while we waited for it: share its result.
            return if cell.failures.load(Ordering::SeqCst) == 0 {
                Ok(Refreshed::AlreadyFresh)
            } else {
                Err(RefreshError::Unavailable(
                    "the refresh this request waited for failed".into(),
                ))
            };
        }
        if !force && !cell.needs_refresh(self.clock.now_ms()) {
            return Ok(Refreshed::AlreadyFresh);
        }
        let result = self.refresh_under_lock(cell, force).await;
        match &result {
            Ok(_) => cell.failures.store(0, Ordering::SeqCst),
            Err(e) => {
                let n = cell.failures.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::warn!(failures = n, "token refresh failed: {e}");
            }
        }
        cell.generation.fetch_add(1, Ordering::SeqCst);
        result
    }

    async fn refresh_under_lock(
        &self,
        cell: &Arc<OAuthCell>,
        force: bool,
    ) -> Result<Refreshed, RefreshError> {
        let ours = cell.tokens();
        let disk = self.lock_entry(&cell.persist).await?;
        if let Some(theirs) = disk.tokens(&cell.persist) {
            let changed = theirs.access.expose() != ours.access.expose()
                || theirs.refresh.as_ref().map(Secret::expose)
                    != ours.refresh.as_ref().map(Secret::expose);
            if changed {
                tracing::info!("tokens were rotated by another process; using them");
                let fresh = !cell_needs_refresh(&theirs, self.clock.now_ms());
                cell.set(theirs);
                if fresh {
                    return Ok(Refreshed::Adopted);
                }
            } else if !force && !cell.needs_refresh(self.clock.now_ms()) {
                return Ok(Refreshed::AlreadyFresh);
            }
        }
        let current = cell.tokens();
        let refresh_token = current
            .refresh
            .clone()
            .ok_or(RefreshError::NoRefreshToken)?;
        let now = i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX);
        let Grant {
            access,
            refresh,
            expires_at_ms,
        } = endpoint::refresh(&self.client, &self.endpoint(), &refresh_token, now).await?;
        let new = Tokens {
            access,
            refresh: refresh.or(current.refresh),
            expires_at_ms,
        };
        // The old refresh token is spent now: the new one must reach the disk before anything else.
        let saved = tokio::task::spawn_blocking({
            let persist = cell.persist.clone();
            let new = new.clone();
            move || disk.write(&persist, &new)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match saved {
            Ok(()) => cell.unsaved.store(false, Ordering::SeqCst),
            Err(e) => {
                tracing::error!(
                    "COULD NOT SAVE ROTATED OAUTH TOKENS ({e}); they are kept in memory and the write is retried. \
                     Do not stop the daemon until this succeeds, or the account will need a new login"
                );
                cell.unsaved.store(true, Ordering::SeqCst);
            }
        }
        cell.set(new);
        Ok(Refreshed::Exchanged)
    }

    /// Write tokens that could not be saved earlier. Returns true when nothing is pending.
    pub async fn retry_unsaved(&self, cell: &Arc<OAuthCell>) -> bool {
        if !cell.unsaved.load(Ordering::SeqCst) {
            return true;
        }
        let _flight = cell.flight.lock().await;
        let tokens = cell.tokens();
        let Ok(disk) = self.lock_entry(&cell.persist).await else {
            return false;
        };
        let persist = cell.persist.clone();
        let saved = tokio::task::spawn_blocking(move || disk.write(&persist, &tokens)).await;
        let ok = matches!(saved, Ok(Ok(())));
        if ok {
            tracing::info!("rotated OAuth tokens saved after an earlier failure");
            cell.unsaved.store(false, Ordering::SeqCst);
        }
        ok
    }

    /// Mark the account disabled on disk (NeuroLink's `markDisabled(key, "refresh_failed")`).
    pub async fn disable_on_disk(&self, persist: &Persist, reason: &str) {
        let Persist::TokenStore { label } = persist else {
            return;
        };
        let (store, label, reason) = (self.store.clone(), label.clone(), reason.to_string());
        let result = tokio::task::spawn_blocking(move || {
            store.update(|f| match f.entry(&label) {
                Some(mut e) => {
                    e.disable(&reason);
                    f.set_entry(&label, &e).map_err(|e| e.to_string())
                }
                None => Err(format!("no entry anthropic:{label}")),
            })
        })
        .await;
        match result {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("could not mark the account disabled: {e}"),
            Ok(Err(e)) => tracing::warn!("could not mark the account disabled: {e}"),
            Err(e) => tracing::warn!("could not mark the account disabled: {e}"),
        }
    }

    async fn lock_entry(&self, persist: &Persist) -> Result<OnDisk, RefreshError> {
        let store = self.store.clone();
        let legacy = self.legacy.clone();
        let persist = persist.clone();
        tokio::task::spawn_blocking(move || match persist {
            Persist::TokenStore { .. } => store
                .lock()
                .map(|l| OnDisk::Store(Box::new(l)))
                .map_err(|e| e.to_string()),
            Persist::Legacy => {
                let lock = atomic_file::FileLock::acquire(&legacy, token_store::LOCK_TIMEOUT)
                    .map_err(|e| e.to_string())?;
                let text = std::fs::read_to_string(&legacy)
                    .map_err(|e| format!("{}: {e}", legacy.display()))?;
                let value = serde_json::from_str(&text)
                    .map_err(|e| format!("{}: {e}", legacy.display()))?;
                Ok(OnDisk::Legacy {
                    _lock: lock,
                    value,
                    path: legacy,
                })
            }
        })
        .await
        .map_err(|e| RefreshError::Unavailable(e.to_string()))?
        .map_err(|e| RefreshError::Unavailable(format!("cannot lock the token store: {e}")))
    }
}

fn token_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn cell_needs_refresh(t: &Tokens, now: u64) -> bool {
    t.expires_at_ms
        <= i64::try_from(now.saturating_add(super::REFRESH_BEFORE_MS)).unwrap_or(i64::MAX)
}

impl OnDisk {
    /// The tokens on disk for this account, if the entry exists.
    fn tokens(&self, persist: &Persist) -> Option<Tokens> {
        match (self, persist) {
            (OnDisk::Store(l), Persist::TokenStore { label }) => l.entry(label).map(|e| Tokens {
                access: Secret::new(e.tokens.access_token),
                refresh: e.tokens.refresh_token.map(Secret::new),
                expires_at_ms: e.tokens.expires_at,
            }),
            (OnDisk::Legacy { value: v, .. }, _) => {
                let o = v.get("oauth")?;
                Some(Tokens {
                    access: Secret::new(o.get("accessToken")?.as_str()?),
                    refresh: o
                        .get("refreshToken")
                        .and_then(|r| r.as_str())
                        .map(Secret::new),
                    expires_at_ms: o
                        .get("expiresAt")
                        .and_then(serde_json::Value::as_i64)
                        .unwrap_or(token_store::NEVER_EXPIRES_MS),
                })
            }
            _ => None,
        }
    }

    /// Write `t` into the entry (keeping every other field) and release the lock.
    fn write(self, persist: &Persist, t: &Tokens) -> Result<(), String> {
        match (self, persist) {
            (OnDisk::Store(mut l), Persist::TokenStore { label }) => {
                let mut e = l
                    .entry(label)
                    .ok_or_else(|| format!("anthropic:{label} is no longer in tokens.json"))?;
                e.tokens.access_token = t.access.expose().to_string();
                e.tokens.refresh_token = t.refresh.as_ref().map(|r| r.expose().to_string());
                e.tokens.expires_at = t.expires_at_ms;
                // NeuroLink's `createdAt` means "last saved"; `lastRefreshedAt` is ours (NeuroLink
                // ignores it) and dates the refresh token for `auth list`.
                let now = token_now_ms();
                e.created_at = now;
                e.extra.insert("lastRefreshedAt".into(), now.into());
                l.file.set_entry(label, &e).map_err(|e| e.to_string())?;
                l.write().map_err(|e| e.to_string())
            }
            (
                OnDisk::Legacy {
                    _lock,
                    value: mut v,
                    path,
                },
                _,
            ) => {
                let now = token_now_ms();
                if let Some(o) = v.get_mut("oauth").and_then(|o| o.as_object_mut()) {
                    o.insert("accessToken".into(), t.access.expose().into());
                    if let Some(r) = &t.refresh {
                        o.insert("refreshToken".into(), r.expose().into());
                    }
                    o.insert("expiresAt".into(), t.expires_at_ms.into());
                }
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("updatedAt".into(), now.into());
                }
                let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
                atomic_file::write_private(&path, text.as_bytes())
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
            (OnDisk::Store(_), Persist::Legacy) => Err("mismatched token location".into()),
        }
    }
}
