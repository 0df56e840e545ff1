//! Anthropic SSE streams in the exact event grammar (docs/translation.md describes it).

use serde_json::{json, Value};

/// One event, framed as Anthropic frames it.
pub fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// Usage the fake reports for every answer.
pub const INPUT_TOKENS: u64 = 25;
pub const OUTPUT_TOKENS: u64 = 12;

/// A text answer: `message_start`, one text block in `parts` deltas, `message_delta`,
/// `message_stop` (with a `ping` after the block start, as Anthropic sends).
pub fn text_stream(id: &str, model: &str, parts: &[&str]) -> Vec<String> {
    let mut out = vec![
        event("message_start", &message_start(id, model)),
        event(
            "content_block_start",
            &json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        event("ping", &json!({"type":"ping"})),
    ];
    for p in parts {
        out.push(event(
            "content_block_delta",
            &json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":p}}),
        ));
    }
    out.push(event(
        "content_block_stop",
        &json!({"type":"content_block_stop","index":0}),
    ));
    out.push(event(
        "message_delta",
        &json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":OUTPUT_TOKENS}}),
    ));
    out.push(event("message_stop", &json!({"type":"message_stop"})));
    out
}

/// Text then a `tool_use` block whose input arrives in fragments.
pub fn tool_stream(id: &str, model: &str, tool: &str) -> Vec<String> {
    vec![
        event("message_start", &message_start(id, model)),
        event(
            "content_block_start",
            &json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        event(
            "content_block_delta",
            &json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check."}}),
        ),
        event(
            "content_block_stop",
            &json!({"type":"content_block_stop","index":0}),
        ),
        event(
            "content_block_start",
            &json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":tool,"input":{}}}),
        ),
        event(
            "content_block_delta",
            &json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}),
        ),
        event(
            "content_block_delta",
            &json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"command\": \"l"}}),
        ),
        event(
            "content_block_delta",
            &json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"s -la\"}"}}),
        ),
        event(
            "content_block_stop",
            &json!({"type":"content_block_stop","index":1}),
        ),
        event(
            "message_delta",
            &json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":OUTPUT_TOKENS}}),
        ),
        event("message_stop", &json!({"type":"message_stop"})),
    ]
}

fn message_start(id: &str, model: &str) -> Value {
    json!({"type":"message_start","message":{
        "id":id,"type":"message","role":"assistant","model":model,"content":[],
        "stop_reason":null,"stop_sequence":null,
        "usage":{"input_tokens":INPUT_TOKENS,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}})
}

/// The non-streamed answer for the same text.
pub fn text_message(id: &str, model: &str, text: &str) -> Value {
    json!({
        "id": id, "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    })
}
