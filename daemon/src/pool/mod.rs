//! The account pool: which account serves the next attempt, and what each answer costs it.
//!
//! Pure logic: no I/O, no clock of its own (every call takes `now` in Unix ms), so each rule of
//! docs/design.md §3 is unit-tested by moving time by hand. The request path holds the pool behind a
//! mutex for the few microseconds of [`Pool::pick`] and [`Pool::report`].

pub mod cooldown;
pub mod stats;

use std::sync::Arc;

use neurolink_shared::config::Strategy;
use neurolink_shared::Secret;

use neurolink_shared::quotas::AccountQuota;

use crate::auth::OAuthCell;
use crate::clock::Millis;
use crate::outcome::Outcome;
pub use stats::{Counters, Usage};

/// Index of an account in the pool.
pub type AccountId = usize;

/// How an account authenticates upstream.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Sent as `x-api-key`.
    ApiKey(ApiKey),
    /// Sent as `Authorization: Bearer` with the `oauth-2025-04-20` beta; the tokens change when
    /// refreshed, so they live in a cell shared with the refresher.
    OAuth(Arc<OAuthCell>),
}

/// An API key, with the `x-api-key` value made from it once (every request of the account
/// sends it).
#[derive(Debug, Clone)]
pub struct ApiKey {
    secret: Secret,
    /// Marked sensitive (its `Debug` shows no key); `None` when the key holds bytes a header
    /// cannot.
    header: Option<http::HeaderValue>,
}

impl ApiKey {
    pub fn new(secret: Secret) -> Self {
        let header = crate::passthrough::headers::sensitive(secret.expose());
        Self { secret, header }
    }

    pub fn expose(&self) -> &str {
        self.secret.expose()
    }

    /// The `x-api-key` header value.
    pub fn header(&self) -> Option<http::HeaderValue> {
        self.header.clone()
    }
}

impl Credential {
    /// An API-key credential.
    pub fn api_key(secret: Secret) -> Self {
        Credential::ApiKey(ApiKey::new(secret))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Credential::ApiKey(_) => "api_key",
            Credential::OAuth(_) => "oauth",
        }
    }
}

/// Where an account was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    TokenStore,
    LegacyCredentials,
    Environment,
    Config,
}

impl Source {
    /// The source as the control socket shows it.
    pub fn view(self) -> neurolink_shared::ipc::AccountSource {
        use neurolink_shared::ipc::AccountSource;
        match self {
            Source::TokenStore => AccountSource::TokenStore,
            Source::LegacyCredentials => AccountSource::LegacyCredentials,
            Source::Environment => AccountSource::Environment,
            Source::Config => AccountSource::Config,
        }
    }
}

/// An account as configured: what does not change while the daemon runs.
#[derive(Debug, Clone)]
pub struct AccountSpec {
    /// Unique within the pool. Shared with every record of the requests it serves.
    pub label: neurolink_shared::ipc::Label,
    pub source: Source,
    pub credential: Credential,
    /// Per-account upstream override (`accounts.anthropic[].baseUrl`).
    pub base_url: Option<String>,
    /// Round-robin weight, at least 1.
    pub weight: u32,
    /// `Some(reason)` when the account must not be used (config `enabled: false`, disabled in the
    /// store, expired token).
    pub disabled: Option<String>,
    /// Glob patterns (`*`, `?`) of models this account must not serve.
    pub excluded_models: Vec<String>,
}

impl AccountSpec {
    /// An enabled account with weight 1, no base URL override and no excluded models.
    pub fn new(label: impl Into<String>, source: Source, credential: Credential) -> Self {
        Self {
            label: Arc::from(label.into()),
            source,
            credential,
            base_url: None,
            weight: 1,
            disabled: None,
            excluded_models: Vec::new(),
        }
    }
}

/// The account's health: cooling, and how far its 429 backoff has grown.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Disabled while running (too many refresh failures); `spec.disabled` is from start-up.
    pub disabled: Option<String>,
    pub cooldown_until: Option<Millis>,
    pub cool_cause: Option<CoolCause>,
    pub backoff_level: u32,
    pub last_error: Option<String>,
    /// The unified 5h/7d utilisation last seen in this account's answers (OAuth accounts).
    pub quota: Option<AccountQuota>,
}

#[derive(Debug)]
pub struct Account {
    pub spec: Arc<AccountSpec>,
    pub health: Health,
    pub counters: Counters,
    /// Smooth weighted round-robin: the running weight of this account.
    current_weight: i64,
}

