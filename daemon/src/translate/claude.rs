//! Reading the parts of a Claude Messages request that every translation needs, with Claude
//! Code's habits taken into account (a `system` role inside `messages`, an attribution line in the
//! system prompt, several `tool_result` blocks for one call).

use std::collections::HashMap;

use serde_json::Value;

/// Claude Code starts its system prompt with a billing attribution line meant for Anthropic.
const ATTRIBUTION_PREFIX: &str = "x-anthropic-billing-header";

/// The texts of the system prompt (`system` as a string or as text blocks), without empty ones
/// and without Claude Code's attribution line.
pub fn system_texts(req: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match &req["system"] {
        Value::String(s) => push_text(&mut out, s),
        Value::Array(blocks) => {
            for b in blocks {
                if b["type"] == "text" {
                    push_text(&mut out, b["text"].as_str().unwrap_or_default());
                }
            }
        }
        _ => {}
    }
    out
}

fn push_text(out: &mut Vec<String>, s: &str) {
    if !s.trim().is_empty() && !s.trim_start().starts_with(ATTRIBUTION_PREFIX) {
        out.push(s.to_string());
    }
}

/// The content of a message as blocks: a string becomes one text block.
pub fn blocks(message: &Value) -> Vec<Value> {
    match &message["content"] {
        Value::String(s) => vec![serde_json::json!({"type": "text", "text": s})],
        Value::Array(a) => a.clone(),
        _ => Vec::new(),
    }
}

/// Every `tool_use` id of the conversation with its tool name (Gemini answers a call by name).
pub fn tool_names(req: &Value) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for m in req["messages"].as_array().into_iter().flatten() {
        for b in m["content"].as_array().into_iter().flatten() {
            if b["type"] == "tool_use" {
                if let (Some(id), Some(name)) = (b["id"].as_str(), b["name"].as_str()) {
                    names.insert(id.to_string(), name.to_string());
                }
            }
        }
    }
    names
}

/// A `tool_result`'s content as text and images. Text blocks are joined with newlines.
pub fn tool_result_parts(block: &Value) -> (String, Vec<Value>) {
    match &block["content"] {
        Value::String(s) => (s.clone(), Vec::new()),
        Value::Array(items) => {
            let mut texts = Vec::new();
            let mut images = Vec::new();
            for item in items {
                match item["type"].as_str() {
                    Some("text") => texts.push(item["text"].as_str().unwrap_or_default()),
                    Some("image") => images.push(item.clone()),
                    _ => {}
                }
            }
            (texts.join("\n"), images)
        }
        _ => (String::new(), Vec::new()),
    }
}

/// The `tool_result` blocks of one message, merged per `tool_use_id` in first-seen order: some
/// clients split one call's result in several blocks, and providers want one answer per call.
pub struct ToolResult {
    pub id: String,
    pub text: String,
    pub images: Vec<Value>,
    pub is_error: bool,
}

pub fn merged_tool_results(blocks: &[Value]) -> Vec<ToolResult> {
    let mut out: Vec<ToolResult> = Vec::new();
    for b in blocks.iter().filter(|b| b["type"] == "tool_result") {
        let id = b["tool_use_id"].as_str().unwrap_or_default().to_string();
        let (text, images) = tool_result_parts(b);
        let is_error = b["is_error"].as_bool().unwrap_or(false);
        match out.iter_mut().find(|r| r.id == id) {
            Some(r) => {
                if !text.is_empty() {
                    if !r.text.is_empty() {
                        r.text.push('\n');
                    }
                    r.text.push_str(&text);
                }
                r.images.extend(images);
                r.is_error |= is_error;
            }
            None => out.push(ToolResult {
                id,
                text,
                images,
                is_error,
            }),
        }
    }
    out
}

/// The client tools (those with an `input_schema`); Anthropic's server tools (web search, code
/// execution) cannot run elsewhere and are left out.
pub fn client_tools(req: &Value) -> Vec<&Value> {
    req["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t.get("input_schema").is_some() && t["name"].is_string())
        .collect()
}

/// `thinking.budget_tokens` when thinking is on (`-1` when on without a budget).
pub fn thinking_budget(req: &Value) -> Option<i64> {
    match req["thinking"]["type"].as_str() {
        Some("enabled") => Some(req["thinking"]["budget_tokens"].as_i64().unwrap_or(-1)),
        Some("adaptive") => Some(-1),
        _ => None,
    }
}
