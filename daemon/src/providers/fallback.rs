//! Serving a Claude request on provider links: translate the request, send it, and translate
//! the answer back, a stream as its chunks arrive.
//!
//! The commit rule is the passthrough's: nothing goes to the client until the provider's first
//! whole event was turned into Claude events. A failure before that moves to the next link; after
//! it, the stream ends with a well-formed Claude `error` event. A stream the provider leaves
//! silent gets `: keep-alive` comments (between whole events, as everything here is written).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};
use neurolink_shared::ipc::AttemptRecord;
use serde_json::Value;

use super::{Kind, Link};
use crate::passthrough::record::Draft;
use crate::passthrough::relay::{error_class, Adapter, Ending, Relay, Sink, Timing};
use crate::passthrough::{error_chain, Inbound};
use crate::pool::Usage;
use crate::server::{errors, App, Runtime};
use crate::translate::claude_events::ClaudeEvents;
use crate::translate::gemini::Signatures;
use crate::translate::sse::SseReader;
use crate::translate::{gemini, openai, ProviderError, TokenUsage};

/// The largest answer read whole (a non-streamed answer, or an error).
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// Serve `req` on `links` in order. The committed answer, or the draft back with the last
/// link's failure when none could serve.
pub async fn serve(
    app: &Arc<App>,
    rt: &Arc<Runtime>,
    mut draft: Draft,
    req: &Inbound,
    links: &[Link],
) -> Result<Response, (Draft, Option<ProviderError>)> {
    let claude: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            let err = ProviderError {
                status: 400,
                kind: "invalid_request_error",
                message: format!("the request body is not JSON: {e}"),
                retry_after: None,
            };
            return Err((draft, Some(err)));
        }
    };
    let model = req.model.clone().unwrap_or_default();
    let stream = claude["stream"] == true;
    let mut last = None;
    for link in links {
        let label = link.label();
        if app.provider_stats.cooling(&label, app.now_ms()) {
            draft.attempts.push(AttemptRecord {
                account: label,
                outcome: "skipped_cooling".into(),
            });
            continue;
        }
        match attempt(app, rt, link, &claude, &model, stream).await {
            Ok(answer) => {
                draft.attempts.push(AttemptRecord {
                    account: label.clone(),
                    outcome: "success".into(),
                });
                draft.fallback_provider = Some(link.provider.name.clone());
                return Ok(respond(app, rt, draft, link, answer));
            }
            Err(mut e) => {
                e.message = link.masked(e.message);
                tracing::info!(link = %label, "provider failed: {}", e.message);
                let wait_until = e.retry_after.map(|s| app.now_ms() + s.saturating_mul(1000));
                app.provider_stats.failure(&label, &e.message, wait_until);
                draft.attempts.push(AttemptRecord {
                    account: label,
                    outcome: outcome_class(&e).into(),
                });
                last = Some(e);
            }
        }
    }
    Err((draft, last))
}

/// The client's answer when a provider's failure is the last word.
pub fn error_response(request_id: &str, e: &ProviderError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut r = errors::anthropic(request_id, status, e.kind, &e.message);
    if let Some(s) = e.retry_after {
        r.headers_mut().insert("retry-after", HeaderValue::from(s));
    }
    r
}

fn outcome_class(e: &ProviderError) -> &'static str {
    match e.status {
        429 => "rate_limited",
        401 | 403 => "auth_rejected",
        529 => "overloaded",
        504 => "timeout",
        400 => "invalid_request",
        _ => "server_error",
    }
}

/// What a successful attempt leaves to send.
enum Answer {
    Whole(Value, TokenUsage),
    Stream(Box<Streaming>),
}

/// A provider stream, its first events already translated.
struct Streaming {
    first: Bytes,
    response: reqwest::Response,
    reader: SseReader,
    converter: Converter,
}

/// The stream converter of the link's provider kind.
enum Converter {
    OpenAi(openai::StreamConverter),
    Gemini(gemini::StreamConverter),
}

impl Converter {
    fn new(kind: Kind, model: &str, provider: &str) -> Self {
        match kind {
            Kind::OpenAi => Converter::OpenAi(openai::StreamConverter::new(model, provider)),
            Kind::Gemini => Converter::Gemini(gemini::StreamConverter::new(model, provider)),
        }
    }

    fn data(&mut self, signatures: &Signatures, data: &str) -> Result<(), ProviderError> {
        match self {
            Converter::OpenAi(c) => c.data(data),
            Converter::Gemini(c) => {
                let r = c.data(data);
                for (id, sig) in c.signed_calls.drain(..) {
                    signatures.insert(&id, &sig);
                }
                r
            }
        }
    }

    fn end(&mut self) {
        match self {
            Converter::OpenAi(c) => c.end(),
            Converter::Gemini(c) => c.end(),
        }
    }

    fn complete(&self) -> bool {
        match self {
            Converter::OpenAi(c) => c.complete(),
            Converter::Gemini(c) => c.complete(),
        }
    }

