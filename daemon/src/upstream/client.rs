//! The upstream HTTP client: hyper's connection-level client over a pool of our own, per
//! serving thread.
//!
//! Why not hyper-util's pooled client: it does, per request, work the proxy does not need. It
//! clones the connector, races a pool checkout against a new connection, hashes the pool key,
//! stores connection info in the request's extensions and spawns a task that waits for the
//! connection to be idle again. Measured in the bench's stack-floor proxy on the same machine
//! and run: 20 µs of user CPU per request with it, 13 µs with hyper's connection-level client.
//! Here a request is an [`http::Uri`] (a plain parse), a checkout from the lane's
//! pool (`upstream/pool.rs`: a short list under an uncontended lock) and hyper's own send.
//!
//! Connections are made by `upstream/connect.rs` (TCP, HTTP proxies, `CONNECT` tunnels, TLS). ALPN
//! decides the protocol: api.anthropic.com is spoken to over HTTP/2 (`upstream/http2.rs`, the
//! `h2` crate directly), plain-HTTP upstreams over HTTP/1.1 (hyper's client).
//!
//! A request sent on a pooled connection that the upstream closed in the meantime never left:
//! hyper hands it back, and it goes again on a new connection. A request that may have left
//! is never sent twice (it is not idempotent).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::client::proxy::matcher::Matcher;

pub use super::connect::BoxError;
use super::connect::{self, ConnectTimeout, Connector};
use super::http2;
use super::pool::{Checkout, Http1, Key, Opening, Pool, StreamSlot};
use super::trust::ExtraRoots;
use crate::outcome::NetworkKind;

/// Serving threads with an upstream pool of their own (lanes 1 to this); requests sent from any
/// other thread use lane 0.
pub const MAX_LANES: usize = 16;

thread_local! {
    static LANE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Requests sent from this thread use pool `lane` (at most [`MAX_LANES`]): a serving thread
/// keeps its upstream connections, and the tasks that drive them, to itself, so a request never
/// waits on another thread. The price: each lane opens its own connections.
pub fn set_lane(lane: usize) {
    LANE.with(|l| l.set(lane.min(MAX_LANES)));
}

/// Cheap to clone: clones share the pools.
#[derive(Clone)]
pub struct UpstreamClient {
    /// One pool per lane, indexed by the sending thread's lane.
    lanes: Arc<[Arc<Pool>]>,
    connector: Connector,
    proxies: Arc<Matcher>,
    /// Speak HTTP/2 without TLS (tests of this module; the e2e suite has TLS).
    h2_prior_knowledge: bool,
    /// Streams one HTTP/2 connection carries at once before another is opened.
    streams_per_connection: usize,
}

/// Streams per HTTP/2 connection: the least a server should allow (RFC 9113 §6.5.2). Past the
/// server's own limit, hyper would queue a request inside the connection, behind streams that
/// can last minutes.
pub const STREAMS_PER_CONNECTION: usize = 100;

/// An upstream answer's body. Over HTTP/2 it holds its stream's place on the connection until
/// it is dropped, which is how the pool counts each connection's open streams.
pub struct UpstreamBody {
    inner: Inner,
    _stream: Option<StreamSlot>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("inner", &self.inner)
            .finish()
    }
}

