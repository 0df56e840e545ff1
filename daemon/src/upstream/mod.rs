//! The seam between the candidate loop ([`crate::passthrough::forward`]) and whoever answers:
//! an Anthropic account or a provider link. One attempt goes through the same phases for every
//! provider, in the spirit of pingora's proxy phases:
//!
//! 1. [`Upstream::prepare`]: the upstream request (URL, headers, body);
//! 2. [`Upstream::observe`]: every answer's headers (Anthropic's unified quota headers);
//! 3. [`Upstream::classify`]: an error answer as an [`Outcome`] and the failure the client would
//!    get;
//! 4. [`Upstream::adapter`]: for a 2xx answer, the body [`Adapter`] (identity for Anthropic,
//!    zero-copy; a streaming translation for the others);
//! 5. [`Upstream::respond`]: once committed, the client's headers and the [`Sink`] told when the
//!    answer ends.
//!
//! [`send`] runs the phases and the commit rule they share: nothing goes to the client until the
//! adapter produced its first output, so an empty body, a cut before the first event or an
//! error as the first event still moves to the next candidate.

pub mod client;
mod connect;
mod http2;
mod pool;
pub mod trust;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use client::UpstreamBody;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::outcome::{NetworkKind, NextStep, Outcome};
use crate::passthrough::record::Draft;
use crate::passthrough::relay::{Adapter, Relay, Sink, Timing};
use crate::passthrough::{headers, Inbound};
use crate::server::{errors, App, Runtime};
use crate::translate::ProviderError;

/// The largest error body read to classify an upstream failure.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// The request to send.
pub struct Prepared {
    pub method: http::Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Where a prepared request goes.
pub enum Url {
    /// Built from parts already checked: nothing to format or parse (the passthrough to an
    /// origin, nearly every request).
    Parsed(http::Uri),
    /// A URL to parse; one that is not valid fails the attempt, saying so.
    Text(String),
}

/// How a 2xx answer's body is read.
pub struct Adapting<A> {
    pub adapter: A,
    /// The answer is an SSE stream (a failure then ends it with an `error` event).
    pub sse: bool,
    /// The body's bytes go out unchanged, so the upstream `content-length` holds.
    pub keeps_length: bool,
    /// Keep-alive comments for a stream silent this long.
    pub keep_alive: Option<Duration>,
}

/// One provider (with its credential): the phases of an attempt.
pub trait Upstream {
    type Adapter: Adapter;

    /// The request for `req`.
    fn prepare(&self, rt: &Runtime, req: &Inbound) -> Prepared;

    /// Every answer's headers, whatever the status.
    fn observe(&self, _app: &App, _headers: &HeaderMap) {}

    /// An error answer (its small body read whole): what it means, and what the client gets if
    /// no candidate does better.
    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: Bytes) -> (Outcome, Failure);

    /// What follows an outcome: the policy table's step for accounts; a provider link moves on
    /// whatever went wrong (the next link may accept what this one refused).
    fn next_step(&self, outcome: &Outcome) -> NextStep {
        outcome.next_step()
    }

    /// For a 2xx answer: how its body is read.
    fn adapter(&self, rt: &Runtime, headers: &HeaderMap) -> Adapting<Self::Adapter>;

    /// For a committed answer: the client's headers, and the sink told when it ends. `draft`
    /// already records this attempt's success.
    fn respond(
        &self,
        app: &Arc<App>,
        status: StatusCode,
        headers: HeaderMap,
        draft: Draft,
    ) -> (HeaderMap, Box<dyn Sink>);

    /// The committed first output may still be a failure (Anthropic sends an `error` event as a
    /// stream's first event when it is overloaded).
    fn first_failure(&self, _first: &Bytes) -> Option<(Outcome, Failure)> {
        None
    }

    /// Why the adapter refused the answer before its first output, when it knows better than
    /// its message (a provider's error object in the stream).
    fn adapter_failure(&self, _adapter: &mut Self::Adapter) -> Option<(Outcome, Failure)> {
        None
    }

    /// How this candidate appears in the request's attempts.
    fn label(&self) -> neurolink_shared::ipc::Label;
}

/// What one attempt leaves for the candidate loop to do, next to the [`Outcome`] it reports.
pub enum Reply {
    /// Give this to the client: an error no other candidate would change.
    Client(Response),
    /// A committed answer whose body is relayed; the relay records the request when it ends.
    Relayed(Response),
    /// Try the next candidate; this failure is what the client gets if none does better.
    Retry(Failure),
}

