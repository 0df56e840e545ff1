//! Header rules of the passthrough (docs/design.md §5): what goes upstream, what comes back.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::pool::Credential;

/// The beta that Bearer (OAuth) calls must carry.
pub const OAUTH_BETA: &str = "oauth-2025-04-20";
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
const USER_AGENT: &str = concat!("neurolink-rs/", env!("CARGO_PKG_VERSION"));

// Names made once: inserting a `&str` name builds (allocates) a new one each time.
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Connection-scoped headers (RFC 9110 §7.6.1) that never cross a proxy. Names hyper knows are
/// compared as names (a tag compare), the rest as text.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str().starts_with("proxy-")
}

/// Request headers the proxy sets itself (or, for `accept-encoding`, replaces).
fn replaced_upstream(name: &HeaderName) -> bool {
    [
        header::HOST,
        header::CONTENT_LENGTH,
        header::AUTHORIZATION,
        header::ACCEPT_ENCODING,
        X_API_KEY,
    ]
    .contains(name)
}

/// Header names listed in the client's `Connection` header are hop-by-hop too.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The headers to send upstream: the client's own, minus hop-by-hop headers, `host`,
/// `content-length` (recomputed) and both credential headers, plus this account's credential.
///
/// `accept-encoding` is replaced by `identity`: the proxy reads usage from the answer as it
/// passes, and must never hand the client bytes whose encoding does not match the
/// `content-encoding` it forwards. On the proxy's loopback hop compression buys nothing.
pub fn upstream(client: &HeaderMap, credential: &Credential) -> HeaderMap {
    let listed = connection_listed(client);
    let mut out = HeaderMap::with_capacity(client.len() + 3);
    for (name, value) in client {
        if replaced_upstream(name)
            || is_hop_by_hop(name)
            || listed.iter().any(|l| l == name.as_str())
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if !out.contains_key(&ANTHROPIC_VERSION) {
        out.insert(
            ANTHROPIC_VERSION,
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
        );
    }
    if !out.contains_key(header::USER_AGENT) {
        out.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    }
    match credential {
        Credential::ApiKey(key) => {
            if let Some(v) = key.header() {
                out.insert(X_API_KEY, v);
            }
        }
        Credential::OAuth(cell) => {
            if let Some(v) = cell.bearer() {
                out.insert(header::AUTHORIZATION, v);
            }
            ensure_beta(&mut out, OAUTH_BETA);
        }
    }
    out
}

/// The client's own `content-length` when it is exactly `len` in plain digits: the body goes
/// upstream as it came, and its header value is shared rather than formatted again for each
/// request (the HTTP clients make a new one when the header is missing). `None` when the body
/// changed (a renamed model), came chunked, or the value is written any other way.
pub fn length_of(client: &HeaderMap, len: usize) -> Option<HeaderValue> {
    let value = client.get(header::CONTENT_LENGTH)?;
    let digits = value.as_bytes();
    let mut rest = len;
    for &d in digits.iter().rev() {
        if d != b'0' + (rest % 10) as u8 {
            return None;
        }
        rest /= 10;
    }
    // All of `len`'s digits, and no leading zero (`0` itself is one digit).
    let canonical = rest == 0 && (digits.len() == 1 || digits.first().is_some_and(|d| *d != b'0'));
    canonical.then(|| value.clone())
}

/// A credential as a header value, marked sensitive (its `Debug` shows no secret, and HTTP/2
/// keeps it out of header compression); `None` when it holds bytes a header cannot.
pub fn sensitive(secret: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(secret).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// Make sure `beta` is in `anthropic-beta`, keeping the client's list and order, merging several
/// header lines into one and dropping duplicates.
pub fn ensure_beta(headers: &mut HeaderMap, beta: &str) {
    // Most requests need no change (Claude Code's one line already lists it) or only the
    // beta itself (no line): neither needs the list taken apart.
    let mut lines = headers.get_all(&ANTHROPIC_BETA).iter();
    match (lines.next(), lines.next()) {
        (None, _) => {
            if let Ok(v) = HeaderValue::from_str(beta) {
                headers.insert(ANTHROPIC_BETA, v);
            }
            return;
        }
        (Some(line), None) if canonical_with(line.as_bytes(), beta.as_bytes()) => return,
        _ => {}
    }
    merge_betas(headers, beta);
}

/// [`ensure_beta`] the long way: every line taken apart and the list written again.
fn merge_betas(headers: &mut HeaderMap, beta: &str) {
    let mut betas: Vec<String> = Vec::new();
    for v in headers
        .get_all(&ANTHROPIC_BETA)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for b in v.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            if !betas.iter().any(|x| x == b) {
                betas.push(b.to_string());
            }
        }
    }
    if !betas.iter().any(|b| b == beta) {
        betas.push(beta.to_string());
    }
    if let Ok(v) = HeaderValue::from_str(&betas.join(",")) {
        headers.insert(ANTHROPIC_BETA, v);
    }
}

