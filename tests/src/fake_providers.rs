//! A fake OpenAI Chat Completions API and a fake Gemini API on one 127.0.0.1 server, port 0.
//!
//! - OpenAI: `POST /v1/chat/completions` (base URL `{url}/v1`), JSON or SSE with `data: [DONE]`.
//! - Gemini: `POST /v1beta/models/{model}:generateContent` and
//!   `:streamGenerateContent?alt=sse` (base URL `{url}`), JSON or SSE without an end marker.
//!
//! A normal answer is a tool call when the request declares tools and its last message is not a
//! tool answer (OpenAI streams the arguments in fragments; Gemini sends the call whole, with a
//! `thoughtSignature`), otherwise text in three pieces. Tests script what the next requests of a
//! provider kind get: an error, a stall after the headers, or a stream cut after some chunks.
//! Every request is recorded.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Body = BoxBody<Bytes, std::io::Error>;

/// The signature the fake Gemini puts on every function call.
pub const GEMINI_SIGNATURE: &str = "ZmFrZS1nZW1pbmktc2lnbmF0dXJl";
/// Usage both fakes report.
pub const PROMPT_TOKENS: u64 = 40;
pub const COMPLETION_TOKENS: u64 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    OpenAi,
    Gemini,
}

/// What a scripted request gets.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// The normal answer (to queue one before other behaviors).
    Normal,
    /// This status and body.
    Error { status: u16, body: String },
    /// The normal stream, with this pause after the first chunk.
    StallAfterFirst(Duration),
    /// The normal stream, ended after this many chunks (cleanly, so every chunk sent arrives)
    /// without its end marker or finish reason.
    CutAfter(usize),
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub which: Which,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    scripts: Mutex<Vec<(Which, VecDeque<Behavior>)>>,
    recorded: Mutex<Vec<Recorded>>,
}

pub struct FakeProviders {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeProviders {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeProviders {
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let task = crate::serve::spawn(listener, None, shared.clone(), |_| {}, handle);
        Ok(Self { addr, shared, task })
    }

