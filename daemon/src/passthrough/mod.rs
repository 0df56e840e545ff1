//! One client request, tried on candidates in turn until one answers: the Anthropic accounts,
//! then (when none could serve) the fallback chain's links ([`forward`]).
//!
//! An account is an [`Upstream`] (see [`crate::upstream`] for the phases every candidate goes
//! through): the body bytes go upstream untouched, only headers change ([`headers`]), and the
//! answer comes back through the identity adapter ([`relay::Passthrough`]). A 2xx answer is
//! committed to the client only once its first whole event arrived, so an empty body or an early
//! failure still moves to the next account; after that the answer is relayed as it comes
//! ([`relay`]). Error answers are small: they are read whole, classified once
//! ([`crate::outcome`]), and either returned or retried elsewhere.

pub mod boundary;
pub mod headers;
pub mod peek;
pub mod record;
pub mod relay;
pub mod usage;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::response::Response;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, StatusCode};

use crate::auth;
use crate::auth::refresh::Refreshed;
use crate::outcome::{self, Outcome};
use crate::pool::{AccountId, AccountSpec, Credential, Pick, State};
use crate::providers::{self, Plan};
use crate::server::{errors, App, Runtime};
use crate::upstream::{self, Adapting, Failure, Prepared, Reply, Upstream, Url};
use neurolink_shared::ipc::AttemptRecord;
use record::Draft;
use relay::Inspector;

/// Which endpoint a request is for; decides how usage is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Messages,
    CountTokens,
    Models,
}

/// A client request, read and ready to be sent to any account.
#[derive(Debug)]
pub struct Inbound {
    pub route: Route,
    pub method: Method,
    /// Path and query to append to the upstream base URL (the client's own, shared).
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Shared with the request's record.
    pub model: Option<Arc<str>>,
    /// Serve with API-key accounts only (the OpenAI-compatible endpoint: Anthropic allows
    /// subscription logins for Claude Code only).
    pub api_keys_only: bool,
}

impl Inbound {
    /// Send the request under another model name (a `model-mappings` entry to Anthropic).
    fn rename_model(&mut self, to: &str) {
        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&self.body) else {
            return;
        };
        v["model"] = serde_json::Value::String(to.to_string());
        if let Ok(body) = serde_json::to_vec(&v) {
            self.body = Bytes::from(body);
            self.model = Some(to.into());
        }
    }
}

/// Serve `req` from the pool, under the runtime `rt` the request started with; `draft` is its
/// record so far.
pub async fn forward(app: Arc<App>, rt: Arc<Runtime>, draft: Draft, mut req: Inbound) -> Response {
    let fallback = match rt.routes.plan(req.model.as_deref()) {
        // Paths off the hot one are boxed: an `async fn` holds the state of everything it may
        // await, and this future is moved into a box per request (see `cold`).
        Plan::Direct(link) => return cold(serve_direct(&app, &rt, draft, &req, link)).await,
        Plan::Anthropic { rename, fallback } => {
            if let Some(to) = rename {
                req.rename_model(to);
            }
            // Messages are translated and tokens counted by the chain; model lists stay.
            if req.route == Route::Models {
                &[]
            } else {
                fallback
            }
        }
    };
    // The candidates, in order: the accounts, then (when none could serve) the chain's links.
    let (mut draft, end) = match serve_accounts(&app, &rt, draft, &req).await {
        Ok(response) => return response,
        Err(no_account) => no_account,
    };
    if !fallback.is_empty() && end.allows_fallback() {
        match cold(providers::serve(&app, &rt, draft, &req, fallback)).await {
            Ok(response) => return response,
            Err((d, _)) => draft = d,
        }
    }
    // The chain could not serve either: the answer is what it would be without one.
    let (response, class) = end.answer(&app, draft.request_id());
    draft.finish(&app, response, None, Some(class))
}

/// A future off the hot path, boxed so that its state does not enlarge its caller's: each
/// `async fn` reserves room for the largest future it may await, and the request's whole future
/// is moved (copied) into a box as it starts. The OAuth refresh and the provider chain
/// weighed tens of kilobytes this way, copied on every request that used neither.
pub(crate) fn cold<'a, T>(
    f: impl std::future::Future<Output = T> + Send + 'a,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>> {
    Box::pin(f)
}

