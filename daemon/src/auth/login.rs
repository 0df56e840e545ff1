//! Logging in, as library code the CLI and (later) the IPC socket share: PKCE S256 against
//! Anthropic's OAuth pages (docs/oauth.md), and storing the result in
//! `tokens.json`.
//!
//! A flow is two calls: [`LoginFlow::start`] gives the URL to open; [`LoginFlow::complete`] takes
//! what the login page showed (`code#state`), checks the state, exchanges the code and returns the
//! account to store ([`store_account`]).

use base64::Engine as _;
use neurolink_shared::config::OAuthProvider;
use neurolink_shared::token_store::{Store, StoredEntry, StoredTokens, NEVER_EXPIRES_MS};
use neurolink_shared::Secret;
use sha2::{Digest, Sha256};

use super::endpoint::Endpoint;

pub const DEFAULT_AUTHORIZE_URL: &str = "https://claude.ai/oauth/authorize";
pub const DEFAULT_CONSOLE_AUTHORIZE_URL: &str = "https://console.anthropic.com/oauth/authorize";
pub const DEFAULT_REDIRECT_URI: &str = "https://console.anthropic.com/oauth/code/callback";
pub const DEFAULT_CREATE_API_KEY_URL: &str =
    "https://api.anthropic.com/api/oauth/claude_cli/create_api_key";
/// The scopes current Claude Code asks for; `user:inference` is what `/v1/messages` needs.
pub const SUBSCRIPTION_SCOPES: &str =
    "user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload";
pub const CONSOLE_SCOPES: &str = "org:create_api_key user:profile user:inference";

/// How to log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Claude Pro/Max subscription: an OAuth access + refresh token.
    OAuth,
    /// Console login, then mint an API key with it.
    CreateApiKey,
    /// Paste an existing API key.
    ApiKey,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the pasted text is empty")]
    EmptyCode,
    #[error(
        "the pasted state does not match this login (was it from another attempt?); start again"
    )]
    StateMismatch,
    #[error("the token endpoint refused the code ({0}); codes are single-use and expire quickly: start again")]
    Exchange(String),
    #[error("could not reach the token endpoint: {0}")]
    Unreachable(String),
    #[error("creating an API key failed: {0}")]
    CreateKey(String),
    #[error("the API key was refused: {0}")]
    BadKey(String),
    #[error("could not check the API key ({0}); store it without the check with --no-verify")]
    CheckFailed(String),
    #[error("that is not an API key: {0}")]
    NotAKey(String),
    #[error("cannot save the account: {0}")]
    Store(String),
    #[error("no secure random source: {0}")]
    Random(String),
}

/// The OAuth endpoints of a login, from `providers.anthropic-oauth`.
#[derive(Debug, Clone)]
pub struct Urls {
    pub authorize: String,
    pub console_authorize: String,
    pub redirect: String,
    pub create_api_key: String,
    pub token: Endpoint,
}

impl Urls {
    pub fn from_config(c: &OAuthProvider) -> Self {
        let or = |v: &Option<neurolink_shared::config::IString>, d: &str| {
            v.as_ref()
                .filter(|s| !s.value.is_empty())
                .map_or_else(|| d.to_string(), |s| s.value.clone())
        };
        Self {
            authorize: or(&c.authorize_url, DEFAULT_AUTHORIZE_URL),
            console_authorize: or(&c.console_authorize_url, DEFAULT_CONSOLE_AUTHORIZE_URL),
            redirect: or(&c.redirect_uri, DEFAULT_REDIRECT_URI),
            create_api_key: or(&c.create_api_key_url, DEFAULT_CREATE_API_KEY_URL),
            token: Endpoint::from_config(c),
        }
    }
}

/// A started browser login.
pub struct LoginFlow {
    pub method: Method,
    /// The page to open.
    pub authorize_url: String,
    state: String,
    verifier: Secret,
    urls: Urls,
}

