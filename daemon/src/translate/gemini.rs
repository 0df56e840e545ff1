//! Claude Messages ⇄ Gemini `generateContent` / `streamGenerateContent?alt=sse`.
//!
//! Two things Claude's history does not carry and Gemini needs are kept here:
//! - the tool name of a `tool_result` (Gemini answers a call by name): looked up from the
//!   `tool_use` blocks of the same request;
//! - the `thoughtSignature` Gemini attaches to a function call, which it wants back with that
//!   call on the next turn: kept by tool id in [`Signatures`] when the answer goes out, and put
//!   back when the history returns. A call the daemon does not know (it restarted) gets the
//!   placeholder Gemini documents for history it did not produce.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use super::claude::{self, ToolResult};
use super::claude_events::ClaudeEvents;
use super::{anthropic_error_kind, new_id, ProviderError, ProviderRequest, StopReason, TokenUsage};

/// What Gemini accepts in place of a signature for a call it did not sign in this session.
pub const PLACEHOLDER_SIGNATURE: &str = "skip_thought_signature_validator";
/// Gemini accepts at most five stop strings.
const MAX_STOP: usize = 5;
/// Signatures kept; the oldest go first (a conversation sends its recent calls back).
const MAX_SIGNATURES: usize = 4096;

/// Thought signatures of the function calls Gemini made, by the `tool_use` id the client saw.
#[derive(Debug, Default)]
pub struct Signatures {
    inner: Mutex<(HashMap<String, String>, VecDeque<String>)>,
}

impl Signatures {
    pub fn insert(&self, tool_id: &str, signature: &str) {
        let Ok(mut g) = self.inner.lock() else { return };
        let (map, order) = &mut *g;
        if map
            .insert(tool_id.to_string(), signature.to_string())
            .is_none()
        {
            order.push_back(tool_id.to_string());
        }
        while order.len() > MAX_SIGNATURES {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    pub fn get(&self, tool_id: &str) -> Option<String> {
        self.inner.lock().ok()?.0.get(tool_id).cloned()
    }
}

/// The `generateContent` request for Claude request `req`, sent to `model`.
pub fn request(req: &Value, model: &str, stream: bool, signatures: &Signatures) -> ProviderRequest {
    let mut out = Map::new();
    let system = claude::system_texts(req);
    if !system.is_empty() {
        let parts: Vec<Value> = system.iter().map(|t| json!({"text": t})).collect();
        out.insert("systemInstruction".into(), json!({"parts": parts}));
    }
    out.insert("contents".into(), Value::Array(contents(req, signatures)));
    let declarations: Vec<Value> = claude::client_tools(req)
        .into_iter()
        .map(|t| {
            let mut d = Map::new();
            d.insert("name".into(), t["name"].clone());
            if let Some(desc) = t["description"].as_str() {
                d.insert("description".into(), json!(desc));
            }
            d.insert(
                "parameters".into(),
                super::schema::for_gemini(&t["input_schema"]),
            );
            Value::Object(d)
        })
        .collect();
    if !declarations.is_empty() {
        out.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
        if let Some(config) = tool_config(&req["tool_choice"]) {
            out.insert("toolConfig".into(), config);
        }
    }
    let mut generation = Map::new();
    if let Some(n) = req["max_tokens"].as_u64() {
        generation.insert("maxOutputTokens".into(), json!(n));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
    ] {
        if let Some(v) = req[from].as_f64() {
            generation.insert(to.into(), json!(v));
        }
    }
    if let Some(stops) = req["stop_sequences"].as_array() {
        let stops: Vec<Value> = stops.iter().take(MAX_STOP).cloned().collect();
        if !stops.is_empty() {
            generation.insert("stopSequences".into(), Value::Array(stops));
        }
    }
    if let Some(budget) = claude::thinking_budget(req) {
        generation.insert(
            "thinkingConfig".into(),
            json!({"thinkingBudget": budget, "includeThoughts": true}),
        );
    }
    if !generation.is_empty() {
        out.insert("generationConfig".into(), Value::Object(generation));
    }
    let path = if stream {
        format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("/v1beta/models/{model}:generateContent")
    };
    ProviderRequest {
        path,
        body: Value::Object(out),
    }
}

fn tool_config(choice: &Value) -> Option<Value> {
    let mode = match choice["type"].as_str()? {
        "auto" => json!({"mode": "AUTO"}),
        "any" => json!({"mode": "ANY"}),
        "none" => json!({"mode": "NONE"}),
        "tool" => json!({"mode": "ANY", "allowedFunctionNames": [choice["name"]]}),
        _ => return None,
    };
    Some(json!({"functionCallingConfig": mode}))
}

/// The conversation as Gemini contents (`user` / `model` roles).
fn contents(req: &Value, signatures: &Signatures) -> Vec<Value> {
    let names = claude::tool_names(req);
    let mut out = Vec::new();
    for m in req["messages"].as_array().into_iter().flatten() {
        let blocks = claude::blocks(m);
        let (role, parts) = match m["role"].as_str() {
            Some("assistant") => ("model", model_parts(&blocks, signatures)),
            Some("system") => {
                let text = texts(&blocks);
                (
                    "user",
                    vec![json!({"text": format!("<system-reminder>\n{text}\n</system-reminder>")})],
                )
            }
            _ => ("user", user_parts(&blocks, &names)),
        };
        if !parts.is_empty() {
            out.push(json!({"role": role, "parts": parts}));
        }
    }
    out
}

fn texts(blocks: &[Value]) -> String {
    blocks
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn model_parts(blocks: &[Value], signatures: &Signatures) -> Vec<Value> {
    let mut parts = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => {
                let t = b["text"].as_str().unwrap_or_default();
                if !t.is_empty() {
                    parts.push(json!({"text": t}));
                }
            }
            Some("tool_use") => {
                let id = b["id"].as_str().unwrap_or_default();
                let args = if b["input"].is_object() {
                    b["input"].clone()
                } else {
                    json!({})
                };
                let signature = signatures
                    .get(id)
                    .unwrap_or_else(|| PLACEHOLDER_SIGNATURE.to_string());
                parts.push(json!({"functionCall": {"name": b["name"], "args": args},
                                  "thoughtSignature": signature}));
            }
            // Claude's thinking signatures mean nothing to Gemini.
            _ => {}
        }
    }
    parts
}

fn user_parts(blocks: &[Value], names: &HashMap<String, String>) -> Vec<Value> {
    let mut parts = Vec::new();
    for ToolResult {
        id,
        text,
        images,
        is_error,
    } in claude::merged_tool_results(blocks)
    {
        let name = names.get(&id).cloned().unwrap_or_else(|| id.clone());
        let response = if is_error {
            json!({"error": text})
        } else {
            json!({"result": text})
        };
        parts.push(json!({"functionResponse": {"name": name, "response": response}}));
        parts.extend(images.iter().filter_map(inline_data));
    }
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => {
                let t = b["text"].as_str().unwrap_or_default();
                if !t.trim().is_empty() {
                    parts.push(json!({"text": t}));
                }
            }
            Some("image" | "document") => {
                if let Some(p) = inline_data(b) {
                    parts.push(p);
                } else if b["source"]["type"] == "text" {
                    parts.push(json!({"text": b["source"]["data"]}));
                } else if let Some(url) = b["source"]["url"].as_str() {
                    // Gemini reads only inline data or its own uploads.
                    parts.push(json!({"text": format!("(attachment not forwarded: {url})")}));
                }
            }
            _ => {}
        }
    }
    parts
}

