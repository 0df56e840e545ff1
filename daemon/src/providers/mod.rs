//! Providers other than Anthropic, and the routing that decides who serves a model.
//!
//! A request goes, in this order of rules (`docs/translation.md`):
//! 1. `routing.passthrough-models` (globs): Anthropic only, untouched, never translated;
//! 2. `routing.model-mappings` (`from` glob → `to` on `provider`): straight to that provider (or
//!    to Anthropic under another model name);
//! 3. otherwise the Anthropic accounts, and when none can serve (every one cooling, refused or
//!    disabled, or all of them failed), `routing.fallback-chain` in order.
//!
//! The [`Routes`] are built from the config with the rest of the runtime, so a reload changes
//! them as a whole. The attempt on a provider is in [`fallback`].

pub mod count;
pub mod fallback;
pub mod stats;

use std::sync::Arc;

use neurolink_shared::config::model::{
    ApiProvider, ProxyConfig, DEFAULT_GOOGLE_AI_BASE_URL, DEFAULT_OPENAI_BASE_URL,
    GOOGLE_AI_KEY_ENVS, OPENAI_KEY_ENV,
};
use neurolink_shared::Secret;

use axum::response::Response;

use crate::passthrough::record::Draft;
use crate::passthrough::{Inbound, Route};
use crate::pool::glob_match;
use crate::server::{App, Runtime};
use crate::upstream::Failure;

/// Serve `req` on `links` in order: a message through [`fallback`], a token count through
/// [`count`]. The answer, or the draft back with the last link's failure.
pub async fn serve(
    app: &Arc<App>,
    rt: &Arc<Runtime>,
    draft: Draft,
    req: &Inbound,
    links: &[Link],
) -> Result<Response, (Draft, Option<Failure>)> {
    match req.route {
        Route::CountTokens => count::serve(app, rt, draft, req, links).await,
        Route::Messages | Route::Models => fallback::serve(app, rt, draft, req, links).await,
    }
}

/// The Claude request a translation starts from; a body that is not JSON is the client's 400.
pub fn claude_request(body: &[u8]) -> Result<serde_json::Value, crate::translate::ProviderError> {
    serde_json::from_slice(body).map_err(|e| crate::translate::ProviderError {
        status: 400,
        kind: "invalid_request_error",
        message: format!("the request body is not JSON: {e}"),
        retry_after: None,
    })
}

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Chat Completions: OpenAI and every OpenAI-compatible server.
    OpenAi,
    /// Gemini `generateContent`.
    Gemini,
}

/// One configured provider.
#[derive(Debug)]
pub struct Provider {
    /// The name routing uses (`openai`, `google-ai`, or an `openai-compatible` entry's name).
    pub name: String,
    pub kind: Kind,
    pub base_url: String,
    pub api_key: Option<Secret>,
}

/// A provider and the model asked of it: one link of the chain, or a mapping's target.
#[derive(Debug, Clone)]
pub struct Link {
    pub provider: Arc<Provider>,
    pub model: String,
}

impl Link {
    /// `message` with this provider's key masked (a provider may echo it in an error).
    pub fn masked(&self, message: String) -> String {
        match &self.provider.api_key {
            Some(k) => crate::logs::redact::Redactor::new([k.expose().to_string()]).text(&message),
            None => message,
        }
    }

    /// `provider/model`, as records and attempts name it.
    pub fn label(&self) -> String {
        format!("{}/{}", self.provider.name, self.model)
    }
}

/// Where a `model-mappings` entry sends a model.
#[derive(Debug, Clone)]
enum Target {
    /// Anthropic's accounts, under this model name.
    Anthropic(String),
    Provider(Link),
}

/// How one request is served.
#[derive(Debug)]
pub enum Plan<'a> {
    /// The Anthropic accounts (with the model renamed when a mapping says so), then `fallback`.
    Anthropic {
        rename: Option<&'a str>,
        fallback: &'a [Link],
    },
    /// A mapping sends the model to this provider.
    Direct(&'a Link),
}