/// A browser login started over IPC and waiting for its code.
pub struct PendingLogin {
    pub flow: LoginFlow,
    pub placement: Placement,
    /// When it was started (Unix ms); pending logins expire after [`PENDING_LOGIN_TTL_MS`].
    pub started_ms: u64,
}

/// Authorization codes are short-lived; a login not completed within this is dropped.
pub const PENDING_LOGIN_TTL_MS: u64 = 15 * 60 * 1000;

/// What a finished login produced.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub email: Option<String>,
    pub credential: NewCredential,
}

#[derive(Debug, Clone)]
pub enum NewCredential {
    OAuth {
        access: Secret,
        refresh: Option<Secret>,
        expires_at_ms: i64,
        scope: String,
    },
    ApiKey(Secret),
}

fn random_b64(bytes: usize) -> Result<String, LoginError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| LoginError::Random(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// The S256 challenge of a PKCE verifier.
pub fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl LoginFlow {
    /// Begin a browser login (`OAuth` or `CreateApiKey`).
    pub fn start(method: Method, urls: Urls) -> Result<Self, LoginError> {
        // The state is separate from the verifier: it is shown in the browser, the verifier never is.
        let verifier = random_b64(32)?;
        let state = random_b64(32)?;
        let (base, scope) = match method {
            Method::CreateApiKey => (&urls.console_authorize, CONSOLE_SCOPES),
            Method::OAuth | Method::ApiKey => (&urls.authorize, SUBSCRIPTION_SCOPES),
        };
        let params = [
            ("code", "true".to_string()),
            ("client_id", urls.token.client_id.clone()),
            ("response_type", "code".into()),
            ("redirect_uri", urls.redirect.clone()),
            ("scope", scope.into()),
            ("code_challenge", challenge(&verifier)),
            ("code_challenge_method", "S256".into()),
            ("state", state.clone()),
        ];
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect();
        let sep = if base.contains('?') { '&' } else { '?' };
        let authorize_url = format!("{base}{sep}{}", query.join("&"));
        Ok(Self {
            method,
            authorize_url,
            state,
            verifier: Secret::new(verifier),
            urls,
        })
    }

    /// Finish with what the login page showed (`code#state`, or just the code).
    pub async fn complete(
        self,
        client: &reqwest::Client,
        pasted: &str,
    ) -> Result<NewAccount, LoginError> {
        let pasted = pasted.trim();
        if pasted.is_empty() {
            return Err(LoginError::EmptyCode);
        }
        let (code, state) = match pasted.split_once('#') {
            Some((c, s)) => (c.trim(), s.trim()),
            None => (pasted, self.state.as_str()),
        };
        if state != self.state {
            return Err(LoginError::StateMismatch);
        }
        let body = serde_json::json!({
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.urls.redirect,
            "client_id": self.urls.token.client_id,
            "code_verifier": self.verifier.expose(),
            "state": state,
        });
        let token = exchange(client, &self.urls.token, &body).await?;
        let email = token.account.and_then(|a| a.email_address);
        let now = now_ms();
        let access = Secret::new(token.access_token);
        match self.method {
            Method::CreateApiKey => {
                let key = create_api_key(client, &self.urls.create_api_key, &access).await?;
                Ok(NewAccount {
                    email,
                    credential: NewCredential::ApiKey(key),
                })
            }
            Method::OAuth | Method::ApiKey => Ok(NewAccount {
                email,
                credential: NewCredential::OAuth {
                    access,
                    refresh: token.refresh_token.map(Secret::new),
                    expires_at_ms: now
                        .saturating_add(token.expires_in.unwrap_or(3600).saturating_mul(1000)),
                    scope: token.scope.unwrap_or_default(),
                },
            }),
        }
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    account: Option<AccountInfo>,
}

#[derive(serde::Deserialize)]
struct AccountInfo {
    #[serde(default)]
    email_address: Option<String>,
}

async fn exchange(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    body: &serde_json::Value,
) -> Result<TokenResponse, LoginError> {
    match super::endpoint::post(client, endpoint, body).await {
        super::endpoint::Answer::Ok { text, .. } => serde_json::from_str(&text)
            .map_err(|e| LoginError::Exchange(format!("unreadable answer: {e}"))),
        super::endpoint::Answer::Refused { status, text } => Err(LoginError::Exchange(format!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        ))),
        super::endpoint::Answer::Unreachable(last) => Err(LoginError::Unreachable(last)),
    }
}

async fn create_api_key(
    client: &reqwest::Client,
    url: &str,
    access: &Secret,
) -> Result<Secret, LoginError> {
    #[derive(serde::Deserialize)]
    struct Created {
        raw_key: String,
    }
    let r = client
        .post(url)
        .bearer_auth(access.expose())
        .header("content-type", "application/json")
        .timeout(super::endpoint::REFRESH_TIMEOUT)
        .send()
        .await
        .map_err(|e| LoginError::CreateKey(e.to_string()))?;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(LoginError::CreateKey(format!("HTTP {status}")));
    }
    serde_json::from_str::<Created>(&text)
        .map(|c| Secret::new(c.raw_key))
        .map_err(|e| LoginError::CreateKey(format!("unreadable answer: {e}")))
}