/// A failed attempt whose answer may still be what the client gets, if no candidate does better.
pub enum Failure {
    Upstream {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    Network {
        kind: NetworkKind,
        message: String,
    },
    /// A failure the proxy itself describes (e.g. a token that could not be refreshed).
    Proxy {
        status: StatusCode,
        kind: &'static str,
        message: String,
    },
    /// A provider's failure, already in Anthropic's terms and naming the provider.
    Provider(ProviderError),
}

impl Failure {
    /// The client's answer; the proxy's own errors carry the request's id.
    pub fn into_response(self, request_id: &str) -> Response {
        match self {
            Failure::Upstream {
                status,
                headers,
                body,
            } => buffered(status, &headers, body),
            Failure::Network {
                kind: NetworkKind::Timeout,
                message,
            } => errors::anthropic(
                request_id,
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                &message,
            ),
            Failure::Network { message, .. } => {
                errors::anthropic(request_id, StatusCode::BAD_GATEWAY, "api_error", &message)
            }
            Failure::Proxy {
                status,
                kind,
                message,
            } => errors::anthropic(request_id, status, kind, &message),
            Failure::Provider(e) => {
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
                let mut r = errors::anthropic(request_id, status, e.kind, &e.message);
                if let Some(s) = e.retry_after {
                    r.headers_mut()
                        .insert("retry-after", http::HeaderValue::from(s));
                }
                r
            }
        }
    }

