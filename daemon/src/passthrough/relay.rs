//! The body of a committed answer: upstream frames go to the client as they arrive, never
//! collected. What the bytes become is the [`Adapter`]'s business: the Anthropic passthrough
//! ([`Passthrough`]) relays them as they are (in whole SSE events, usage read on the side); a
//! translated provider ([`crate::providers::fallback`]) turns them into Claude events. What
//! happens when the answer ends is the [`Sink`]'s: the pool's counters and the request log for an
//! account, the provider's counters for a link. The relay itself owns the timing: the idle
//! timeout, keep-alive comments, and ending a failed SSE stream with an `error` event after whole
//! events (there is no retry once bytes went out).
//!
//! Dropping the relay (the client went away) drops the upstream response, which closes that
//! upstream connection at once: the cancel reaches the provider immediately.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::boundary::EventFramer;
use super::usage::{JsonUsage, SseUsage};
use crate::pool::{AccountId, Usage};
use crate::server::App;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What an answer's bytes become on their way to the client.
pub trait Adapter: Send + Unpin + 'static {
    /// Upstream bytes in; what goes to the client now (`None`: nothing whole yet), or why the
    /// answer failed.
    fn chunk(&mut self, chunk: Bytes) -> Result<Option<Bytes>, String>;
    /// The upstream body ended: the last bytes, or why ending here is a failure.
    fn end(&mut self) -> Result<Option<Bytes>, String>;
    /// The event that ends a failed stream; `None` when the answer is not a stream (the
    /// connection is aborted instead).
    fn error_event(&mut self, message: &str) -> Option<Bytes>;
    /// The tokens read so far.
    fn usage(&self) -> Usage;
}

/// How the answer ended, for the [`Sink`].
#[derive(Debug)]
pub struct Ending {
    pub usage: Usage,
    /// Why the stream failed after its first byte.
    pub failure: Option<String>,
    /// Whether the whole answer went out (`false` with no failure: the client left).
    pub complete: bool,
    /// Whether the answer was an SSE stream.
    pub sse: bool,
}

/// Told once when the answer ends, however it ends.
pub trait Sink: Send + 'static {
    fn ended(self: Box<Self>, ending: Ending);
}

/// How the Anthropic passthrough reads usage from an answer.
#[derive(Debug)]
pub enum Inspector {
    None,
    Sse(SseUsage),
    Json(JsonUsage),
}

impl Inspector {
    pub fn feed(&mut self, b: &Bytes) {
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

/// The identity adapter: Anthropic's bytes as they are. An uncompressed SSE answer goes out in
/// whole events only ([`EventFramer`]), so an error event always follows a complete one; other
/// answers go chunk by chunk, without a copy.
pub struct Passthrough {
    pub inspector: Inspector,
    /// The answer is an SSE stream: a failure ends it with an `error` event.
    pub sse: bool,
    /// Whole events only (an uncompressed SSE stream), with what is held of the next event.
    pub framer: Option<EventFramer>,
}

impl Adapter for Passthrough {
    fn chunk(&mut self, chunk: Bytes) -> Result<Option<Bytes>, String> {
        self.inspector.feed(&chunk);
        Ok(match &mut self.framer {
            Some(framer) => framer.push(chunk),
            None => Some(chunk),
        })
    }

    fn end(&mut self) -> Result<Option<Bytes>, String> {
        let Some(framer) = &mut self.framer else {
            return Ok(None);
        };
        if framer.inside_event() {
            return Err("upstream stream ended inside an event".to_string());
        }
        let rest = framer.take_rest();
        Ok((!rest.is_empty()).then_some(rest))
    }

    fn error_event(&mut self, message: &str) -> Option<Bytes> {
        // Whatever is held is part of an event that never completed: it is dropped.
        self.sse.then(|| error_event(message))
    }

    fn usage(&self) -> Usage {
        self.inspector.usage()
    }
}

/// Where an Anthropic answer's end goes: the account's usage and health, and the request log.
pub struct AccountSink {
    pub app: std::sync::Arc<App>,
    pub account_id: AccountId,
    pub draft: super::record::Draft,
    pub account: neurolink_shared::ipc::Label,
    pub status: u16,
    pub ttfb_ms: u64,
}

impl Sink for AccountSink {
    fn ended(self: Box<Self>, e: Ending) {
        {
            let mut pool = self.app.pool();
            if !e.usage.is_empty() {
                pool.add_usage(self.account_id, e.usage);
            }
            if let Some(f) = &e.failure {
                pool.report_stream_error(self.account_id, f.clone());
            }
        }
        let record = self.draft.into_record(
            self.status,
            e.sse,
            Some(self.account),
            Some(self.ttfb_ms),
            e.usage,
            error_class(&e),
        );
        self.app.record(record);
    }
}

/// The request log's `errorClass` for how an answer ended.
pub fn error_class(e: &Ending) -> Option<String> {
    match (&e.failure, e.complete) {
        (Some(_), _) => Some("stream_error".to_string()),
        (None, false) => Some("client_disconnected".to_string()),
        (None, true) => None,
    }
}

/// The SSE event that tells a client the stream broke (Anthropic's error event shape).
pub fn error_event(message: &str) -> Bytes {
    let data =
        serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}});
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

