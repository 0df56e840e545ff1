//! Answers the proxy itself produces, in Anthropic's error shape with a request id, so clients
//! and SDKs handle them like any API error.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode};

/// `{"type":"error","error":{"type":kind,"message":...},"request_id":...}` with a `request-id`
/// header.
pub fn anthropic(status: StatusCode, kind: &str, message: &str) -> Response {
    let id = request_id();
    let body = serde_json::json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": id,
    });
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("request-id", v);
    }
    r
}

/// A fresh id for an answer of the proxy's own (`req_nl_` + 24 random alphanumerics).
pub fn request_id() -> String {
    let mut id = String::with_capacity(31);
    id.push_str("req_nl_");
    for _ in 0..24 {
        id.push(fastrand::alphanumeric());
    }
    id
}

pub fn no_accounts() -> Response {
    anthropic(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "neurolink has no Anthropic account to use. Add one: export ANTHROPIC_API_KEY before \
         `neurolink proxy start`, list keys under accounts.anthropic in ~/.neurolink/proxy-config.yaml, \
         or run `neurolink auth login anthropic`; then restart the proxy.",
    )
}

/// Every account is cooling: 429 with `retry-after` until the earliest recovers.
pub fn all_cooling(retry_after_secs: u64) -> Response {
    let mut r = anthropic(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        &format!(
            "every account is rate limited; the first one is usable again in {retry_after_secs} s"
        ),
    );
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs),
    );
    r
}

pub fn all_disabled() -> Response {
    anthropic(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "every account that could serve this request is disabled or excluded for this model; \
         see `curl http://<proxy>/status` for why, and `neurolink auth enable LABEL` or log in again",
    )
}
