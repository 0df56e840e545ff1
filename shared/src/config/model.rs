//! The shape of `proxy-config.yaml` (docs/config.md), with every default filled in, so that
//! serializing a loaded config prints the effective one. Secrets serialize masked.
//!
//! NeuroLink's keys are kept as they are (kebab-case routing keys, with the camelCase aliases it
//! also accepts); keys added by this project use NeuroLink's camelCase style.

use serde::{Deserialize, Serialize};

use super::interpolate::{ISecret, IString, Num};

pub const DEFAULT_PORT: u16 = 55669;
pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The seed plans to prefer other accounts past half of a quota window (`fallbackPercentage`).
pub const DEFAULT_QUOTA_THRESHOLD: f64 = 0.5;
/// `routing.max-wait`: a request waits this long at most for a cooling account to come back.
pub const DEFAULT_MAX_WAIT_SECS: f64 = 5.0;
/// Connecting to Anthropic takes well under a second; 10 s only trips on a dead network.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// A non-streaming request with a large `max_tokens` can take minutes before its headers; the
/// SDKs Claude Code uses time out at 600 s, so we wait as long as they do.
pub const DEFAULT_HEADERS_TIMEOUT_SECS: u64 = 600;
/// Idle accounts' tokens are looked at once a minute: far more often than the one-hour margin needs.
pub const DEFAULT_TOKEN_CHECK_SECS: u64 = 60;
/// `server.clientHeaderTimeoutSecs`: hyper's own default.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT_SECS: u64 = 30;
/// `server.clientBodyTimeoutSecs`: a 32 MB body at a slow 1 MB/s still arrives.
pub const DEFAULT_CLIENT_BODY_TIMEOUT_SECS: u64 = 60;
/// `server.maxConnections`: two sockets each (client and upstream) stay well inside the raised
/// open-file limit.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 4096;
/// Anthropic pings idle streams; five minutes without a byte means the stream is dead.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 300;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Num<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_provider: Option<IString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_base_url: Option<IString>,
    #[serde(default)]
    pub accounts: Accounts,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloaking: Option<Cloaking>,
    #[serde(default)]
    pub providers: Providers,
    #[serde(default)]
    pub server: ServerConfig,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Accounts {
    #[serde(default)]
    pub anthropic: Vec<ConfigAccount>,
}

/// One API-key account declared in the config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigAccount {
    #[serde(default = "unnamed")]
    pub name: IString,
    /// Required for an account of its own. Without it, the entry adds `excludedModels`, `weight`
    /// and `enabled` to the stored login (tokens.json) whose label equals `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ISecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<IString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<IString>,
    #[serde(default = "one")]
    pub weight: Num<u32>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Requests per minute (accepted from the seed; not enforced yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Num<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Glob patterns of models this account must not serve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_models: Vec<IString>,
}

fn unnamed() -> IString {
    IString::literal("unnamed")
}
fn one() -> Num<u32> {
    Num(1)
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    FillFirst,
    #[default]
    RoundRobin,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::FillFirst => "fill-first",
            Strategy::RoundRobin => "round-robin",
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fill-first" => Ok(Strategy::FillFirst),
            "round-robin" => Ok(Strategy::RoundRobin),
            other => Err(format!(
                "unknown strategy `{other}` (use fill-first or round-robin)"
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Routing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(
        rename = "primary-account",
        alias = "primaryAccount",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub primary_account: Option<IString>,
    #[serde(rename = "model-mappings", alias = "modelMappings", default)]
    pub model_mappings: Vec<ModelMapping>,
    #[serde(rename = "fallback-chain", alias = "fallbackChain", default)]
    pub fallback_chain: Vec<FallbackEntry>,
    #[serde(rename = "passthrough-models", alias = "passthroughModels", default)]
    pub passthrough_models: Vec<IString>,
    #[serde(
        rename = "quota-threshold",
        alias = "quotaThreshold",
        default = "quota_threshold"
    )]
    pub quota_threshold: Num<f64>,
    /// Seconds a request may wait for the soonest account when every one is cooling; 0 answers
    /// the 429 at once.
    #[serde(rename = "max-wait", alias = "maxWait", default = "max_wait")]
    pub max_wait: Num<f64>,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            strategy: None,
            primary_account: None,
            model_mappings: Vec::new(),
            fallback_chain: Vec::new(),
            passthrough_models: Vec::new(),
            quota_threshold: quota_threshold(),
            max_wait: max_wait(),
        }
    }
}

fn quota_threshold() -> Num<f64> {
    Num(DEFAULT_QUOTA_THRESHOLD)
}

fn stream_keepalive() -> Num<u64> {
    Num(DEFAULT_STREAM_KEEPALIVE_SECS)
}