#[derive(Debug)]
enum Inner {
    Http1(Incoming),
    Http2(http2::RecvBody),
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match &mut self.inner {
            Inner::Http1(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BoxError::from))),
            Inner::Http2(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BoxError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Http1(b) => b.is_end_stream(),
            Inner::Http2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match &self.inner {
            Inner::Http1(b) => b.size_hint(),
            Inner::Http2(b) => b.size_hint(),
        }
    }
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (TCP, proxy, tunnel or TLS).
    Connect(BoxError),
    /// The connection was made but HTTP could not start on it.
    Handshake(BoxError),
    /// The request failed on its connection.
    Request(BoxError),
    /// The request reached the upstream, which refused it unprocessed (HTTP/2 `REFUSED_STREAM`,
    /// or a GOAWAY that left it out): it may be sent again.
    Refused(BoxError),
    /// The URL has no scheme or host.
    NotAbsolute,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cause is not repeated here: `source` gives it, and the proxy's messages print
        // the whole chain.
        match self {
            SendError::Connect(_) => f.write_str("cannot connect"),
            SendError::Handshake(_) => f.write_str("cannot start HTTP on the connection"),
            SendError::Request(e) => write!(f, "{e}"),
            SendError::Refused(_) => f.write_str("the upstream refused the request unprocessed"),
            SendError::NotAbsolute => f.write_str("the upstream URL has no scheme or host"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(e) => Some(e.as_ref()),
            SendError::Handshake(e) => Some(e.as_ref()),
            SendError::Request(e) => e.source(),
            SendError::Refused(e) => Some(e.as_ref()),
            SendError::NotAbsolute => None,
        }
    }
}

impl UpstreamClient {
    /// A client whose connections (TCP, any proxy tunnel) must be made within `connect_timeout`,
    /// with the proxies the environment names now, trusting the built-in roots and `roots`.
    pub fn new(connect_timeout: Duration, roots: &ExtraRoots) -> Result<Self, String> {
        Self::with_proxies(connect_timeout, Matcher::from_env(), roots)
    }

    fn with_proxies(
        connect_timeout: Duration,
        proxies: Matcher,
        roots: &ExtraRoots,
    ) -> Result<Self, String> {
        let proxies = Arc::new(proxies);
        Ok(Self {
            lanes: (0..=MAX_LANES).map(|_| Arc::default()).collect(),
            connector: connect::connector(connect_timeout, proxies.clone(), roots)?,
            proxies,
            h2_prior_knowledge: false,
            streams_per_connection: STREAMS_PER_CONNECTION,
        })
    }