fn inline_data(block: &Value) -> Option<Value> {
    let s = &block["source"];
    if s["type"] != "base64" {
        return None;
    }
    Some(json!({"inlineData": {"mimeType": s["media_type"], "data": s["data"]}}))
}

fn finish_reason(reason: Option<&str>) -> StopReason {
    match reason {
        Some("MAX_TOKENS") => StopReason::MaxTokens,
        Some(
            "SAFETY" | "RECITATION" | "PROHIBITED_CONTENT" | "BLOCKLIST" | "SPII" | "IMAGE_SAFETY",
        ) => StopReason::Refusal,
        _ => StopReason::EndTurn,
    }
}

fn usage(u: &Value) -> TokenUsage {
    let prompt = u["promptTokenCount"].as_u64().unwrap_or(0);
    let cached = u["cachedContentTokenCount"].as_u64().unwrap_or(0);
    TokenUsage {
        input: prompt.saturating_sub(cached),
        output: u["candidatesTokenCount"].as_u64().unwrap_or(0)
            + u["thoughtsTokenCount"].as_u64().unwrap_or(0),
        cache_read: cached,
    }
}

/// A whole `generateContent` answer as a Claude message naming `model`.
pub fn response(body: &Value, model: &str, signatures: &Signatures) -> Value {
    let candidate = &body["candidates"][0];
    let mut content = Vec::new();
    for part in candidate["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(call) = part.get("functionCall") {
            let id = new_id("toolu_");
            if let Some(sig) = part["thoughtSignature"].as_str() {
                signatures.insert(&id, sig);
            }
            let input = if call["args"].is_object() {
                call["args"].clone()
            } else {
                json!({})
            };
            content
                .push(json!({"type": "tool_use", "id": id, "name": call["name"], "input": input}));
        } else if let Some(t) = part["text"].as_str().filter(|t| !t.is_empty()) {
            if part["thought"] == true {
                content.push(json!({"type": "thinking", "thinking": t, "signature": ""}));
            } else {
                content.push(json!({"type": "text", "text": t}));
            }
        }
    }
    let mut stop = finish_reason(candidate["finishReason"].as_str());
    if let Some(reason) = body["promptFeedback"]["blockReason"].as_str() {
        content.push(
            json!({"type": "text", "text": format!("(the provider blocked the prompt: {reason})")}),
        );
        stop = StopReason::Refusal;
    }
    if stop == StopReason::EndTurn && content.iter().any(|b| b["type"] == "tool_use") {
        stop = StopReason::ToolUse;
    }
    let u = usage(&body["usageMetadata"]);
    super::claude_message(model, content, stop, u)
}

