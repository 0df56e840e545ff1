//! One lane's open upstream connections, by upstream (scheme and authority).
//!
//! - HTTP/1.1: a list of connections. One is handed out only when it is ready, that is idle:
//!   a connection still reading an earlier answer's body stays listed and is skipped. The most
//!   recently used ready one goes first (its TCP window and caches are warm).
//! - HTTP/2: shared connections, each carrying up to a number of concurrent streams (the
//!   client's `streams_per_connection`, 100 by default: the least a server should allow, RFC
//!   9113 §6.5.2). A request beyond that on every connection gets a new one instead of queueing
//!   inside hyper behind streams that may last minutes. While the first connection to an
//!   upstream that may speak HTTP/2 is being opened (TLS, then ALPN says), the requests that
//!   arrive meanwhile wait for it ([`Pool::opening`]) instead of each opening one of their own:
//!   Claude Code starts with several requests at once.
//!
//! Each connection is driven by a task of its own (hyper's `Connection` future), so one closed
//! by the upstream while idle shows as closed here and is dropped at the next look. Connections
//! idle for more than [`IDLE`] (an HTTP/1.1 one without an answer to read that long, as far as
//! the sweeper saw, an HTTP/2 one without a stream that long) are neither handed out nor kept: one may have died unnoticed
//! (a laptop slept, the network changed). A sweeper task drops them while the pool holds any.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::Uri;
use http_body_util::Full;
use hyper::client::conn::http1;

/// Pooled connections unused this long are closed.
pub const IDLE: Duration = Duration::from_secs(90);

/// At most this many HTTP/1.1 connections are kept per upstream per lane; past it, a finished
/// connection is closed rather than kept.
const MAX_PER_UPSTREAM: usize = 512;

pub type H1 = http1::SendRequest<Full<Bytes>>;
pub type H2 = super::http2::Sender;

/// Which upstream a connection goes to.
#[derive(Clone, Debug)]
pub struct Key {
    https: bool,
    authority: Authority,
}

/// Byte for byte: `Authority`'s own comparison ignores case, which costs more per request than
/// the rare second pool for `API.anthropic.com`.
impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.https == other.https && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for Key {}

impl Key {
    /// Whether the upstream is reached over TLS (where ALPN may pick HTTP/2).
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// `None` for a URI without a scheme and authority (the client refuses it).
    pub fn of(uri: &Uri) -> Option<Self> {
        Some(Self {
            https: uri.scheme() == Some(&Scheme::HTTPS),
            authority: uri.authority()?.clone(),
        })
    }
}

/// An HTTP/1.1 connection out of the pool.
pub struct Http1 {
    pub sender: H1,
    /// It goes to an HTTP proxy: requests are sent in absolute form.
    pub proxied: bool,
    /// The `Host` header of its requests, made once for the connection rather than per request.
    pub host: Option<http::HeaderValue>,
}

/// See [`Pool::opening`].
pub enum Opening {
    /// Open a connection; requests that come meanwhile wait until this is dropped.
    Lead(Leading),
    /// Wait for the connection another request is opening, then look in the pool again.
    Wait(tokio::sync::futures::OwnedNotified),
    /// Open a connection of one's own.
    Alone,
}

/// Held by the request opening a connection others wait for; dropping it (the connection is in
/// the pool, or opening failed) wakes them.
pub struct Leading {
    pool: Arc<Pool>,
    key: Key,
}

impl Drop for Leading {
    fn drop(&mut self) {
        let mut upstreams = self.pool.upstreams();
        if let Some(u) = upstreams.iter_mut().find(|u| u.key == self.key) {
            if let Some(done) = u.connecting.take() {
                done.notify_waiters();
            }
        }
    }
}

/// The streams open on an HTTP/2 connection, and since when it has had none.
struct Streams {
    open: AtomicUsize,
    /// Set when the last open stream ends (and when the connection is made).
    idle_since: Mutex<Instant>,
}

/// A stream's place on an HTTP/2 connection, held until the answer's body is read or dropped.
pub struct StreamSlot(Arc<Streams>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            *self
                .0
                .idle_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        }
    }
}

/// A shared HTTP/2 connection and its streams.
struct Shared2 {
    sender: H2,
    streams: Arc<Streams>,
}

impl Shared2 {
    fn new(sender: H2) -> Self {
        Self {
            sender,
            streams: Arc::new(Streams {
                open: AtomicUsize::new(0),
                idle_since: Mutex::new(Instant::now()),
            }),
        }
    }

    fn open_streams(&self) -> usize {
        self.streams.open.load(Ordering::Relaxed)
    }

    /// Open, and either carrying streams or without any for less than [`IDLE`] (a stream that
    /// lasted minutes kept it alive).
    fn usable(&self, now: Instant) -> bool {
        if self.sender.is_closed() {
            return false;
        }
        self.open_streams() > 0 || {
            let idle_since = *self
                .streams
                .idle_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            now.saturating_duration_since(idle_since) < IDLE
        }
    }

