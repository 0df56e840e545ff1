//! The configuration in force: the config file with the command line's overrides applied, built
//! once and replaced as a whole by a reload.
//!
//! Every request reads one [`Runtime`] snapshot ([`super::App::runtime`]) at its start and uses it
//! to the end, so a reload never shows a request half of a change. What cannot change while
//! running (the listening address) lives in [`super::Settings`]; a reload that changes it says a
//! restart is needed.

use std::sync::Arc;
use std::time::Duration;

use neurolink_shared::config::{ProxyConfig, Strategy};
use neurolink_shared::Secret;

use crate::upstream::trust::ExtraRoots;

/// What the command line fixed; a reload of the config file does not change these.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub strategy: Option<Strategy>,
}

impl Overrides {
    /// The host and port the proxy should listen on under `config`.
    pub fn listen(&self, config: &ProxyConfig) -> (String, u16) {
        (
            self.host
                .clone()
                .unwrap_or_else(|| config.server.host.value.clone()),
            self.port.unwrap_or(config.server.port.0),
        )
    }
}

/// One consistent view of every setting that can change while the daemon runs.
pub struct Runtime {
    pub config: Arc<ProxyConfig>,
    /// `providers.anthropic.baseUrl`: where accounts without a `baseUrl` of their own are sent.
    pub base_url: String,
    /// `base_url` as an origin, when it is only one (the default is): the passthrough then
    /// builds upstream URIs from parts ([`crate::passthrough::Origin`]).
    pub origin: Option<crate::passthrough::Origin>,
    /// `server.authKey`: what clients must present (none on a loopback listener without one).
    pub auth_key: Option<Secret>,
    pub connect_timeout: Duration,
    /// `server.caFile`'s authorities, trusted by both clients beside the built-in roots.
    pub extra_roots: ExtraRoots,
    pub headers_timeout: Duration,
    pub idle_timeout: Duration,
    /// The whole client request body must arrive within this.
    pub client_body_timeout: Duration,
    /// How often idle OAuth accounts are checked for a token nearing expiry.
    pub token_check: Duration,
    pub strategy: Strategy,
    /// Who serves which model: passthrough models, mappings, the fallback chain.
    pub routes: crate::providers::Routes,
    /// A translated stream silent this long gets a keep-alive comment.
    pub stream_keepalive: Duration,
    /// The client for proxied requests (the hot path). Rebuilt only when the connect timeout
    /// or the trusted authorities change, so a reload keeps the pooled upstream connections.
    pub upstream: crate::upstream::client::UpstreamClient,
    /// The client for the proxy's own calls (OAuth, countTokens): reqwest's conveniences (JSON,
    /// forms) where speed does not matter.
    pub client: reqwest::Client,
}

impl Runtime {
    /// The runtime for `config` under `overrides`; `previous` lends its HTTP clients when the
    /// connect timeout and the trusted authorities are unchanged.
    pub fn new(
        config: ProxyConfig,
        overrides: &Overrides,
        previous: Option<&Runtime>,
    ) -> Result<Self, String> {
        let connect_timeout = Duration::from_secs(config.server.connect_timeout_secs.0);
        let extra_roots = ExtraRoots::from_config(&config.server)?;
        let (client, upstream) = match previous {
            Some(p) if p.connect_timeout == connect_timeout && p.extra_roots == extra_roots => {
                (p.client.clone(), p.upstream.clone())
            }
            _ => (
                client(connect_timeout, &extra_roots)?,
                crate::upstream::client::UpstreamClient::new(connect_timeout, &extra_roots)?,
            ),
        };
        Ok(Self {
            base_url: config.providers.anthropic.base_url.value.clone(),
            origin: crate::passthrough::Origin::of(&config.providers.anthropic.base_url.value),
            auth_key: config.server.auth_key().cloned(),
            connect_timeout,
            extra_roots,
            headers_timeout: Duration::from_secs(config.server.headers_timeout_secs.0),
            idle_timeout: Duration::from_secs(config.server.idle_timeout_secs.0.max(1)),
            client_body_timeout: Duration::from_secs(
                config.server.client_body_timeout_secs.0.max(1),
            ),
            token_check: Duration::from_secs(config.server.token_check_secs.0.max(1)),
            strategy: overrides
                .strategy
                .or(config.routing.strategy)
                .unwrap_or_default(),
            client,
            upstream,
            routes: crate::providers::Routes::from_config(&config),
            stream_keepalive: Duration::from_secs(config.server.stream_keep_alive_secs.0.max(1)),
            config: Arc::new(config),
        })
    }
}

/// The client for the proxy's own calls: rustls trusting the built-in roots and `roots`,
/// kept-alive connections, no Nagle delay.
pub fn client(connect_timeout: Duration, roots: &ExtraRoots) -> Result<reqwest::Client, String> {
    let builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true);
    roots
        .reqwest(builder)?
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}