    /// A one-line description, for logs and counters.
    pub fn message(&self) -> String {
        match self {
            Failure::Upstream { status, body, .. } => format!(
                "{status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
            Failure::Network { message, .. } | Failure::Proxy { message, .. } => message.clone(),
            Failure::Provider(e) => e.message.clone(),
        }
    }
}

/// One attempt on `u`: send, classify or commit.
pub async fn send<U: Upstream>(
    app: &Arc<App>,
    rt: &Runtime,
    u: &U,
    req: &Inbound,
    draft: &Draft,
) -> (Outcome, Reply) {
    // The request is built inside the awaited expression: a local moved into a future keeps
    // its room in this function's state across the `.await`, and every caller's state holds
    // that state again (see `passthrough::cold`).
    let sent = match sending(u, rt, req) {
        Ok(sending) => sending,
        Err(message) => return network(NetworkKind::Connect, message),
    }
    .await;
    let sent = match sent {
        // The upstream did not process it (an HTTP/2 server at its stream limit, or one
        // rotating its connection): not the account's failure, so once more before any
        // account is blamed. Boxed: rare, and it would double this future's size.
        Ok(Err(client::SendError::Refused(e))) => {
            tracing::debug!(
                "upstream refused the request unprocessed ({}); sending it again",
                error_chain(e.as_ref())
            );
            match sending(u, rt, req) {
                Ok(again) => crate::passthrough::cold(again).await,
                Err(message) => return network(NetworkKind::Connect, message),
            }
        }
        sent => sent,
    };
    let response = match sent {
        Err(_) => {
            let secs = rt.headers_timeout.as_secs();
            return network(
                NetworkKind::Timeout,
                format!("upstream sent no response headers within {secs} s"),
            );
        }
        Ok(Err(e)) => {
            let mut message = format!("upstream request failed: {}", error_chain(&e));
            if let Some(hint) = trust::hint_for(&message) {
                message = format!("{message} ({hint})");
            }
            return network(client::kind_of(&e), message);
        }
        Ok(Ok(r)) => r,
    };
    u.observe(app, response.headers());
    let status = response.status();
    if status.is_success() {
        // The relay's own copy of the record, with this attempt in it; made inside the call
        // for the same reason as the request above.
        let committed = || {
            let mut draft = draft.clone();
            draft.attempts.push(neurolink_shared::ipc::AttemptRecord {
                account: u.label(),
                outcome: Outcome::Success.class().into(),
            });
            draft
        };
        return commit(app, rt, u, response, committed()).await;
    }
    let headers = response.headers().clone();
    let body = match crate::passthrough::cold(read_capped(response, rt.idle_timeout)).await {
        Ok(b) => b,
        Err(failure) => {
            let kind = match &failure {
                Failure::Network { kind, .. } => *kind,
                _ => NetworkKind::Io,
            };
            return (Outcome::Network { kind }, Reply::Retry(failure));
        }
    };
    let (outcome, failure) = u.classify(status, &headers, body);
    decide(u, outcome, failure, "")
}

/// `u`'s request for `req` on its way, within the headers timeout; or why its URL is not one.
fn sending<'a, U: Upstream>(
    u: &U,
    rt: &'a Runtime,
    req: &Inbound,
) -> Result<
    tokio::time::Timeout<
        impl std::future::Future<
                Output = Result<http::Response<client::UpstreamBody>, client::SendError>,
            > + Send
            + 'a,
    >,
    String,
> {
    let request = request_for(u, rt, req)?;
    Ok(tokio::time::timeout(
        rt.headers_timeout,
        rt.upstream.send(request),
    ))
}

/// The request for `u`, or why its URL is not one.
fn request_for<U: Upstream>(
    u: &U,
    rt: &Runtime,
    req: &Inbound,
) -> Result<http::Request<Full<Bytes>>, String> {
    let p = u.prepare(rt, req);
    let uri = match p.url {
        Url::Parsed(uri) => uri,
        Url::Text(url) => {
            http::Uri::try_from(url).map_err(|e| format!("the upstream URL is not valid: {e}"))?
        }
    };
    let mut request = http::Request::new(Full::new(p.body));
    *request.method_mut() = p.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = p.headers;
    Ok(request)
}

/// Answer or retry, as `u` says for `outcome`.
fn decide<U: Upstream>(
    u: &U,
    outcome: Outcome,
    failure: Failure,
    request_id: &str,
) -> (Outcome, Reply) {
    match u.next_step(&outcome) {
        NextStep::Answer => (outcome, Reply::Client(failure.into_response(request_id))),
        NextStep::NextAccount => (outcome, Reply::Retry(failure)),
    }
}

/// Wait for the adapter's first output, then hand the rest to a [`Relay`].
async fn commit<U: Upstream>(
    app: &Arc<App>,
    rt: &Runtime,
    u: &U,
    response: http::Response<UpstreamBody>,
    draft: Draft,
) -> (Outcome, Reply) {
    let idle = rt.idle_timeout;
    let status = response.status();
    let (parts, mut body) = response.into_parts();
    let mut a = u.adapter(rt, &parts.headers);
    let first = loop {
        match tokio::time::timeout(idle, next_chunk(&mut body)).await {
            Err(_) => {
                return network(
                    NetworkKind::Timeout,
                    format!("upstream sent headers but no body for {} s", idle.as_secs()),
                )
            }
            Ok(Err(e)) => {
                return network(
                    NetworkKind::Io,
                    format!(
                        "upstream body failed before the first event: {}",
                        error_chain(e.as_ref())
                    ),
                )
            }
            Ok(Ok(None)) => match a.adapter.end() {
                Ok(Some(out)) if !out.is_empty() => break out,
                Ok(_) => {
                    let failure = Failure::Network {
                        kind: NetworkKind::Io,
                        message: "upstream answered with an empty body".into(),
                    };
                    return (Outcome::EmptyStream, Reply::Retry(failure));
                }
                Err(message) => {
                    if let Some((o, f)) = u.adapter_failure(&mut a.adapter) {
                        return decide(u, o, f, draft.request_id());
                    }
                    let failure = Failure::Network {
                        kind: NetworkKind::Io,
                        message: format!("{message} (before the first event)"),
                    };
                    return (Outcome::EmptyStream, Reply::Retry(failure));
                }
            },
            Ok(Ok(Some(chunk))) if chunk.is_empty() => continue,
            Ok(Ok(Some(chunk))) => match a.adapter.chunk(chunk) {
                Ok(Some(out)) if !out.is_empty() => break out,
                Ok(_) => continue,
                Err(message) => {
                    if let Some((o, f)) = u.adapter_failure(&mut a.adapter) {
                        return decide(u, o, f, draft.request_id());
                    }
                    return network(NetworkKind::Io, message);
                }
            },
        }
    };
    if let Some((outcome, failure)) = u.first_failure(&first) {
        // Nothing went out yet: this is a failed attempt, not an answer.
        return decide(u, outcome, failure, "");
    }
    let debug = draft.debug.is_some().then(|| draft.clone());
    let announced = content_length(&parts.headers, &body);
    let (mut headers, sink) = u.respond(app, status, parts.headers, draft);
    let expected_len = if a.keeps_length && !a.sse {
        announced
    } else {
        // A failure may append an error event, or the body changes: the length is unknown.
        headers.remove(http::header::CONTENT_LENGTH);
        None
    };
    if let Some(d) = debug {
        d.log_debug(app, status.as_u16(), &headers);
    }
    let timing = Timing {
        idle,
        keep_alive: a.keep_alive,
    };
    let body = Relay::new(first, body, timing, a.adapter, a.sse, expected_len, sink);
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    (Outcome::Success, Reply::Relayed(out))
}

/// Read a (small) error body whole, up to 1 MiB.
pub async fn read_capped(
    response: http::Response<UpstreamBody>,
    idle: Duration,
) -> Result<Bytes, Failure> {
    let mut incoming = response.into_body();
    let mut body = BytesMut::new();
    loop {
        match tokio::time::timeout(idle, next_chunk(&mut incoming)).await {
            Ok(Ok(Some(chunk))) => {
                let room = MAX_ERROR_BODY.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if room <= chunk.len() {
                    break;
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                return Err(Failure::Network {
                    kind: NetworkKind::Io,
                    message: format!("upstream error body failed: {}", error_chain(e.as_ref())),
                })
            }
            Err(_) => {
                return Err(Failure::Network {
                    kind: NetworkKind::Timeout,
                    message: format!("upstream error body stalled for {} s", idle.as_secs()),
                })
            }
        }
    }
    Ok(body.freeze())
}

/// An upstream answer given to the client as it is, with the downstream header rules.
pub fn buffered(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Response {
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers::downstream(headers.clone());
    out
}

pub fn network(kind: NetworkKind, message: String) -> (Outcome, Reply) {
    let failure = Failure::Network { kind, message };
    (Outcome::Network { kind }, Reply::Retry(failure))
}

/// The next piece of the body's data (trailers are skipped); `None` at its end.
pub async fn next_chunk(body: &mut UpstreamBody) -> Result<Option<Bytes>, client::BoxError> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// The body's length when the upstream announced it.
fn content_length(headers: &HeaderMap, body: &UpstreamBody) -> Option<u64> {
    http_body::Body::size_hint(body).exact().or_else(|| {
        headers
            .get(http::header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    })
}

/// The client's top-level message is vague ("client error (Connect)"); the causes say what
/// happened.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
