//! Serving a Claude request on provider links: each link is an [`Upstream`] whose request is the
//! translated one and whose adapter translates the answer back, a stream as its chunks arrive.
//!
//! The commit rule is the passthrough's (it is the same code, [`upstream::send`]): nothing goes
//! to the client until the provider's first whole event became Claude events. A failure before
//! that moves to the next link; after it, the stream ends with a well-formed Claude `error` event.
//! A stream the provider leaves silent gets `: keep-alive` comments between whole events.

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};
use neurolink_shared::ipc::AttemptRecord;
use serde_json::Value;

use super::{Kind, Link};
use crate::outcome::Outcome;
use crate::passthrough::record::Draft;
use crate::passthrough::relay::{error_class, Adapter, Ending, Sink};
use crate::passthrough::Inbound;
use crate::pool::Usage;
use crate::server::{App, Runtime};
use crate::translate::claude_events::ClaudeEvents;
use crate::translate::gemini::Signatures;
use crate::translate::sse::SseReader;
use crate::translate::{gemini, openai, ProviderError, TokenUsage};
use crate::upstream::{self, Adapting, Failure, Prepared, Reply, Upstream};

/// The largest non-streamed answer translated.
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// Serve `req` on `links` in order. The committed answer, or the draft back with the last
/// link's failure when none could serve.
pub async fn serve(
    app: &Arc<App>,
    rt: &Arc<Runtime>,
    mut draft: Draft,
    req: &Inbound,
    links: &[Link],
) -> Result<Response, (Draft, Option<Failure>)> {
    let claude = match super::claude_request(&req.body) {
        Ok(v) => v,
        Err(e) => return Err((draft, Some(Failure::Provider(e)))),
    };
    let mut last = None;
    for link in links {
        let label = link.label();
        if app.provider_stats.cooling(&label, app.now_ms()) {
            draft.attempts.push(AttemptRecord {
                account: label.into(),
                outcome: "skipped_cooling".into(),
            });
            continue;
        }
        let u = LinkUpstream {
            link,
            claude: &claude,
            model: req.model.as_deref().unwrap_or_default(),
            stream: claude["stream"] == true,
            signatures: &app.signatures,
        };
        let (outcome, reply) = upstream::send(app, rt, &u, req, &draft).await;
        draft.attempts.push(AttemptRecord {
            account: label.as_str().into(),
            outcome: outcome.class().into(),
        });
        match reply {
            Reply::Relayed(response) | Reply::Client(response) => return Ok(response),
            Reply::Retry(failure) => {
                let failure = link.masked_failure(failure);
                let message = failure.message();
                tracing::info!(link = %label, "provider failed: {message}");
                let wait_until = match &outcome {
                    Outcome::RateLimited {
                        retry_after: Some(d),
                    } => Some(app.now_ms() + u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    _ => None,
                };
                app.provider_stats.failure(&label, &message, wait_until);
                last = Some(failure);
            }
        }
    }
    Err((draft, last))
}

/// One provider link as an [`Upstream`].
struct LinkUpstream<'a> {
    link: &'a Link,
    claude: &'a Value,
    /// The model the client asked for: the answer names it.
    model: &'a str,
    stream: bool,
    signatures: &'a Arc<Signatures>,
}

impl Upstream for LinkUpstream<'_> {
    type Adapter = Translate;

    fn prepare(&self, _rt: &Runtime, _req: &Inbound) -> Prepared {
        let provider = &self.link.provider;
        let translated = match provider.kind {
            Kind::OpenAi => openai::request(self.claude, &self.link.model, self.stream),
            Kind::Gemini => {
                gemini::request(self.claude, &self.link.model, self.stream, self.signatures)
            }
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(key) = &provider.api_key {
            let (name, value) = match provider.kind {
                Kind::OpenAi => ("authorization", format!("Bearer {}", key.expose())),
                Kind::Gemini => ("x-goog-api-key", key.expose().to_string()),
            };
            if let Ok(mut v) = HeaderValue::from_str(&value) {
                v.set_sensitive(true);
                headers.insert(name, v);
            }
        }
        Prepared {
            method: http::Method::POST,
            url: upstream::Url::Text(format!(
                "{}{}",
                provider.base_url.trim_end_matches('/'),
                translated.path
            )),
            headers,
            body: Bytes::from(translated.body.to_string()),
        }
    }

    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: Bytes) -> (Outcome, Failure) {
        let retry_after = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|s| s.ceil() as u64);
        let name = &self.link.provider.name;
        let e = match self.link.provider.kind {
            Kind::OpenAi => openai::error(status.as_u16(), &body, name, retry_after),
            Kind::Gemini => gemini::error(status.as_u16(), &body, name, retry_after),
        };
        (outcome_of(&e), Failure::Provider(e))
    }

    fn next_step(&self, _outcome: &Outcome) -> crate::outcome::NextStep {
        crate::outcome::NextStep::NextAccount
    }

    fn adapter(&self, rt: &Runtime, _headers: &HeaderMap) -> Adapting<Translate> {
        let kind = self.link.provider.kind;
        let name = self.link.provider.name.as_str();
        let converter = match kind {
            Kind::OpenAi => Converter::OpenAi(openai::StreamConverter::new(self.model, name)),
            Kind::Gemini => Converter::Gemini(gemini::StreamConverter::new(self.model, name)),
        };
        Adapting {
            adapter: Translate {
                reader: SseReader::default(),
                converter,
                whole: (!self.stream).then(BytesMut::new),
                ended: false,
                model: self.model.to_string(),
                kind,
                signatures: self.signatures.clone(),
                provider: name.to_string(),
                key: self
                    .link
                    .provider
                    .api_key
                    .as_ref()
                    .map(|k| k.expose().to_string()),
                failure: None,
                whole_usage: None,
            },
            sse: self.stream,
            keeps_length: false,
            keep_alive: self.stream.then_some(rt.stream_keepalive),
        }
    }

    fn adapter_failure(&self, adapter: &mut Translate) -> Option<(Outcome, Failure)> {
        let e = adapter.failure.take()?;
        Some((outcome_of(&e), Failure::Provider(e)))
    }

    fn respond(
        &self,
        app: &Arc<App>,
        _status: StatusCode,
        _headers: HeaderMap,
        mut draft: Draft,
    ) -> (HeaderMap, Box<dyn Sink>) {
        let mut headers = HeaderMap::new();
        let content_type = if self.stream {
            "text/event-stream; charset=utf-8"
        } else {
            "application/json"
        };
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        if self.stream {
            headers.insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
        }
        for (name, value) in [
            ("request-id", draft.request_id()),
            ("x-neurolink-provider", self.link.provider.name.as_str()),
            ("x-neurolink-model", self.link.model.as_str()),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        }
        draft.fallback_provider = Some(self.link.provider.name.clone());
        let sink = LinkSink {
            app: app.clone(),
            link: self.link.label(),
            ttfb: draft.elapsed_ms(),
            draft,
        };
        (headers, Box::new(sink))
    }

    fn label(&self) -> neurolink_shared::ipc::Label {
        self.link.label().into()
    }
}

