//! One upstream answer reduced to one [`Outcome`]. This is the only place that reads upstream
//! status codes and error bodies to decide what happened; the pool decides what that costs the
//! account (`pool::cooldown`), and the request path only asks [`Outcome::next_step`].

use std::time::Duration;

use http::{HeaderMap, StatusCode};

/// What one attempt on one account produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx with a first non-empty chunk.
    Success,
    /// 429: the account is rate limited. `retry_after` from the header (seconds or HTTP date).
    RateLimited { retry_after: Option<Duration> },
    /// 429 with no rate-limit headers and message `"Error"`: Anthropic refusing this request on
    /// policy grounds (see docs/oauth.md). Every account would get the same answer.
    PolicyRejected,
    /// The account has no credit for this request (`out_of_credits` in the unified overage
    /// headers). Model- or beta-scoped: another account may serve it; this one is not benched.
    OutOfCredits { status: u16 },
    /// 401, 402, 403: this credential cannot be used right now.
    AuthRejected { status: u16 },
    /// An answer no other account would change: the request itself is wrong (404, 400/422
    /// `invalid_request_error`, other 4xx) or a status the policy table does not list.
    Unretryable { status: u16 },
    /// The service had a problem not tied to this account (408, 5xx, 520-526, 529, 400 with
    /// `api_error`/`overloaded_error`).
    Transient { status: u16 },
    /// Connect failure, reset, or a timeout (connect, headers, idle).
    Network { kind: NetworkKind },
    /// 2xx whose body ended before any byte.
    EmptyStream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkKind {
    Connect,
    Timeout,
    Io,
}

/// What the request path does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Give this answer to the client.
    Answer,
    /// Try the next account.
    NextAccount,
}

impl Outcome {
    pub fn next_step(&self) -> NextStep {
        match self {
            Outcome::Success | Outcome::PolicyRejected | Outcome::Unretryable { .. } => {
                NextStep::Answer
            }
            Outcome::RateLimited { .. }
            | Outcome::OutOfCredits { .. }
            | Outcome::AuthRejected { .. }
            | Outcome::Transient { .. }
            | Outcome::Network { .. }
            | Outcome::EmptyStream => NextStep::NextAccount,
        }
    }

    /// A short stable name for counters and logs.
    pub fn class(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::RateLimited { .. } => "rate_limit",
            Outcome::PolicyRejected => "policy_rejected",
            Outcome::OutOfCredits { .. } => "out_of_credits",
            Outcome::AuthRejected { .. } => "auth",
            Outcome::Unretryable { .. } => "unretryable",
            Outcome::Transient { .. } => "server_error",
            Outcome::Network {
                kind: NetworkKind::Timeout,
            } => "timeout",
            Outcome::Network { .. } => "network",
            Outcome::EmptyStream => "empty_stream",
        }
    }
}

/// Classify a non-2xx answer from its status, headers and (small, fully read) body.
pub fn classify_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: std::time::SystemTime,
) -> Outcome {
    let code = status.as_u16();
    let error_type = error_type(body);
    if is_out_of_credits(headers) {
        return Outcome::OutOfCredits { status: code };
    }
    match code {
        429 if is_policy_rejection(headers, body) => Outcome::PolicyRejected,
        429 => Outcome::RateLimited {
            retry_after: retry_after(headers, now),
        },
        401..=403 => Outcome::AuthRejected { status: code },
        400 if matches!(
            error_type.as_deref(),
            Some("api_error" | "overloaded_error")
        ) =>
        {
            Outcome::Transient { status: code }
        }
        408 | 500 | 502 | 503 | 504 | 520..=526 | 529 => Outcome::Transient { status: code },
        _ if error_type.as_deref() == Some("overloaded_error") => {
            Outcome::Transient { status: code }
        }
        _ => Outcome::Unretryable { status: code },
    }
}

/// `out_of_credits` in `anthropic-ratelimit-unified-overage-status` or
/// `-overage-disabled-reason` (better-ccflare `isAnthropicOutOfCredits`).
fn is_out_of_credits(headers: &HeaderMap) -> bool {
    [
        "anthropic-ratelimit-unified-overage-status",
        "anthropic-ratelimit-unified-overage-disabled-reason",
    ]
    .iter()
    .any(|h| {
        headers
            .get(*h)
            .is_some_and(|v| v.as_bytes() == b"out_of_credits")
    })
}

/// `error.type` of an Anthropic error body, if it is one.
/// A 2xx stream whose first event is `error` (Anthropic sends `overloaded_error` that way, after
/// the headers): nothing reached the client yet, so it is classified like the status the error
/// stands for. Returns the outcome and that status, for the answer if no account does better.
pub fn classify_first_event_error(data: &[u8]) -> (Outcome, StatusCode) {
    let status = match error_type(data).as_deref() {
        Some("overloaded_error") => 529,
        Some("rate_limit_error") => 429,
        Some("authentication_error") => 401,
        Some("permission_error") => 403,
        Some("invalid_request_error") => 400,
        Some("not_found_error") => 404,
        Some("request_too_large") => 413,
        _ => 500,
    };
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let outcome = match status {
        429 => Outcome::RateLimited { retry_after: None },
        401 | 403 => Outcome::AuthRejected { status },
        400 | 404 | 413 => Outcome::Unretryable { status },
        _ => Outcome::Transient { status },
    };
    (outcome, code)
}