    /// Send `req` (its URI absolute); the answer's body streams as it arrives.
    pub async fn send(
        &self,
        mut req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<UpstreamBody>, SendError> {
        let key = Key::of(req.uri()).ok_or(SendError::NotAbsolute)?;
        let lane = LANE.with(std::cell::Cell::get);
        let pool = &self.lanes[lane.min(self.lanes.len() - 1)];
        let mut fresh_only = false;
        let mut waited = false;
        loop {
            let pooled = if fresh_only {
                None
            } else {
                pool.checkout(&key, self.streams_per_connection)
            };
            let (conn, reused) = match pooled {
                Some(conn) => (conn, true),
                None => {
                    let may_be_h2 = !waited && (key.is_https() || self.h2_prior_knowledge);
                    let leading = match pool.opening(&key, may_be_h2) {
                        Opening::Wait(done) => {
                            done.await;
                            // If that opening failed, this request opens its own rather than
                            // queueing behind the next attempt; if it worked but the connection
                            // filled up, it may wait for the next one.
                            waited = !pool.has_http2(&key);
                            continue;
                        }
                        Opening::Lead(leading) => Some(leading),
                        Opening::Alone => None,
                    };
                    // Boxed: the connection set-up (TLS, HTTP/2 handshake) is the larger part
                    // of this future and rare.
                    let conn = Box::pin(self.open(pool, &key, req.uri())).await;
                    drop(leading);
                    (conn?, false)
                }
            };
            // The absolute URI an HTTP/1.1 request gave up for its path, for sending it again.
            let mut absolute = None;
            let sent = match conn {
                Checkout::Http1(mut conn) => {
                    if conn.proxied {
                        // A plain-HTTP request to a proxy: its credentials, if it has any.
                        if let Some(auth) = self.http_proxy_auth(req.uri()) {
                            req.headers_mut()
                                .insert(http::header::PROXY_AUTHORIZATION, auth);
                        }
                    }
                    absolute = to_http1(&mut req, &conn);
                    let sent = conn.sender.try_send_request(req).await;
                    pool.put_http1(&key, conn);
                    match sent {
                        Ok(r) => Ok(r.map(|b| UpstreamBody {
                            inner: Inner::Http1(b),
                            _stream: None,
                        })),
                        Err(mut e) => Err((e.take_message(), BoxError::from(e.into_error()))),
                    }
                }
                Checkout::Http2(mut sender, slot) => match sender.send(req).await {
                    Ok(r) => Ok(r.map(|b| UpstreamBody {
                        inner: Inner::Http2(b),
                        _stream: Some(slot),
                    })),
                    Err(f) if f.refused() => return Err(SendError::Refused(f.error.into())),
                    Err(f) => Err((f.unsent, BoxError::from(f.error))),
                },
            };
            match sent {
                Ok(response) => return Ok(response),
                // It never left, and the connection was an old one the upstream may have
                // closed meanwhile: once more, on a new connection.
                Err((Some(unsent), _)) if reused => {
                    req = unsent;
                    if let Some(uri) = absolute {
                        *req.uri_mut() = uri;
                    }
                    fresh_only = true;
                }
                Err((_, e)) => return Err(SendError::Request(e)),
            }
        }
    }

    /// A new connection to `key`, its task started; an HTTP/2 one is shared through the pool.
    async fn open(&self, pool: &Arc<Pool>, key: &Key, uri: &Uri) -> Result<Checkout, SendError> {
        let dst = Uri::builder()
            .scheme(uri.scheme_str().unwrap_or("http"))
            .authority(uri.authority().map_or("", |a| a.as_str()))
            .path_and_query("/")
            .build()
            .map_err(|_| SendError::NotAbsolute)?;
        let io = connect::open(&self.connector, dst)
            .await
            .map_err(SendError::Connect)?;
        let connected = io.connected();
        let h2 = connected.is_negotiated_h2() || self.h2_prior_knowledge;
        pool.learned(key, h2);
        if h2 {
            let sender = http2::handshake(io)
                .await
                .map_err(|e| SendError::Handshake(e.into()))?;
            let slot = pool.put_http2(key, sender.clone());
            return Ok(Checkout::Http2(sender, slot));
        }
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| SendError::Handshake(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok(Checkout::Http1(Http1 {
            sender,
            proxied: connected.is_proxied(),
            host: host_header(uri),
        }))
    }

    /// `Proxy-Authorization` for a plain-HTTP request sent through a proxy with credentials.
    fn http_proxy_auth(&self, uri: &Uri) -> Option<HeaderValue> {
        let mut auth = self.proxies.intercept(uri)?.basic_auth()?.clone();
        auth.set_sensitive(true);
        Some(auth)
    }
}

/// HTTP/1.1 carries the upstream in a `Host` header, and the request target is the path alone,
/// unless the connection goes to an HTTP proxy (which needs the whole URL). The connection
/// goes to the request's scheme and authority (its pool key), so its `Host` is the request's.
/// Returns the absolute URI when the path took its place.
fn to_http1(req: &mut http::Request<Full<Bytes>>, conn: &Http1) -> Option<Uri> {
    if !req.headers().contains_key(http::header::HOST) {
        if let Some(host) = &conn.host {
            req.headers_mut().insert(http::header::HOST, host.clone());
        }
    }
    if !conn.proxied {
        let target = req
            .uri()
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        return Some(std::mem::replace(req.uri_mut(), target));
    }
    None
}

/// `host[:port]`, the port left out when it is the scheme's default. The suffix is compared as
/// text: parsing the port costs more than the rest of this function, on every request.
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let authority = uri.authority()?.as_str();
    let default_port = match uri.scheme_str() {
        Some("https") => ":443",
        _ => ":80",
    };
    HeaderValue::from_str(authority.strip_suffix(default_port).unwrap_or(authority)).ok()
}

/// What went wrong, in the failover policy's terms.
pub fn kind_of(e: &SendError) -> NetworkKind {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<ConnectTimeout>()
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return NetworkKind::Timeout;
        }
        cause = c.source();
    }
    match e {
        SendError::Connect(_) | SendError::Handshake(_) | SendError::NotAbsolute => {
            NetworkKind::Connect
        }
        SendError::Request(_) | SendError::Refused(_) => NetworkKind::Io,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::TcpListener;

    use super::*;

    /// How the test upstream speaks.
    #[derive(Clone, Copy)]
    enum Speaks {
        Http1,
        /// HTTP/1.1, closing each connection after one answer.
        Http1Once,
        Http2,
    }

    /// A loopback upstream that answers each request with its target and `Host` header, and
    /// counts the connections it accepted.
    async fn upstream(speaks: Speaks) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(|req: http::Request<Incoming>| async move {
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    let body = format!(
                        "{} {} host={host}",
                        req.version() == http::Version::HTTP_2,
                        req.uri()
                    );
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        body,
                    ))))
                });
                let io = TokioIo::new(tcp);
                tokio::spawn(async move {
                    let _ = match speaks {
                        Speaks::Http1 | Speaks::Http1Once => {
                            hyper::server::conn::http1::Builder::new()
                                .keep_alive(matches!(speaks, Speaks::Http1))
                                .serve_connection(io, service)
                                .await
                        }
                        Speaks::Http2 => {
                            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, service)
                                .await
                        }
                    };
                });
            }
        });
        (addr, accepted)
    }

    /// `/v1/messages` on the loopback upstream listening on `port`.
    fn messages_url(port: u16) -> String {
        format!("http://127.0.0.1:{port}/v1/messages")
    }

    /// A client speaking HTTP/2 without TLS, as the test upstreams do.
    fn h2_client() -> UpstreamClient {
        let mut client = client();
        client.h2_prior_knowledge = true;
        client
    }

    fn client() -> UpstreamClient {
        UpstreamClient::with_proxies(
            Duration::from_secs(5),
            Matcher::builder().build(),
            &ExtraRoots::default(),
        )
        .expect("client")
    }

    async fn get(client: &UpstreamClient, url: &str) -> String {
        let mut req = http::Request::new(Full::new(Bytes::from_static(b"{}")));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = url.parse().expect("url");
        let response = client.send(req).await.expect("answer");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.expect("body");
        String::from_utf8(body.to_bytes().to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn http1_sends_the_path_and_host_and_reuses_one_connection() {
        let (addr, accepted) = upstream(Speaks::Http1).await;
        let client = client();
        for _ in 0..5 {
            let said = get(&client, &format!("http://{addr}/v1/messages?beta=true")).await;
            assert_eq!(said, format!("false /v1/messages?beta=true host={addr}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_http1_requests_each_get_a_ready_connection() {
        let (addr, accepted) = upstream(Speaks::Http1).await;
        let client = client();
        let url = format!("http://{addr}/v1/messages");
        let (a, b, c) = tokio::join!(get(&client, &url), get(&client, &url), get(&client, &url));
        for said in [a, b, c] {
            assert!(said.starts_with("false /v1/messages"), "{said}");
        }
        // Three at once need three connections; afterwards, they are reused.
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        for _ in 0..3 {
            get(&client, &url).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_used_again() {
        let (addr, accepted) = upstream(Speaks::Http1Once).await;
        let client = client();
        let url = format!("http://{addr}/v1/messages");
        for n in 1..=3 {
            get(&client, &url).await;
            assert_eq!(accepted.load(Ordering::SeqCst), n);
        }
    }

    #[tokio::test]
    async fn http2_shares_one_connection_between_concurrent_requests() {
        let (addr, accepted) = upstream(Speaks::Http2).await;
        let client = h2_client();
        let url = messages_url(addr.port());
        // One first, so the connection exists before the concurrent ones look for it.
        assert!(get(&client, &url).await.starts_with("true "));
        let (a, b, c) = tokio::join!(get(&client, &url), get(&client, &url), get(&client, &url));
        for said in [a, b, c] {
            assert!(said.starts_with("true "), "{said}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_first_http2_requests_wait_for_one_connection() {
        let (addr, accepted) = upstream(Speaks::Http2).await;
        let client = h2_client();
        let url = messages_url(addr.port());
        let (a, b, c, d) = tokio::join!(
            get(&client, &url),
            get(&client, &url),
            get(&client, &url),
            get(&client, &url)
        );
        for said in [a, b, c, d] {
            assert!(said.starts_with("true "), "{said}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_full_http2_connection_gets_a_new_one_instead_of_queueing_requests() {
        // The upstream allows two streams per connection and answers only once five requests
        // are in at the same time: five can be open at once only on more connections.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let all_in = Arc::new(tokio::sync::Barrier::new(5));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let all_in = all_in.clone();
                let service = service_fn(move |_req: http::Request<Incoming>| {
                    let all_in = all_in.clone();
                    async move {
                        all_in.wait().await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"true"),
                        )))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(2)
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        let mut client = h2_client();
        client.streams_per_connection = 2;
        let url = messages_url(addr.port());
        let five = futures_util::future::join_all((0..5).map(|_| get(&client, &url)));
        let said = tokio::time::timeout(Duration::from_secs(30), five)
            .await
            .expect("all five were open at once");
        assert!(said.iter().all(|s| s == "true"), "{said:?}");
        // Two streams a connection: three connections for five, opened one after another
        // while the others wait, not one per request.
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        // Their streams are closed now: the next request fits on a connection made already.
        let before = accepted.load(Ordering::SeqCst);
        let one = tokio::spawn({
            let client = client.clone();
            let url = url.clone();
            async move { get(&client, &url).await }
        });
        // It waits at the barrier for four more; those four fill the connections again.
        let more = futures_util::future::join_all((0..4).map(|_| get(&client, &url)));
        let (one, _) = tokio::join!(one, more);
        assert_eq!(one.expect("task"), "true");
        assert_eq!(accepted.load(Ordering::SeqCst), before);
    }

    #[tokio::test]
    async fn requests_waiting_on_a_failed_opening_fail_too_instead_of_queueing() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let client = h2_client();
        let send = || {
            let mut req = http::Request::new(Full::new(Bytes::new()));
            *req.uri_mut() = messages_url(port).parse().expect("url");
            client.send(req)
        };
        let (a, b, c) = tokio::join!(send(), send(), send());
        for r in [a, b, c] {
            let e = r.expect_err("nothing listens");
            assert_eq!(kind_of(&e), NetworkKind::Connect);
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error_naming_the_cause() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let mut req = http::Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = format!("http://127.0.0.1:{port}/v1/messages")
            .parse()
            .expect("url");
        let e = client().send(req).await.expect_err("nothing listens");
        assert_eq!(kind_of(&e), NetworkKind::Connect);
        let chain = crate::upstream::error_chain(&e);
        assert!(chain.starts_with("cannot connect: "), "{chain}");
        assert!(chain.to_lowercase().contains("refused"), "{chain}");
    }

    #[test]
    fn the_host_header_leaves_out_the_default_port() {
        let host = |u: &str| host_header(&u.parse().expect("url")).expect("host");
        assert_eq!(host("https://127.0.0.1:443/v1"), "127.0.0.1");
        assert_eq!(host("https://localhost/v1"), "localhost");
        assert_eq!(host("http://127.0.0.1:8080/v1"), "127.0.0.1:8080");
        assert_eq!(host("http://127.0.0.1:443/"), "127.0.0.1:443");
        assert_eq!(host("http://127.0.0.1:80/"), "127.0.0.1");
        assert_eq!(host("http://127.0.0.1:180/"), "127.0.0.1:180");
        assert_eq!(host("https://[::1]:443/"), "[::1]");
        assert_eq!(host("http://[::1]:8443/"), "[::1]:8443");
    }
}