/// Why no account served a request.
enum NoAccount {
    /// The pool refused before any attempt (or after waiting up to `routing.max-wait`).
    Refused(errors::Refusal),
    /// Every account that could serve was tried; the last failure, if any.
    Failed(Option<(Failure, &'static str)>),
    /// The OpenAI-compatible endpoint, and every account is a subscription login.
    OnlyOAuth,
}

impl NoAccount {
    /// Whether the fallback chain may answer: not for a model excluded on purpose.
    fn allows_fallback(&self) -> bool {
        !matches!(self, NoAccount::Refused(errors::Refusal::Excluded { .. }))
    }

    /// The client's answer and the request log's `errorClass`.
    fn answer(self, app: &App, request_id: &str) -> (Response, &'static str) {
        match self {
            NoAccount::Refused(refusal) => (
                refusal.response(request_id, &app.settings.paths),
                refusal.class(),
            ),
            NoAccount::Failed(Some((failure, class))) => (failure.into_response(request_id), class),
            NoAccount::Failed(None) => (
                errors::anthropic(
                    request_id,
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "no account could serve the request",
                ),
                "exhausted",
            ),
            NoAccount::OnlyOAuth => (
                errors::anthropic(
                    request_id,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    "OpenAI-compatible requests are served by API-key accounts and providers only: Anthropic allows Claude subscription (OAuth) logins for Claude Code alone. Add an API key (`neurolink auth login anthropic --method api-key`) or a fallback-chain.",
                ),
                "no_api_key_accounts",
            ),
        }
    }
}

/// Try the pool's accounts in turn: the answer, or the draft back with why none served.
async fn serve_accounts(
    app: &Arc<App>,
    rt: &Arc<Runtime>,
    mut draft: Draft,
    req: &Inbound,
) -> Result<Response, (Draft, NoAccount)> {
    let mut tried: Vec<AccountId> = Vec::new();
    if req.api_keys_only {
        // Subscription logins count as tried: they never serve this endpoint.
        let (oauth, total) = {
            let pool = app.pool();
            let oauth: Vec<AccountId> = (0..pool.accounts().len())
                .filter(|&id| {
                    pool.account(id)
                        .is_some_and(|a| matches!(a.spec.credential, Credential::OAuth(_)))
                })
                .collect();
            (oauth, pool.accounts().len())
        };
        if total > 0 && oauth.len() == total {
            return Err((draft, NoAccount::OnlyOAuth));
        }
        tried = oauth;
    }
    let mut last: Option<(Failure, &'static str)> = None;
    let mut waited = 0u64;
    loop {
        // The pool lock lives only inside `choose`: nothing below runs under it (finishing a
        // draft logs, and the log may need locks of its own).
        let (id, spec) = match choose(app, req.model.as_deref(), &tried) {
            Chosen::Account(id, spec) => (id, spec),
            Chosen::Refuse(errors::Refusal::AllCooling { retry_after_ms })
                if waited + retry_after_ms <= max_wait_ms(rt) =>
            {
                // The soonest account is back within `routing.max-wait`: hold the request (a
                // client that gives up drops this future) rather than answer a 429.
                tokio::time::sleep(Duration::from_millis(retry_after_ms)).await;
                waited += retry_after_ms;
                continue;
            }
            // Accounts were tried and the rest cool too long: the last failure says more than
            // "all cooling".
            Chosen::Refuse(_) if last.is_some() => return Err((draft, NoAccount::Failed(last))),
            Chosen::Refuse(refusal) => return Err((draft, NoAccount::Refused(refusal))),
            Chosen::Exhausted => return Err((draft, NoAccount::Failed(last))),
        };
        tried.push(id);
        let (outcome, reply) = attempt(app, rt, id, &spec, req, &draft).await;
        report(app, id, &spec.label, &outcome);
        // A relayed answer took its own copy of the record (its relay finishes it), so this one
        // records only the attempts that did not commit.
        let attempt = || AttemptRecord {
            account: spec.label.clone(),
            outcome: outcome.class().into(),
        };
        match reply {
            Reply::Relayed(response) => return Ok(response),
            Reply::Client(response) => {
                draft.attempts.push(attempt());
                let class = (outcome != Outcome::Success).then(|| outcome.class());
                return Ok(draft.finish(app, response, Some(spec.label.clone()), class));
            }
            Reply::Retry(failure) => {
                draft.attempts.push(attempt());
                tracing::info!(account = %spec.label, outcome = outcome.class(), "attempt failed; trying the next account");
                last = Some((failure, outcome.class()));
            }
        }
    }
}

/// A model a mapping sends to a provider: only that provider serves it (messages and token
/// counts).
async fn serve_direct(
    app: &Arc<App>,
    rt: &Arc<Runtime>,
    draft: Draft,
    req: &Inbound,
    link: &providers::Link,
) -> Response {
    match providers::serve(app, rt, draft, req, std::slice::from_ref(link)).await {
        Ok(response) => response,
        Err((draft, failure)) => {
            let failure = failure.unwrap_or_else(|| {
                Failure::Provider(crate::translate::ProviderError {
                    status: 429,
                    kind: "rate_limit_error",
                    message: format!("{} asked to wait; try again later", link.label()),
                    retry_after: None,
                })
            });
            let response = failure.into_response(draft.request_id());
            draft.finish(app, response, None, Some("provider_failed"))
        }
    }
}

/// `routing.max-wait` in milliseconds.
fn max_wait_ms(rt: &Runtime) -> u64 {
    (rt.config.routing.max_wait.0.max(0.0) * 1000.0) as u64
}

/// What the pool offers for the next attempt, taken out of the lock.
enum Chosen {
    Account(AccountId, Arc<AccountSpec>),
    /// No account can serve now.
    Refuse(errors::Refusal),
    /// Every account that could serve was tried.
    Exhausted,
}

/// Pick the next account and mark it busy, under the pool lock and nothing else.
fn choose(app: &App, model: Option<&str>, tried: &[AccountId]) -> Chosen {
    let now = app.now_ms();
    let pick = {
        let mut pool = app.pool();
        let pick = pool.pick(now, model, tried);
        match pick {
            Pick::Use(id) => {
                pool.begin(id);
                match pool.account(id) {
                    Some(a) => return Chosen::Account(id, a.spec.clone()),
                    None => Pick::Exhausted,
                }
            }
            other => other,
        }
    };
    match pick {
        Pick::Use(_) | Pick::Exhausted => Chosen::Exhausted,
        Pick::NoAccounts => Chosen::Refuse(errors::Refusal::NoAccounts),
        Pick::Unavailable {
            retry_after_ms: Some(ms),
            auth_only: true,
        } => Chosen::Refuse(errors::Refusal::AllRefused { retry_after_ms: ms }),
        Pick::Unavailable {
            retry_after_ms: Some(ms),
            auth_only: false,
        } => Chosen::Refuse(errors::Refusal::AllCooling { retry_after_ms: ms }),
        Pick::Unavailable {
            retry_after_ms: None,
            ..
        } => Chosen::Refuse(errors::Refusal::AllDisabled),
        Pick::Excluded { patterns } => Chosen::Refuse(errors::Refusal::Excluded {
            model: model.unwrap_or_default().to_string(),
            patterns,
        }),
    }
}

/// Apply the outcome to the pool; tell subscribers when the account's state changed.
fn report(app: &App, id: AccountId, label: &str, outcome: &Outcome) {
    let now = app.now_ms();
    let (before, after) = {
        let mut pool = app.pool();
        let before = pool.state(id, now);
        pool.report(id, outcome, now);
        (before, pool.state(id, now))
    };
    if let State::Cooling { .. } = after {
        // Also when it was cooling already: the end may have moved.
        app.cooldown_started.notify_one();
    }
    if std::mem::discriminant(&before) != std::mem::discriminant(&after) {
        use neurolink_shared::ipc::{AccountChange, Event};
        let change = match after {
            State::Cooling { .. } => AccountChange::Cooling,
            State::Disabled => AccountChange::Disabled,
            State::Active => AccountChange::CooldownEnded,
        };
        app.emit(Event::account(
            label,
            change,
            after.view(),
            Some(outcome.class().to_string()),
        ));
    }
}

/// One try on one account: what happened, and what [`forward`] should do next. For an OAuth
/// account this first makes sure the token is fresh, and answers a 401 by refreshing and retrying
/// the same account, up to [`auth::MAX_AUTH_RETRIES`] times.
async fn attempt(
    app: &Arc<App>,
    rt: &Runtime,
    id: AccountId,
    spec: &AccountSpec,
    req: &Inbound,
    draft: &Draft,
) -> (Outcome, Reply) {
    let Credential::OAuth(cell) = &spec.credential else {
        return send_once(app, rt, id, spec, req, draft).await;
    };
    if cell.has_unsaved_tokens() {
        // Rotated tokens that could not be written yet: try again, off the request path.
        let (app, cell) = (app.clone(), cell.clone());
        tokio::spawn(async move {
            app.refresher.retry_unsaved(&cell).await;
        });
    }
    if cell.needs_refresh(app.now_ms()) {
        match cold(app.refresher.refresh(cell, false)).await {
            Ok(done) => refreshed(app, &spec.label, done, "expiring"),
            Err(e) => {
                cold(refresh_failed(app, id, cell)).await;
                if cell.is_expired(app.now_ms()) {
                    return auth_failure(format!(
                        "the account's OAuth token expired and could not be refreshed: {e}"
                    ));
                }
            }
        }
    }
    let mut retries = 0;
    loop {
        let used = cell.access_token();
        let (outcome, reply) = send_once(app, rt, id, spec, req, draft).await;
        if outcome != (Outcome::AuthRejected { status: 401 })
            || !cell.has_refresh_token()
            || retries >= auth::MAX_AUTH_RETRIES
        {
            return (outcome, reply);
        }
        retries += 1;
        if cell.access_token() != used {
            // Refreshed by another request meanwhile: retry with the new token.
            continue;
        }
        match cold(app.refresher.refresh(cell, true)).await {
            Ok(done) => {
                tracing::info!(account = %spec.label, retry = retries, "401: token refreshed; retrying the same account");
                refreshed(app, &spec.label, done, "401");
            }
            Err(e) => {
                tracing::warn!(account = %spec.label, "401 and the refresh failed: {e}");
                cold(refresh_failed(app, id, cell)).await;
                return (outcome, reply);
            }
        }
    }
}

/// Tell subscribers a refresh changed an account's tokens (`why`: what prompted it).
pub(crate) fn refreshed(app: &App, label: &str, done: Refreshed, why: &str) {
    if matches!(done, Refreshed::Exchanged | Refreshed::Adopted) {
        app.emit(neurolink_shared::ipc::Event::account(
            label,
            neurolink_shared::ipc::AccountChange::Refreshed,
            app.state_of(label),
            Some(why.to_string()),
        ));
    }
}

/// After a failed refresh: disable the account once the failures reach the limit.
pub(crate) async fn refresh_failed(app: &Arc<App>, id: AccountId, cell: &Arc<auth::OAuthCell>) {
    if cell.consecutive_failures() < auth::MAX_REFRESH_FAILURES {
        return;
    }
    let first_time = {
        let mut pool = app.pool();
        let first = pool.disabled_reason(id).is_none();
        if first {
            let label = pool
                .account(id)
                .map(|a| a.spec.label.to_string())
                .unwrap_or_default();
            app.emit(neurolink_shared::ipc::Event::account(
                label,
                neurolink_shared::ipc::AccountChange::Disabled,
                neurolink_shared::ipc::AccountState::Disabled,
                Some("refresh_failed".into()),
            ));
            pool.disable(
                id,
                format!(
                    "{} consecutive token refresh failures; log in again (`neurolink auth login anthropic`) or run `neurolink auth enable`",
                    auth::MAX_REFRESH_FAILURES
                ),
            );
        }
        first
    };
    if first_time {
        tracing::error!(
            "account disabled after {} consecutive refresh failures",
            auth::MAX_REFRESH_FAILURES
        );
        app.refresher
            .disable_on_disk(&cell.persist, "refresh_failed")
            .await;
    }
}

/// Keep the unified 5h/7d quota headers of an OAuth account's answer (written to
/// `account-quotas.json` by the daemon's flush task, never once per request).
fn record_quota(app: &App, id: AccountId, headers: &HeaderMap) {
    // One pass over the answer's headers picks out the unified ones (a lookup by name per
    // header cost more, and most answers have none): the first value of each, as `get` gives.
    // A map yields a name's values one after the other, so a repeat follows its first.
    const PREFIX: &str = "anthropic-ratelimit-unified-";
    let mut unified: Vec<(&str, Option<&str>)> = Vec::with_capacity(8);
    for (name, value) in headers {
        let name = name.as_str();
        if name.starts_with(PREFIX) && unified.last().is_none_or(|(last, _)| *last != name) {
            unified.push((name, value.to_str().ok()));
        }
    }
    if unified.is_empty() {
        return;
    }
    let get = |name: &str| {
        unified
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| *v)
    };
    let now = i64::try_from(app.now_ms()).unwrap_or(i64::MAX);
    if let Some(q) = neurolink_shared::quotas::AccountQuota::from_headers(get, now) {
        app.pool().set_quota(id, q);
        app.quotas_dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn auth_failure(message: String) -> (Outcome, Reply) {
    let failure = Failure::Proxy {
        status: StatusCode::UNAUTHORIZED,
        kind: "authentication_error",
        message,
    };
    (Outcome::AuthRejected { status: 401 }, Reply::Retry(failure))
}

/// Send the request once with the account's current credential.
async fn send_once(
    app: &Arc<App>,
    rt: &Runtime,
    id: AccountId,
    spec: &AccountSpec,
    req: &Inbound,
    draft: &Draft,
) -> (Outcome, Reply) {
    let account = AccountUpstream {
        id,
        spec,
        route: req.route,
    };
    upstream::send(app, rt, &account, req, draft).await
}

/// An Anthropic account as an [`Upstream`]: the body goes as it is, the answer comes back as it
/// is (the identity adapter), only headers change.
struct AccountUpstream<'a> {
    id: AccountId,
    spec: &'a AccountSpec,
    route: Route,
}

impl Upstream for AccountUpstream<'_> {
    type Adapter = relay::Passthrough;

    fn prepare(&self, rt: &Runtime, req: &Inbound) -> Prepared {
        // An account's own base URL is rare: it takes the long way.
        let parsed = match (&self.spec.base_url, &rt.origin) {
            (None, Some(origin)) => origin.uri(&req.path_and_query, req.route),
            _ => None,
        };
        let url = match parsed {
            Some(uri) => Url::Parsed(uri),
            None => {
                let base = self.spec.base_url.as_deref().unwrap_or(&rt.base_url);
                Url::Text(upstream_url(base, req.path_and_query.as_str(), req.route))
            }
        };
        let mut headers = headers::upstream(&req.headers, &self.spec.credential);
        if let Some(length) = headers::length_of(&req.headers, req.body.len()) {
            headers.insert(http::header::CONTENT_LENGTH, length);
        }
        Prepared {
            method: req.method.clone(),
            url,
            headers,
            body: req.body.clone(),
        }
    }

    fn observe(&self, app: &App, headers: &HeaderMap) {
        if matches!(self.spec.credential, Credential::OAuth(_)) {
            record_quota(app, self.id, headers);
        }
    }

    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: Bytes) -> (Outcome, Failure) {
        let outcome = outcome::classify_error(status, headers, &body, SystemTime::now());
        let failure = Failure::Upstream {
            status,
            headers: headers.clone(),
            body,
        };
        (outcome, failure)
    }

    fn adapter(&self, _rt: &Runtime, headers: &HeaderMap) -> Adapting<relay::Passthrough> {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let sse = content_type.starts_with("text/event-stream");
        let encoded = headers
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes() != b"identity");
        let inspector = match (self.route, sse, encoded) {
            (_, _, true) | (Route::Models | Route::CountTokens, _, _) => Inspector::None,
            (Route::Messages, true, false) => Inspector::Sse(usage::SseUsage::default()),
            (Route::Messages, false, false) => Inspector::Json(usage::JsonUsage::default()),
        };
        // A compressed stream cannot be cut at event boundaries; it is relayed chunk by chunk.
        let framer = (sse && !encoded).then(boundary::EventFramer::default);
        Adapting {
            adapter: relay::Passthrough {
                inspector,
                sse,
                framer,
            },
            sse,
            keeps_length: true,
            keep_alive: None,
        }
    }