/// Why an account that is no longer configured stays in the pool (ids must stay stable).
pub const REMOVED: &str = "removed: no longer in tokens.json or the config file";

/// What [`Pool::pick`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Use(AccountId),
    /// The pool has no account at all.
    NoAccounts,
    /// Every account that may serve this model is cooling or disabled. `retry_after_ms` is the
    /// time until the earliest cooldown ends; `None` when none is cooling (all disabled).
    /// `auth_only`: every cooling account cools because Anthropic refused its credential.
    Unavailable {
        retry_after_ms: Option<u64>,
        auth_only: bool,
    },
    /// No enabled account may serve this model: `patterns` are the `excludedModels` entries
    /// that match it.
    Excluded {
        patterns: Vec<String>,
    },
    /// Every usable account was already tried for this request.
    Exhausted,
}

/// The live view of an account's state, for `/status`.
/// Why an account cools (what the proxy says when every account does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoolCause {
    /// Anthropic refused the credential (401/402/403).
    Auth,
    /// Anything else: rate limits, overloads.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    Cooling { until: Millis },
    Disabled,
}

impl State {
    /// The state as the control socket shows it.
    pub fn view(self) -> neurolink_shared::ipc::AccountState {
        use neurolink_shared::ipc::AccountState;
        match self {
            State::Active => AccountState::Active,
            State::Cooling { .. } => AccountState::Cooling,
            State::Disabled => AccountState::Disabled,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Cooling { .. } => "cooling",
            State::Disabled => "disabled",
        }
    }
}

#[derive(Debug)]
pub struct Pool {
    accounts: Vec<Account>,
    strategy: Strategy,
    /// Accounts whose 5h or 7d utilisation is above this are used only after the others.
    quota_threshold: f64,
}

impl Pool {
    pub fn new(specs: Vec<AccountSpec>, strategy: Strategy) -> Self {
        let accounts = specs
            .into_iter()
            .map(|spec| Account {
                spec: Arc::new(spec),
                health: Health::default(),
                counters: Counters::default(),
                current_weight: 0,
            })
            .collect();
        Self {
            accounts,
            strategy,
            quota_threshold: neurolink_shared::config::DEFAULT_QUOTA_THRESHOLD,
        }
    }

    /// Set `routing.quota-threshold`.
    pub fn with_quota_threshold(mut self, threshold: f64) -> Self {
        self.quota_threshold = threshold;
        self
    }

    /// Record the unified quota headers of an answer from `id`.
    pub fn set_quota(&mut self, id: AccountId, quota: AccountQuota) {
        if let Some(a) = self.accounts.get_mut(id) {
            a.health.quota = Some(quota);
        }
    }

    fn over_quota(&self, id: AccountId) -> bool {
        self.accounts[id]
            .health
            .quota
            .as_ref()
            .is_some_and(|q| q.max_used() > self.quota_threshold)
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.accounts.get(id)
    }

    pub fn state(&self, id: AccountId, now: Millis) -> State {
        let Some(a) = self.accounts.get(id) else {
            return State::Disabled;
        };
        if a.spec.disabled.is_some() || a.health.disabled.is_some() {
            return State::Disabled;
        }
        match a.health.cooldown_until {
            Some(until) if until > now => State::Cooling { until },
            _ => State::Active,
        }
    }

