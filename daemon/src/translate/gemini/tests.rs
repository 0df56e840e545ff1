use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::translate::claude_events::validate;
use crate::translate::fixtures;
use crate::translate::sse::SseReader;

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn convert(bytes: &[u8], cuts: &[usize]) -> (Vec<u8>, StreamConverter) {
    let mut conv = StreamConverter::new("claude-sonnet-4-5", "google-ai");
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
    (out, conv)
}

fn sse(chunks: &[Value]) -> Vec<u8> {
    chunks
        .iter()
        .map(|c| format!("data: {c}\r\n\r\n"))
        .collect::<String>()
        .into_bytes()
}

fn parts(parts: Value, finish: Option<&str>) -> Value {
    let mut c = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
                       "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 4, "totalTokenCount": 124},
                       "modelVersion": "gemini-2.5-pro", "responseId": "r1"});
    if let Some(f) = finish {
        c["candidates"][0]["finishReason"] = json!(f);
    }
    c
}

#[test]
fn request_mapping_keeps_known_signatures() {
    let signatures = Signatures::default();
    signatures.insert("toolu_01A", "c2lnLWZyb20tZ2VtaW5p");
    insta::assert_snapshot!(
        "gemini_request_stream",
        pretty(
            &serde_json::to_value(
                request(
                    &fixtures::conversation(),
                    "gemini-2.5-pro",
                    true,
                    &signatures
                )
                .body
            )
            .unwrap()
        )
    );
    let plain = request(&fixtures::plain(), "gemini-2.5-flash", false, &signatures);
    assert_eq!(
        plain.path,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
}

#[test]
fn response_mapping() {
    let signatures = Signatures::default();
    let body = json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Thinking it over", "thought": true},
            {"text": "Let me check."},
            {"functionCall": {"name": "Bash", "args": {"command": "ls"}}, "thoughtSignature": "c2ln"}
        ]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 30, "thoughtsTokenCount": 5,
                          "cachedContentTokenCount": 20, "totalTokenCount": 155}
    });
    let mut out = response(&body, "claude-sonnet-4-5", &signatures);
    let tool_id = out["content"][2]["id"].as_str().unwrap().to_string();
    assert_eq!(signatures.get(&tool_id).as_deref(), Some("c2ln"));
    out["id"] = json!("msg_fixed");
    out["content"][2]["id"] = json!("toolu_fixed");
    insta::assert_snapshot!("gemini_response_tool_call", pretty(&out));
}

#[test]
fn streamed_tool_call_and_its_signature_survive_the_next_turn() {
    let bytes = sse(&[
        parts(json!([{"text": "Let me"}]), None),
        parts(json!([{"text": " check."}]), None),
        parts(
            json!([{"functionCall": {"name": "Bash", "args": {"command": "ls"}}, "thoughtSignature": "U0lH"}]),
            Some("STOP"),
        ),
    ]);
    let (out, conv) = convert(&bytes, &[]);
    let events = validate(&out).unwrap();
    let tool = events
        .iter()
        .find(|e| e["content_block"]["type"] == "tool_use")
        .unwrap();
    let id = tool["content_block"]["id"].as_str().unwrap();
    assert_eq!(
        conv.signed_calls,
        vec![(id.to_string(), "U0lH".to_string())]
    );
    let delta = &events[events.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["input_tokens"], 120);
    assert_eq!(events[0]["message"]["usage"]["input_tokens"], 120);
    let text = String::from_utf8(out.clone())
        .unwrap()
        .replace(events[0]["message"]["id"].as_str().unwrap(), "msg_fixed")
        .replace(id, "toolu_fixed");
    insta::assert_snapshot!("gemini_stream_tool_call", text);

    // The next turn sends the call back: its signature goes with it.
    let signatures = Signatures::default();
    for (id, sig) in &conv.signed_calls {
        signatures.insert(id, sig);
    }
    let next = json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "list"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "Bash", "input": {"command": "ls"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "a.txt"}]}
    ]});
    let body = request(&next, "gemini-2.5-pro", true, &signatures).body;
    assert_eq!(body["contents"][1]["parts"][0]["thoughtSignature"], "U0lH");
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"]["name"],
        "Bash"
    );
}

#[test]
fn rpc_errors_carry_the_retry_delay() {
    let body = br#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"31s"}]}}"#;
    let e = error(429, body, "google-ai", None);
    assert_eq!(
        (e.status, e.kind, e.retry_after),
        (429, "rate_limit_error", Some(31))
    );
    assert_eq!(e.message, "google-ai: Resource has been exhausted");
    let e = error(503, b"not json", "google-ai", None);
    assert_eq!((e.status, e.kind), (529, "overloaded_error"));
}

fn finish_of(chunks: &[Value]) -> Option<&str> {
    chunks.last()?["candidates"][0]["finishReason"].as_str()
}

fn stream_strategy() -> impl Strategy<Value = Vec<Value>> {
    let part = prop_oneof![
        "[a-z ]{0,8}".prop_map(|t| json!({"text": t})),
        "[a-z]{0,6}".prop_map(|t| json!({"text": t, "thought": true})),
        "[a-z]{1,6}".prop_map(
            |t| json!({"functionCall": {"name": "T", "args": {"a": t}}, "thoughtSignature": "c2ln"})
        ),
    ];
    (
        prop::collection::vec(prop::collection::vec(part, 0..3), 1..8),
        0usize..3,
    )
        .prop_map(|(chunks, finish)| {
            let n = chunks.len();
            chunks
                .into_iter()
                .enumerate()
                .map(|(i, p)| {
                    parts(
                        Value::Array(p),
                        (i + 1 == n).then_some(["STOP", "MAX_TOKENS", "SAFETY"][finish]),
                    )
                })
                .collect()
        })
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
        let (out, _) = convert(&bytes, &cuts);
        let events = validate(&out).map_err(TestCaseError::fail)?;
        let calls = chunks.iter().flat_map(|c| c["candidates"][0]["content"]["parts"].as_array().cloned().unwrap_or_default()).filter(|p| p.get("functionCall").is_some()).count();
        let started = events.iter().filter(|e| e["content_block"]["type"] == "tool_use").count();
        prop_assert_eq!(calls, started);
        let stop = &events[events.len() - 2]["delta"]["stop_reason"];
        if calls > 0 && finish_of(&chunks) == Some("STOP") {
            prop_assert_eq!(stop, "tool_use");
        } else {
            prop_assert_ne!(stop, "tool_use");
        }
    }
}
