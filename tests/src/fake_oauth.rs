//! A fake OAuth token endpoint on 127.0.0.1 that rotates refresh tokens like Anthropic's: each
//! refresh token works once; presenting a spent one is a *reuse*, answered `invalid_grant` and
//! counted, so tests can prove a token was never used twice. It also serves the login page
//! (`/oauth/authorize`, answering `code#state` as the hosted callback shows it), the
//! `authorization_code` grant with PKCE checks, and `create_api_key`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;

#[derive(Default)]
struct State {
    valid: HashSet<String>,
    spent: HashSet<String>,
    next: usize,
    refreshes: usize,
    reuses: usize,
    unknown: usize,
    fail_next: Vec<u16>,
    delay: Duration,
    expires_in: i64,
    /// Authorization codes handed out and not yet exchanged: code -> (challenge, redirect, client).
    codes: std::collections::HashMap<String, (String, String, String)>,
    /// Access tokens it issued (create_api_key accepts only these).
    issued: HashSet<String>,
    email: String,
    exchanges: usize,
    keys_minted: usize,
}

pub struct FakeOAuth {
    pub addr: SocketAddr,
    https: bool,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeOAuth {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeOAuth {
    pub async fn start() -> std::io::Result<Self> {
        Self::serve(None).await
    }

    /// The same endpoints over HTTPS, presenting `tls`'s certificate.
    pub async fn start_tls(tls: tokio_rustls::TlsAcceptor) -> std::io::Result<Self> {
        Self::serve(Some(tls)).await
    }

    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            expires_in: 28_800,
            ..State::default()
        }));
        let https = tls.is_some();
        let task = crate::serve::spawn(listener, tls, state.clone(), |_| {}, handle);
        Ok(Self {
            addr,
            https,
            state,
            task,
        })
    }

    /// `http://127.0.0.1:P` (or `https://`).
    fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The login page: `providers.anthropic-oauth.authorizeUrl` (and `consoleAuthorizeUrl`).
    pub fn authorize_url(&self) -> String {
        format!("{}/oauth/authorize", self.origin())
    }

    /// `providers.anthropic-oauth.createApiKeyUrl`.
    pub fn create_api_key_url(&self) -> String {
        format!("{}/api/oauth/claude_cli/create_api_key", self.origin())
    }

    /// The email the next code exchange reports.
    pub fn set_email(&self, email: &str) {
        lock(&self.state).email = email.to_string();
    }

    /// Successful code exchanges so far.
    pub fn exchanges(&self) -> usize {
        lock(&self.state).exchanges
    }

    /// API keys minted so far.
    pub fn keys_minted(&self) -> usize {
        lock(&self.state).keys_minted
    }

    /// The URL to put in `providers.anthropic-oauth.tokenUrl`.
    pub fn token_url(&self) -> String {
        format!("{}/v1/oauth/token", self.origin())
    }

    /// Accept `token` as a valid refresh token (one use).
    pub fn register(&self, token: &str) {
        crate::secrets::note(token);
        lock(&self.state).valid.insert(token.to_string());
    }

    /// The next `statuses.len()` refresh calls fail with these statuses (`invalid_grant` for 400).
    pub fn fail_next(&self, statuses: &[u16]) {
        lock(&self.state).fail_next.extend_from_slice(statuses);
    }

    /// Wait this long before answering (widens race windows).
    pub fn set_delay(&self, d: Duration) {
        lock(&self.state).delay = d;
    }

    /// `expires_in` of issued tokens, in seconds.
    pub fn set_expires_in(&self, secs: i64) {
        lock(&self.state).expires_in = secs;
    }

    /// Scripted failures not yet served (a refresh attempt consumes one).
    pub fn failures_left(&self) -> usize {
        lock(&self.state).fail_next.len()
    }

    /// Successful refreshes so far.
    pub fn refreshes(&self) -> usize {
        lock(&self.state).refreshes
    }

    /// Spent refresh tokens presented again.
    pub fn reuses(&self) -> usize {
        lock(&self.state).reuses
    }

    /// Refresh tokens it never issued.
    pub fn unknown(&self) -> usize {
        lock(&self.state).unknown
    }
}