    /// Choose the account for the next attempt of a request for `model`, skipping `tried`.
    pub fn pick(&mut self, now: Millis, model: Option<&str>, tried: &[AccountId]) -> Pick {
        if self.accounts.is_empty() {
            return Pick::NoAccounts;
        }
        let serves = |a: &Account| {
            model.is_none_or(|m| !a.spec.excluded_models.iter().any(|p| glob_match(p, m)))
        };
        let enabled = |a: &Account| a.spec.disabled.is_none() && a.health.disabled.is_none();
        if let Some(m) = model {
            if self.accounts.iter().any(enabled)
                && !self.accounts.iter().any(|a| enabled(a) && serves(a))
            {
                let mut patterns: Vec<String> = self
                    .accounts
                    .iter()
                    .filter(|a| enabled(a))
                    .flat_map(|a| a.spec.excluded_models.iter())
                    .filter(|p| glob_match(p, m))
                    .cloned()
                    .collect();
                patterns.sort();
                patterns.dedup();
                return Pick::Excluded { patterns };
            }
        }
        let mut eligible: Vec<AccountId> = Vec::with_capacity(self.accounts.len());
        let mut any_active = false;
        for (id, a) in self.accounts.iter().enumerate() {
            if serves(a) && self.state(id, now) == State::Active {
                any_active = true;
                if !tried.contains(&id) {
                    eligible.push(id);
                }
            }
        }
        if eligible.is_empty() {
            // An account this request already tried is not waited for; one it has not tried
            // yet is, even when a tried one is still active (it failed without cooling): the
            // caller may wait for it (`routing.max-wait`) rather than give up.
            let cooling: Vec<&Account> = self
                .accounts
                .iter()
                .enumerate()
                .filter(|(id, a)| serves(a) && enabled(a) && !tried.contains(id))
                .filter(|(_, a)| a.health.cooldown_until.is_some_and(|until| until > now))
                .map(|(_, a)| a)
                .collect();
            if cooling.is_empty() && (any_active || !tried.is_empty()) {
                return Pick::Exhausted;
            }
            let earliest = cooling.iter().filter_map(|a| a.health.cooldown_until).min();
            return Pick::Unavailable {
                retry_after_ms: earliest.map(|until| until - now),
                auth_only: !cooling.is_empty()
                    && cooling
                        .iter()
                        .all(|a| a.health.cool_cause == Some(CoolCause::Auth)),
            };
        }
        // Quota-aware routing: accounts past the threshold only when nothing else is left.
        let under: Vec<AccountId> = eligible
            .iter()
            .copied()
            .filter(|&id| !self.over_quota(id))
            .collect();
        let tier = if under.is_empty() { eligible } else { under };
        let chosen = match self.strategy {
            Strategy::FillFirst => tier[0],
            Strategy::RoundRobin => self.smooth_weighted(&tier),
        };
        Pick::Use(chosen)
    }

    /// nginx's smooth weighted round-robin: deterministic, spreads heavy accounts evenly, and with
    /// equal weights it is a plain rotation.
    fn smooth_weighted(&mut self, eligible: &[AccountId]) -> AccountId {
        let mut total = 0i64;
        let mut best = eligible[0];
        let mut best_weight = i64::MIN;
        for &id in eligible {
            let a = &mut self.accounts[id];
            let w = i64::from(a.spec.weight.max(1));
            a.current_weight += w;
            total += w;
            if a.current_weight > best_weight {
                best_weight = a.current_weight;
                best = id;
            }
        }
        self.accounts[best].current_weight -= total;
        best
    }

    /// Count an attempt on `id` (call before sending).
    pub fn begin(&mut self, id: AccountId) {
        if let Some(a) = self.accounts.get_mut(id) {
            a.counters.requests += 1;
        }
    }

    /// Apply the policy for `outcome` to account `id`.
    pub fn report(&mut self, id: AccountId, outcome: &Outcome, now: Millis) {
        let Some(a) = self.accounts.get_mut(id) else {
            return;
        };
        match outcome {
            Outcome::Success => a.counters.successes += 1,
            other => {
                a.counters.add_error(other.class());
                a.health.last_error = Some(describe(other));
            }
        }
        match cooldown::effect(outcome, a.health.backoff_level) {
            cooldown::Effect::Reset => a.health.backoff_level = 0,
            cooldown::Effect::Cool { duration, escalate } => {
                let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
                a.health.cooldown_until = Some(now.saturating_add(ms));
                a.health.cool_cause = Some(match outcome {
                    Outcome::AuthRejected { .. } => CoolCause::Auth,
                    _ => CoolCause::Busy,
                });
                if escalate {
                    a.health.backoff_level = a.health.backoff_level.saturating_add(1);
                }
            }
            cooldown::Effect::None => {}
        }
    }

