//! The demo's simulated Anthropic: the Messages API (JSON and paced SSE), count_tokens, and an
//! OAuth token endpoint, on 127.0.0.1, in the demo's own process. It behaves like a busy real
//! one: the two logins' 5h/7d quota headers climb with use, and now and then an answer is a 429
//! with `retry-after`, a 529, or (for a login) a 401 that makes the proxy refresh the token.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::json;

/// Every Nth Messages request fails, so each kind of failure shows within the first minute
/// (a schedule rather than chance: the demo and its test see the same thing every run).
const RATE_LIMITED_EVERY: u64 = 9;
const OVERLOADED_EVERY: u64 = 13;
/// Every Nth request of a login is refused with a 401 (the proxy refreshes and retries).
const UNAUTHORIZED_EVERY: u64 = 17;

/// One login's quota windows as the simulation moves them.
#[derive(Debug, Clone, Copy)]
struct Quota {
    five_hour: f64,
    seven_day: f64,
    five_hour_reset: u64,
    seven_day_reset: u64,
}

#[derive(Default)]
pub struct Upstream {
    quotas: Mutex<HashMap<String, Quota>>,
    refreshes: Mutex<u64>,
    messages: std::sync::atomic::AtomicU64,
    login_messages: std::sync::atomic::AtomicU64,
    started_secs: u64,
}

impl Upstream {
    pub fn new(now_secs: u64) -> Arc<Self> {
        Arc::new(Self {
            started_secs: now_secs,
            ..Self::default()
        })
    }

    /// The quota of the login that owns `token` (tokens are `demo-at-<who>-<n>`), moved by one
    /// request.
    fn spend(&self, who: &str, now_secs: u64) -> Quota {
        let mut quotas = self.quotas.lock().unwrap_or_else(|p| p.into_inner());
        let start = self.started_secs;
        let q = quotas.entry(who.to_string()).or_insert_with(|| Quota {
            // The two logins start at different points of their windows.
            five_hour: if who.starts_with('a') { 0.35 } else { 0.62 },
            seven_day: if who.starts_with('a') { 0.21 } else { 0.48 },
            five_hour_reset: start + 2 * 3600 + 600,
            seven_day_reset: start + 3 * 86_400,
        });
        q.five_hour += 0.004 + fastrand::f64() * 0.004;
        q.seven_day += 0.0006;
        if q.five_hour >= 0.99 || now_secs >= q.five_hour_reset {
            // A new window, so the demo keeps going.
            q.five_hour = 0.05;
            q.five_hour_reset = now_secs + 5 * 3600;
        }
        q.seven_day = q.seven_day.min(0.99);
        *q
    }
}

pub fn router(up: Arc<Upstream>) -> Router {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/oauth/token", post(token))
        .with_state(up)
}

/// Which login a bearer token belongs to (`demo-at-alice-3` -> `alice`).
fn login_of(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    bearer
        .strip_prefix("demo-at-")
        .and_then(|rest| rest.rsplit_once('-'))
        .map(|(who, _)| who.to_string())
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn now_secs() -> u64 {
    neurolink_shared::time::now_ms() / 1000
}

async fn messages(State(up): State<Arc<Upstream>>, headers: HeaderMap, body: Bytes) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let login = login_of(&headers);
    let n = up.messages.fetch_add(1, Relaxed) + 1;
    if n % RATE_LIMITED_EVERY == 0 {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "simulated: this account is sending too fast",
        );
        let wait = fastrand::u32(2..7);
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(wait));
        r.headers_mut().insert(
            "anthropic-ratelimit-requests-remaining",
            HeaderValue::from_static("0"),
        );
        return r;
    }
    if n % OVERLOADED_EVERY == 0 {
        return error(
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "overloaded_error",
            "simulated: overloaded",
        );
    }
    if login.is_some() && (up.login_messages.fetch_add(1, Relaxed) + 1) % UNAUTHORIZED_EVERY == 0 {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "simulated: the access token was revoked",
        );
    }
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let model = request["model"]
        .as_str()
        .unwrap_or("claude-sonnet-4-5")
        .to_string();
    let stream = request["stream"].as_bool().unwrap_or(false);
    let input_tokens = 800 + fastrand::u64(0..4000);
    let words = [
        "The", " proxy", " picked", " an", " account", " and", " relayed", " this.",
    ];
    let mut response = if stream {
        sse(model, input_tokens, &words)
    } else {
        let text: String = words.concat();
        let msg = json!({
            "id": format!("msg_demo_{}", fastrand::u64(..)), "type": "message", "role": "assistant",
            "model": model, "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": words.len() * 3}
        });
        let mut r = Response::new(Body::from(msg.to_string()));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        r
    };
    if let Some(who) = login {
        let q = up.spend(&who, now_secs());
        let h = response.headers_mut();
        for (name, value) in [
            (
                "anthropic-ratelimit-unified-5h-utilization",
                format!("{:.3}", q.five_hour),
            ),
            (
                "anthropic-ratelimit-unified-5h-reset",
                q.five_hour_reset.to_string(),
            ),
            (
                "anthropic-ratelimit-unified-5h-status",
                "allowed".to_string(),
            ),
            (
                "anthropic-ratelimit-unified-7d-utilization",
                format!("{:.3}", q.seven_day),
            ),
            (
                "anthropic-ratelimit-unified-7d-reset",
                q.seven_day_reset.to_string(),
            ),
            (
                "anthropic-ratelimit-unified-7d-status",
                "allowed".to_string(),
            ),
            (
                "anthropic-ratelimit-unified-overage-status",
                "rejected".to_string(),
            ),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
    }
    response
}

/// A paced Messages stream in Anthropic's event grammar.
fn sse(model: String, input_tokens: u64, words: &[&'static str]) -> Response {
    let id = format!("msg_demo_{}", fastrand::u64(..));
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for w in words {
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}),
        ));
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": words.len() * 3}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    let stream = futures_util::stream::unfold(events.into_iter(), |mut events| async move {
        let (name, data) = events.next()?;
        tokio::time::sleep(Duration::from_millis(40 + fastrand::u64(0..60))).await;
        let frame = Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
        Some((Ok::<_, Infallible>(frame), events))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    r
}

async fn count_tokens(body: Bytes) -> Response {
    let mut r = Response::new(Body::from(
        json!({"input_tokens": body.len() / 4}).to_string(),
    ));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// The refresh grant: rotate the tokens of the login the refresh token names
/// (`demo-rt-<who>-<n>`).
async fn token(State(up): State<Arc<Upstream>>, body: Bytes) -> Response {
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(who) = request["refresh_token"]
        .as_str()
        .and_then(|t| t.strip_prefix("demo-rt-"))
        .and_then(|rest| rest.rsplit_once('-'))
        .map(|(who, _)| who.to_string())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown refresh token",
        );
    };
    let n = {
        let mut refreshes = up.refreshes.lock().unwrap_or_else(|p| p.into_inner());
        *refreshes += 1;
        *refreshes
    };
    let body = json!({
        "access_token": format!("demo-at-{who}-{n}"),
        "refresh_token": format!("demo-rt-{who}-{n}"),
        "expires_in": 8 * 3600,
        "token_type": "Bearer",
    });
    let mut r = Response::new(Body::from(body.to_string()));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}