fn json(status: u16, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn challenge(verifier: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// The login page, as the hosted callback would show it after the user approved: `code#state`.
fn authorize(state: &Mutex<State>, query: &str) -> Response<Full<Bytes>> {
    let params: std::collections::HashMap<String, String> = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    let need = [
        "client_id",
        "response_type",
        "redirect_uri",
        "scope",
        "code_challenge",
        "code_challenge_method",
        "state",
    ];
    if let Some(missing) = need.iter().find(|k| !params.contains_key(**k)) {
        return json(
            400,
            serde_json::json!({"error": format!("missing {missing}")}),
        );
    }
    if params["code_challenge_method"] != "S256" || params["response_type"] != "code" {
        return json(400, serde_json::json!({"error": "unsupported"}));
    }
    let mut s = lock(state);
    s.next += 1;
    let code = format!("code-{}", s.next);
    crate::secrets::note(&code);
    s.codes.insert(
        code.clone(),
        (
            params["code_challenge"].clone(),
            params["redirect_uri"].clone(),
            params["client_id"].clone(),
        ),
    );
    let mut r = Response::new(Full::new(Bytes::from(format!(
        "{code}#{}",
        params["state"]
    ))));
    r.headers_mut()
        .insert("content-type", http::HeaderValue::from_static("text/plain"));
    r
}

fn issue(s: &mut State) -> serde_json::Value {
    s.next += 1;
    let n = s.next;
    let refresh = format!("rt-{n}");
    let access = format!("at-{n}");
    crate::secrets::note(&access);
    crate::secrets::note(&refresh);
    s.valid.insert(refresh.clone());
    s.issued.insert(access.clone());
    serde_json::json!({
        "token_type": "Bearer",
        "access_token": access,
        "refresh_token": refresh,
        "expires_in": s.expires_in,
        "scope": "user:inference user:profile",
        "account": {"uuid": "acc-uuid", "email_address": s.email},
        "organization": {"uuid": "org-uuid", "name": "Org"}
    })
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if path == "/oauth/authorize" {
        return Ok(authorize(&state, &query));
    }
    if path == "/api/oauth/claude_cli/create_api_key" {
        let mut s = lock(&state);
        if bearer.is_none_or(|b| !s.issued.contains(&b)) {
            return Ok(json(401, serde_json::json!({"error": "unauthorized"})));
        }
        s.keys_minted += 1;
        let n = s.keys_minted;
        let raw_key = format!("sk-ant-api03-minted-{n}");
        crate::secrets::note(&raw_key);
        return Ok(json(
            200,
            serde_json::json!({"raw_key": raw_key, "id": format!("key-{n}")}),
        ));
    }
    if path != "/v1/oauth/token" {
        return Ok(json(404, serde_json::json!({"error": "not_found"})));
    }
    let delay = lock(&state).delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut s = lock(&state);
    if !s.fail_next.is_empty() {
        let status = s.fail_next.remove(0);
        let error = if status == 400 {
            "invalid_grant"
        } else {
            "server_error"
        };
        return Ok(json(
            status,
            serde_json::json!({"error": error, "error_description": "scripted failure"}),
        ));
    }
    if v["grant_type"] == "authorization_code" {
        let code = v["code"].as_str().unwrap_or_default();
        let Some((expected, redirect, client)) = s.codes.remove(code) else {
            return Ok(json(
                400,
                serde_json::json!({"error": "invalid_grant", "error_description": "unknown or used code"}),
            ));
        };
        let verifier = v["code_verifier"].as_str().unwrap_or_default();
        if challenge(verifier) != expected
            || v["redirect_uri"] != redirect.as_str()
            || v["client_id"] != client.as_str()
        {
            return Ok(json(
                400,
                serde_json::json!({"error": "invalid_grant", "error_description": "PKCE or redirect mismatch"}),
            ));
        }
        s.exchanges += 1;
        return Ok(json(200, issue(&mut s)));
    }
    if v["grant_type"] != "refresh_token" {
        return Ok(json(
            400,
            serde_json::json!({"error": "unsupported_grant_type"}),
        ));
    }
    let token = v["refresh_token"].as_str().unwrap_or_default().to_string();
    if s.spent.contains(&token) {
        s.reuses += 1;
        return Ok(json(
            400,
            serde_json::json!({"error": "invalid_grant", "error_description": "refresh token already used"}),
        ));
    }
    if !s.valid.remove(&token) {
        s.unknown += 1;
        return Ok(json(
            400,
            serde_json::json!({"error": "invalid_grant", "error_description": "unknown refresh token"}),
        ));
    }
    s.spent.insert(token);
    s.refreshes += 1;
    Ok(json(200, issue(&mut s)))
}