/// Whether a beta list is already what [`ensure_beta`] would make of it: text a header can
/// carry, items joined by bare commas, none empty, none padded, none twice, `beta` among them.
/// One pass over the bytes; a list of more than 16 items takes the long way.
fn canonical_with(line: &[u8], beta: &[u8]) -> bool {
    // What `HeaderValue::to_str` accepts (the long way skips a line it refuses).
    if !line
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return false;
    }
    let mut items: [&[u8]; 16] = [&[]; 16];
    let mut n = 0;
    let mut start = 0;
    for end in memchr::memchr_iter(b',', line).chain([line.len()]) {
        let item = &line[start..end];
        if item.is_empty()
            || item[0].is_ascii_whitespace()
            || item[item.len() - 1].is_ascii_whitespace()
            || n == items.len()
            || items[..n].contains(&item)
        {
            return false;
        }
        items[n] = item;
        n += 1;
        start = end + 1;
    }
    items[..n].contains(&beta)
}

/// Upstream response headers for the client: everything but hop-by-hop headers. `request-id`,
/// `retry-after` and every `anthropic-ratelimit-*` header pass through with the rest. The map
/// is kept and pruned (rarely anything to remove), not copied.
pub fn downstream(mut upstream: HeaderMap) -> HeaderMap {
    let listed = connection_listed(&upstream);
    let gone: Vec<HeaderName> = upstream
        .keys()
        .filter(|name| is_hop_by_hop(name) || listed.iter().any(|l| l == name.as_str()))
        .cloned()
        .collect();
    for name in gone {
        upstream.remove(name);
    }
    upstream
}