/// Refuse, before anything is sent, text that cannot be an API key (a pasted sentence, a shell
/// line, a login token).
pub fn check_key_shape(key: &str) -> Result<(), LoginError> {
    if key.is_empty() {
        return Err(LoginError::NotAKey("it is empty".into()));
    }
    if let Some(c) = key
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(LoginError::NotAKey(format!(
            "it contains {c:?}; paste the key alone"
        )));
    }
    if key.starts_with("sk-ant-oat") || key.starts_with("sk-ant-ort") {
        return Err(LoginError::NotAKey(
            "it is a Claude login token, not an API key; log in with --method oauth".into(),
        ));
    }
    if key.len() < 6 || key.contains('=') && !key.starts_with("sk-") {
        return Err(LoginError::NotAKey(
            "too short, or a shell assignment; keys look like sk-ant-api03-...".into(),
        ));
    }
    Ok(())
}

/// Check an API key with one cheap call (`GET /v1/models?limit=1`).
pub async fn check_api_key(
    client: &reqwest::Client,
    base_url: &str,
    key: &Secret,
) -> Result<(), LoginError> {
    let url = format!("{}/v1/models?limit=1", base_url.trim_end_matches('/'));
    let r = client
        .get(url)
        .header("x-api-key", key.expose())
        .header("anthropic-version", "2023-06-01")
        .timeout(super::endpoint::REFRESH_TIMEOUT)
        .send()
        .await
        .map_err(|e| LoginError::CheckFailed(format!("Anthropic could not be reached: {e}")))?;
    match r.status().as_u16() {
        200..=299 => Ok(()),
        401 | 403 => Err(LoginError::BadKey(format!(
            "HTTP {} from Anthropic",
            r.status()
        ))),
        s => Err(LoginError::CheckFailed(format!(
            "Anthropic answered HTTP {s}"
        ))),
    }
}

/// Where a new account goes in `tokens.json`.
#[derive(Debug, Clone)]
pub struct Placement {
    /// `--label`; else the email; else a short id.
    pub label: Option<String>,
    /// `--add`: keep the other accounts. Without it the new login replaces the default (first)
    /// stored account.
    pub add: bool,
}

/// Where an account was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub label: String,
    /// The account this login replaced (without `--add`), to say so.
    pub replaced: Option<String>,
}