/// A provider's failure as the outcome the request log and the link's counters record.
fn outcome_of(e: &ProviderError) -> Outcome {
    match e.status {
        429 => Outcome::RateLimited {
            retry_after: e.retry_after.map(Duration::from_secs),
        },
        401..=403 => Outcome::AuthRejected { status: e.status },
        400 | 404 | 413 | 422 => Outcome::Unretryable { status: e.status },
        s => Outcome::Transient { status: s },
    }
}

impl Link {
    /// `failure` with this provider's key masked in its message.
    fn masked_failure(&self, failure: Failure) -> Failure {
        match failure {
            Failure::Provider(mut e) => {
                e.message = self.masked(e.message);
                Failure::Provider(e)
            }
            Failure::Network { kind, message } => Failure::Network {
                kind,
                message: self.masked(format!("{}: {message}", self.provider.name)),
            },
            other => other,
        }
    }
}

/// The stream converter of the link's provider kind.
enum Converter {
    OpenAi(openai::StreamConverter),
    Gemini(gemini::StreamConverter),
}

impl Converter {
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

/// A provider's answer translated into Claude's: a stream event by event as it arrives, or a
/// whole answer once it is read.
pub struct Translate {
    reader: SseReader,
    converter: Converter,
    /// A non-streamed answer, collected until its end.
    whole: Option<BytesMut>,
    ended: bool,
    model: String,
    kind: Kind,
    signatures: Arc<Signatures>,
    provider: String,
    /// The provider's key, masked in any error message (a provider may echo it).
    key: Option<String>,
    /// The provider's own error, when it sent one in the stream.
    failure: Option<ProviderError>,
    /// Usage of a whole (non-streamed) answer.
    whole_usage: Option<TokenUsage>,
}

impl Translate {
    fn feed_payloads(&mut self, payloads: Vec<String>) -> Result<(), String> {
        for p in payloads {
            if let Err(e) = self.converter.data(&self.signatures, &p) {
                let message = e.message.clone();
                self.failure = Some(e);
                return Err(message);
            }
        }
        Ok(())
    }

    /// The whole answer in Claude's shape.
    fn translate_whole(&mut self, body: &[u8]) -> Result<Bytes, String> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| format!("{}: the answer is not JSON ({e})", self.provider))?;
        let answer = match self.kind {
            Kind::OpenAi => openai::response(&v, &self.model),
            Kind::Gemini => gemini::response(&v, &self.model, &self.signatures),
        };
        let u = &answer["usage"];
        self.whole_usage = Some(TokenUsage {
            input: u["input_tokens"].as_u64().unwrap_or(0),
            output: u["output_tokens"].as_u64().unwrap_or(0),
            cache_read: u["cache_read_input_tokens"].as_u64().unwrap_or(0),
        });
        Ok(Bytes::from(answer.to_string()))
    }
}

impl Adapter for Translate {
    fn chunk(&mut self, chunk: Bytes) -> Result<Option<Bytes>, String> {
        if let Some(whole) = &mut self.whole {
            if whole.len() + chunk.len() > MAX_ANSWER {
                return Err(format!(
                    "{}: answer larger than {} MB",
                    self.provider,
                    MAX_ANSWER / (1024 * 1024)
                ));
            }
            whole.extend_from_slice(&chunk);
            return Ok(None);
        }
        let mut payloads = Vec::new();
        self.reader.feed(&chunk, &mut payloads);
        self.feed_payloads(payloads)?;
        Ok(Some(self.converter.events().take()))
    }

    fn end(&mut self) -> Result<Option<Bytes>, String> {
        if std::mem::replace(&mut self.ended, true) {
            return Ok(None);
        }
        if let Some(whole) = self.whole.take() {
            return self.translate_whole(&whole).map(Some);
        }
        let mut payloads = Vec::new();
        self.reader.finish(&mut payloads);
        self.feed_payloads(payloads)?;
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
        self.whole_usage
            .unwrap_or_else(|| self.converter.usage())
            .into()
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
            .into_record(200, e.sse, None, Some(self.ttfb), e.usage, class);
        self.app.record(record);
    }
}
