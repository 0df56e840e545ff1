//! Writes a Claude Messages stream in its exact SSE grammar, whatever order a provider's pieces
//! arrive in.
//!
//! The grammar (see `docs/translation.md`): one `message_start` (with usage), then content blocks
//! opened and closed one at a time with increasing indexes, then one `message_delta` (stop reason
//! and usage), then one `message_stop`. A failure after the start ends the stream with an `error`
//! event instead. The writer enforces all of it: a caller only says "text", "a tool call starts",
//! "arguments", "done"; opening and closing blocks, indexes and the consistency of the stop
//! reason are decided here once, for every provider.

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::{StopReason, TokenUsage};

/// The kind of the content block that is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    Tool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing written yet.
    Fresh,
    /// `message_start` written; blocks may follow.
    Open,
    /// `message_stop` or `error` written; nothing more may follow.
    Ended,
}

/// The Claude event writer for one answer. Output accumulates until [`ClaudeEvents::take`].
#[derive(Debug)]
pub struct ClaudeEvents {
    out: BytesMut,
    id: String,
    model: String,
    phase: Phase,
    next_index: u32,
    open: Option<Block>,
    saw_tool: bool,
    /// Input tokens known before the start (some providers say them in their first chunk).
    input_tokens: u64,
}

impl ClaudeEvents {
    /// A writer for message `id`, naming `model` (the model the client asked for: Claude Code
    /// compares it with its request).
    pub fn new(id: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            out: BytesMut::with_capacity(1024),
            id: id.into(),
            model: model.into(),
            phase: Phase::Fresh,
            next_index: 0,
            open: None,
            saw_tool: false,
            input_tokens: 0,
        }
    }

    /// The input tokens `message_start` reports, when known before it goes out.
    pub fn set_input_tokens(&mut self, n: u64) {
        if self.phase == Phase::Fresh {
            self.input_tokens = n;
        }
    }

    /// Whether the stream has ended (`message_stop` or `error` went out).
    pub fn ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Whether anything was written yet.
    pub fn started(&self) -> bool {
        self.phase != Phase::Fresh
    }

    /// Whether a `tool_use` block was written.
    pub fn saw_tool(&self) -> bool {
        self.saw_tool
    }

    /// What was written since the last call.
    pub fn take(&mut self) -> Bytes {
        self.out.split().freeze()
    }

    /// Whether output is waiting for [`ClaudeEvents::take`].
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    fn event(&mut self, name: &str, data: &Value) {
        use std::fmt::Write;
        let _ = write!(self.out, "event: {name}\ndata: {data}\n\n");
    }

    /// `message_start`, once. Usage is in it from the start, as Anthropic sends it.
    pub fn start(&mut self) {
        if self.phase != Phase::Fresh {
            return;
        }
        self.phase = Phase::Open;
        let data = json!({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": self.input_tokens, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 0}}});
        self.event("message_start", &data);
    }

    /// Close the open block, if any.
    pub fn close_block(&mut self) {
        if self.open.take().is_some() {
            let index = self.next_index - 1;
            self.event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open_block(&mut self, kind: Block, block: Value) {
        self.start();
        self.close_block();
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some(kind);
        self.event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
    }

    fn delta(&mut self, delta: Value) {
        let index = self.next_index - 1;
        self.event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        );
    }

    /// Answer text. Empty text opens nothing (no empty block before a tool call).
    pub fn text(&mut self, text: &str) {
        if text.is_empty() || self.phase == Phase::Ended {
            return;
        }
        if self.open != Some(Block::Text) {
            self.open_block(Block::Text, json!({"type": "text", "text": ""}));
        }
        self.delta(json!({"type": "text_delta", "text": text}));
    }

    /// Reasoning text the provider showed.
    pub fn thinking(&mut self, text: &str) {
        if text.is_empty() || self.phase == Phase::Ended {
            return;
        }
        if self.open != Some(Block::Thinking) {
            self.open_block(Block::Thinking, json!({"type": "thinking", "thinking": ""}));
        }
        self.delta(json!({"type": "thinking_delta", "thinking": text}));
    }

    /// A tool call starts; its arguments follow through [`ClaudeEvents::tool_args`].
    pub fn tool_start(&mut self, id: &str, name: &str) {
        if self.phase == Phase::Ended {
            return;
        }
        self.saw_tool = true;
        self.open_block(
            Block::Tool,
            json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
        );
    }

    /// A piece of the open tool call's arguments (JSON text, in order).
    pub fn tool_args(&mut self, fragment: &str) {
        if fragment.is_empty() || self.open != Some(Block::Tool) {
            return;
        }
        self.delta(json!({"type": "input_json_delta", "partial_json": fragment}));
    }

    /// Whether the open block is a tool call.
    pub fn tool_open(&self) -> bool {
        self.open == Some(Block::Tool)
    }

    /// End the answer: close the open block, then `message_delta` and `message_stop`. The stop
    /// reason is made consistent with what was written: a tool call means `tool_use` (the client
    /// runs tools only then), and `tool_use` without one means `end_turn` (the client would wait
    /// for results of a call that does not exist).
    pub fn finish(&mut self, stop: StopReason, usage: TokenUsage) {
        if self.phase == Phase::Ended {
            return;
        }
        self.start();
        self.close_block();
        let stop = match stop {
            StopReason::EndTurn if self.saw_tool => StopReason::ToolUse,
            StopReason::ToolUse if !self.saw_tool => StopReason::EndTurn,
            s => s,
        };
        let data = json!({"type": "message_delta",
            "delta": {"stop_reason": stop.as_str(), "stop_sequence": null},
            "usage": {"input_tokens": usage.input, "output_tokens": usage.output,
                      "cache_read_input_tokens": usage.cache_read}});
        self.event("message_delta", &data);
        self.event("message_stop", &json!({"type": "message_stop"}));
        self.phase = Phase::Ended;
    }

    /// End the answer with an `error` event (after whole events only, as everything here is).
    pub fn fail(&mut self, kind: &str, message: &str) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Ended;
        self.open = None;
        let data = json!({"type": "error", "error": {"type": kind, "message": message}});
        self.event("error", &data);
    }
}

/// Check that `bytes` is a complete, valid Claude stream: one `message_start` first, blocks
/// started and stopped in order with consecutive indexes, deltas only inside their open block
/// and of its kind, tool arguments that parse as JSON, one `message_delta` and exactly one
/// `message_stop` at the end (or an `error` event ending it), and no text block without text
/// (clients show an empty one; some proxies open one before every tool call). Used by the tests
/// of every translation.
#[cfg(test)]
pub fn validate(bytes: &[u8]) -> Result<Vec<Value>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let mut events = Vec::new();
    for raw in text.split("\n\n").filter(|e| !e.trim().is_empty()) {
        if raw.starts_with(':') {
            continue;
        }
        let mut name = None;
        let mut data = None;
        for line in raw.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = Some(n);
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = Some(d);
            } else if !line.starts_with(':') {
                return Err(format!("unexpected line {line:?}"));
            }
        }
        let (Some(name), Some(data)) = (name, data) else {
            return Err(format!("event without name or data: {raw:?}"));
        };
        let v: Value = serde_json::from_str(data).map_err(|e| format!("{e}: {data}"))?;
        if v["type"] != name {
            return Err(format!("event {name} carries type {}", v["type"]));
        }
        events.push(v);
    }
    let mut open: Option<(u64, String, String)> = None;
    let mut next = 0u64;
    let mut started = false;
    let mut delta_seen = false;
    let mut stopped = false;
    for (i, e) in events.iter().enumerate() {
        let t = e["type"].as_str().unwrap_or_default();
        if stopped {
            return Err(format!("{t} after the end"));
        }
        match t {
            "message_start" if i == 0 => started = true,
            "error" => stopped = true,
            _ if !started => return Err(format!("{t} before message_start")),
            "content_block_start" => {
                if open.is_some() || delta_seen {
                    return Err("block started while another is open".into());
                }
                if e["index"] != next {
                    return Err(format!("index {} where {next} was due", e["index"]));
                }
                let kind = e["content_block"]["type"].as_str().unwrap_or_default();
                open = Some((next, kind.to_string(), String::new()));
                next += 1;
            }
            "content_block_delta" => {
                let Some((index, kind, args)) = &mut open else {
                    return Err("delta outside a block".into());
                };
                if e["index"] != *index {
                    return Err("delta for another block".into());
                }
                let d = &e["delta"];
                match (kind.as_str(), d["type"].as_str().unwrap_or_default()) {
                    ("text", "text_delta") => args.push_str(d["text"].as_str().unwrap_or_default()),
                    ("thinking", "thinking_delta") | ("thinking", "signature_delta") => {}
                    ("tool_use", "input_json_delta") => {
                        args.push_str(d["partial_json"].as_str().unwrap_or_default())
                    }
                    (k, dt) => return Err(format!("{dt} inside a {k} block")),
                }
            }
            "content_block_stop" => {
                let Some((index, kind, args)) = open.take() else {
                    return Err("stop outside a block".into());
                };
                if e["index"] != index {
                    return Err("stop for another block".into());
                }
                if kind == "text" && args.is_empty() {
                    return Err(format!("empty text block {index}"));
                }
                if kind == "tool_use" {
                    let args = if args.is_empty() { "{}" } else { &args };
                    let parsed: Value = serde_json::from_str(args)
                        .map_err(|err| format!("tool input {args:?} does not parse: {err}"))?;
                    if !parsed.is_object() {
                        return Err(format!("tool input {args} is not an object"));
                    }
                }
            }
            "message_delta" => {
                if open.is_some() || delta_seen {
                    return Err("message_delta with a block open, or twice".into());
                }
                if e["usage"].is_null() || e["delta"]["stop_reason"].is_null() {
                    return Err("message_delta without usage or stop_reason".into());
                }
                delta_seen = true;
            }
            "message_stop" => {
                if !delta_seen {
                    return Err("message_stop without message_delta".into());
                }
                stopped = true;
            }
            "ping" => {}
            other => return Err(format!("unknown event {other}")),
        }
    }
    if !stopped {
        return Err("no message_stop".into());
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_then_tool_is_a_valid_stream_with_a_forced_tool_use_stop() {
        let mut w = ClaudeEvents::new("msg_1", "claude-x");
        w.text("");
        w.text("Checking.");
        w.tool_start("call_1", "Bash");
        w.tool_args("{\"command\":");
        w.tool_args("\"ls\"}");
        w.finish(StopReason::EndTurn, TokenUsage::default());
        let events = validate(&w.take()).unwrap();
        assert_eq!(events[1]["content_block"]["type"], "text");
        let last_delta = &events[events.len() - 2];
        assert_eq!(last_delta["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn tool_use_without_a_tool_becomes_end_turn_and_nothing_follows_the_end() {
        let mut w = ClaudeEvents::new("msg_1", "claude-x");
        w.text("hi");
        w.finish(StopReason::ToolUse, TokenUsage::default());
        w.text("late");
        w.fail("api_error", "late");
        let events = validate(&w.take()).unwrap();
        assert_eq!(events[events.len() - 2]["delta"]["stop_reason"], "end_turn");
    }

    #[test]
    fn a_failure_mid_stream_ends_with_an_error_event() {
        let mut w = ClaudeEvents::new("msg_1", "claude-x");
        w.text("hi");
        w.fail("api_error", "upstream broke");
        let events = validate(&w.take()).unwrap();
        assert_eq!(events.last().unwrap()["error"]["message"], "upstream broke");
    }
}