/// Write the account. Re-login of a label replaces its tokens and clears its disabled state;
/// without `--add` the first stored account gives way, and [`Stored::replaced`] names it.
pub fn store_account(
    store: &Store,
    account: &NewAccount,
    placement: &Placement,
) -> Result<Stored, LoginError> {
    let label = placement
        .label
        .clone()
        .filter(|l| !l.trim().is_empty())
        .or_else(|| account.email.clone())
        .unwrap_or_else(|| match &account.credential {
            // A key's last characters, as the Console shows them: readable, and it tells keys apart.
            NewCredential::ApiKey(key) => {
                let k = key.expose();
                format!("key-{}", &k[k.len().saturating_sub(4)..])
            }
            NewCredential::OAuth { .. } => short_id(),
        });
    let now = now_ms();
    let tokens = match &account.credential {
        NewCredential::OAuth {
            access,
            refresh,
            expires_at_ms,
            scope,
        } => StoredTokens {
            access_token: access.expose().to_string(),
            refresh_token: refresh.as_ref().map(|r| r.expose().to_string()),
            expires_at: *expires_at_ms,
            token_type: "Bearer".into(),
            scope: Some(with_email(scope, account.email.as_deref())),
            extra: Default::default(),
        },
        NewCredential::ApiKey(key) => StoredTokens {
            access_token: key.expose().to_string(),
            refresh_token: None,
            expires_at: NEVER_EXPIRES_MS,
            token_type: "api-key".into(),
            scope: Some(with_email("", account.email.as_deref())).filter(|s| !s.is_empty()),
            extra: Default::default(),
        },
    };
    let entry = StoredEntry {
        tokens,
        created_at: now,
        last_accessed: now,
        disabled: None,
        disabled_at: None,
        disabled_reason: None,
        extra: Default::default(),
    };
    let replaced = store
        .update(|f| {
            let mut replaced = None;
            if !placement.add {
                let key = format!("anthropic:{label}");
                let default = f
                    .providers
                    .keys()
                    .find(|k| k.starts_with("anthropic:"))
                    .cloned();
                if let Some(default) = default.filter(|d| *d != key) {
                    f.providers.remove(&default);
                    replaced = default.strip_prefix("anthropic:").map(str::to_string);
                }
            }
            f.set_entry(&label, &entry).map_err(|e| e.to_string())?;
            Ok::<_, String>(replaced)
        })
        .map_err(|e| LoginError::Store(e.to_string()))?
        .map_err(LoginError::Store)?;
    Ok(Stored { label, replaced })
}

fn with_email(scope: &str, email: Option<&str>) -> String {
    match email {
        Some(e) => format!("{scope} email:{e}").trim().to_string(),
        None => scope.to_string(),
    }
}

/// NeuroLink's fallback label: six base-36 characters of the current time.
fn short_id() -> String {
    let mut n = now_ms().unsigned_abs();
    let mut s = String::new();
    while s.len() < 6 {
        let d = (n % 36) as u32;
        s.push(char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
    }
    s.chars().rev().collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> Urls {
        Urls::from_config(&OAuthProvider::default())
    }

    #[test]
    fn pkce_challenge_matches_rfc_7636_example() {
        // RFC 7636 appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn authorize_url_has_every_parameter() {
        let f = LoginFlow::start(Method::OAuth, urls()).unwrap();
        let u = &f.authorize_url;
        assert!(u.starts_with("https://claude.ai/oauth/authorize?code=true&client_id=9d1c250a-e61b-44d9-88ed-5944d1962f5e&response_type=code"), "{u}");
        assert!(
            u.contains(
                "&redirect_uri=https%3A%2F%2Fconsole.anthropic.com%2Foauth%2Fcode%2Fcallback"
            ),
            "{u}"
        );
        assert!(u.contains("&scope=user%3Aprofile+user%3Ainference"), "{u}");
        assert!(
            u.contains(&format!(
                "&code_challenge={}",
                challenge(f.verifier.expose())
            )),
            "{u}"
        );
        assert!(u.contains("&code_challenge_method=S256&state="), "{u}");
        assert_eq!(f.verifier.expose().len(), 43);
        assert_ne!(
            f.state,
            f.verifier.expose(),
            "the state is not the verifier"
        );
        let console = LoginFlow::start(Method::CreateApiKey, urls()).unwrap();
        assert!(console
            .authorize_url
            .starts_with("https://console.anthropic.com/oauth/authorize?"));
        assert!(console.authorize_url.contains("org%3Acreate_api_key"));
    }

    #[test]
    fn short_ids_are_six_base36_chars() {
        let id = short_id();
        assert_eq!(id.len(), 6);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
