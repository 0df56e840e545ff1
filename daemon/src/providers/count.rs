//! `count_tokens` for models a provider serves: a real count, never characters / 4.
//!
//! Gemini counts itself (`:countTokens` on the translated request). OpenAI has no count endpoint,
//! so the translated request is counted locally with OpenAI's own tokenizer (`o200k_base` for the
//! gpt-4o, gpt-4.1, gpt-5 and o-series families, `cl100k_base` for gpt-4 and gpt-3.5), plus the
//! per-message overhead OpenAI documents. OpenAI-compatible servers run other models whose
//! tokenizer is unknown here: they get `o200k_base`, and the header says it is an approximation.
//! The answer's `x-neurolink-token-count` header says which count was used.

use std::sync::OnceLock;

use axum::body::Body;
use axum::response::Response;
use http::HeaderValue;
use neurolink_shared::ipc::AttemptRecord;
use serde_json::{json, Value};
use tiktoken_rs::CoreBPE;

use crate::passthrough::record::Draft;
use crate::passthrough::Inbound;
use crate::upstream::Failure;

use super::{Kind, Link};
use crate::server::{App, Runtime};
use crate::translate::{gemini, openai, ProviderError};

/// Tokens OpenAI adds per message (role and separators) and to prime the answer.
const PER_MESSAGE: u64 = 3;
const REPLY_PRIMER: u64 = 3;
/// An image part, at low detail.
const IMAGE_TOKENS: u64 = 85;

/// A count and how it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub input_tokens: u64,
    /// `gemini-count-tokens`, `tiktoken-o200k_base`, `tiktoken-cl100k_base`, or
    /// `tiktoken-o200k_base-approximate`.
    pub method: String,
}

/// Count Claude request `claude` as `link` would see it.
pub async fn count(
    app: &App,
    rt: &Runtime,
    link: &Link,
    claude: &Value,
) -> Result<Count, ProviderError> {
    match link.provider.kind {
        Kind::Gemini => gemini_count(app, rt, link, claude).await,
        Kind::OpenAi => {
            let body = openai::request(claude, &link.model, false).body;
            let exact = link.provider.name == "openai";
            let (bpe, name) = tokenizer(&link.model);
            let bpe = bpe.map_err(|e| ProviderError {
                status: 500,
                kind: "api_error",
                message: format!("the {name} tokenizer could not be loaded: {e}"),
                retry_after: None,
            })?;
            Ok(Count {
                input_tokens: openai_tokens(bpe, &body),
                method: if exact {
                    format!("tiktoken-{name}")
                } else {
                    format!("tiktoken-{name}-approximate")
                },
            })
        }
    }
}

/// Answer `count_tokens` from the first of `links` that can count; the draft back with the last
/// failure when none could.
pub async fn serve(
    app: &std::sync::Arc<App>,
    rt: &Runtime,
    mut draft: Draft,
    req: &Inbound,
    links: &[Link],
) -> Result<Response, (Draft, Option<Failure>)> {
    let claude = match super::claude_request(&req.body) {
        Ok(v) => v,
        Err(e) => return Err((draft, Some(Failure::Provider(e)))),
    };
    let mut last = None;
    for link in links {
        let label = link.label();
        if app.provider_stats.cooling(&label, app.now_ms()) {
            continue;
        }
        match count(app, rt, link, &claude).await {
            Ok(c) => {
                draft.attempts.push(AttemptRecord {
                    account: label.into(),
                    outcome: "success".into(),
                });
                draft.fallback_provider = Some(link.provider.name.clone());
                let mut r = Response::new(Body::from(
                    json!({"input_tokens": c.input_tokens}).to_string(),
                ));
                let h = r.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                for (name, value) in [
                    ("x-neurolink-token-count", c.method.as_str()),
                    ("x-neurolink-provider", link.provider.name.as_str()),
                    ("x-neurolink-model", link.model.as_str()),
                    ("request-id", draft.request_id()),
                ] {
                    if let Ok(v) = HeaderValue::from_str(value) {
                        h.insert(name, v);
                    }
                }
                return Ok(draft.finish(app, r, None, None));
            }
            Err(mut e) => {
                e.message = link.masked(e.message);
                tracing::info!(link = %label, "count_tokens failed: {}", e.message);
                draft.attempts.push(AttemptRecord {
                    account: label.into(),
                    outcome: "failed".into(),
                });
                last = Some(Failure::Provider(e));
            }
        }
    }
    Err((draft, last))
}

