//! A string that holds a credential and cannot be printed by accident.

use std::fmt;

/// An API key, OAuth token or proxy auth key. `Debug` and `Display` show only [`mask`]; the value
/// is reached through [`Secret::expose`], which is easy to grep for.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the one place that must send it (an upstream header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Show enough of a secret to tell two apart, never enough to use one: the well-known prefix
/// (`sk-ant-api03-`, `sk-ant-oat01-`...), the last 4, and the length. Secrets
/// shorter than 24 characters are fully hidden, since 16 revealed characters would be most of them.
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < 24 {
        return format!("****({} chars)", chars.len());
    }
    // The prefix is the text up to the last `-` within the first 13 characters: the non-secret
    // `sk-ant-<kind>-` part of Anthropic's keys and tokens.
    let head: String = chars.iter().take(13).collect();
    let visible = head.rfind('-').map_or(0, |i| i + 1);
    let start: String = chars.iter().take(visible).collect();
    let end: String = chars[chars.len() - 4..].iter().collect();
    format!("{start}…{end}({} chars)", chars.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_anthropic_keys_keeping_prefix_and_tail() {
        let key = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789WXYZ";
        let m = mask(key);
        assert_eq!(m, format!("sk-ant-api03-…WXYZ({} chars)", key.len()));
        assert!(!m.contains("abcdefghij"));
    }

    #[test]
    fn short_secrets_are_fully_hidden() {
        assert_eq!(mask("hunter2"), "****(7 chars)");
        assert_eq!(format!("{:?}", Secret::new("abc")), "****(3 chars)");
    }

    #[test]
    fn unprefixed_long_secret_shows_only_tail() {
        let m = mask("abcdefghijklmnopqrstuvwxyz123456");
        assert_eq!(m, "…3456(32 chars)");
    }
}