    /// Bring the pool in line with a fresh discovery of accounts, keeping ids stable (requests in
    /// flight hold them): an account whose label is known keeps its health and counters and takes
    /// the new spec; a new label is appended; a label that disappeared stays, disabled.
    /// A known OAuth account keeps its cell (its tokens are synced by the caller), so a refresh in
    /// flight is not cut off. An account disabled while running is enabled again when
    /// `enabled_again(label)` says the user asked for it. Returns the labels added and removed.
    pub fn reconcile(
        &mut self,
        specs: Vec<AccountSpec>,
        enabled_again: &dyn Fn(&str) -> bool,
    ) -> (Vec<String>, Vec<String>) {
        let mut added = Vec::new();
        let mut seen = vec![false; self.accounts.len()];
        for mut spec in specs {
            match self
                .accounts
                .iter()
                .position(|a| a.spec.label == spec.label)
            {
                Some(id) => {
                    seen[id] = true;
                    let a = &mut self.accounts[id];
                    if let (Credential::OAuth(old), Credential::OAuth(_)) =
                        (&a.spec.credential, &spec.credential)
                    {
                        spec.credential = Credential::OAuth(old.clone());
                    }
                    let was_removed = a.health.disabled.as_deref() == Some(REMOVED);
                    if was_removed
                        || (a.health.disabled.is_some()
                            && spec.disabled.is_none()
                            && enabled_again(&spec.label))
                    {
                        a.health.disabled = None;
                    }
                    a.spec = Arc::new(spec);
                }
                None => {
                    added.push(spec.label.to_string());
                    self.accounts.push(Account {
                        spec: Arc::new(spec),
                        health: Health::default(),
                        counters: Counters::default(),
                        current_weight: 0,
                    });
                    seen.push(true);
                }
            }
        }
        let mut removed = Vec::new();
        for (id, seen) in seen.into_iter().enumerate() {
            let a = &mut self.accounts[id];
            if !seen && a.health.disabled.as_deref() != Some(REMOVED) {
                a.health.disabled = Some(REMOVED.to_string());
                removed.push(a.spec.label.to_string());
            }
        }
        (added, removed)
    }

    /// Take `id` out of selection until restart (or, later, `auth enable`).
    pub fn disable(&mut self, id: AccountId, reason: String) {
        if let Some(a) = self.accounts.get_mut(id) {
            a.health.disabled = Some(reason);
        }
    }

    /// Clear a runtime disable (not one from the config or the store: those change at the source).
    pub fn enable(&mut self, id: AccountId) {
        if let Some(a) = self.accounts.get_mut(id) {
            a.health.disabled = None;
        }
    }

    /// Clear the cooldown and the backoff level now.
    pub fn reset(&mut self, id: AccountId) {
        if let Some(a) = self.accounts.get_mut(id) {
            a.health.cooldown_until = None;
            a.health.cool_cause = None;
            a.health.backoff_level = 0;
        }
    }

    /// Change the selection strategy (config reload).
    pub fn set_strategy(&mut self, strategy: Strategy) {
        self.strategy = strategy;
    }

    /// Change `routing.quota-threshold` (config reload).
    pub fn set_quota_threshold(&mut self, threshold: f64) {
        self.quota_threshold = threshold;
    }

    /// Why `id` is disabled, if it is.
    pub fn disabled_reason(&self, id: AccountId) -> Option<&str> {
        let a = self.accounts.get(id)?;
        a.health.disabled.as_deref().or(a.spec.disabled.as_deref())
    }

    /// Tokens read from an answer of `id`.
    pub fn add_usage(&mut self, id: AccountId, usage: Usage) {
        if let Some(a) = self.accounts.get_mut(id) {
            a.counters.add_usage(usage);
        }
    }

    /// A stream that failed after its first byte went to the client.
    pub fn report_stream_error(&mut self, id: AccountId, message: String) {
        if let Some(a) = self.accounts.get_mut(id) {
            a.counters.add_error("stream_error");
            a.health.last_error = Some(message);
        }
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::RateLimited {
            retry_after: Some(d),
        } => format!("429 rate limited (retry-after {}s)", d.as_secs()),
        Outcome::RateLimited { retry_after: None } => "429 rate limited".into(),
        Outcome::PolicyRejected => "429 policy rejection (\"Error\")".into(),
        Outcome::AuthRejected { status } => format!("{status} authentication/permission rejected"),
        Outcome::Unretryable { status } => format!("{status} returned to client"),
        Outcome::Transient { status } => format!("{status} upstream error"),
        Outcome::Network { kind } => format!("network error ({kind:?})"),
        Outcome::EmptyStream => "empty response body".into(),
        Outcome::OutOfCredits { status } => format!("{status} out of credits for this request"),
        Outcome::Success => "ok".into(),
    }
}

/// `*` matches any run of characters, `?` one character; everything else literally.
///
/// Runs for every account and mapping on every request: a literal pattern is a comparison, and
/// ASCII names (every model name in practice) are matched byte by byte without allocating.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return pattern == text;
    }
    if pattern.is_ascii() && text.is_ascii() {
        return glob(pattern.as_bytes(), text.as_bytes(), b'*', b'?');
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob(&p, &t, '*', '?')
}

fn glob<T: PartialEq + Copy>(p: &[T], t: &[T], many: T, one: T) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == one || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == many {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == many)
}

#[cfg(test)]
mod tests;