/// A Google RPC error (`{"error":{"code","message","status","details"}}`) as the client's error.
pub fn error(status: u16, body: &[u8], provider: &str, retry_after: Option<u64>) -> ProviderError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = &v["error"];
    let detail = super::error_detail(&v, body);
    // RetryInfo says how long to wait, as "31s".
    let retry_info = e["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["retryDelay"].as_str())
        .find_map(|d| d.trim_end_matches('s').parse::<f64>().ok())
        .map(|s| s.ceil() as u64);
    let (status, kind) = anthropic_error_kind(status);
    ProviderError {
        status,
        kind,
        message: format!("{provider}: {detail}"),
        retry_after: retry_after.or(retry_info),
    }
}

/// Turns Gemini stream chunks (each a whole `GenerateContentResponse` with only new parts) into
/// Claude events as they arrive.
#[derive(Debug)]
pub struct StreamConverter {
    pub events: ClaudeEvents,
    finish: Option<String>,
    blocked: Option<String>,
    usage: TokenUsage,
    provider: String,
    /// `(tool id, signature)` pairs seen, for [`Signatures`].
    pub signed_calls: Vec<(String, String)>,
}

impl StreamConverter {
    pub fn new(model: &str, provider: &str) -> Self {
        Self {
            events: ClaudeEvents::new(new_id("msg_"), model),
            finish: None,
            blocked: None,
            usage: TokenUsage::default(),
            provider: provider.to_string(),
            signed_calls: Vec::new(),
        }
    }

    pub fn usage(&self) -> TokenUsage {
        self.usage
    }

    /// One `data:` payload.
    pub fn data(&mut self, data: &str) -> Result<(), ProviderError> {
        let chunk: Value =
            serde_json::from_str(data).map_err(|e| ProviderError::bad_chunk(&self.provider, &e))?;
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            let status = chunk["error"]["code"].as_u64().unwrap_or(500);
            return Err(error(
                u16::try_from(status).unwrap_or(500),
                data.as_bytes(),
                &self.provider,
                None,
            ));
        }
        if chunk["usageMetadata"].is_object() {
            self.usage = usage(&chunk["usageMetadata"]);
            self.events.set_input_tokens(self.usage.input);
        }
        self.events.start();
        let candidate = &chunk["candidates"][0];
        for part in candidate["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(call) = part.get("functionCall") {
                let id = new_id("toolu_");
                if let Some(sig) = part["thoughtSignature"].as_str() {
                    self.signed_calls.push((id.clone(), sig.to_string()));
                }
                let name = call["name"].as_str().unwrap_or("unknown_tool");
                self.events.tool_start(&id, name);
                let args = if call["args"].is_object() {
                    call["args"].to_string()
                } else {
                    "{}".to_string()
                };
                self.events.tool_args(&args);
                self.events.close_block();
            } else if let Some(t) = part["text"].as_str() {
                if part["thought"] == true {
                    self.events.thinking(t);
                } else {
                    self.events.text(t);
                }
            }
        }
        if let Some(reason) = candidate["finishReason"].as_str() {
            self.finish = Some(reason.to_string());
        }
        if let Some(reason) = chunk["promptFeedback"]["blockReason"].as_str() {
            self.blocked = Some(reason.to_string());
        }
        Ok(())
    }

    /// Whether a chunk carried the finish reason (Gemini streams have no end marker: a body that
    /// ends before it was cut).
    pub fn complete(&self) -> bool {
        self.finish.is_some() || self.blocked.is_some()
    }

    /// The body ended (Gemini streams have no end marker): end the message.
    pub fn end(&mut self) {
        if self.events.ended() {
            return;
        }
        let mut stop = finish_reason(self.finish.as_deref());
        if let Some(reason) = self.blocked.take() {
            self.events
                .text(&format!("(the provider blocked the prompt: {reason})"));
            stop = StopReason::Refusal;
        }
        self.events.finish(stop, self.usage);
    }
}

#[cfg(test)]
mod tests;
