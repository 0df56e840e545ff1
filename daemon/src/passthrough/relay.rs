//! The body of a committed answer: upstream frames go to the client as they arrive, never
//! collected. Usage is read on the side; an upstream failure after the first byte ends an SSE
//! stream with an Anthropic `error` event (there is no retry once bytes went out). An SSE answer
//! goes out in whole events only ([`super::boundary`]), so that error event always follows a
//! complete one.
//!
//! Dropping the relay (the client went away) drops the upstream response, which closes that
//! upstream connection at once: the cancel reaches Anthropic immediately.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::boundary::EventFramer;
use super::usage::{JsonUsage, SseUsage};
use crate::pool::{AccountId, Usage};
use crate::server::App;

pub type UpstreamStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the answer's usage is read.
#[derive(Debug)]
pub enum Inspector {
    None,
    Sse(SseUsage),
    Json(JsonUsage),
}

impl Inspector {
    pub fn feed(&mut self, b: &[u8]) {
        match self {
            Inspector::None => {}
            Inspector::Sse(s) => s.feed(b),
            Inspector::Json(j) => j.feed(b),
        }
    }

    fn usage(&self) -> Usage {
        match self {
            Inspector::None => Usage::default(),
            Inspector::Sse(s) => s.usage,
            Inspector::Json(j) => j.usage(),
        }
    }
}

/// How the answer is cut for the client.
pub struct Framing {
    /// The answer is an SSE stream: a failure ends it with an `error` event.
    pub sse: bool,
    /// Whole events only (an uncompressed SSE stream), with what is held of the next event.
    pub framer: Option<EventFramer>,
}

/// What the relay needs to record the request when the answer ends.
pub struct Finish {
    /// `content-length` of the answer, when known: the body is complete once that much went out
    /// (hyper stops polling a body at its length, so its end is never seen otherwise).
    pub expected_len: Option<u64>,
    /// The pool id of the account that answered.
    pub account_id: AccountId,
    pub draft: super::record::Draft,
    pub account: String,
    pub status: u16,
    pub ttfb_ms: u64,
}

pub struct Relay {
    finish: Option<Finish>,
    first: Option<Bytes>,
    upstream: UpstreamStream,
    idle: Duration,
    /// Fires at most `idle` after the last chunk. Re-armed lazily: a chunk only records the time,
    /// and the timer is moved when it fires early, which keeps timer work off the per-chunk path.
    deadline: Pin<Box<Sleep>>,
    last_chunk: Instant,
    inspector: Inspector,
    /// SSE answers end a failure with an `error` event; others abort the connection.
    sse: bool,
    /// Uncompressed SSE answers go out in whole events; the rest chunk by chunk.
    framer: Option<EventFramer>,
    done: bool,
    app: Arc<App>,
    account: AccountId,
    failure: Option<String>,
    reported: bool,
    expected_len: Option<u64>,
    sent: u64,
    /// Set after the first chunk: the next poll yields once so it is flushed.
    flush_first: bool,
}

impl Relay {
    /// `first` is what the commit read (whole events, for SSE), already fed to `inspector`.
    pub fn new(
        first: Bytes,
        upstream: UpstreamStream,
        idle: Duration,
        inspector: Inspector,
        framing: Framing,
        app: Arc<App>,
        finish: Finish,
    ) -> Self {
        let account = finish.account_id;
        let expected_len = finish.expected_len;
        Self {
            finish: Some(finish),
            first: Some(first),
            upstream,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            last_chunk: Instant::now(),
            inspector,
            sse: framing.sse,
            framer: framing.framer,
            done: false,
            app,
            account,
            failure: None,
            reported: false,
            expected_len,
            sent: 0,
            flush_first: false,
        }
    }

    /// Count bytes sent; reaching the announced length completes the answer.
    fn count(&mut self, n: usize) {
        self.sent += n as u64;
        if self.expected_len.is_some_and(|len| self.sent >= len) {
            self.done = true;
            self.report();
        }
    }

    fn fail(&mut self, message: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        tracing::warn!(
            account = self.account,
            "stream failed after the first byte: {message}"
        );
        self.failure = Some(message.clone());
        self.report();
        if self.sse {
            // Whatever is held is part of an event that never completed: it is dropped.
            Poll::Ready(Some(Ok(Frame::data(error_event(&message)))))
        } else {
            Poll::Ready(Some(Err(message.into())))
        }
    }

    fn report(&mut self) {
        if self.reported {
            return;
        }
        self.reported = true;
        let usage = self.inspector.usage();
        let failure = self.failure.take();
        {
            let mut pool = self.app.pool();
            if !usage.is_empty() {
                pool.add_usage(self.account, usage);
            }
            if let Some(f) = &failure {
                pool.report_stream_error(self.account, f.clone());
            }
        }
        if let Some(f) = self.finish.take() {
            let error = match (&failure, self.done) {
                (Some(_), _) => Some("stream_error".to_string()),
                (None, false) => Some("client_disconnected".to_string()),
                (None, true) => None,
            };
            let record = f.draft.into_record(
                f.status,
                self.sse,
                Some(f.account),
                Some(f.ttfb_ms),
                usage,
                error,
            );
            self.app.record(record);
        }
    }
}

/// The SSE event that tells a client the stream broke (`anthropic-messages.md` §7).
pub fn error_event(message: &str) -> Bytes {
    let data =
        serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}});
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

impl http_body::Body for Relay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            this.flush_first = true;
            this.count(first.len());
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        if std::mem::take(&mut this.flush_first) {
            // hyper writes out what it has buffered when the body is not ready. Saying so once,
            // right after the first chunk, sends the head and the first event at once instead of
            // after a batch of the events that follow it.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.upstream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.last_chunk = Instant::now();
                    this.inspector.feed(&chunk);
                    let ready = match &mut this.framer {
                        Some(framer) => framer.push(chunk),
                        None => Some(chunk),
                    };
                    // Nothing whole yet: read on (the held bytes wait for the rest).
                    if let Some(chunk) = ready {
                        this.count(chunk.len());
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    return this.fail(format!("upstream stream failed: {e}"))
                }
                Poll::Ready(None) => return this.end(),
                Poll::Pending => return this.wait_idle(cx),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Relay {
    /// The upstream body ended. A stream that ends inside an event was cut: that is a failure.
    fn end(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(framer) = &mut self.framer {
            if framer.inside_event() {
                return self.fail("upstream stream ended inside an event".to_string());
            }
            let rest = framer.take_rest();
            if !rest.is_empty() {
                self.count(rest.len());
                self.done = true;
                self.report();
                return Poll::Ready(Some(Ok(Frame::data(rest))));
            }
        }
        self.done = true;
        self.report();
        Poll::Ready(None)
    }

    /// Upstream has nothing now: fail once it has been silent for `idle`.
    fn wait_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last_chunk + self.idle;
            if Instant::now() >= due {
                let secs = self.idle.as_secs();
                return self.fail(format!("upstream stream sent nothing for {secs} s"));
            }
            self.deadline.as_mut().reset(due);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // A client that leaves early is not the account's fault: only its usage so far counts.
        self.report();
    }
}
