//! The other direction, for the proxy's own OpenAI-compatible endpoint
//! (`POST /v1/chat/completions`): an OpenAI Chat Completions request becomes a Claude Messages
//! request, and Claude's answer (whole or streamed) becomes Chat Completions' answer.

use serde_json::{json, Map, Value};

use super::sse::SseReader;

/// Claude requires `max_tokens`; OpenAI clients often leave it out.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The Claude Messages request for Chat Completions request `req`. An error names the field.
pub fn request(req: &Value) -> Result<Value, String> {
    let model = req["model"]
        .as_str()
        .filter(|m| !m.is_empty())
        .ok_or("`model` is required")?;
    let messages = req["messages"]
        .as_array()
        .ok_or("`messages` must be an array")?;
    let mut system: Vec<String> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match m["role"].as_str() {
            Some("system" | "developer") => system.push(text_of(&m["content"])),
            Some("user") => push(&mut out, "user", user_content(&m["content"])),
            Some("assistant") => {
                let mut blocks = Vec::new();
                let text = text_of(&m["content"]);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    let args = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let input = serde_json::from_str::<Value>(args)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": call["id"],
                                       "name": call["function"]["name"], "input": input}));
                }
                push(&mut out, "assistant", blocks);
            }
            Some("tool") => {
                let block = json!({"type": "tool_result", "tool_use_id": m["tool_call_id"],
                                   "content": text_of(&m["content"])});
                push(&mut out, "user", vec![block]);
            }
            other => {
                return Err(format!(
                "`messages[{i}].role` is {}; expected system, developer, user, assistant or tool",
                other.map_or_else(|| "missing".to_string(), |r| format!("`{r}`"))
            ))
            }
        }
    }
    let mut claude = Map::new();
    claude.insert("model".into(), json!(model));
    let max = req["max_completion_tokens"]
        .as_u64()
        .or_else(|| req["max_tokens"].as_u64())
        .unwrap_or(DEFAULT_MAX_TOKENS);
    claude.insert("max_tokens".into(), json!(max));
    if !system.is_empty() {
        claude.insert("system".into(), json!(system.join("\n\n")));
    }
    claude.insert("messages".into(), Value::Array(out));
    if let Some(t) = req["temperature"].as_f64() {
        // OpenAI's range is 0-2, Claude's 0-1.
        claude.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    } else if let Some(p) = req["top_p"].as_f64() {
        claude.insert("top_p".into(), json!(p));
    }
    match &req["stop"] {
        Value::String(s) => {
            claude.insert("stop_sequences".into(), json!([s]));
        }
        Value::Array(a) if !a.is_empty() => {
            claude.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    let tools: Vec<Value> = req["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["type"] == "function")
        .map(|t| {
            let f = &t["function"];
            let schema = if f["parameters"].is_object() {
                f["parameters"].clone()
            } else {
                json!({"type": "object", "properties": {}})
            };
            let mut tool = Map::new();
            tool.insert("name".into(), f["name"].clone());
            if let Some(d) = f["description"].as_str() {
                tool.insert("description".into(), json!(d));
            }
            tool.insert("input_schema".into(), schema);
            Value::Object(tool)
        })
        .collect();
    if !tools.is_empty() {
        claude.insert("tools".into(), Value::Array(tools));
        let mut choice = match &req["tool_choice"] {
            Value::String(s) if s == "required" => json!({"type": "any"}),
            Value::String(s) if s == "none" => json!({"type": "none"}),
            Value::Object(o) => {
                json!({"type": "tool", "name": o.get("function").map(|f| f["name"].clone())})
            }
            _ => json!({"type": "auto"}),
        };
        if req["parallel_tool_calls"] == false {
            choice["disable_parallel_tool_use"] = json!(true);
        }
        claude.insert("tool_choice".into(), choice);
    }
    if req["stream"] == true {
        claude.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(claude))
}

/// Add `blocks` as a `role` message, merged into the previous one when it has the same role
/// (Claude wants turns to alternate; consecutive `tool` answers become one user turn).
fn push(out: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut() {
        if last["role"] == role {
            if let Some(content) = last["content"].as_array_mut() {
                // Tool results go first in a user turn.
                let (results, rest): (Vec<Value>, Vec<Value>) =
                    blocks.into_iter().partition(|b| b["type"] == "tool_result");
                let at = content
                    .iter()
                    .take_while(|b| b["type"] == "tool_result")
                    .count();
                content.splice(at..at, results);
                content.extend(rest);
                return;
            }
        }
    }
    out.push(json!({"role": role, "content": blocks}));
}

/// The text of a content that is a string or an array of parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn user_content(content: &Value) -> Vec<Value> {
    match content {
        Value::String(s) if !s.is_empty() => vec![json!({"type": "text", "text": s})],
        Value::Array(parts) => parts.iter().filter_map(user_part).collect(),
        _ => Vec::new(),
    }
}

fn user_part(p: &Value) -> Option<Value> {
    match p["type"].as_str()? {
        "text" => Some(json!({"type": "text", "text": p["text"]})),
        "image_url" => {
            let url = p["image_url"]["url"].as_str()?;
            match url
                .strip_prefix("data:")
                .and_then(|rest| rest.split_once(";base64,"))
            {
                Some((media, data)) => Some(json!({"type": "image", "source":
                    {"type": "base64", "media_type": media, "data": data}})),
                None => Some(json!({"type": "image", "source": {"type": "url", "url": url}})),
            }
        }
        _ => None,
    }
}

/// Claude's stop reason as Chat Completions' `finish_reason`.
fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

fn usage(u: &Value) -> Value {
    let prompt = u["input_tokens"].as_u64().unwrap_or(0)
        + u["cache_read_input_tokens"].as_u64().unwrap_or(0)
        + u["cache_creation_input_tokens"].as_u64().unwrap_or(0);
    let completion = u["output_tokens"].as_u64().unwrap_or(0);
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": u["cache_read_input_tokens"].as_u64().unwrap_or(0)}})
}

/// A whole Claude message as a `chat.completion` answering `model` (the client's name for it).
pub fn response(msg: &Value, model: &str, created: u64) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in msg["content"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or_default()),
            Some("tool_use") => calls.push(json!({"id": b["id"], "type": "function",
                "function": {"name": b["name"], "arguments": b["input"].to_string()}})),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": format!("chatcmpl-{}", msg["id"].as_str().unwrap_or_default()),
        "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": finish_reason(msg["stop_reason"].as_str())}],
        "usage": usage(&msg["usage"]),
    })
}