    fn events(&mut self) -> &mut ClaudeEvents {
        match self {
            Converter::OpenAi(c) => &mut c.events,
            Converter::Gemini(c) => &mut c.events,
        }
    }

    fn usage(&self) -> TokenUsage {
        match self {
            Converter::OpenAi(c) => c.usage(),
            Converter::Gemini(c) => c.usage(),
        }
    }
}

/// One try on one link.
async fn attempt(
    app: &Arc<App>,
    rt: &Runtime,
    link: &Link,
    claude: &Value,
    model: &str,
    stream: bool,
) -> Result<Answer, ProviderError> {
    let provider = &link.provider;
    let name = provider.name.as_str();
    let prepared = match provider.kind {
        Kind::OpenAi => openai::request(claude, &link.model, stream),
        Kind::Gemini => gemini::request(claude, &link.model, stream, &app.signatures),
    };
    let url = format!(
        "{}{}",
        provider.base_url.trim_end_matches('/'),
        prepared.path
    );
    let mut builder = rt.client.post(url).json(&prepared.body);
    if let Some(key) = &provider.api_key {
        builder = match provider.kind {
            Kind::OpenAi => builder.bearer_auth(key.expose()),
            Kind::Gemini => builder.header("x-goog-api-key", key.expose()),
        };
    }
    let response = match tokio::time::timeout(rt.headers_timeout, builder.send()).await {
        Err(_) => {
            return Err(network(
                name,
                504,
                format!(
                    "sent no response headers within {} s",
                    rt.headers_timeout.as_secs()
                ),
            ))
        }
        Ok(Err(e)) => {
            return Err(network(
                name,
                502,
                format!("request failed: {}", error_chain(&e)),
            ))
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if !status.is_success() {
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|s| s.ceil() as u64);
        let body = read_whole(response, rt.idle_timeout, name, 1024 * 1024).await?;
        let e = match provider.kind {
            Kind::OpenAi => openai::error(status.as_u16(), &body, name, retry_after),
            Kind::Gemini => gemini::error(status.as_u16(), &body, name, retry_after),
        };
        return Err(e);
    }
    if !stream {
        let body = read_whole(response, rt.idle_timeout, name, MAX_ANSWER).await?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| ProviderError {
            status: 502,
            kind: "api_error",
            message: format!("{name}: the answer is not JSON ({e})"),
            retry_after: None,
        })?;
        let answer = match provider.kind {
            Kind::OpenAi => openai::response(&v, model),
            Kind::Gemini => gemini::response(&v, model, &app.signatures),
        };
        let u = &answer["usage"];
        let usage = TokenUsage {
            input: u["input_tokens"].as_u64().unwrap_or(0),
            output: u["output_tokens"].as_u64().unwrap_or(0),
            cache_read: u["cache_read_input_tokens"].as_u64().unwrap_or(0),
        };
        return Ok(Answer::Whole(answer, usage));
    }
    let mut s = Streaming {
        first: Bytes::new(),
        response,
        reader: SseReader::default(),
        converter: Converter::new(provider.kind, model, name),
    };
    // Commit once the first payload became Claude events.
    let mut payloads = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(rt.idle_timeout, s.response.chunk()).await {
            Err(_) => {
                return Err(network(
                    name,
                    504,
                    format!(
                        "sent headers but no event for {} s",
                        rt.idle_timeout.as_secs()
                    ),
                ))
            }
            Ok(Err(e)) => {
                return Err(network(
                    name,
                    502,
                    format!("stream failed before its first event: {}", error_chain(&e)),
                ))
            }
            Ok(Ok(None)) => {
                s.reader.finish(&mut payloads);
                if payloads.is_empty() {
                    return Err(network(name, 502, "answered with an empty stream".into()));
                }
                None
            }
            Ok(Ok(Some(c))) => Some(c),
        };
        if let Some(c) = &chunk {
            s.reader.feed(c, &mut payloads);
        }
        for p in payloads.drain(..) {
            s.converter.data(&app.signatures, &p)?;
        }
        if chunk.is_none() {
            if !s.converter.complete() {
                return Err(network(
                    name,
                    502,
                    "ended its stream before the answer was complete".into(),
                ));
            }
            s.converter.end();
        }
        if s.converter.events().has_output() {
            s.first = s.converter.events().take();
            return Ok(Answer::Stream(Box::new(s)));
        }
    }
}

fn network(provider: &str, status: u16, message: String) -> ProviderError {
    ProviderError {
        status,
        kind: if status == 504 {
            "timeout_error"
        } else {
            "api_error"
        },
        message: format!("{provider}: {message}"),
        retry_after: None,
    }
}

async fn read_whole(
    mut response: reqwest::Response,
    idle: Duration,
    provider: &str,
    cap: usize,
) -> Result<Bytes, ProviderError> {
    let mut body = BytesMut::new();
    loop {
        match tokio::time::timeout(idle, response.chunk()).await {
            Ok(Ok(Some(c))) => {
                if body.len() + c.len() > cap {
                    return Err(network(
                        provider,
                        502,
                        format!("answer larger than {} MB", cap / (1024 * 1024)),
                    ));
                }
                body.extend_from_slice(&c);
            }
            Ok(Ok(None)) => return Ok(body.freeze()),
            Ok(Err(e)) => {
                return Err(network(
                    provider,
                    502,
                    format!("answer failed: {}", error_chain(&e)),
                ))
            }
            Err(_) => {
                return Err(network(
                    provider,
                    504,
                    format!("answer stalled for {} s", idle.as_secs()),
                ))
            }
        }
    }
}

