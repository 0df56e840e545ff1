use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::translate::claude_events::validate;
use crate::translate::fixtures;
use crate::translate::sse::SseReader;

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Feed `bytes` split at `cuts` through the SSE reader and the converter.
fn convert(bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut conv = StreamConverter::new("claude-sonnet-4-5", "openai");
    let mut reader = SseReader::default();
    let mut out = Vec::new();
    let mut payloads = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        reader.feed(&bytes[start..cut], &mut payloads);
        start = cut;
        for p in payloads.drain(..) {
            conv.data(&p).unwrap();
            out.extend_from_slice(&conv.events.take());
        }
    }
    reader.finish(&mut payloads);
    for p in payloads.drain(..) {
        conv.data(&p).unwrap();
    }
    conv.end();
    out.extend_from_slice(&conv.events.take());
    out
}

fn sse(chunks: &[Value]) -> Vec<u8> {
    let mut out = String::new();
    for c in chunks {
        out.push_str(&format!("data: {c}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

#[test]
fn request_mapping() {
    insta::assert_snapshot!(
        "openai_request_stream",
        pretty(&request(&fixtures::conversation(), "gpt-4o", true).body)
    );
    insta::assert_snapshot!(
        "openai_request_reasoning_model",
        pretty(&request(&fixtures::conversation(), "o3-mini", false).body)
    );
}

#[test]
fn response_mapping() {
    let body = json!({
        "id": "chatcmpl-9", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "Let me check.",
            "tool_calls": [{"id": "call_abc", "type": "function",
                            "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}}]}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                  "prompt_tokens_details": {"cached_tokens": 20}}
    });
    let mut out = response(&body, "claude-sonnet-4-5");
    out["id"] = json!("msg_fixed");
    insta::assert_snapshot!("openai_response_tool_call", pretty(&out));
}

#[test]
fn streamed_tool_call_keeps_its_arguments_and_stop_reason() {
    let bytes = sse(&[
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Checking."}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_Q1", "type": "function", "function": {"name": "Bash", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"command\":"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"ls\"}"}}]}),
            None,
        ),
        // Some servers say `stop` after a tool call.
        chunk(json!({}), Some("stop")),
        json!({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 0}}}),
    ]);
    let out = convert(&bytes, &[]);
    let events = validate(&out).unwrap();
    let text = String::from_utf8(out)
        .unwrap()
        .replace(events[0]["message"]["id"].as_str().unwrap(), "msg_fixed");
    insta::assert_snapshot!("openai_stream_tool_call", text);
    let delta = &events[events.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["input_tokens"], 120);
    assert_eq!(delta["usage"]["output_tokens"], 30);
    // No empty text block: the first block is the one with text in it.
    assert_eq!(events[2]["delta"]["text"], "Checking.");
}

#[test]
fn interleaved_calls_each_get_their_whole_arguments() {
    let bytes = sse(&[
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "A", "arguments": "{\"x\""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "B", "arguments": "{\"y\":"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "function": {"arguments": "2}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
    ]);
    let events = validate(&convert(&bytes, &[])).unwrap();
    let mut inputs = Vec::new();
    let mut current = String::new();
    for e in &events {
        match e["type"].as_str().unwrap() {
            "content_block_delta" => current.push_str(e["delta"]["partial_json"].as_str().unwrap()),
            "content_block_stop" => inputs.push(std::mem::take(&mut current)),
            _ => {}
        }
    }
    assert_eq!(inputs, vec!["{\"x\":1}", "{\"y\":2}"]);
}

#[test]
fn an_error_chunk_is_reported_not_relayed() {
    let mut conv = StreamConverter::new("claude-x", "openai");
    let err = conv
        .data(r#"{"error":{"message":"overloaded","type":"server_error","code":503}}"#)
        .unwrap_err();
    assert_eq!(err.kind, "overloaded_error");
    assert!(
        err.message.starts_with("openai: overloaded"),
        "{}",
        err.message
    );
    assert!(!conv.events.started());
}

/// A random valid Chat Completions stream: text pieces and sequential tool calls whose
/// arguments are split anywhere, a finish chunk, maybe a usage chunk.
fn stream_strategy() -> impl Strategy<Value = Vec<Value>> {
    let piece = prop_oneof![
        "[a-z ]{0,8}".prop_map(|t| (0u8, t)),
        "[a-z]{1,6}".prop_map(|t| (1u8, t)),
    ];
    (prop::collection::vec(piece, 0..12), any::<bool>(), 0usize..4).prop_map(
        |(pieces, usage, finish)| {
            let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
            let mut tool = 0u64;
            for (kind, text) in pieces {
                if kind == 0 {
                    chunks.push(chunk(json!({"content": text}), None));
                } else {
                    let args = json!({"arg": text}).to_string();
                    let mid = args.len() / 2;
                    chunks.push(chunk(json!({"tool_calls": [{"index": tool, "id": format!("call_{tool}"), "type": "function", "function": {"name": "T", "arguments": args[..mid]}}]}), None));
                    chunks.push(chunk(json!({"tool_calls": [{"index": tool, "function": {"arguments": args[mid..]}}]}), None));
                    tool += 1;
                }
            }
            let reason = ["stop", "tool_calls", "length", "content_filter"][finish];
            chunks.push(chunk(json!({}), Some(reason)));
            if usage {
                chunks.push(json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}));
            }
            chunks
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_stream_split_anywhere_is_a_valid_claude_stream(
        chunks in stream_strategy(),
        cuts in prop::collection::vec(0usize..4000, 0..6),
    ) {
        let bytes = sse(&chunks);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let whole = convert(&bytes, &[]);
        let split = convert(&bytes, &cuts);
        let events = validate(&split).map_err(TestCaseError::fail)?;
        let tools = chunks.iter().filter(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"].is_string()).count();
        let started = events.iter().filter(|e| e["content_block"]["type"] == "tool_use").count();
        prop_assert_eq!(tools, started);
        let stop = &events[events.len() - 2]["delta"]["stop_reason"];
        let finish = chunks.iter().find_map(|c| c["choices"][0]["finish_reason"].as_str());
        if tools > 0 && finish != Some("length") {
            prop_assert_eq!(stop, "tool_use");
        } else {
            prop_assert_ne!(stop, "tool_use");
        }
        // The split changes nothing but the ids.
        let strip = |b: &[u8]| validate(b).map(|ev| ev.into_iter().skip(1).collect::<Vec<_>>());
        prop_assert_eq!(strip(&whole).map_err(TestCaseError::fail)?, strip(&split).map_err(TestCaseError::fail)?);
    }
}
