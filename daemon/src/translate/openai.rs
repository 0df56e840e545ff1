//! Claude Messages ⇄ OpenAI Chat Completions, for OpenAI and every OpenAI-compatible server
//! (OpenRouter, Ollama, vLLM, LM Studio, ...).

use serde_json::{json, Map, Value};

use super::claude::{self, ToolResult};
use super::claude_events::ClaudeEvents;
use super::{anthropic_error_kind, new_id, ProviderError, ProviderRequest, StopReason, TokenUsage};

/// OpenAI accepts at most four stop strings.
const MAX_STOP: usize = 4;

/// Reasoning models take `max_completion_tokens` and `reasoning_effort`, and only the default
/// temperature.
fn is_reasoning_model(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    ["o1", "o3", "o4", "gpt-5"].iter().any(|p| m.starts_with(p))
}

/// The Chat Completions request for Claude request `req`, sent to `model`.
pub fn request(req: &Value, model: &str, stream: bool) -> ProviderRequest {
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("messages".into(), Value::Array(messages(req)));
    let reasoning = is_reasoning_model(model);
    if let Some(n) = req["max_tokens"].as_u64() {
        let key = if reasoning {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        out.insert(key.into(), json!(n));
    }
    if !reasoning {
        // Both at once is refused by several servers: temperature wins, as Anthropic advises.
        if let Some(t) = req["temperature"].as_f64() {
            out.insert("temperature".into(), json!(t));
        } else if let Some(p) = req["top_p"].as_f64() {
            out.insert("top_p".into(), json!(p));
        }
    }
    if let Some(stops) = req["stop_sequences"].as_array() {
        let stops: Vec<Value> = stops.iter().take(MAX_STOP).cloned().collect();
        if !stops.is_empty() {
            out.insert("stop".into(), Value::Array(stops));
        }
    }
    if reasoning {
        if let Some(budget) = claude::thinking_budget(req) {
            out.insert("reasoning_effort".into(), json!(effort(budget)));
        }
    }
    let tools: Vec<Value> = claude::client_tools(req)
        .into_iter()
        .map(|t| {
            let mut f = Map::new();
            f.insert("name".into(), t["name"].clone());
            if let Some(d) = t["description"].as_str() {
                f.insert("description".into(), json!(d));
            }
            f.insert(
                "parameters".into(),
                super::schema::for_openai(&t["input_schema"]),
            );
            json!({"type": "function", "function": f})
        })
        .collect();
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = tool_choice(&req["tool_choice"]) {
            out.insert("tool_choice".into(), choice);
        }
        if req["tool_choice"]["disable_parallel_tool_use"] == true {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if stream {
        out.insert("stream".into(), json!(true));
        // Usage arrives in one more chunk at the end only when asked for.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    ProviderRequest {
        path: "/chat/completions".into(),
        body: Value::Object(out),
    }
}

/// A thinking budget as a reasoning effort OpenAI accepts.
fn effort(budget: i64) -> &'static str {
    match budget {
        b if b < 0 => "medium",
        0..=1024 => "low",
        1025..=8192 => "medium",
        _ => "high",
    }
}

fn tool_choice(choice: &Value) -> Option<Value> {
    match choice["type"].as_str()? {
        "auto" => Some(json!("auto")),
        "any" => Some(json!("required")),
        "none" => Some(json!("none")),
        "tool" => Some(json!({"type": "function", "function": {"name": choice["name"]}})),
        _ => None,
    }
}

/// The conversation as Chat Completions messages.
fn messages(req: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let system = claude::system_texts(req);
    if !system.is_empty() {
        // Many compatible servers accept only a string here.
        out.push(json!({"role": "system", "content": system.join("\n\n")}));
    }
    for m in req["messages"].as_array().into_iter().flatten() {
        let blocks = claude::blocks(m);
        match m["role"].as_str() {
            Some("assistant") => out.push(assistant(&blocks)),
            Some("system") => {
                let text = texts(&blocks);
                if !text.is_empty() {
                    out.push(json!({"role": "user", "content": format!("<system-reminder>\n{text}\n</system-reminder>")}));
                }
            }
            _ => user(&blocks, &mut out),
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

/// One assistant message: its text, and every tool call (never split, or the tool answers
/// would not follow their call).
fn assistant(blocks: &[Value]) -> Value {
    let text = texts(blocks);
    let calls: Vec<Value> = blocks
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| {
            let input = match &b["input"] {
                Value::Null => "{}".to_string(),
                v => v.to_string(),
            };
            json!({"id": b["id"], "type": "function",
                   "function": {"name": b["name"], "arguments": input}})
        })
        .collect();
    let mut msg = Map::new();
    msg.insert("role".into(), json!("assistant"));
    msg.insert(
        "content".into(),
        if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            json!(text)
        },
    );
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    Value::Object(msg)
}

/// A user message: the tool answers first (they answer the previous assistant turn), then one
/// user message with the rest.
fn user(blocks: &[Value], out: &mut Vec<Value>) {
    let mut images_from_results = Vec::new();
    for ToolResult {
        id,
        text,
        images,
        is_error,
    } in claude::merged_tool_results(blocks)
    {
        let content = if is_error {
            format!("Error: {text}")
        } else {
            text
        };
        out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
        images_from_results.extend(images);
    }
    let mut parts: Vec<Value> = Vec::new();
    for b in blocks.iter().chain(images_from_results.iter()) {
        match b["type"].as_str() {
            Some("text") => {
                let t = b["text"].as_str().unwrap_or_default();
                if !t.trim().is_empty() {
                    parts.push(json!({"type": "text", "text": t}));
                }
            }
            Some("image") => {
                if let Some(url) = image_url(&b["source"]) {
                    parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                }
            }
            Some("document") if b["source"]["type"] == "text" => {
                let t = b["source"]["data"].as_str().unwrap_or_default();
                parts.push(json!({"type": "text", "text": t}));
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        return;
    }
    let only_text = parts.iter().all(|p| p["type"] == "text");
    let content = if only_text {
        json!(parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"))
    } else {
        Value::Array(parts)
    };
    out.push(json!({"role": "user", "content": content}));
}

fn image_url(source: &Value) -> Option<String> {
    match source["type"].as_str()? {
        "base64" => Some(format!(
            "data:{};base64,{}",
            source["media_type"].as_str()?,
            source["data"].as_str()?
        )),
        "url" => source["url"].as_str().map(str::to_string),
        _ => None,
    }
}

/// Chat Completions' `finish_reason` in Claude's terms.
fn stop_reason(finish: Option<&str>) -> StopReason {
    match finish {
        Some("length") => StopReason::MaxTokens,
        Some("tool_calls" | "function_call") => StopReason::ToolUse,
        _ => StopReason::EndTurn,
    }
}

fn usage(u: &Value) -> TokenUsage {
    let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
    let cached = u["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0);
    TokenUsage {
        input: prompt.saturating_sub(cached),
        output: u["completion_tokens"].as_u64().unwrap_or(0),
        cache_read: cached,
    }
}

/// A whole Chat Completions answer as a Claude message naming `model`.
pub fn response(body: &Value, model: &str) -> Value {
    let choice = &body["choices"][0];
    let msg = &choice["message"];
    let mut content = Vec::new();
    for key in ["reasoning_content", "reasoning"] {
        if let Some(t) = msg[key].as_str().filter(|t| !t.is_empty()) {
            content.push(json!({"type": "thinking", "thinking": t, "signature": ""}));
            break;
        }
    }
    if let Some(t) = msg["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for call in msg["tool_calls"].as_array().into_iter().flatten() {
        let args = call["function"]["arguments"].as_str().unwrap_or("{}");
        let input = serde_json::from_str::<Value>(args)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        let id = call["id"]
            .as_str()
            .map_or_else(|| new_id("toolu_"), str::to_string);
        content.push(
            json!({"type": "tool_use", "id": id, "name": call["function"]["name"], "input": input}),
        );
    }
    let saw_tool = content.iter().any(|b| b["type"] == "tool_use");
    let stop = match stop_reason(choice["finish_reason"].as_str()) {
        StopReason::EndTurn if saw_tool => StopReason::ToolUse,
        StopReason::ToolUse if !saw_tool => StopReason::EndTurn,
        s => s,
    };
    let u = usage(&body["usage"]);
    super::claude_message(model, content, stop, u)
}

/// An OpenAI-style error answer (`{"error":{"message","type","code"}}`) as the client's error.
pub fn error(status: u16, body: &[u8], provider: &str, retry_after: Option<u64>) -> ProviderError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let detail = super::error_detail(&v, body);
    let (status, kind) = anthropic_error_kind(status);
    ProviderError {
        status,
        kind,
        message: format!("{provider}: {detail}"),
        retry_after,
    }
}

/// One tool call of the stream, keyed by OpenAI's `index`.
#[derive(Debug)]
struct Call {
    key: u64,
    id: String,
    name: String,
    /// Arguments not written yet: they arrived before the call could start, or while another
    /// call's block was open.
    pending: String,
    started: bool,
}

/// Turns Chat Completions stream chunks into Claude events as they arrive.
#[derive(Debug)]
pub struct StreamConverter {
    pub events: ClaudeEvents,
    calls: Vec<Call>,
    /// Position in `calls` of the call whose block is open.
    open_call: Option<usize>,
    finish: Option<String>,
    usage: TokenUsage,
    provider: String,
}

impl StreamConverter {
    /// A converter answering as `model` (the model the client asked for).
    pub fn new(model: &str, provider: &str) -> Self {
        Self {
            events: ClaudeEvents::new(new_id("msg_"), model),
            calls: Vec::new(),
            open_call: None,
            finish: None,
            usage: TokenUsage::default(),
            provider: provider.to_string(),
        }
    }

    pub fn usage(&self) -> TokenUsage {
        self.usage
    }

    /// One `data:` payload. An error object in the stream is returned (before anything was
    /// written it is a failed attempt; after, it ends the stream).
    pub fn data(&mut self, data: &str) -> Result<(), ProviderError> {
        if data.trim() == "[DONE]" {
            self.end();
            return Ok(());
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|e| ProviderError::bad_chunk(&self.provider, &e))?;
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            let status = chunk["error"]["code"].as_u64().unwrap_or(500);
            let body = chunk.to_string();
            return Err(error(
                u16::try_from(status).unwrap_or(500),
                body.as_bytes(),
                &self.provider,
                None,
            ));
        }
        self.events.start();
        if chunk["usage"].is_object() {
            self.usage = usage(&chunk["usage"]);
        }
        let Some(choice) = chunk["choices"].get(0) else {
            return Ok(());
        };
        let delta = &choice["delta"];
        for key in ["reasoning_content", "reasoning"] {
            if let Some(t) = delta[key].as_str().filter(|t| !t.is_empty()) {
                self.open_call = None;
                self.events.thinking(t);
                break;
            }
        }
        if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.open_call = None;
            self.events.text(t);
        }
        for (pos, tc) in delta["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            self.tool_fragment(tc, pos as u64);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
            self.close_calls();
        }
        Ok(())
    }

    fn tool_fragment(&mut self, tc: &Value, pos: u64) {
        let key = tc["index"].as_u64().unwrap_or(pos);
        let at = match self.calls.iter().position(|c| c.key == key) {
            Some(i) => i,
            None => {
                self.calls.push(Call {
                    key,
                    id: String::new(),
                    name: String::new(),
                    pending: String::new(),
                    started: false,
                });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[at];
        if call.id.is_empty() {
            if let Some(id) = tc["id"].as_str() {
                call.id = id.to_string();
            }
        }
        if call.name.is_empty() {
            if let Some(n) = tc["function"]["name"].as_str() {
                call.name = n.to_string();
            }
        }
        if let Some(a) = tc["function"]["arguments"].as_str() {
            call.pending.push_str(a);
        }
        // A call starts once its name is known (an id is made up if the server sends none).
        if !call.started && !call.name.is_empty() && self.open_call.is_none_or(|o| o == at) {
            self.start_call(at);
        }
        if self.open_call == Some(at) {
            let args = std::mem::take(&mut self.calls[at].pending);
            self.events.tool_args(&args);
        }
    }

    fn start_call(&mut self, at: usize) {
        let call = &mut self.calls[at];
        if call.id.is_empty() {
            call.id = new_id("toolu_");
        }
        call.started = true;
        let (id, name) = (call.id.clone(), call.name.clone());
        self.events.tool_start(&id, &name);
        self.open_call = Some(at);
    }

    /// The answer is complete: every call is written out whole, in order of first appearance.
    fn close_calls(&mut self) {
        if let Some(at) = self.open_call.take() {
            let args = std::mem::take(&mut self.calls[at].pending);
            self.events.tool_args(&args);
            self.events.close_block();
        }
        for at in 0..self.calls.len() {
            if self.calls[at].started {
                continue;
            }
            if self.calls[at].name.is_empty() {
                self.calls[at].name = "unknown_tool".into();
            }
            self.start_call(at);
            let args = std::mem::take(&mut self.calls[at].pending);
            self.events.tool_args(&args);
            self.events.close_block();
            self.open_call = None;
        }
    }

    /// The stream ended (`[DONE]` or the end of the body): close what is open and end the
    /// message with the stop reason and usage known so far.
    pub fn end(&mut self) {
        if self.events.ended() {
            return;
        }
        self.close_calls();
        let stop = stop_reason(self.finish.as_deref());
        self.events.finish(stop, self.usage);
    }

    /// Whether the provider said the answer is complete (`[DONE]` or a finish reason); a body
    /// that ends before that was cut.
    pub fn complete(&self) -> bool {
        self.events.ended() || self.finish.is_some()
    }
}

#[cfg(test)]
mod tests;