    fn slot(&self) -> StreamSlot {
        self.streams.open.fetch_add(1, Ordering::Relaxed);
        StreamSlot(self.streams.clone())
    }
}

/// A connection handed out for one request.
pub enum Checkout {
    Http1(Http1),
    Http2(H2, StreamSlot),
}

struct Idle {
    conn: Http1,
    since: Instant,
}

struct Upstream {
    key: Key,
    http1: Vec<Idle>,
    http2: Vec<Shared2>,
    /// A connection is being opened by a request others may wait for; told when it is done.
    connecting: Option<Arc<tokio::sync::Notify>>,
    /// Whether the last connection made negotiated HTTP/2 (`None`: none made yet).
    speaks_h2: Option<bool>,
}

impl Upstream {
    /// Drop what is closed or idle too long.
    fn sweep(&mut self, now: Instant) {
        // One still reading an answer is in use: its idle time starts after it, not when its
        // request was sent (an answer may stream for minutes).
        for i in &mut self.http1 {
            if !i.conn.sender.is_ready() {
                i.since = now;
            }
        }
        self.http1.retain(|i| {
            !i.conn.sender.is_closed()
                && (!i.conn.sender.is_ready() || now.duration_since(i.since) < IDLE)
        });
        self.http2.retain(|c| c.usable(now));
    }

    fn is_empty(&self) -> bool {
        self.http1.is_empty() && self.http2.is_empty() && self.connecting.is_none()
    }
}

#[derive(Default)]
pub struct Pool {
    upstreams: Mutex<Vec<Upstream>>,
    /// A sweeper task runs (see [`Pool::sweep_while_held`]).
    sweeping: std::sync::atomic::AtomicBool,
}

impl Pool {
    fn upstreams(&self) -> MutexGuard<'_, Vec<Upstream>> {
        // A panic under this lock cannot leave the list inconsistent: use it as it is.
        self.upstreams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connection to `key` that can take a request now, if the pool has one: an HTTP/2
    /// connection with fewer than `streams` streams open, or an idle HTTP/1.1 one.
    pub fn checkout(&self, key: &Key, streams: usize) -> Option<Checkout> {
        let mut upstreams = self.upstreams();
        let u = upstreams.iter_mut().find(|u| &u.key == key)?;
        let now = Instant::now();
        if !u.http2.is_empty() {
            // Unused for [`IDLE`], a connection may have died unnoticed (a laptop slept, the
            // network changed): a request written into it would wait for TCP to give up.
            u.http2.retain(|c| c.usable(now));
            if let Some(c) = u.http2.iter().find(|c| c.open_streams() < streams) {
                return Some(Checkout::Http2(c.sender.clone(), c.slot()));
            }
        }
        loop {
            let i = u.http1.iter().rposition(|i| i.conn.sender.is_ready())?;
            let idle = u.http1.swap_remove(i);
            if now.duration_since(idle.since) < IDLE {
                return Some(Checkout::Http1(idle.conn));
            }
        }
    }

    /// Keep an HTTP/1.1 connection whose request was sent: it is handed out again once its
    /// answer has been read.
    pub fn put_http1(self: &Arc<Self>, key: &Key, conn: Http1) {
        if conn.sender.is_closed() {
            return;
        }
        let idle = Idle {
            conn,
            since: Instant::now(),
        };
        {
            let mut upstreams = self.upstreams();
            let u = Self::entry(&mut upstreams, key);
            if u.http1.len() >= MAX_PER_UPSTREAM {
                u.sweep(idle.since);
            }
            if u.http1.len() < MAX_PER_UPSTREAM {
                u.http1.push(idle);
            }
        }
        self.sweep_while_held();
    }

    /// Share a new HTTP/2 connection with the requests that follow; the slot is for the
    /// request that opened it.
    pub fn put_http2(self: &Arc<Self>, key: &Key, sender: H2) -> StreamSlot {
        let shared = Shared2::new(sender);
        let slot = shared.slot();
        Self::entry(&mut self.upstreams(), key).http2.push(shared);
        self.sweep_while_held();
        slot
    }

    /// What a request that found no connection to `key` does: open one and let later requests
    /// wait for it, or wait for the one being opened. Only an upstream that may speak HTTP/2
    /// (`may_be_h2`: TLS, where ALPN decides) and has not been seen speaking HTTP/1.1 is waited
    /// for: an HTTP/1.1 connection serves one request at a time, so waiting would gain nothing.
    pub fn opening(self: &Arc<Self>, key: &Key, may_be_h2: bool) -> Opening {
        if !may_be_h2 {
            return Opening::Alone;
        }
        let mut upstreams = self.upstreams();
        let u = Self::entry(&mut upstreams, key);
        if u.speaks_h2 == Some(false) {
            return Opening::Alone;
        }
        match &u.connecting {
            Some(done) => Opening::Wait(done.clone().notified_owned()),
            None => {
                u.connecting = Some(Arc::default());
                Opening::Lead(Leading {
                    pool: self.clone(),
                    key: key.clone(),
                })
            }
        }
    }