/// An Anthropic error body as OpenAI's error shape.
pub fn error(body: &[u8]) -> Value {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    json!({"error": {"message": message, "type": v["error"]["type"].as_str().unwrap_or("api_error"),
                     "param": null, "code": null}})
}

/// Turns a Claude SSE stream into `chat.completion.chunk`s as it arrives.
#[derive(Debug)]
pub struct StreamConverter {
    reader: SseReader,
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// Claude block index → OpenAI tool call index, for the open tool block.
    tool: Option<(u64, u64)>,
    tools_seen: u64,
    usage: Value,
    finished: bool,
}

impl StreamConverter {
    pub fn new(model: &str, created: u64, include_usage: bool) -> Self {
        Self {
            reader: SseReader::default(),
            id: String::new(),
            model: model.to_string(),
            created,
            include_usage,
            tool: None,
            tools_seen: 0,
            usage: json!({}),
            finished: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut String) {
        let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                       "model": self.model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        out.push_str(&format!("data: {c}\n\n"));
    }

    /// Claude bytes in, OpenAI SSE bytes out (whole events only).
    pub fn feed(&mut self, bytes: &[u8]) -> String {
        let mut payloads = Vec::new();
        self.reader.feed(bytes, &mut payloads);
        let mut out = String::new();
        for p in payloads {
            self.event(&p, &mut out);
        }
        out
    }

    /// The Claude stream ended; a stream that ended without `message_stop` gets an error.
    pub fn end(&mut self) -> String {
        let mut payloads = Vec::new();
        self.reader.finish(&mut payloads);
        let mut out = String::new();
        for p in payloads {
            self.event(&p, &mut out);
        }
        if !self.finished {
            self.finished = true;
            let e = json!({"error": {"message": "the stream ended before the answer was complete",
                                     "type": "api_error", "param": null, "code": null}});
            out.push_str(&format!("data: {e}\n\n"));
        }
        out
    }

    fn event(&mut self, data: &str, out: &mut String) {
        let Ok(e) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match e["type"].as_str() {
            Some("message_start") => {
                self.id = format!(
                    "chatcmpl-{}",
                    e["message"]["id"].as_str().unwrap_or_default()
                );
                self.usage = e["message"]["usage"].clone();
                self.chunk(json!({"role": "assistant", "content": ""}), None, out);
            }
            Some("content_block_start") if e["content_block"]["type"] == "tool_use" => {
                let b = &e["content_block"];
                let index = self.tools_seen;
                self.tools_seen += 1;
                self.tool = Some((e["index"].as_u64().unwrap_or(0), index));
                self.chunk(
                    json!({"tool_calls": [{"index": index, "id": b["id"], "type": "function",
                                            "function": {"name": b["name"], "arguments": ""}}]}),
                    None,
                    out,
                );
            }
            Some("content_block_delta") => {
                let d = &e["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        self.chunk(json!({"content": d["text"]}), None, out);
                    }
                    Some("input_json_delta") => {
                        if let Some((_, index)) = self.tool {
                            let args = d["partial_json"].as_str().unwrap_or_default();
                            if !args.is_empty() {
                                self.chunk(
                                    json!({"tool_calls": [{"index": index, "function": {"arguments": args}}]}),
                                    None,
                                    out,
                                );
                            }
                        }
                    }
                    _ => {}
                }
            }
            Some("content_block_stop") => self.tool = None,
            Some("message_delta") => {
                for (k, v) in e["usage"].as_object().into_iter().flatten() {
                    if !v.is_null() {
                        self.usage[k] = v.clone();
                    }
                }
                let finish = finish_reason(e["delta"]["stop_reason"].as_str());
                self.chunk(json!({}), Some(finish), out);
            }
            Some("message_stop") => {
                if self.include_usage {
                    let c = json!({"id": self.id, "object": "chat.completion.chunk",
                                   "created": self.created, "model": self.model, "choices": [],
                                   "usage": usage(&self.usage)});
                    out.push_str(&format!("data: {c}\n\n"));
                }
                out.push_str("data: [DONE]\n\n");
                self.finished = true;
            }
            Some("error") => {
                let err = json!({"error": {"message": e["error"]["message"],
                                           "type": e["error"]["type"], "param": null, "code": null}});
                out.push_str(&format!("data: {err}\n\n"));
                self.finished = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_mapping() {
        let req = json!({
            "model": "claude-sonnet-4-5", "stream": true, "temperature": 1.4, "stop": "END",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"pwd\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
                {"role": "tool", "tool_call_id": "call_2", "content": "/home"},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}],
            "tool_choice": "required", "parallel_tool_calls": false
        });
        let claude = request(&req).unwrap();
        insta::assert_snapshot!(
            "chat_request",
            serde_json::to_string_pretty(&claude).unwrap()
        );
        assert_eq!(
            request(&json!({"model": "m", "messages": [{"role": "robot"}]})).unwrap_err(),
            "`messages[0].role` is `robot`; expected system, developer, user, assistant or tool"
        );
    }

    #[test]
    fn streamed_tool_call_becomes_chunks_with_usage_and_done() {
        let claude = [
            r#"{"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":10,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check."}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"Bash","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"command\":"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"ls\"}"}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":7}}"#,
            r#"{"type":"message_stop"}"#,
        ]
        .iter()
        .map(|d| format!("event: x\ndata: {d}\n\n"))
        .collect::<String>();
        let mut conv = StreamConverter::new("claude-sonnet-4-5", 1, true);
        let mut out = String::new();
        // Split mid-event: only whole events come out.
        let (a, b) = claude.split_at(claude.len() / 2);
        out.push_str(&conv.feed(a.as_bytes()));
        out.push_str(&conv.feed(b.as_bytes()));
        out.push_str(&conv.end());
        insta::assert_snapshot!("chat_stream_tool_call", out);
        assert!(out.ends_with("data: [DONE]\n\n"));
    }
}
