//! Masking secrets before anything reaches a log file: credential headers by name, and every
//! known secret (account keys and tokens, the proxy's auth key) plus anything shaped like an
//! Anthropic key wherever it appears in text.

use http::HeaderMap;
use neurolink_shared::secret::mask;
use serde_json::{Map, Value};

/// Header names whose values are always masked.
fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "x-api-key" | "cookie" | "set-cookie"
    ) || ["token", "secret", "key", "password", "credential", "auth"]
        .iter()
        .any(|w| n.contains(w))
}

/// Masks the secrets it was told about, and anything that looks like one.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    known: Vec<String>,
}

impl Redactor {
    pub fn new(known: impl IntoIterator<Item = String>) -> Self {
        let mut known: Vec<String> = known.into_iter().filter(|s| s.len() >= 8).collect();
        // Longest first, so a secret that contains another is masked whole.
        known.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { known }
    }

    /// `text` with every secret masked.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.known {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), &mask(s));
            }
        }
        mask_prefixed(&out, "sk-ant-")
    }

    pub fn headers(&self, headers: &HeaderMap) -> Value {
        let mut map = Map::new();
        for (name, value) in headers {
            let v = value
                .to_str()
                .map(str::to_string)
                .unwrap_or_else(|_| "<binary>".into());
            let v = if is_secret_header(name.as_str()) {
                mask(&v)
            } else {
                self.text(&v)
            };
            map.insert(name.as_str().to_string(), Value::String(v));
        }
        Value::Object(map)
    }
}

/// Mask every token that starts with `prefix` (up to the next character that cannot be in a key).
fn mask_prefixed(text: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        out.push_str(&rest[..i]);
        let token_len = rest[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len() - i);
        out.push_str(&mask(&rest[i..i + token_len]));
        rest = &rest[i + token_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_known_secrets_and_key_shaped_text() {
        let r = Redactor::new(["oat-secret-token-123456".to_string(), "short".to_string()]);
        let t =
            r.text("auth oat-secret-token-123456 and sk-ant-api03-abcdefghijklmnopqrstuvwxyz, bye");
        assert!(!t.contains("oat-secret-token-123456"), "{t}");
        assert!(!t.contains("abcdefghijklmnop"), "{t}");
        assert!(t.ends_with(", bye"), "{t}");
    }

    #[test]
    fn masks_credential_headers_by_name() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k-123456789012345678901234".parse().unwrap());
        h.insert(
            "authorization",
            "Bearer xyz-123456789012345678".parse().unwrap(),
        );
        h.insert(
            "x-goog-api-key",
            "g-123456789012345678901234".parse().unwrap(),
        );
        h.insert("anthropic-version", "2023-06-01".parse().unwrap());
        let v = Redactor::default().headers(&h);
        let text = v.to_string();
        assert!(!text.contains("123456789012345678"), "{text}");
        assert_eq!(v["anthropic-version"], "2023-06-01");
    }
}