    fn first_failure(&self, first: &Bytes) -> Option<(Outcome, Failure)> {
        let data = first_event_error(first)?;
        let (outcome, status) = outcome::classify_first_event_error(&data);
        let mut json = HeaderMap::new();
        json.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let failure = Failure::Upstream {
            status,
            headers: json,
            body: data,
        };
        Some((outcome, failure))
    }

    fn respond(
        &self,
        app: &Arc<App>,
        status: StatusCode,
        headers: HeaderMap,
        draft: Draft,
    ) -> (HeaderMap, Box<dyn relay::Sink>) {
        let sink = relay::AccountSink {
            app: app.clone(),
            account_id: self.id,
            ttfb_ms: draft.elapsed_ms(),
            draft,
            account: self.spec.label.clone(),
            status: status.as_u16(),
        };
        (headers::downstream(headers), Box::new(sink))
    }

    fn label(&self) -> neurolink_shared::ipc::Label {
        self.spec.label.clone()
    }
}

/// The `data` of the first event when that event is `error` (whole events only: `events` comes
/// from the framer).
fn first_event_error(events: &[u8]) -> Option<Bytes> {
    // A JSON body (most non-streamed answers) is told apart by its first byte, before anything
    // scans the whole chunk: an SSE stream starts with a field name or a `:` comment.
    let first = *events.iter().find(|b| !b.is_ascii_whitespace())?;
    if !matches!(first, b'e' | b'd' | b'i' | b'r' | b':') {
        return None;
    }
    let end = memchr::memmem::find(events, b"\n\n").unwrap_or(events.len());
    let event = &events[..end];
    let mut lines = event
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let name = lines.find(|l| l.starts_with(b"event:"))?;
    if name[6..].trim_ascii() != b"error" {
        return None;
    }
    let data = event
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .find_map(|l| l.strip_prefix(b"data:"))?;
    Some(Bytes::copy_from_slice(data.trim_ascii()))
}

