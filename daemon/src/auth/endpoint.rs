//! The OAuth token endpoint: the `refresh_token` grant (docs/oauth.md, "Refreshing").

use std::time::Duration;

use neurolink_shared::Secret;
use serde::Deserialize;

/// The public client id of Claude Code's OAuth app.
pub const DEFAULT_CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
/// The token endpoint has moved hosts; these are tried in order (newest first).
pub const DEFAULT_TOKEN_URLS: [&str; 3] = [
    "https://platform.claude.com/v1/oauth/token",
    "https://api.anthropic.com/v1/oauth/token",
    "https://console.anthropic.com/v1/oauth/token",
];
/// A refresh that takes longer than this has failed.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);
/// Used when the token response has no `expires_in` (NeuroLink falls back to about an hour).
const DEFAULT_EXPIRES_IN_SECS: i64 = 3600;

/// Where and as whom to refresh.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub token_urls: Vec<String>,
    pub client_id: String,
}

impl Endpoint {
    /// From `providers.anthropic-oauth`: a configured `tokenUrl` replaces the default list.
    pub fn from_config(c: &neurolink_shared::config::OAuthProvider) -> Self {
        let token_urls = match &c.token_url {
            Some(u) if !u.value.is_empty() => vec![u.value.clone()],
            _ => DEFAULT_TOKEN_URLS.iter().map(|u| u.to_string()).collect(),
        };
        let client_id = c
            .client_id
            .as_ref()
            .map_or_else(|| DEFAULT_CLIENT_ID.to_string(), |c| c.value.clone());
        Self {
            token_urls,
            client_id,
        }
    }
}

/// New tokens from a grant.
#[derive(Debug, Clone)]
pub struct Grant {
    pub access: Secret,
    /// `None` when the server did not rotate it (keep the old one).
    pub refresh: Option<Secret>,
    pub expires_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The server refused this refresh token (`invalid_grant`...): the account needs a new login.
    #[error("the token endpoint refused the refresh token ({status}: {error})")]
    Rejected { status: u16, error: String },
    /// Every endpoint failed for reasons that may pass (network, 5xx, 429).
    #[error("refresh failed: {0}")]
    Unavailable(String),
    #[error("the account has no refresh token; log in again")]
    NoRefreshToken,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    error_description: Option<String>,
}

/// The first real answer of the token endpoint(s).
pub enum Answer {
    /// 2xx, with its body.
    Ok { url: String, text: String },
    /// 400, 401 or 403: the server refused what we sent; another host would too.
    Refused { status: u16, text: String },
    /// Every host failed in a way that may pass (network, 5xx, 429, 404 of a moved host).
    Unreachable(String),
}

/// POST `body` as JSON to each token URL in order until one answers for real.
pub async fn post(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    body: &serde_json::Value,
) -> Answer {
    let mut last = String::from("no token endpoint configured");
    for url in &endpoint.token_urls {
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .timeout(REFRESH_TIMEOUT)
            .body(body.to_string())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                last = format!("{url}: {e}");
                continue;
            }
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        match status {
            200..=299 => {
                return Answer::Ok {
                    url: url.clone(),
                    text,
                }
            }
            400 | 401 | 403 => return Answer::Refused { status, text },
            _ => last = format!("{url}: HTTP {status}"),
        }
    }
    Answer::Unreachable(last)
}

/// Exchange `refresh_token` for new tokens, trying each URL until one answers for real.
pub async fn refresh(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    refresh_token: &Secret,
    now_ms: i64,
) -> Result<Grant, RefreshError> {
    let body = serde_json::json!({
        "grant_type": "refresh_token",
        "refresh_token": refresh_token.expose(),
        "client_id": endpoint.client_id,
    });
    match post(client, endpoint, &body).await {
        Answer::Ok { url, text } => {
            let t: TokenResponse = serde_json::from_str(&text).map_err(|e| {
                RefreshError::Unavailable(format!("{url}: unreadable token response: {e}"))
            })?;
            let expires_in = t.expires_in.unwrap_or(DEFAULT_EXPIRES_IN_SECS);
            Ok(Grant {
                access: Secret::new(t.access_token),
                refresh: t.refresh_token.filter(|r| !r.is_empty()).map(Secret::new),
                expires_at_ms: now_ms.saturating_add(expires_in.saturating_mul(1000)),
            })
        }
        Answer::Refused { status, text } => {
            let e: ErrorResponse = serde_json::from_str(&text).unwrap_or(ErrorResponse {
                error: None,
                error_description: None,
            });
            let error = match e.error {
                Some(serde_json::Value::String(s)) => s,
                Some(serde_json::Value::Object(o)) => o
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("error")
                    .to_string(),
                _ => "error".to_string(),
            };
            let error = match e.error_description {
                Some(d) => format!("{error}: {d}"),
                None => error,
            };
            Err(RefreshError::Rejected { status, error })
        }
        Answer::Unreachable(last) => Err(RefreshError::Unavailable(last)),
    }
}
