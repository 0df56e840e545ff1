//! A fake Anthropic API on 127.0.0.1, port 0.
//!
//! Each test scripts what a credential (the `x-api-key` or Bearer token it receives) gets for its
//! next requests: an error status with headers and body, an empty body, a hang before headers, a
//! stream dropped after K events, slow chunks, or raw bytes. Unscripted requests get a normal
//! answer: JSON or SSE in Anthropic's exact grammar, a tool call when the request has tools,
//! `/v1/models`, `/v1/messages/count_tokens`. The fake counts requests per credential, records
//! every request, and counts answers whose client went away (cancels).
//!
//! Request headers shape normal streams, so a client can ask through the proxy:
//! `x-fake-events: N` text deltas, `x-fake-hold-ms: N` wait before the last event,
//! `x-fake-cut-inside: K` K whole events, then half of the next, then the connection breaks,
//! `x-fake-pace-ms: N` each event N ms after the one before (a model writing, as the real API
//! streams).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

use crate::sse;

type Body = BoxBody<Bytes, std::io::Error>;

/// What a scripted credential gets.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// The normal answer.
    Normal,
    /// An answer with this status, extra headers and body.
    Error {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// 200 `text/event-stream` with an empty body.
    Empty,
    /// Never send headers (until the client goes away).
    Hang,
    /// A normal stream cut (connection aborted) after this many events.
    DropAfter(usize),
    /// A normal stream cut inside an event: this many whole events, then the first half of the
    /// next one, then the connection is aborted.
    CutInside(usize),
    /// A normal stream with this pause before every event.
    Slow(Duration),
    /// The connection is closed before any response header.
    CloseBeforeHeaders,
    /// Over HTTP/2, the stream is reset with `REFUSED_STREAM` before any header: the server
    /// says it did not process the request (a server at its stream limit does this). Over
    /// HTTP/1.1 the connection is closed, as with `CloseBeforeHeaders`.
    RefusedStream,
    /// Exactly these headers and bytes.
    Raw {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

impl Behavior {
    /// An Anthropic error answer: `{"type":"error","error":{"type":kind,"message":message}}`.
    pub fn error(status: u16, kind: &str, message: &str) -> Self {
        Behavior::Error {
            status,
            headers: Vec::new(),
            body: serde_json::json!({"type":"error","error":{"type":kind,"message":message}})
                .to_string(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Behavior::Error { headers, .. } | Behavior::Raw { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub credential: String,
    /// HTTP/1.1, or HTTP/2 over TLS.
    pub version: http::Version,
}

#[derive(Default)]
struct Shared {
    /// Keep every request (tests); off for the benchmark, where it would hold every body.
    record: bool,
    scripts: Mutex<HashMap<String, VecDeque<Behavior>>>,
    counts: Mutex<HashMap<String, usize>>,
    recorded: Mutex<Vec<Recorded>>,
    cancels: AtomicUsize,
    cancelled: Notify,
    connections: AtomicUsize,
    /// Extra headers on every answer to a credential (e.g. unified quota headers).
    answer_headers: Mutex<HashMap<String, Vec<(String, String)>>>,
    /// Random faults for unscripted requests: the rate and a seeded generator (the soak).
    faults: Mutex<Option<(f64, fastrand::Rng)>>,
    next_id: AtomicUsize,
}

pub struct FakeAnthropic {
    pub addr: SocketAddr,
    https: bool,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeAnthropic {
    /// Bind 127.0.0.1:0 and serve in the background, recording every request.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(true).await
    }

    /// Like [`FakeAnthropic::start`]; `record: false` keeps only the counters.
    pub async fn start_with(record: bool) -> std::io::Result<Self> {
        Self::serve(record, None).await
    }

    /// An HTTPS fake (`https://127.0.0.1:P`) presenting `tls`'s certificate, recording every
    /// request; over HTTP/2 when the client picks it by ALPN.
    pub async fn start_tls(tls: tokio_rustls::TlsAcceptor) -> std::io::Result<Self> {
        Self::serve(true, Some(tls)).await
    }

    /// Like [`FakeAnthropic::start_tls`]; `record: false` keeps only the counters.
    pub async fn start_tls_with(
        record: bool,
        tls: tokio_rustls::TlsAcceptor,
    ) -> std::io::Result<Self> {
        Self::serve(record, Some(tls)).await
    }

    async fn serve(record: bool, tls: Option<tokio_rustls::TlsAcceptor>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            record,
            ..Shared::default()
        });
        let https = tls.is_some();
        let task = crate::serve::spawn(
            listener,
            tls,
            shared.clone(),
            |s| {
                s.connections.fetch_add(1, Ordering::SeqCst);
            },
            handle,
        );
        Ok(Self {
            addr,
            https,
            shared,
            task,
        })
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The next `times` requests with `credential` get `behavior`.
    pub fn script(&self, credential: &str, times: usize, behavior: Behavior) {
        let mut scripts = lock(&self.shared.scripts);
        let queue = scripts.entry(credential.to_string()).or_default();
        for _ in 0..times {
            queue.push_back(behavior.clone());
        }
    }

    /// From now on, each unscripted request fails with probability `rate`, with a fault drawn
    /// from a generator seeded with `seed`: a 429 (retry after 1 s), a 529, a 500, an empty body,
    /// a connection closed before headers, a stream whose first event is `overloaded_error`, or
    /// a stream dropped after two events.
    pub fn set_fault_rate(&self, rate: f64, seed: u64) {
        *lock(&self.shared.faults) = Some((rate, fastrand::Rng::with_seed(seed)));
    }

    /// Every later answer to `credential` carries these headers too.
    pub fn set_answer_headers(&self, credential: &str, headers: &[(&str, &str)]) {
        lock(&self.shared.answer_headers).insert(
            credential.to_string(),
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }

    /// Requests received with `credential` so far.
    pub fn count(&self, credential: &str) -> usize {
        lock(&self.shared.counts)
            .get(credential)
            .copied()
            .unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        lock(&self.shared.counts).values().sum()
    }

    pub fn last(&self) -> Option<Recorded> {
        lock(&self.shared.recorded).last().cloned()
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        lock(&self.shared.recorded).clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Answers abandoned by their client so far.
    pub fn cancels(&self) -> usize {
        self.shared.cancels.load(Ordering::SeqCst)
    }

    /// Wait until at least `n` cancels were seen, or `timeout` passes. Returns the count.
    pub async fn wait_cancels(&self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.cancelled.notified();
            let seen = self.cancels();
            if seen >= n {
                return seen;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.cancels();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn credential(h: &HeaderMap) -> String {
    if let Some(k) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return k.to_string();
    }
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("none")
        .to_string()
}

/// A service error whose cause is an h2 error: see `Behavior::RefusedStream`.
#[derive(Debug)]
struct Refused(h2::Error);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused by the test before processing")
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Counts a cancel if dropped before `done()`: the client went away first.
struct CancelGuard {
    shared: Arc<Shared>,
    done: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.shared.cancels.fetch_add(1, Ordering::SeqCst);
            self.shared.cancelled.notify_waiters();
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let cred = credential(&parts.headers);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *lock(&shared.counts).entry(cred.clone()).or_default() += 1;
    if shared.record {
        lock(&shared.recorded).push(Recorded {
            method: parts.method.to_string(),
            path_and_query: path_and_query.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
            credential: cred.clone(),
            version: parts.version,
        });
    }
    let behavior = lock(&shared.scripts)
        .get_mut(&cred)
        .and_then(VecDeque::pop_front)
        .or_else(|| random_fault(&shared))
        .unwrap_or(Behavior::Normal);
    let n = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let path = parts.uri.path();

    let response = match behavior {
        Behavior::Error {
            status,
            headers,
            body,
        } => full(status, &headers, "application/json", body.into_bytes()),
        Behavior::Raw {
            status,
            headers,
            body,
        } => full(status, &headers, "application/octet-stream", body),
        Behavior::Empty => full(200, &[], "text/event-stream; charset=utf-8", Vec::new()),
        Behavior::CloseBeforeHeaders => {
            return Err(std::io::Error::other(
                "closed by the test before any header",
            ))
        }
        // hyper resets the stream with the reason of an h2 error it finds among the service
        // error's causes (`io::Error` itself shows its inner error's cause, not the inner one).
        Behavior::RefusedStream => {
            return Err(std::io::Error::other(Refused(h2::Error::from(
                h2::Reason::REFUSED_STREAM,
            ))))
        }
        Behavior::Hang => {
            let mut guard = CancelGuard {
                shared: shared.clone(),
                done: false,
            };
            std::future::pending::<()>().await;
            guard.done = true;
            full(500, &[], "text/plain", Vec::new())
        }
        behavior => normal(&shared, path, &parts.headers, &body, n, behavior),
    };
    let mut response = response;
    if let Some(extra) = lock(&shared.answer_headers).get(&cred) {
        for (k, v) in extra {
            if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), v.parse()) {
                response.headers_mut().insert(k, v);
            }
        }
    }
    Ok(response)
}

/// A fault drawn for the soak, when fault injection is on and the draw says so.
fn random_fault(shared: &Shared) -> Option<Behavior> {
    let mut faults = lock(&shared.faults);
    let (rate, rng) = faults.as_mut()?;
    if rng.f64() >= *rate {
        return None;
    }
    let overloaded = sse::event(
        "error",
        &serde_json::json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
    );
    Some(match rng.u8(0..7) {
        0 => Behavior::error(429, "rate_limit_error", "slow down").with_header("retry-after", "1"),
        1 => Behavior::error(529, "overloaded_error", "Overloaded"),
        2 => Behavior::error(500, "api_error", "Internal server error"),
        3 => Behavior::Empty,
        4 => Behavior::CloseBeforeHeaders,
        5 => Behavior::Raw {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: overloaded.into_bytes(),
        },
        _ => Behavior::DropAfter(2),
    })
}

fn full(
    status: u16,
    headers: &[(String, String)],
    content_type: &str,
    body: Vec<u8>,
) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert("content-type", v);
    }
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), v.parse()) {
            // A scripted content-type replaces the default one.
            if k == http::header::CONTENT_TYPE {
                h.insert(k, v);
            } else {
                h.append(k, v);
            }
        }
    }
    r
}

#[derive(serde::Deserialize, Default)]
struct Peek {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<ToolName>>,
    #[serde(default)]
    messages: Vec<PeekMessage>,
}

#[derive(serde::Deserialize, Default)]
struct PeekMessage {
    #[serde(default)]
    content: serde_json::Value,
}

impl Peek {
    /// The tool a streamed answer calls: `Bash` when offered, else the first tool; none once the
    /// last message carries a tool result, so an agent (Claude Code) ends its turn with text.
    fn tool_to_call(&self) -> Option<&str> {
        let tools = self.tools.as_deref().filter(|t| !t.is_empty())?;
        let answered = self.messages.last().is_some_and(|m| {
            m.content.as_array().is_some_and(|blocks| {
                blocks
                    .iter()
                    .any(|b| b.get("type").and_then(|t| t.as_str()) == Some("tool_result"))
            })
        });
        if answered {
            return None;
        }
        let bash = tools.iter().find(|t| t.name == "Bash");
        Some(bash.unwrap_or(&tools[0]).name.as_str())
    }
}

#[derive(serde::Deserialize)]
struct ToolName {
    name: String,
}

fn header_num(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

fn normal(
    shared: &Arc<Shared>,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    n: usize,
    behavior: Behavior,
) -> Response<Body> {
    let common = vec![
        ("request-id".to_string(), format!("req_fake_{n}")),
        (
            "anthropic-ratelimit-requests-remaining".to_string(),
            "99".to_string(),
        ),
    ];
    if path == "/v1/models" || path.starts_with("/v1/models/") {
        let models = serde_json::json!({
            "data": [{"type":"model","id":"claude-sonnet-4-5-20250929","display_name":"Claude Sonnet 4.5","created_at":"2025-09-29T00:00:00Z"}],
            "has_more": false, "first_id": "claude-sonnet-4-5-20250929", "last_id": "claude-sonnet-4-5-20250929"
        });
        return full(
            200,
            &common,
            "application/json",
            models.to_string().into_bytes(),
        );
    }
    if path == "/v1/messages/count_tokens" {
        let count = serde_json::json!({"input_tokens": body.len() / 4});
        return full(
            200,
            &common,
            "application/json",
            count.to_string().into_bytes(),
        );
    }
    if path != "/v1/messages" {
        return full(
            404,
            &common,
            "application/json",
            br#"{"type":"error","error":{"type":"not_found_error","message":"no such path"}}"#
                .to_vec(),
        );
    }
    let peek: Peek = serde_json::from_slice(body).unwrap_or_default();
    let model = peek
        .model
        .clone()
        .unwrap_or_else(|| "claude-sonnet-4-5".into());
    let id = format!("msg_fake_{n}");
    if !peek.stream.unwrap_or(false) {
        let msg = sse::text_message(&id, &model, "Hello from the fake upstream.");
        return full(
            200,
            &common,
            "application/json",
            msg.to_string().into_bytes(),
        );
    }
    let parts_count = header_num(headers, "x-fake-events").unwrap_or(3) as usize;
    let hold = header_num(headers, "x-fake-hold-ms").map(Duration::from_millis);
    let events = match peek.tool_to_call() {
        Some(tool) => sse::tool_stream(&id, &model, tool),
        None => {
            let words = ["Hello", " from", " the fake upstream."];
            let parts: Vec<&str> = (0..parts_count).map(|i| words[i % words.len()]).collect();
            sse::text_stream(&id, &model, &parts)
        }
    };
    let (cut_after, delay) = match behavior {
        Behavior::DropAfter(k) => (
            Some(Cut {
                after: k,
                half: false,
            }),
            None,
        ),
        Behavior::CutInside(k) => (
            Some(Cut {
                after: k,
                half: true,
            }),
            None,
        ),
        Behavior::Slow(d) => (None, Some(d)),
        _ => match header_num(headers, "x-fake-cut-inside") {
            Some(k) => (
                Some(Cut {
                    after: k as usize,
                    half: true,
                }),
                None,
            ),
            None => (
                None,
                header_num(headers, "x-fake-pace-ms").map(Duration::from_millis),
            ),
        },
    };
    stream_response(shared.clone(), common, events, cut_after, delay, hold)
}

/// Where a scripted stream breaks: after `after` events, and with `half`, after half of the next.
#[derive(Debug, Clone, Copy)]
struct Cut {
    after: usize,
    half: bool,
}

fn stream_response(
    shared: Arc<Shared>,
    headers: Vec<(String, String)>,
    events: Vec<String>,
    cut_after: Option<Cut>,
    delay: Option<Duration>,
    hold: Option<Duration>,
) -> Response<Body> {
    if cut_after.is_none() && delay.is_none() && hold.is_none() {
        // Nothing to pace: every event is ready at once, as from a fast upstream.
        let frames = events
            .into_iter()
            .map(|e| Ok::<_, std::io::Error>(Frame::data(Bytes::from(e))));
        return sse_response(
            BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames))),
            headers,
        );
    }
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut guard = CancelGuard {
            shared,
            done: false,
        };
        let last = events.len().saturating_sub(1);
        for (i, e) in events.into_iter().enumerate() {
            if let Some(cut) = cut_after.filter(|c| c.after == i) {
                if cut.half {
                    let half = Bytes::copy_from_slice(&e.as_bytes()[..e.len() / 2]);
                    let _ = tx.send(Ok(Frame::data(half))).await;
                }
                // Let the events already sent reach the client, as a real mid-stream failure would.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx.send(Err(std::io::Error::other("scripted drop"))).await;
                guard.done = true;
                return;
            }
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            if i == last {
                if let Some(h) = hold {
                    tokio::select! {
                        () = tokio::time::sleep(h) => {}
                        () = tx.closed() => return,
                    }
                }
            }
            if tx.send(Ok(Frame::data(Bytes::from(e)))).await.is_err() {
                return;
            }
        }
        guard.done = true;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    sse_response(BodyExt::boxed(StreamBody::new(stream)), headers)
}

fn sse_response(body: Body, headers: Vec<(String, String)>) -> Response<Body> {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        "content-type",
        http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert("cache-control", http::HeaderValue::from_static("no-cache"));
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), v.parse()) {
            h.append(k, v);
        }
    }
    r
}
