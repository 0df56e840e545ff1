//! Claude requests shaped like Claude Code's, shared by the translation tests.

use serde_json::{json, Value};

/// A multi-turn tool conversation with everything a translation must carry: a system prompt
/// with Claude Code's attribution line, a `system` message, an image, a tool call and its result
/// split in two blocks, tools with full JSON Schema, `tool_choice`, thinking, stop sequences.
pub fn conversation() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 8192,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["\n\nHuman:"],
        "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 4096},
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.0.14; cc_entrypoint=cli"},
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and list the files."},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should look.", "signature": "c2lnbmF0dXJl"},
                {"type": "text", "text": "A red square. Let me list the files."},
                {"type": "tool_use", "id": "toolu_01A", "name": "Bash", "input": {"command": "ls"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "a.txt"},
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": [{"type": "text", "text": "b.txt"}]},
                {"type": "text", "text": "Now read a.txt."}
            ]},
            {"role": "system", "content": "The user switched to plan mode."},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_01B", "name": "Read", "input": {"file_path": "a.txt"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01B", "is_error": true, "content": "no such file"}
            ]}
        ],
        "tools": [
            {"name": "Bash", "description": "Run a command", "input_schema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object", "additionalProperties": false,
                "properties": {
                    "command": {"type": "string", "minLength": 1},
                    "timeout": {"type": ["number", "null"], "maximum": 600000}
                },
                "required": ["command"]}},
            {"name": "Read", "description": "Read a file", "input_schema": {
                "type": "object",
                "properties": {"file_path": {"type": "string", "format": "path"}},
                "required": ["file_path"]}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
        "metadata": {"user_id": "user_abc_account__session_1"}
    })
}

/// The same conversation, non-streamed and without thinking.
pub fn plain() -> Value {
    let mut v = conversation();
    if let Some(o) = v.as_object_mut() {
        o.remove("thinking");
        o.insert("stream".into(), json!(false));
    }
    v
}