/// The routing rules in force.
#[derive(Debug, Default)]
pub struct Routes {
    passthrough: Vec<String>,
    mappings: Vec<(String, Target)>,
    chain: Vec<Link>,
}

impl Routes {
    /// The rules of `config`. Links to providers that are not configured, or that have no key
    /// where one is required, are left out with a warning (the config check says so too).
    pub fn from_config(config: &ProxyConfig) -> Self {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self::build(config, &env)
    }

    /// [`Routes::from_config`] with the environment given (tests).
    pub fn build(config: &ProxyConfig, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut providers: Vec<Arc<Provider>> = Vec::new();
        let mut get = |name: &str| -> Option<Arc<Provider>> {
            if let Some(p) = providers.iter().find(|p| p.name == name) {
                return Some(p.clone());
            }
            let p = Arc::new(resolve(config, name, env)?);
            providers.push(p.clone());
            Some(p)
        };
        let routing = &config.routing;
        let mut mappings = Vec::new();
        for m in &routing.model_mappings {
            let (from, to, provider) = (&m.from.value, &m.to.value, &m.provider.value);
            if from.is_empty() || to.is_empty() {
                continue;
            }
            let target = if provider == "anthropic" {
                Target::Anthropic(to.clone())
            } else {
                match get(provider) {
                    Some(p) => Target::Provider(Link {
                        provider: p,
                        model: to.clone(),
                    }),
                    None => continue,
                }
            };
            mappings.push((from.clone(), target));
        }
        let chain = routing
            .fallback_chain
            .iter()
            .filter(|f| !f.model.value.is_empty() && f.provider.value != "anthropic")
            .filter_map(|f| {
                Some(Link {
                    provider: get(&f.provider.value)?,
                    model: f.model.value.clone(),
                })
            })
            .collect();
        Self {
            passthrough: routing
                .passthrough_models
                .iter()
                .map(|m| m.value.clone())
                .filter(|m| !m.is_empty())
                .collect(),
            mappings,
            chain,
        }
    }

    /// How a request for `model` is served.
    pub fn plan(&self, model: Option<&str>) -> Plan<'_> {
        let Some(model) = model else {
            return Plan::Anthropic {
                rename: None,
                fallback: &self.chain,
            };
        };
        if self.passthrough.iter().any(|p| glob_match(p, model)) {
            return Plan::Anthropic {
                rename: None,
                fallback: &[],
            };
        }
        match self
            .mappings
            .iter()
            .find(|(from, _)| glob_match(from, model))
        {
            Some((_, Target::Provider(link))) => Plan::Direct(link),
            Some((_, Target::Anthropic(to))) => Plan::Anthropic {
                rename: (to != model).then_some(to.as_str()),
                fallback: &self.chain,
            },
            None => Plan::Anthropic {
                rename: None,
                fallback: &self.chain,
            },
        }
    }

    /// The model names a mapping serves (those without wildcards), with who serves them.
    pub fn reachable(&self) -> Vec<(String, String)> {
        self.mappings
            .iter()
            .filter(|(from, _)| !from.contains(['*', '?']))
            .map(|(from, target)| {
                let owner = match target {
                    Target::Anthropic(_) => "anthropic".to_string(),
                    Target::Provider(link) => link.provider.name.clone(),
                };
                (from.clone(), owner)
            })
            .collect()
    }

    /// Every provider key in use, for masking logs and messages.
    pub fn secrets(&self) -> Vec<String> {
        let links = self
            .chain
            .iter()
            .chain(self.mappings.iter().filter_map(|(_, t)| match t {
                Target::Provider(link) => Some(link),
                Target::Anthropic(_) => None,
            }));
        links
            .filter_map(|l| l.provider.api_key.as_ref())
            .map(|k| k.expose().to_string())
            .collect()
    }

    /// The fallback chain, as `status` shows it.
    pub fn chain(&self) -> &[Link] {
        &self.chain
    }
}