/// The credential a client presented to the proxy: `x-api-key`, else `Authorization: Bearer`.
pub fn client_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get(&X_API_KEY).and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use neurolink_shared::Secret;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn the_clients_length_is_reused_only_when_it_is_the_bodys_in_plain_digits() {
        let length = |v: &str, len| length_of(&h(&[("content-length", v)]), len);
        assert_eq!(length("123", 123).expect("reused"), "123");
        assert_eq!(length("0", 0).expect("reused"), "0");
        assert_eq!(length("1048576", 1_048_576).expect("reused"), "1048576");
        // The body changed, or the value is not the body's length as plain digits.
        for (v, len) in [
            ("124", 123),
            ("12", 123),
            ("1123", 123),
            ("0123", 123),
            ("00", 0),
        ] {
            assert!(length(v, len).is_none(), "{v} for {len}");
        }
        assert!(length("", 0).is_none());
        assert!(length_of(&HeaderMap::new(), 0).is_none());
    }

    #[test]
    fn the_beta_shortcuts_give_what_the_long_way_gives() {
        let cases: &[&[&str]] = &[
            &[],
            &["oauth-2025-04-20"],
            &["claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14"],
            &["claude-code-20250219"],
            &["claude-code-20250219, oauth-2025-04-20"],
            &["oauth-2025-04-20,oauth-2025-04-20"],
            &["a,,oauth-2025-04-20"],
            &["oauth-2025-04-20,"],
            &[" oauth-2025-04-20"],
            &["a,oauth-2025-04-20,a"],
            &["oauth-2025-04-20x"],
            &["a", "oauth-2025-04-20"],
            &["oauth-2025-04-20", "oauth-2025-04-20"],
            &["a\tb,oauth-2025-04-20"],
            &["oauth-2025-04-20,\u{e9}t\u{e9}"],
            &[","],
            &[""],
            &["a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,oauth-2025-04-20"],
        ];
        for lines in cases {
            let pairs: Vec<(&str, &str)> = lines.iter().map(|l| ("anthropic-beta", *l)).collect();
            let mut short = h(&pairs);
            ensure_beta(&mut short, OAUTH_BETA);
            let mut long = h(&pairs);
            merge_betas(&mut long, OAUTH_BETA);
            let all = |m: &HeaderMap| -> Vec<String> {
                m.get_all("anthropic-beta")
                    .iter()
                    .map(|v| v.to_str().unwrap_or_default().to_string())
                    .collect()
            };
            assert_eq!(all(&short), all(&long), "{lines:?}");
        }
    }

    #[test]
    fn the_bearer_value_follows_the_token_and_hides_it() {
        let tokens = |access: &str| crate::auth::Tokens {
            access: Secret::new(access),
            refresh: None,
            expires_at_ms: 0,
        };
        let cell = std::sync::Arc::new(crate::auth::OAuthCell::new(
            tokens("at-1"),
            crate::auth::Persist::Legacy,
        ));
        let cred = Credential::OAuth(cell.clone());
        let out = upstream(&HeaderMap::new(), &cred);
        assert_eq!(out["authorization"], "Bearer at-1");
        assert!(out["authorization"].is_sensitive());
        // A refresh replaces the value the next request sends.
        cell.set(tokens("at-2"));
        assert_eq!(
            upstream(&HeaderMap::new(), &cred)["authorization"],
            "Bearer at-2"
        );
        assert!(!format!("{cell:?}").contains("at-2"), "{cell:?}");
    }

    #[test]
    fn api_key_swap_strips_client_credentials_and_hop_by_hop() {
        let client = h(&[
            ("x-api-key", "client-key"),
            ("authorization", "Bearer client-token"),
            ("host", "127.0.0.1:55669"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "x"),
            ("transfer-encoding", "chunked"),
            ("content-length", "10"),
            ("accept-encoding", "gzip, br"),
            ("anthropic-version", "2026-10-21"),
            ("anthropic-beta", "claude-code-20250219"),
            ("x-stainless-os", "Linux"),
            ("user-agent", "claude-cli/2.1.332"),
        ]);
        let out = upstream(&client, &Credential::api_key(Secret::new("sk-account")));
        assert_eq!(out["x-api-key"], "sk-account");
        assert!(!out.contains_key("authorization"));
        for gone in [
            "host",
            "connection",
            "x-private",
            "keep-alive",
            "proxy-authorization",
            "transfer-encoding",
            "content-length",
        ] {
            assert!(!out.contains_key(gone), "{gone} must not go upstream");
        }
        assert_eq!(out["accept-encoding"], "identity");
        assert_eq!(
            out["anthropic-version"], "2026-10-21",
            "the client's version is kept"
        );
        assert_eq!(
            out["anthropic-beta"], "claude-code-20250219",
            "no OAuth beta for API keys"
        );
        assert_eq!(out["x-stainless-os"], "Linux");
        assert_eq!(out["user-agent"], "claude-cli/2.1.332");
    }

    #[test]
    fn oauth_uses_bearer_and_merges_the_beta() {
        let client = h(&[
            ("x-api-key", "client"),
            ("anthropic-beta", "a,b"),
            ("anthropic-beta", "b, c"),
        ]);
        let tokens = crate::auth::Tokens {
            access: Secret::new("oat"),
            refresh: None,
            expires_at_ms: i64::MAX,
        };
        let cell = crate::auth::OAuthCell::new(tokens, crate::auth::Persist::Legacy);
        let cred = Credential::OAuth(std::sync::Arc::new(cell));
        let out = upstream(&client, &cred);
        assert_eq!(out["authorization"], "Bearer oat");
        assert!(!out.contains_key("x-api-key"));
        assert_eq!(out["anthropic-beta"], "a,b,c,oauth-2025-04-20");
        assert_eq!(out["anthropic-version"], "2023-06-01", "filled when absent");
        assert!(out["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("neurolink-rs/"));
        let mut already = h(&[("anthropic-beta", "oauth-2025-04-20,x")]);
        ensure_beta(&mut already, OAUTH_BETA);
        assert_eq!(already["anthropic-beta"], "oauth-2025-04-20,x");
    }

    #[test]
    fn response_headers_keep_rate_limits_and_drop_hop_by_hop() {
        let up = h(&[
            ("request-id", "req_1"),
            ("retry-after", "3"),
            ("anthropic-ratelimit-unified-5h-utilization", "0.4"),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/event-stream"),
        ]);
        let out = downstream(up);
        for kept in [
            "request-id",
            "retry-after",
            "anthropic-ratelimit-unified-5h-utilization",
            "content-type",
        ] {
            assert!(out.contains_key(kept), "{kept}");
        }
        assert!(!out.contains_key("connection") && !out.contains_key("transfer-encoding"));
    }

    #[test]
    fn client_key_from_either_header() {
        assert_eq!(client_key(&h(&[("x-api-key", "k1")])), Some("k1"));
        assert_eq!(
            client_key(&h(&[("authorization", "Bearer k2")])),
            Some("k2")
        );
        assert_eq!(client_key(&h(&[])), None);
    }
}