/// The relay's timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Upstream silent this long: the stream failed.
    pub idle: Duration,
    /// Output silent this long: a keep-alive comment goes out (translated streams).
    pub keep_alive: Option<Duration>,
}

/// Output held for one write stops growing here; a chunk this big goes out on its own.
const HOLD_LIMIT: usize = 16 * 1024;

/// Yields before upstream's `Pending` is believed while output is held. With one, a 1,000-event
/// stream from the fake upstream still took one write per event; with three, nine (each at the
/// hold limit).
const TURNS: u8 = 3;

/// A chunk that arrives this long after the one before it goes out at once, when nothing is
/// held: upstream is writing as a model generates (events tens of milliseconds apart), and
/// waiting [`TURNS`] for a burst that is not coming would cost every event three wake-ups and a
/// copy. Chunks of one burst arrive microseconds apart.
const GAP: Duration = Duration::from_millis(1);

/// A comment line: ignored by SSE clients, it keeps idle connections from being timed out.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

pub struct Relay<A: Adapter> {
    sink: Option<Box<dyn Sink>>,
    first: Option<Bytes>,
    upstream: crate::upstream::client::UpstreamBody,
    timing: Timing,
    /// Fires at the next idle or keep-alive due time. Made the first time upstream has nothing
    /// ready (an answer that arrives whole never needs one) and re-armed lazily: a chunk only
    /// records the time, and the timer is moved when it fires early, which keeps timer work off
    /// the per-chunk path.
    deadline: Option<Pin<Box<Sleep>>>,
    last_chunk: Instant,
    /// When output last went out; kept only with a keep-alive (nothing else reads it).
    last_out: Instant,
    adapter: A,
    sse: bool,
    done: bool,
    failure: Option<String>,
    /// `content-length` of the answer, when known: the body is complete once that much went
    /// out (hyper stops polling a body at its length, so its end is never seen otherwise).
    expected_len: Option<u64>,
    sent: u64,
    /// Set after the first chunk: the next poll yields once so it is flushed.
    flush_first: bool,
    /// Output gathered while upstream had more ready: sent in one write (see `poll_frame`).
    held: bytes::BytesMut,
    /// Turns given to upstream's connection task since the last chunk (see `poll_frame`).
    yielded: u8,
    /// How upstream ended, once the held output has gone out.
    ending: Option<Result<(), String>>,
}

impl<A: Adapter> Relay<A> {
    /// `first` is what the commit produced (whole events, for SSE), already through the adapter.
    pub fn new(
        first: Bytes,
        upstream: crate::upstream::client::UpstreamBody,
        timing: Timing,
        adapter: A,
        sse: bool,
        expected_len: Option<u64>,
        sink: Box<dyn Sink>,
    ) -> Self {
        let now = Instant::now();
        Self {
            sink: Some(sink),
            first: Some(first),
            upstream,
            timing,
            deadline: None,
            last_chunk: now,
            last_out: now,
            adapter,
            sse,
            done: false,
            failure: None,
            expected_len,
            sent: 0,
            flush_first: false,
            held: bytes::BytesMut::new(),
            yielded: 0,
            ending: None,
        }
    }

    /// Send what is held now.
    fn release(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let held = self.held.split().freeze();
        self.out(held)
    }

    /// Count bytes sent; reaching the announced length completes the answer.
    fn count(&mut self, n: usize) {
        self.sent += n as u64;
        if self.expected_len.is_some_and(|len| self.sent >= len) {
            self.done = true;
            self.report();
        }
    }