fn max_wait() -> Num<f64> {
    Num(DEFAULT_MAX_WAIT_SECS)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ModelMapping {
    pub from: IString,
    pub to: IString,
    #[serde(default = "anthropic")]
    pub provider: IString,
}

fn anthropic() -> IString {
    IString::literal("anthropic")
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FallbackEntry {
    pub provider: IString,
    pub model: IString,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CloakMode {
    Auto,
    Always,
    Never,
}

/// Accepted so a NeuroLink config loads unchanged; see docs/out-of-scope.md for what we decline.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Cloaking {
    pub mode: CloakMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Providers {
    #[serde(default)]
    pub anthropic: AnthropicProvider,
    #[serde(rename = "anthropic-oauth", default)]
    pub anthropic_oauth: OAuthProvider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai: Option<ApiProvider>,
    #[serde(rename = "google-ai", default, skip_serializing_if = "Option::is_none")]
    pub google_ai: Option<ApiProvider>,
    /// Any number of OpenAI-compatible servers (OpenRouter, Ollama, vLLM, LM Studio, ...), by the
    /// name routing uses for them.
    #[serde(
        rename = "openai-compatible",
        alias = "openaiCompatible",
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    pub openai_compatible: std::collections::BTreeMap<String, ApiProvider>,
}

/// Where OpenAI lives unless `providers.openai.baseUrl` says otherwise.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Where Gemini lives unless `providers.google-ai.baseUrl` says otherwise.
pub const DEFAULT_GOOGLE_AI_BASE_URL: &str = "https://generativelanguage.googleapis.com";
/// The environment variables a provider's key is read from when the config names none.
pub const OPENAI_KEY_ENV: &str = "OPENAI_API_KEY";
pub const GOOGLE_AI_KEY_ENVS: &[&str] = &["GOOGLE_AI_API_KEY", "GEMINI_API_KEY"];
/// The provider names routing knows besides the `openai-compatible` ones.
pub const BUILTIN_PROVIDERS: &[&str] = &["anthropic", "openai", "google-ai"];
/// `server.streamKeepAliveSecs`: a translated stream silent this long gets a `: keep-alive`
/// comment, so clients and middleboxes do not time it out.
pub const DEFAULT_STREAM_KEEPALIVE_SECS: u64 = 15;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnthropicProvider {
    #[serde(default = "anthropic_base_url")]
    pub base_url: IString,
}

impl Default for AnthropicProvider {
    fn default() -> Self {
        Self {
            base_url: anthropic_base_url(),
        }
    }
}

fn anthropic_base_url() -> IString {
    IString::literal(DEFAULT_ANTHROPIC_BASE_URL)
}

/// Where the Claude login lives. Every key defaults to Anthropic's real endpoint; tests point
/// them at loopback.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuthProvider {
    /// Subscription (Pro/Max) login page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<IString>,
    /// Console login page (for `--method create-api-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_authorize_url: Option<IString>,
    /// Token endpoint; without it the known hosts are tried in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<IString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<IString>,
    /// Where the login page sends the user back (it shows the `code#state` to paste).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<IString>,
    /// Endpoint that mints a Console API key from an OAuth token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_api_key_url: Option<IString>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<IString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ISecret>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfig {
    #[serde(default = "port")]
    pub port: Num<u16>,
    #[serde(default = "host")]
    pub host: IString,
    /// When set, clients must present it (`x-api-key` or `Authorization: Bearer`). Required to
    /// bind anything but loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_key: Option<ISecret>,
    #[serde(default = "connect_timeout")]
    pub connect_timeout_secs: Num<u64>,
    #[serde(default = "headers_timeout")]
    pub headers_timeout_secs: Num<u64>,
    #[serde(default = "idle_timeout")]
    pub idle_timeout_secs: Num<u64>,
    /// How often idle OAuth accounts are checked for tokens expiring within the hour.
    #[serde(default = "token_check")]
    pub token_check_secs: Num<u64>,
    /// A translated (fallback) stream silent this long gets a `: keep-alive` comment.
    #[serde(default = "stream_keepalive")]
    pub stream_keep_alive_secs: Num<u64>,
    /// A client must send a request's headers within this; an idle keep-alive connection is
    /// closed after it too.
    #[serde(default = "client_header_timeout")]
    pub client_header_timeout_secs: Num<u64>,
    /// A client must send the whole request body within this (408 otherwise).
    #[serde(default = "client_body_timeout")]
    pub client_body_timeout_secs: Num<u64>,
    /// Client connections served at once; one more gets a 503.
    #[serde(default = "max_connections")]
    pub max_connections: Num<u64>,
    /// Certificate authorities trusted for upstream HTTPS besides the built-in roots (a
    /// TLS-inspecting corporate proxy's). Resolved to an absolute path when the file is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<IString>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            port: port(),
            host: host(),
            auth_key: None,
            connect_timeout_secs: connect_timeout(),
            headers_timeout_secs: headers_timeout(),
            idle_timeout_secs: idle_timeout(),
            token_check_secs: token_check(),
            stream_keep_alive_secs: stream_keepalive(),
            client_header_timeout_secs: client_header_timeout(),
            client_body_timeout_secs: client_body_timeout(),
            max_connections: max_connections(),
            ca_file: None,
        }
    }
}

fn client_header_timeout() -> Num<u64> {
    Num(DEFAULT_CLIENT_HEADER_TIMEOUT_SECS)
}
fn client_body_timeout() -> Num<u64> {
    Num(DEFAULT_CLIENT_BODY_TIMEOUT_SECS)
}
fn max_connections() -> Num<u64> {
    Num(DEFAULT_MAX_CONNECTIONS)
}
fn port() -> Num<u16> {
    Num(DEFAULT_PORT)
}
fn host() -> IString {
    IString::literal(DEFAULT_HOST)
}
fn connect_timeout() -> Num<u64> {
    Num(DEFAULT_CONNECT_TIMEOUT_SECS)
}
fn headers_timeout() -> Num<u64> {
    Num(DEFAULT_HEADERS_TIMEOUT_SECS)
}
fn token_check() -> Num<u64> {
    Num(DEFAULT_TOKEN_CHECK_SECS)
}
fn idle_timeout() -> Num<u64> {
    Num(DEFAULT_IDLE_TIMEOUT_SECS)
}

impl ServerConfig {
    /// `server.caFile`, treating an empty one (`${CORP_CA:-}`) as none.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file
            .as_ref()
            .map(|f| std::path::Path::new(f.value.as_str()))
            .filter(|p| !p.as_os_str().is_empty())
    }

    /// The configured auth key, treating an empty one (`${KEY:-}`) as none.
    pub fn auth_key(&self) -> Option<&crate::Secret> {
        self.auth_key
            .as_ref()
            .map(|k| &k.value)
            .filter(|k| !k.is_empty())
    }
}