/// The tokenizer of an OpenAI model, loaded once.
fn tokenizer(model: &str) -> (Result<&'static CoreBPE, String>, &'static str) {
    static O200K: OnceLock<Result<CoreBPE, String>> = OnceLock::new();
    static CL100K: OnceLock<Result<CoreBPE, String>> = OnceLock::new();
    let m = model.rsplit('/').next().unwrap_or(model);
    let legacy = (m.starts_with("gpt-4") && !m.starts_with("gpt-4o") && !m.starts_with("gpt-4.1"))
        || m.starts_with("gpt-3.5");
    if legacy {
        let bpe = CL100K.get_or_init(|| tiktoken_rs::cl100k_base().map_err(|e| e.to_string()));
        (bpe.as_ref().map_err(Clone::clone), "cl100k_base")
    } else {
        let bpe = O200K.get_or_init(|| tiktoken_rs::o200k_base().map_err(|e| e.to_string()));
        (bpe.as_ref().map_err(Clone::clone), "o200k_base")
    }
}

/// Tokens of a Chat Completions request: every message's text and tool calls, the tools' JSON.
fn openai_tokens(bpe: &CoreBPE, body: &Value) -> u64 {
    let len = |s: &str| bpe.encode_with_special_tokens(s).len() as u64;
    let mut n = REPLY_PRIMER;
    for m in body["messages"].as_array().into_iter().flatten() {
        n += PER_MESSAGE;
        n += len(m["role"].as_str().unwrap_or_default());
        match &m["content"] {
            Value::String(s) => n += len(s),
            Value::Array(parts) => {
                for p in parts {
                    match p["type"].as_str() {
                        Some("text") => n += len(p["text"].as_str().unwrap_or_default()),
                        Some("image_url") => n += IMAGE_TOKENS,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        for call in m["tool_calls"].as_array().into_iter().flatten() {
            n += len(call["function"]["name"].as_str().unwrap_or_default());
            n += len(call["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    if let Some(tools) = body.get("tools") {
        n += len(&tools.to_string());
    }
    n
}

async fn gemini_count(
    app: &App,
    rt: &Runtime,
    link: &Link,
    claude: &Value,
) -> Result<Count, ProviderError> {
    let name = link.provider.name.as_str();
    let mut request = gemini::request(claude, &link.model, false, &app.signatures).body;
    if let Some(o) = request.as_object_mut() {
        // countTokens takes contents, the system instruction and tools; not the generation config.
        o.remove("generationConfig");
        o.remove("toolConfig");
        o.insert("model".into(), json!(format!("models/{}", link.model)));
    }
    let url = format!(
        "{}/v1beta/models/{}:countTokens",
        link.provider.base_url.trim_end_matches('/'),
        link.model
    );
    let mut builder = rt
        .client
        .post(url)
        .json(&json!({"generateContentRequest": request}));
    if let Some(key) = &link.provider.api_key {
        builder = builder.header("x-goog-api-key", key.expose());
    }
    let failed = |message: String| ProviderError {
        status: 502,
        kind: "api_error",
        message: format!("{name}: {message}"),
        retry_after: None,
    };
    let response = tokio::time::timeout(rt.headers_timeout, builder.send())
        .await
        .map_err(|_| failed("countTokens sent no answer in time".into()))?
        .map_err(|e| failed(format!("countTokens failed: {e}")))?;
    let status = response.status();
    let body = tokio::time::timeout(rt.idle_timeout, response.bytes())
        .await
        .map_err(|_| failed("countTokens answer stalled".into()))?
        .map_err(|e| failed(format!("countTokens answer failed: {e}")))?;
    if !status.is_success() {
        return Err(gemini::error(status.as_u16(), &body, name, None));
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let total = v["totalTokens"]
        .as_u64()
        .ok_or_else(|| failed("countTokens answered without totalTokens".into()))?;
    Ok(Count {
        input_tokens: total,
        method: "gemini-count-tokens".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_counts_use_the_model_family_tokenizer() {
        let (bpe, name) = tokenizer("gpt-4o");
        assert_eq!(name, "o200k_base");
        let bpe = bpe.unwrap();
        let body = json!({"messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Hello, world!"}]});
        // o200k_base: "system" 1, "You are helpful." 4, "user" 1, "Hello, world!" 4.
        assert_eq!(
            openai_tokens(bpe, &body),
            REPLY_PRIMER + 2 * PER_MESSAGE + 1 + 4 + 1 + 4
        );
        assert_eq!(tokenizer("gpt-4-turbo").1, "cl100k_base");
        assert_eq!(tokenizer("openrouter/gpt-4.1-mini").1, "o200k_base");
    }
}