pub fn error_type(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<Body>(body)
        .ok()
        .map(|b| b.error.kind)
}

/// The policy rejection: no `retry-after`, no `anthropic-ratelimit-*` header, and a body with
/// `rate_limit_error` whose message is exactly `"Error"` (neurolink `claudeProxyRoutes.ts`).
fn is_policy_rejection(headers: &HeaderMap, body: &[u8]) -> bool {
    if headers.contains_key(http::header::RETRY_AFTER)
        || headers
            .keys()
            .any(|k| k.as_str().starts_with("anthropic-ratelimit-"))
    {
        return false;
    }
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "type")]
        kind: String,
        message: String,
    }
    serde_json::from_slice::<Body>(body)
        .is_ok_and(|b| b.error.kind == "rate_limit_error" && b.error.message == "Error")
}

/// `retry-after` as seconds or an HTTP date. A date in the past means "now" (zero).
pub fn retry_after(headers: &HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let raw = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = raw.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_millis((secs * 1000.0) as u64));
        }
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn classify(status: u16, h: &[(&str, &str)], body: &str) -> Outcome {
        classify_error(
            StatusCode::from_u16(status).unwrap(),
            &headers(h),
            body.as_bytes(),
            UNIX_EPOCH,
        )
    }

    fn err(kind: &str, msg: &str) -> String {
        format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"{msg}"}}}}"#)
    }

    #[test]
    fn rate_limit_reads_retry_after_seconds_and_dates() {
        assert_eq!(
            classify(
                429,
                &[("retry-after", "7")],
                &err("rate_limit_error", "slow down")
            ),
            Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify(429, &[], &err("rate_limit_error", "slow down")),
            Outcome::RateLimited { retry_after: None }
        );
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let h = headers(&[("retry-after", &date)]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(90)));
        let past = headers(&[(
            "retry-after",
            &httpdate::fmt_http_date(now - Duration::from_secs(5)),
        )]);
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
    }

    #[test]
    fn policy_rejection_needs_no_headers_and_message_error() {
        let body = err("rate_limit_error", "Error");
        assert_eq!(classify(429, &[], &body), Outcome::PolicyRejected);
        // Any rate-limit header makes it a real rate limit.
        assert!(matches!(
            classify(
                429,
                &[("anthropic-ratelimit-unified-status", "rejected")],
                &body
            ),
            Outcome::RateLimited { .. }
        ));
        assert!(matches!(
            classify(429, &[("retry-after", "1")], &body),
            Outcome::RateLimited { .. }
        ));
        assert!(matches!(
            classify(429, &[], &err("rate_limit_error", "Errors")),
            Outcome::RateLimited { .. }
        ));
        assert_eq!(Outcome::PolicyRejected.next_step(), NextStep::Answer);
    }

    #[test]
    fn out_of_credits_moves_on_without_blame() {
        let o = classify(
            429,
            &[(
                "anthropic-ratelimit-unified-overage-disabled-reason",
                "out_of_credits",
            )],
            &err("rate_limit_error", "no credit"),
        );
        assert_eq!(o, Outcome::OutOfCredits { status: 429 });
        assert_eq!(o.next_step(), NextStep::NextAccount);
        let o = classify(
            400,
            &[(
                "anthropic-ratelimit-unified-overage-status",
                "out_of_credits",
            )],
            "{}",
        );
        assert_eq!(o, Outcome::OutOfCredits { status: 400 });
    }

    #[test]
    fn auth_statuses_rotate() {
        for s in [401, 402, 403] {
            let o = classify(s, &[], &err("authentication_error", "bad"));
            assert_eq!(o, Outcome::AuthRejected { status: s });
            assert_eq!(o.next_step(), NextStep::NextAccount);
        }
    }

    #[test]
    fn request_errors_go_back_at_once() {
        for (s, kind) in [
            (404, "not_found_error"),
            (400, "invalid_request_error"),
            (422, "invalid_request_error"),
            (413, "request_too_large"),
        ] {
            let o = classify(s, &[], &err(kind, "x"));
            assert_eq!(o, Outcome::Unretryable { status: s }, "{s}");
            assert_eq!(o.next_step(), NextStep::Answer);
        }
    }

    #[test]
    fn transient_statuses_rotate_without_blame() {
        for s in [
            408, 500, 502, 503, 504, 520, 521, 522, 523, 524, 525, 526, 529,
        ] {
            let o = classify(s, &[], "upstream broke");
            assert_eq!(o, Outcome::Transient { status: s }, "{s}");
            assert_eq!(o.next_step(), NextStep::NextAccount);
        }
        assert_eq!(
            classify(400, &[], &err("api_error", "x")),
            Outcome::Transient { status: 400 }
        );
        assert_eq!(
            classify(400, &[], &err("overloaded_error", "x")),
            Outcome::Transient { status: 400 }
        );
        assert_eq!(classify(501, &[], ""), Outcome::Unretryable { status: 501 });
        assert_eq!(classify(505, &[], ""), Outcome::Unretryable { status: 505 });
        assert_eq!(classify(527, &[], ""), Outcome::Unretryable { status: 527 });
    }

    #[test]
    fn network_and_empty_rotate() {
        assert_eq!(
            Outcome::Network {
                kind: NetworkKind::Timeout
            }
            .next_step(),
            NextStep::NextAccount
        );
        assert_eq!(Outcome::EmptyStream.next_step(), NextStep::NextAccount);
    }
}