/// `{base}{path}?{query}`, with `beta=true` on the Messages endpoints (docs/design.md §5).
pub fn upstream_url(base: &str, path_and_query: &str, route: Route) -> String {
    let base = base.trim_end_matches('/');
    let mut url = String::with_capacity(base.len() + path_and_query.len() + 10);
    url.push_str(base);
    url.push_str(path_and_query);
    if let Some(sep) = beta_separator(path_and_query, route) {
        url.push(sep);
        url.push_str("beta=true");
    }
    url
}

/// What joins `beta=true` to `path_and_query` (`?` or `&`), when the route needs it there and
/// the client did not send it (Claude Code does).
fn beta_separator(path_and_query: &str, route: Route) -> Option<char> {
    if !matches!(route, Route::Messages | Route::CountTokens) {
        return None;
    }
    match path_and_query.split_once('?') {
        None => Some('?'),
        Some((_, q)) if q.split('&').any(|p| p.starts_with("beta=")) => None,
        Some(_) => Some('&'),
    }
}

/// A base URL that is an origin only (`https://api.anthropic.com`, the default): the upstream
/// URI is put together from its parts and the client's path, shared, instead of formatting a
/// URL and parsing it again on every request (about a thousand instructions and two
/// allocations). A base with a path goes the long way ([`upstream_url`]).
#[derive(Debug, Clone)]
pub struct Origin {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
}

