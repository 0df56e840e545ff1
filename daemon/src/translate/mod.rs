//! Translation between Claude's Messages API and other providers' APIs, for model mappings and
//! the fallback chain.
//!
//! Everything here is pure: a Claude request in, the provider's request out; a provider answer
//! (whole, or as stream chunks arrive) in, Claude's answer out. Nothing here does I/O, so each
//! mapping is pinned by snapshot tests and the stream converters by property tests. The
//! field-by-field rules are in `docs/translation.md`.
//!
//! - [`claude_events`]: the one writer of Claude's SSE grammar, shared by every provider.
//! - [`sse`]: splits a provider's SSE bytes into `data` payloads, whatever the chunking.
//! - [`openai`]: Chat Completions (OpenAI and OpenAI-compatible servers).
//! - [`gemini`]: Gemini `generateContent` / `streamGenerateContent`.
//! - [`schema`]: JSON Schema cleaning for providers that accept only a subset.
//! - [`chat`]: the other way round, for the proxy's own OpenAI-compatible endpoint.
//! - [`claude`]: reading the parts of a Claude request every translation needs.

pub mod chat;
pub mod claude;
pub mod claude_events;
#[cfg(test)]
mod fixtures;
pub mod gemini;
pub mod openai;
pub mod schema;
pub mod sse;

/// Claude's `stop_reason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    Refusal,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopSequence => "stop_sequence",
            StopReason::ToolUse => "tool_use",
            StopReason::Refusal => "refusal",
        }
    }
}

/// Tokens of one answer, in Claude's terms: `input` excludes what was read from a cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
}

/// A translated request: what to send, and where on the provider.
#[derive(Debug, Clone)]
pub struct ProviderRequest {
    /// Path (and query) below the provider's base URL.
    pub path: String,
    pub body: serde_json::Value,
}

/// A whole Claude message answering as `model`: the shape every provider's whole answer becomes.
pub fn claude_message(
    model: &str,
    content: Vec<serde_json::Value>,
    stop: StopReason,
    u: TokenUsage,
) -> serde_json::Value {
    serde_json::json!({
        "id": new_id("msg_"), "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop.as_str(), "stop_sequence": null,
        "usage": {"input_tokens": u.input, "output_tokens": u.output,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": u.cache_read}
    })
}

/// The message of a provider's error body (`error.message`), else the start of the body as text.
pub fn error_detail(v: &serde_json::Value, body: &[u8]) -> String {
    v["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
}

/// A fresh Claude-style id: `prefix` + 24 random alphanumerics (`msg_…`, `toolu_…`).
pub fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    for _ in 0..24 {
        id.push(fastrand::alphanumeric());
    }
    id
}

/// A provider's failure, as the client will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// The HTTP status the client gets (Anthropic's meaning).
    pub status: u16,
    /// Anthropic's error type (`rate_limit_error`, `overloaded_error`, ...).
    pub kind: &'static str,
    pub message: String,
    /// Seconds the provider asked to wait, when it said.
    pub retry_after: Option<u64>,
}

impl ProviderError {
    /// A stream chunk of `provider`'s that is not the JSON it should be.
    pub fn bad_chunk(provider: &str, e: &serde_json::Error) -> Self {
        Self {
            status: 502,
            kind: "api_error",
            message: format!("{provider}: a stream chunk is not JSON ({e})"),
            retry_after: None,
        }
    }
}

/// Anthropic's error type and status for a provider's HTTP status, the same for every provider.
pub fn anthropic_error_kind(status: u16) -> (u16, &'static str) {
    match status {
        400 | 422 => (400, "invalid_request_error"),
        401 => (401, "authentication_error"),
        402 => (402, "billing_error"),
        403 => (403, "permission_error"),
        404 => (404, "not_found_error"),
        408 | 504 => (504, "timeout_error"),
        413 => (413, "request_too_large"),
        429 => (429, "rate_limit_error"),
        503 | 529 => (529, "overloaded_error"),
        _ => (500, "api_error"),
    }
}