/// The provider called `name`, if it is configured well enough to be used.
fn resolve(
    config: &ProxyConfig,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Provider> {
    let p = &config.providers;
    let key_of = |p: Option<&ApiProvider>| {
        p.and_then(|p| p.api_key.as_ref())
            .map(|k| k.value.expose().to_string())
            .filter(|k| !k.is_empty())
    };
    let url_of = |p: Option<&ApiProvider>, default: &str| {
        p.and_then(|p| p.base_url.as_ref())
            .map_or_else(|| default.to_string(), |u| u.value.clone())
    };
    let (kind, base_url, key) = match name {
        "openai" => (
            Kind::OpenAi,
            url_of(p.openai.as_ref(), DEFAULT_OPENAI_BASE_URL),
            key_of(p.openai.as_ref()).or_else(|| env(OPENAI_KEY_ENV)),
        ),
        "google-ai" => (
            Kind::Gemini,
            url_of(p.google_ai.as_ref(), DEFAULT_GOOGLE_AI_BASE_URL),
            key_of(p.google_ai.as_ref()).or_else(|| GOOGLE_AI_KEY_ENVS.iter().find_map(|e| env(e))),
        ),
        other => {
            let c = p.openai_compatible.get(other)?;
            let url = c.base_url.as_ref()?.value.clone();
            // A local server (Ollama, LM Studio) needs no key.
            return Some(Provider {
                name: other.to_string(),
                kind: Kind::OpenAi,
                base_url: url,
                api_key: key_of(Some(c)).map(Secret::new),
            });
        }
    };
    let Some(key) = key else {
        tracing::warn!(
            "provider {name} has no API key (providers.{name}.apiKey or the environment); it is skipped"
        );
        return None;
    };
    Some(Provider {
        name: name.to_string(),
        kind,
        base_url,
        api_key: Some(Secret::new(key)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(yaml: &str, env: &[(&str, &str)]) -> Routes {
        use neurolink_shared::config::{parse, Format};
        let (config, _) = parse(
            yaml,
            Format::Yaml,
            std::path::Path::new("t.yaml"),
            &neurolink_shared::config::interpolate::EnvSource::Map(Default::default()),
        )
        .unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Routes::build(&config, &move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn passthrough_then_mappings_then_the_chain() {
        let r = routes(
            "routing:\n  passthrough-models: [claude-opus-*]\n  model-mappings:\n    - {from: claude-3-5-haiku*, to: gemini-2.5-flash, provider: google-ai}\n    - {from: claude-opus-4, to: gpt-4o, provider: openai}\n    - {from: old-sonnet, to: claude-sonnet-4-5}\n  fallback-chain:\n    - {provider: openai, model: gpt-4o}\n    - {provider: local, model: qwen}\n    - {provider: nowhere, model: x}\nproviders:\n  openai-compatible:\n    local: {baseUrl: 'http://127.0.0.1:1/v1'}\n",
            &[("OPENAI_API_KEY", "sk-test"), ("GEMINI_API_KEY", "g-test")],
        );
        let labels: Vec<String> = r.chain().iter().map(Link::label).collect();
        assert_eq!(labels, vec!["openai/gpt-4o", "local/qwen"]);
        assert!(matches!(
            r.plan(Some("claude-opus-4")),
            Plan::Anthropic { fallback: [], .. }
        ));
        match r.plan(Some("claude-3-5-haiku-20241022")) {
            Plan::Direct(l) => assert_eq!(l.label(), "google-ai/gemini-2.5-flash"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.plan(Some("old-sonnet")),
            Plan::Anthropic { rename: Some("claude-sonnet-4-5"), fallback } if fallback.len() == 2
        ));
        assert!(matches!(
            r.plan(Some("claude-sonnet-4-5")),
            Plan::Anthropic { rename: None, .. }
        ));
    }

    #[test]
    fn a_provider_without_a_key_is_left_out() {
        let r = routes(
            "routing:\n  fallback-chain:\n    - {provider: openai, model: gpt-4o}\n    - {provider: google-ai, model: gemini-2.5-pro}\n",
            &[("GOOGLE_AI_API_KEY", "g")],
        );
        let labels: Vec<String> = r.chain().iter().map(Link::label).collect();
        assert_eq!(labels, vec!["google-ai/gemini-2.5-pro"]);
    }
}
