//! Answers the proxy itself produces, in Anthropic's error shape with a request id, so clients
//! and SDKs handle them like any API error.

use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, StatusCode};
use neurolink_shared::paths::Paths;

/// `{"type":"error","error":{"type":kind,"message":...},"request_id":id}` with a `request-id`
/// header. `id` is the request's own id, the one its request-log line carries.
pub fn anthropic(id: &str, status: StatusCode, kind: &str, message: &str) -> Response {
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
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("request-id", v);
    }
    r
}

/// A fresh id for an answer of the proxy's own (`req_nl_` + 24 random alphanumerics).
pub fn request_id() -> String {
    const ALPHANUMERIC: &[u8; 62] =
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = *b"req_nl_000000000000000000000000";
    // Three 64-bit draws, eight characters from each (48 of its 64 bits; what is left after
    // seven divisions by 62 is still above 5 million, so no character is noticeably biased).
    // One draw per character cost most of this function, and pushing `char`s onto a `String`
    // half of what was left: the bytes are written in place and checked once.
    for draw in id[7..].chunks_exact_mut(8) {
        let mut r = fastrand::u64(..);
        for c in draw {
            *c = ALPHANUMERIC[(r % 62) as usize];
            r /= 62;
        }
    }
    String::from_utf8_lossy(&id).into_owned()
}

/// Why no account can take a request right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The pool is empty.
    NoAccounts,
    /// Every account that could serve is cooling; the first is free again in this long.
    AllCooling { retry_after_ms: u64 },
    /// Every account that could serve cools because Anthropic refused its credential.
    AllRefused { retry_after_ms: u64 },
    /// Every account that could serve is disabled.
    AllDisabled,
    /// No enabled account may serve `model`: these `excludedModels` patterns match it.
    Excluded {
        model: String,
        patterns: Vec<String>,
    },
}

impl Refusal {
    /// The `errorClass` of the request-log line.
    pub fn class(&self) -> &'static str {
        match self {
            Refusal::NoAccounts => "no_accounts",
            Refusal::AllCooling { .. } => "all_cooling",
            Refusal::AllRefused { .. } => "all_refused",
            Refusal::AllDisabled => "all_disabled",
            Refusal::Excluded { .. } => "model_excluded",
        }
    }

    pub fn response(&self, id: &str, paths: &Paths) -> Response {
        match self {
            Refusal::NoAccounts => no_accounts(id, paths),
            Refusal::AllCooling { retry_after_ms } => {
                all_cooling(id, retry_after_ms.div_ceil(1000).max(1))
            }
            Refusal::AllRefused { retry_after_ms } => anthropic(
                id,
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                &format!(
                    "Anthropic refused every account's credential (401/403); each waits {} s before \
                     it is tried again. Check them with `neurolink auth status`; log in again with \
                     `neurolink auth login anthropic` or fix the API keys in the config.",
                    retry_after_ms.div_ceil(1000).max(1)
                ),
            ),
            Refusal::AllDisabled => all_disabled(id),
            Refusal::Excluded { model, patterns } => anthropic(
                id,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!(
                    "no account of this proxy may serve `{model}`: excludedModels {} keep it off \
                     every enabled account (see the config's accounts.anthropic[].excludedModels)",
                    patterns
                        .iter()
                        .map(|p| format!("`{p}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
    }
}

/// No account at all. Names the config file of this home, and says that a login or a config
/// edit is picked up live.
fn no_accounts(id: &str, paths: &Paths) -> Response {
    anthropic(
        id,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        &format!(
            "neurolink has no Anthropic account to use. Add one and the running proxy picks it up \
             within a second: run `neurolink auth login anthropic`, or list keys under \
             accounts.anthropic in {} (ANTHROPIC_API_KEY is read only when the proxy starts).",
            paths.home.join("proxy-config.yaml").display()
        ),
    )
}

/// Every account is cooling: 429 with `retry-after` until the earliest recovers.
fn all_cooling(id: &str, retry_after_secs: u64) -> Response {
    let mut r = anthropic(
        id,
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

fn all_disabled(id: &str) -> Response {
    anthropic(
        id,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "every account that could serve this request is disabled; see `neurolink proxy status` \
         for why, and `neurolink auth enable LABEL` or log in again",
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_31_characters_random_alphanumerics() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| super::request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 31, "{id}");
            let tail = id.strip_prefix("req_nl_").expect("prefix");
            assert!(tail.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        }
        // Every position varies (no character stuck at '0' for lack of random bits).
        for pos in 7..31 {
            let seen: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[pos]).collect();
            assert!(seen.len() > 30, "position {pos}: {} distinct", seen.len());
        }
    }
}
