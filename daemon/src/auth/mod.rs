//! OAuth accounts: tokens that change while the daemon runs, and their refresh.
//!
//! # Layout
//! - [`OAuthCell`] (here): one account's current tokens, shared by the pool and the request path.
//! - [`endpoint`]: the `refresh_token` grant against Anthropic's token endpoint(s).
//! - [`login`]: PKCE browser login and API-key checks, storing the new account.
//! - [`refresh`]: single-flight refresh inside the daemon, serialized across processes by the
//!   token store's lock, persisting a rotated refresh token before its access token is used.

pub mod endpoint;
pub mod login;
pub mod refresh;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::RwLock;

use neurolink_shared::Secret;

use crate::clock::Millis;

/// Refresh before a request when the token expires within this (docs/design.md §4).
pub const REFRESH_BEFORE_MS: u64 = 60 * 60 * 1000;
/// On 401, refresh and retry the same account up to this many times, then cool it.
pub const MAX_AUTH_RETRIES: u32 = 5;
/// This many consecutive refresh failures (across requests) disable the account, persistently.
pub const MAX_REFRESH_FAILURES: u32 = 15;

/// Where an OAuth account's tokens are persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    /// `tokens.json`, entry `anthropic:<label>`.
    TokenStore { label: String },
    /// The legacy `anthropic-credentials.json`.
    Legacy,
}

#[derive(Clone)]
pub struct Tokens {
    pub access: Secret,
    pub refresh: Option<Secret>,
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access", &self.access)
            .field("refresh", &self.refresh.as_ref().map(|_| "present"))
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// The tokens, and the `Authorization` value made from the access token (every request of the
/// account sends it; it is made once per token, not once per request).
#[derive(Debug)]
struct Live {
    tokens: Tokens,
    /// `Bearer <access>`, marked sensitive (its `Debug` shows no token); `None` when the token
    /// cannot be a header value.
    bearer: Option<http::HeaderValue>,
}

impl Live {
    fn new(tokens: Tokens) -> Self {
        let bearer =
            crate::passthrough::headers::sensitive(&format!("Bearer {}", tokens.access.expose()));
        Self { tokens, bearer }
    }
}

/// One OAuth account's live tokens. Cheap to read on every request; replaced by a refresh.
#[derive(Debug)]
pub struct OAuthCell {
    tokens: RwLock<Live>,
    pub persist: Persist,
    /// Serializes refreshes of this account inside the daemon (single-flight).
    pub(crate) flight: tokio::sync::Mutex<()>,
    /// Bumped after every refresh attempt, so tasks that waited for a flight use its result
    /// instead of starting another.
    pub(crate) generation: AtomicU64,
    /// Consecutive refresh failures.
    pub(crate) failures: AtomicU32,
    /// Set when new tokens could not be written to disk; retried until it works.
    pub(crate) unsaved: std::sync::atomic::AtomicBool,
}

impl OAuthCell {
    pub fn new(tokens: Tokens, persist: Persist) -> Self {
        Self {
            tokens: RwLock::new(Live::new(tokens)),
            persist,
            flight: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            unsaved: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn live(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn tokens(&self) -> Tokens {
        self.live().tokens.clone()
    }

    pub(crate) fn set(&self, tokens: Tokens) {
        let live = Live::new(tokens);
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = live;
    }

    pub fn access_token(&self) -> Secret {
        self.live().tokens.access.clone()
    }

    /// The `Authorization` header value for the current access token (`Bearer ...`), marked
    /// sensitive; `None` when the token holds bytes a header cannot.
    pub fn bearer(&self) -> Option<http::HeaderValue> {
        self.live().bearer.clone()
    }

    pub fn expires_at_ms(&self) -> i64 {
        self.live().tokens.expires_at_ms
    }

    pub fn has_refresh_token(&self) -> bool {
        self.live().tokens.refresh.is_some()
    }

    /// Expires within [`REFRESH_BEFORE_MS`] of `now`.
    pub fn needs_refresh(&self, now: Millis) -> bool {
        self.expires_at_ms()
            <= i64::try_from(now.saturating_add(REFRESH_BEFORE_MS)).unwrap_or(i64::MAX)
    }

    pub fn is_expired(&self, now: Millis) -> bool {
        self.expires_at_ms() <= i64::try_from(now).unwrap_or(i64::MAX)
    }

    /// New tokens that are only in memory (their write failed; see `refresh`).
    pub fn has_unsaved_tokens(&self) -> bool {
        self.unsaved.load(Ordering::SeqCst)
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::SeqCst)
    }
}