    /// The OpenAI base URL (`providers.openai.baseUrl`).
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The Gemini base URL (`providers.google-ai.baseUrl`).
    pub fn gemini_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `times` requests to `which` get `behavior`.
    pub fn script(&self, which: Which, times: usize, behavior: Behavior) {
        let mut s = self
            .shared
            .scripts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let entry = match s.iter_mut().position(|(w, _)| *w == which) {
            Some(i) => &mut s[i].1,
            None => {
                s.push((which, VecDeque::new()));
                &mut s.last_mut().expect("just pushed").1
            }
        };
        entry.extend(std::iter::repeat_n(behavior, times));
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.shared
            .recorded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn count(&self, which: Which) -> usize {
        self.recorded().iter().filter(|r| r.which == which).count()
    }
}

fn next_behavior(shared: &Shared, which: Which) -> Option<Behavior> {
    let mut s = shared.scripts.lock().unwrap_or_else(|p| p.into_inner());
    s.iter_mut()
        .find(|(w, _)| *w == which)
        .and_then(|(_, q)| q.pop_front())
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (which, stream, model) = if path.starts_with("/v1/chat/completions") {
        let model = body["model"].as_str().unwrap_or_default().to_string();
        (Which::OpenAi, body["stream"] == true, model)
    } else if let Some(rest) = path.strip_prefix("/v1beta/models/") {
        let (model, action) = rest.split_once(':').unwrap_or((rest, ""));
        (
            Which::Gemini,
            action.starts_with("streamGenerateContent"),
            model.to_string(),
        )
    } else {
        return Ok(full(
            404,
            "application/json",
            r#"{"error":{"message":"no such route"}}"#.into(),
        ));
    };
    let counting = path.contains(":countTokens");
    shared
        .recorded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Recorded {
            which,
            path,
            headers,
            body: body.clone(),
        });
    if which == Which::Gemini && counting {
        return Ok(full(
            200,
            "application/json",
            json!({"totalTokens": gemini_words(&body["generateContentRequest"])}).to_string(),
        ));
    }
    let behavior = next_behavior(&shared, which);
    if let Some(Behavior::Error { status, body }) = &behavior {
        return Ok(full(*status, "application/json", body.clone()));
    }
    let tool = wants_tool(which, &body);
    if !stream {
        let answer = match which {
            Which::OpenAi => openai_json(&model, tool),
            Which::Gemini => gemini_json(tool),
        };
        return Ok(full(200, "application/json", answer.to_string()));
    }
    let chunks = match which {
        Which::OpenAi => openai_chunks(&model, tool),
        Which::Gemini => gemini_chunks(tool),
    };
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(8);
    tokio::spawn(async move {
        for (i, c) in chunks.into_iter().enumerate() {
            if let Some(Behavior::CutAfter(n)) = &behavior {
                if i == *n {
                    return;
                }
            }
            if tx.send(Ok(Frame::data(Bytes::from(c)))).await.is_err() {
                return;
            }
            if i == 0 {
                if let Some(Behavior::StallAfterFirst(d)) = &behavior {
                    tokio::time::sleep(*d).await;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    Ok(r)
}

/// The fake's token count: whitespace-separated words of every text part, system included.
pub fn gemini_words(request: &Value) -> usize {
    let mut n = 0;
    let contents = request["contents"].as_array().into_iter().flatten();
    for content in contents.chain(std::iter::once(&request["systemInstruction"])) {
        for part in content["parts"].as_array().into_iter().flatten() {
            n += part["text"]
                .as_str()
                .map_or(0, |t| t.split_whitespace().count());
        }
    }
    n
}

/// Tools declared, and the conversation does not end with a tool's answer.
fn wants_tool(which: Which, body: &Value) -> bool {
    match which {
        Which::OpenAi => {
            body["tools"].as_array().is_some_and(|t| !t.is_empty())
                && body["messages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .is_some_and(|m| m["role"] != "tool")
        }
        Which::Gemini => {
            body["tools"].as_array().is_some_and(|t| !t.is_empty())
                && body["contents"]
                    .as_array()
                    .and_then(|c| c.last())
                    .is_some_and(|c| {
                        !c["parts"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|p| p.get("functionResponse").is_some())
                    })
        }
    }
}

fn full(status: u16, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// The text both fakes answer, in pieces.
pub const TEXT_PIECES: [&str; 3] = ["Hello", " from", " the provider."];

fn openai_json(model: &str, tool: bool) -> Value {
    let message = if tool {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_fake1", "type": "function",
               "function": {"name": "Bash", "arguments": "{\"command\":\"ls -la\"}"}}]})
    } else {
        json!({"role": "assistant", "content": TEXT_PIECES.concat()})
    };
    json!({"id": "chatcmpl-fake", "object": "chat.completion", "model": model,
           "choices": [{"index": 0, "message": message, "finish_reason": if tool {"tool_calls"} else {"stop"}}],
           "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}})
}

fn openai_chunks(model: &str, tool: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Option<&str>| {
        let c = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    if tool {
        out.push(chunk(json!({"content": "Let me check."}), None));
        out.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_fake1", "type": "function", "function": {"name": "Bash", "arguments": ""}}]}), None));
        out.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"command\": \"l"}}]}),
            None,
        ));
        out.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "s -la\"}"}}]}),
            None,
        ));
        out.push(chunk(json!({}), Some("tool_calls")));
    } else {
        for p in TEXT_PIECES {
            out.push(chunk(json!({"content": p}), None));
        }
        out.push(chunk(json!({}), Some("stop")));
    }
    let usage = json!({"id": "chatcmpl-fake", "choices": [], "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}});
    out.push(format!("data: {usage}\n\n"));
    out.push("data: [DONE]\n\n".into());
    out
}

fn gemini_usage(done: bool) -> Value {
    json!({"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": if done {COMPLETION_TOKENS} else {2},
           "totalTokenCount": PROMPT_TOKENS + COMPLETION_TOKENS})
}

fn gemini_json(tool: bool) -> Value {
    let parts = if tool {
        json!([{"functionCall": {"name": "Bash", "args": {"command": "ls -la"}}, "thoughtSignature": GEMINI_SIGNATURE}])
    } else {
        json!([{"text": TEXT_PIECES.concat()}])
    };
    json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
           "usageMetadata": gemini_usage(true), "modelVersion": "gemini-fake", "responseId": "resp-fake"})
}

fn gemini_chunks(tool: bool) -> Vec<String> {
    let chunk = |parts: Value, finish: bool| {
        let mut c = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
                           "usageMetadata": gemini_usage(finish), "modelVersion": "gemini-fake", "responseId": "resp-fake"});
        if finish {
            c["candidates"][0]["finishReason"] = json!("STOP");
        }
        format!("data: {c}\r\n\r\n")
    };
    if tool {
        vec![
            chunk(json!([{"text": "Let me check."}]), false),
            chunk(
                json!([{"functionCall": {"name": "Bash", "args": {"command": "ls -la"}}, "thoughtSignature": GEMINI_SIGNATURE}]),
                true,
            ),
        ]
    } else {
        let n = TEXT_PIECES.len();
        TEXT_PIECES
            .iter()
            .enumerate()
            .map(|(i, p)| chunk(json!([{"text": p}]), i + 1 == n))
            .collect()
    }
}