    /// Whether an HTTP/2 connection to `key` is open (it may be full).
    pub fn has_http2(&self, key: &Key) -> bool {
        self.upstreams()
            .iter()
            .any(|u| &u.key == key && u.http2.iter().any(|c| !c.sender.is_closed()))
    }

    /// Remember which protocol a new connection to `key` negotiated.
    pub fn learned(&self, key: &Key, h2: bool) {
        Self::entry(&mut self.upstreams(), key).speaks_h2 = Some(h2);
    }

    fn entry<'a>(upstreams: &'a mut Vec<Upstream>, key: &Key) -> &'a mut Upstream {
        let i = match upstreams.iter().position(|u| &u.key == key) {
            Some(i) => i,
            None => {
                upstreams.push(Upstream {
                    key: key.clone(),
                    http1: Vec::new(),
                    http2: Vec::new(),
                    connecting: None,
                    speaks_h2: None,
                });
                upstreams.len() - 1
            }
        };
        &mut upstreams[i]
    }

    /// Start the sweeper unless it runs: every third of [`IDLE`] it drops closed and stale
    /// connections, and it stops once the pool is empty (the next connection kept starts it
    /// again). It holds the pool weakly, so a dropped client's pool goes with its connections.
    fn sweep_while_held(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let pool: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(IDLE / 3).await;
                let Some(pool) = pool.upgrade() else { return };
                let now = Instant::now();
                let mut upstreams = pool.upstreams();
                for u in upstreams.iter_mut() {
                    u.sweep(now);
                }
                upstreams.retain(|u| !u.is_empty());
                if upstreams.is_empty() {
                    pool.sweeping.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use hyper_util::rt::{TokioExecutor, TokioIo};

    use super::*;

    /// An HTTP/2 connection to a loopback server that answers nothing (none is sent here).
    async fn h2_connection() -> H2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        super::super::http2::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake")
    }

    fn key() -> Key {
        Key::of(&Uri::from_static("http://127.0.0.1:1/")).expect("key")
    }

    #[tokio::test]
    async fn http2_streams_are_counted_until_their_slots_drop() {
        let pool = Arc::new(Pool::default());
        let first = pool.put_http2(&key(), h2_connection().await);
        let Some(Checkout::Http2(_, second)) = pool.checkout(&key(), 2) else {
            panic!("room for a second stream");
        };
        assert!(pool.checkout(&key(), 2).is_none(), "two streams: full");
        drop(first);
        assert!(pool.checkout(&key(), 2).is_some(), "a slot came back");
        drop(second);
    }

    #[tokio::test]
    async fn an_http1_connection_busy_past_the_idle_time_is_handed_out_after_its_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answer = Arc::new(tokio::sync::Notify::new());
        let go = answer.clone();
        tokio::spawn(async move {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let service = hyper::service::service_fn(move |_req| {
                let go = go.clone();
                async move {
                    go.notified().await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"done"),
                    )))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = http::Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = Uri::from_static("/");
        let answered = tokio::spawn(sender.send_request(req));
        let pool = Arc::new(Pool::default());
        pool.put_http1(
            &key(),
            Http1 {
                sender,
                proxied: false,
                host: None,
            },
        );
        // Its request went out longer ago than the idle time, and it is still answering.
        for u in pool.upstreams().iter_mut() {
            for i in &mut u.http1 {
                i.since = Instant::now()
                    .checked_sub(IDLE + Duration::from_secs(1))
                    .expect("the clock is past the idle time");
            }
        }
        let now = Instant::now();
        for u in pool.upstreams().iter_mut() {
            u.sweep(now);
        }
        answer.notify_one();
        let response = answered.await.expect("task").expect("answer");
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut found = pool.checkout(&key(), 100);
        while found.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
            found = pool.checkout(&key(), 100);
        }
        assert!(
            matches!(found, Some(Checkout::Http1(_))),
            "busy until a moment ago: handed out"
        );
    }

    #[tokio::test]
    async fn an_http2_connection_unused_for_the_idle_time_is_not_handed_out() {
        let pool = Arc::new(Pool::default());
        drop(pool.put_http2(&key(), h2_connection().await));
        let long_ago = || {
            Instant::now()
                .checked_sub(IDLE + Duration::from_secs(1))
                .expect("the clock is past the idle time")
        };
        let set_idle_since = |at: Instant| {
            for u in pool.upstreams().iter() {
                for c in &u.http2 {
                    *c.streams.idle_since.lock().expect("lock") = at;
                }
            }
        };
        // A stream handed out long ago that just ended: the connection was busy until now.
        let Some(Checkout::Http2(_, long_stream)) = pool.checkout(&key(), 100) else {
            panic!("fresh");
        };
        set_idle_since(long_ago());
        drop(long_stream);
        assert!(
            pool.checkout(&key(), 100).is_some(),
            "busy until a moment ago"
        );
        // Without a stream for the idle time: stale.
        set_idle_since(long_ago());
        assert!(
            pool.checkout(&key(), 100).is_none(),
            "stale: a new one is made"
        );
        assert!(pool.upstreams().iter().all(|u| u.http2.is_empty()));
    }
}