impl Origin {
    /// `base` as an origin; `None` when it has a path or query (or does not parse).
    pub fn of(base: &str) -> Option<Self> {
        let parts = base.parse::<http::Uri>().ok()?.into_parts();
        if parts
            .path_and_query
            .as_ref()
            .is_some_and(|pq| !matches!(pq.as_str(), "" | "/"))
        {
            return None;
        }
        Some(Self {
            scheme: parts.scheme?,
            authority: parts.authority?,
        })
    }

    /// The URI for `path_and_query` on `route`; the same as parsing [`upstream_url`]'s.
    fn uri(&self, path_and_query: &PathAndQuery, route: Route) -> Option<http::Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(match beta_separator(path_and_query.as_str(), route) {
            None => path_and_query.clone(),
            Some(sep) => {
                let pq = path_and_query.as_str();
                let mut with_beta = String::with_capacity(pq.len() + 10);
                with_beta.push_str(pq);
                with_beta.push(sep);
                with_beta.push_str("beta=true");
                PathAndQuery::try_from(with_beta).ok()?
            }
        });
        http::Uri::from_parts(parts).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_is_an_error_only_when_it_says_so() {
        let error = |b: &[u8]| first_event_error(b).map(|d| d.to_vec());
        assert_eq!(error(br#"{"type":"message","content":[]}"#), None);
        assert_eq!(error(b"event: message_start\ndata: {}\n\n"), None);
        let want = Some(br#"{"type":"error"}"#.to_vec());
        assert_eq!(error(b"event: error\ndata: {\"type\":\"error\"}\n\n"), want);
        assert_eq!(
            error(b"id: 1\nevent: error\ndata: {\"type\":\"error\"}\n\n"),
            want
        );
        assert_eq!(
            error(b": hi\r\n\r\nevent: error\r\ndata: {\"type\":\"error\"}\r\n\r\n"),
            want
        );
        assert_eq!(
            error(b"data: {}\n\nevent: error\ndata: {}\n\n"),
            None,
            "only the first event"
        );
    }

    #[test]
    fn beta_true_is_added_once() {
        assert_eq!(
            upstream_url("http://u/", "/v1/messages", Route::Messages),
            "http://u/v1/messages?beta=true"
        );
        assert_eq!(
            upstream_url("http://u", "/v1/messages?beta=true", Route::Messages),
            "http://u/v1/messages?beta=true"
        );
        assert_eq!(
            upstream_url("http://u", "/v1/messages?x=1", Route::Messages),
            "http://u/v1/messages?x=1&beta=true"
        );
        assert_eq!(
            upstream_url("http://u", "/v1/models?limit=5", Route::Models),
            "http://u/v1/models?limit=5"
        );
    }

    /// The URI built from an origin's parts is the one the long way parses to, for every
    /// route and query shape.
    #[test]
    fn an_origin_builds_the_uri_the_long_way_parses() {
        let bases = [
            "https://api.anthropic.com",
            "https://api.anthropic.com/",
            "http://127.0.0.1:8080",
            "http://[::1]:9/",
        ];
        let paths = [
            "/v1/messages",
            "/v1/messages?beta=true",
            "/v1/messages?x=1",
            "/v1/messages?x=1&beta=false",
            "/v1/messages/count_tokens",
            "/v1/models?limit=5",
            "/v1/models/claude-sonnet-4-5",
            "/",
        ];
        let routes = [Route::Messages, Route::CountTokens, Route::Models];
        for base in bases {
            let origin = Origin::of(base).unwrap_or_else(|| panic!("{base} is an origin"));
            for path in paths {
                let pq = PathAndQuery::from_static(path);
                for route in routes {
                    let long: http::Uri = upstream_url(base, path, route).parse().expect("valid");
                    let built = origin.uri(&pq, route).expect("built");
                    assert_eq!(built, long, "{base} {path} {route:?}");
                    assert_eq!(
                        built.to_string(),
                        long.to_string(),
                        "{base} {path} {route:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_base_with_a_path_is_not_an_origin() {
        assert!(Origin::of("http://127.0.0.1:9/anthropic").is_none());
        assert!(Origin::of("http://127.0.0.1:9/?key=1").is_none());
        assert!(Origin::of("not a url").is_none());
        assert!(Origin::of("/relative").is_none());
        assert!(Origin::of("https://api.anthropic.com").is_some());
    }
}