/// The client's response for a committed answer; the request is recorded when it ends.
fn respond(app: &Arc<App>, rt: &Runtime, draft: Draft, link: &Link, answer: Answer) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&draft.request_id) {
        headers.insert("request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&link.provider.name) {
        headers.insert("x-neurolink-provider", v);
    }
    if let Ok(v) = HeaderValue::from_str(&link.model) {
        headers.insert("x-neurolink-model", v);
    }
    let ttfb = draft.elapsed_ms();
    let label = link.label();
    match answer {
        Answer::Whole(v, usage) => {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            app.provider_stats.success(&label, usage);
            let mut r = Response::new(Body::from(v.to_string()));
            *r.headers_mut() = headers;
            draft.log_debug(app, 200, r.headers());
            app.record(draft.into_record(200, false, None, Some(ttfb), usage.into(), None));
            r
        }
        Answer::Stream(s) => {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            headers.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
            draft.log_debug(app, 200, &headers);
            let adapter = Translate {
                reader: s.reader,
                converter: s.converter,
                signatures: app.signatures.clone(),
                provider: link.provider.name.clone(),
                key: link
                    .provider
                    .api_key
                    .as_ref()
                    .map(|k| k.expose().to_string()),
            };
            let sink = LinkSink {
                app: app.clone(),
                link: label,
                draft,
                ttfb,
            };
            let timing = Timing {
                idle: rt.idle_timeout,
                keep_alive: Some(rt.stream_keepalive),
            };
            let upstream = Box::pin(s.response.bytes_stream());
            let body = Relay::new(
                s.first,
                upstream,
                timing,
                adapter,
                true,
                None,
                Box::new(sink),
            );
            let mut r = Response::new(Body::new(body));
            *r.headers_mut() = headers;
            r
        }
    }
}

impl From<TokenUsage> for Usage {
    fn from(u: TokenUsage) -> Self {
        Usage {
            input_tokens: u.input,
            output_tokens: u.output,
            cache_read_input_tokens: u.cache_read,
            ..Usage::default()
        }
    }
}

/// A provider's stream, translated into Claude events as it arrives.
struct Translate {
    reader: SseReader,
    converter: Converter,
    signatures: Arc<Signatures>,
    provider: String,
    /// The provider's key, masked in any error message (a provider may echo it).
    key: Option<String>,
}

impl Adapter for Translate {
    fn chunk(&mut self, chunk: Bytes) -> Result<Option<Bytes>, String> {
        let mut payloads = Vec::new();
        self.reader.feed(&chunk, &mut payloads);
        for p in payloads {
            self.converter
                .data(&self.signatures, &p)
                .map_err(|e| e.message)?;
        }
        Ok(Some(self.converter.events().take()))
    }

    fn end(&mut self) -> Result<Option<Bytes>, String> {
        let mut payloads = Vec::new();
        self.reader.finish(&mut payloads);
        for p in payloads {
            self.converter
                .data(&self.signatures, &p)
                .map_err(|e| e.message)?;
        }
        if !self.converter.complete() {
            return Err("the stream ended before the answer was complete".into());
        }
        self.converter.end();
        Ok(Some(self.converter.events().take()))
    }

    fn error_event(&mut self, message: &str) -> Option<Bytes> {
        // Name the provider, as every error of a translated answer does.
        let message = if message.starts_with(&self.provider) {
            message.to_string()
        } else {
            format!("{}: {message}", self.provider)
        };
        let message = match &self.key {
            Some(k) => crate::logs::redact::Redactor::new([k.clone()]).text(&message),
            None => message,
        };
        let events = self.converter.events();
        events.fail("api_error", &message);
        Some(events.take())
    }

    fn usage(&self) -> Usage {
        self.converter.usage().into()
    }
}

/// Where a translated answer's end goes: the link's counters and the request log.
struct LinkSink {
    app: Arc<App>,
    link: String,
    draft: Draft,
    ttfb: u64,
}

impl Sink for LinkSink {
    fn ended(self: Box<Self>, e: Ending) {
        match &e.failure {
            Some(f) => self.app.provider_stats.failure(&self.link, f, None),
            None if e.complete => {
                let u = e.usage;
                self.app.provider_stats.success(
                    &self.link,
                    TokenUsage {
                        input: u.input_tokens,
                        output: u.output_tokens,
                        cache_read: u.cache_read_input_tokens,
                    },
                );
            }
            None => {}
        }
        let class = error_class(&e);
        let record = self
            .draft
            .into_record(200, true, None, Some(self.ttfb), e.usage, class);
        self.app.record(record);
    }
}
