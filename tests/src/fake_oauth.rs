//! A fake OAuth token endpoint on 127.0.0.1 that rotates refresh tokens like Anthropic's: each
//! refresh token works once; presenting a spent one is a *reuse*, answered `invalid_grant` and
//! counted, so tests can prove a token was never used twice.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
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
}

pub struct FakeOAuth {
    pub addr: SocketAddr,
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
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            expires_in: 28_800,
            ..State::default()
        }));
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(s.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    /// The URL to put in `providers.anthropic-oauth.tokenUrl`.
    pub fn token_url(&self) -> String {
        format!("http://{}/v1/oauth/token", self.addr)
    }

    /// Accept `token` as a valid refresh token (one use).
    pub fn register(&self, token: &str) {
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

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
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
    s.next += 1;
    s.refreshes += 1;
    let n = s.next;
    let refresh = format!("rt-{n}");
    s.valid.insert(refresh.clone());
    Ok(json(
        200,
        serde_json::json!({
            "token_type": "Bearer",
            "access_token": format!("at-{n}"),
            "refresh_token": refresh,
            "expires_in": s.expires_in,
            "scope": "user:inference user:profile"
        }),
    ))
}