    fn out(&mut self, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.count(bytes.len());
        if self.timing.keep_alive.is_some() {
            self.last_out = Instant::now();
        }
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn fail(&mut self, message: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        tracing::warn!("stream failed after the first byte: {message}");
        let event = self.adapter.error_event(&message);
        self.failure = Some(message.clone());
        self.report();
        match event {
            Some(e) => Poll::Ready(Some(Ok(Frame::data(e)))),
            None => Poll::Ready(Some(Err(message.into()))),
        }
    }

    fn report(&mut self) {
        let Some(sink) = self.sink.take() else {
            return;
        };
        sink.ended(Ending {
            usage: self.adapter.usage(),
            failure: self.failure.take(),
            complete: self.done,
            sse: self.sse,
        });
    }

    /// The upstream body ended.
    fn end(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.adapter.end() {
            Err(message) => self.fail(message),
            Ok(rest) => {
                self.done = true;
                self.report();
                match rest {
                    Some(rest) if !rest.is_empty() => {
                        self.sent += rest.len() as u64;
                        Poll::Ready(Some(Ok(Frame::data(rest))))
                    }
                    _ => Poll::Ready(None),
                }
            }
        }
    }

    /// Upstream has nothing now: a keep-alive when output has been silent long enough, a
    /// failure once upstream has been silent for `idle`.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            let idle_due = self.last_chunk + self.timing.idle;
            let next_due = self
                .timing
                .keep_alive
                .map_or(idle_due, |k| idle_due.min(self.last_out + k));
            let deadline = self
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next_due)));
            if deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if now >= idle_due {
                let secs = self.timing.idle.as_secs();
                return self.fail(format!("upstream stream sent nothing for {secs} s"));
            }
            if let Some(k) = self.timing.keep_alive {
                if now >= self.last_out + k {
                    deadline.as_mut().reset((now + k).min(idle_due));
                    return self.out(Bytes::from_static(KEEP_ALIVE));
                }
            }
            // It fired early (a chunk or output moved the due time): move it there.
            deadline.as_mut().reset(next_due);
        }
    }
}

impl<A: Adapter> http_body::Body for Relay<A> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            let frame = this.out(first);
            // A whole answer in one chunk (most JSON answers) needs no flush of its own: hyper
            // ends the body at once, seeing `is_end_stream`.
            this.flush_first = !this.done;
            return frame;
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
        if let Some(ending) = this.ending.take() {
            // Upstream ended while output was held; that output went out first.
            return match ending {
                Ok(()) => this.end(),
                Err(message) => this.fail(message),
            };
        }
        // Output is gathered while upstream has more ready, and sent once it has not: one write
        // to the client for a burst of events instead of one per upstream chunk. An HTTP/1.1
        // upstream body hands over one chunk per turn of its connection task (two turns,
        // measured), so "nothing ready" is believed only after [`TURNS`] yields. An event that
        // arrives after a pause ([`GAP`]), as a model's do, goes out at once instead.
        // Chunks that arrive in one poll arrive together: the clock is read once for them.
        let mut stamped = false;
        // Whether this poll's first chunk came after a gap (see [`GAP`]).
        let mut after_gap = false;
        loop {
            let ending = match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers carry nothing a client of the Messages API reads.
                    let Ok(chunk) = frame.into_data() else {
                        continue;
                    };
                    if !stamped {
                        let now = Instant::now();
                        after_gap = now.duration_since(this.last_chunk) >= GAP;
                        this.last_chunk = now;
                        stamped = true;
                    }
                    match this.adapter.chunk(chunk) {
                        // Nothing whole yet: read on (the adapter holds the bytes).
                        Ok(None) => continue,
                        Ok(Some(out)) if out.is_empty() => continue,
                        Ok(Some(out))
                            if this.held.is_empty() && (after_gap || out.len() >= HOLD_LIMIT) =>
                        {
                            return this.out(out);
                        }
                        Ok(Some(out)) => {
                            this.held.extend_from_slice(&out);
                            this.yielded = 0;
                            let whole = this
                                .expected_len
                                .is_some_and(|len| this.sent + this.held.len() as u64 >= len);
                            if whole || this.held.len() >= HOLD_LIMIT {
                                return this.release();
                            }
                            continue;
                        }
                        Err(message) => Err(message),
                    }
                }
                Poll::Ready(Some(Err(e))) => Err(format!("upstream stream failed: {e}")),
                Poll::Ready(None) => Ok(()),
                Poll::Pending if this.held.is_empty() => return this.wait(cx),
                Poll::Pending if this.yielded < TURNS => {
                    this.yielded += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => {
                    this.yielded = 0;
                    return this.release();
                }
            };
            if this.held.is_empty() {
                return match ending {
                    Ok(()) => this.end(),
                    Err(message) => this.fail(message),
                };
            }
            this.ending = Some(ending);
            return this.release();
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.first.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl<A: Adapter> Drop for Relay<A> {
    fn drop(&mut self) {
        // A client that leaves early is not the account's fault: only its usage so far counts.
        self.report();
    }
}
