//! The upstream HTTP client: hyper's pooled client over rustls, and nothing else on the way.
//!
//! reqwest did the same work with more around it: it parsed every URL with the WHATWG parser
//! (IDNA included) three times per request and ran each through a redirect policy and a retry
//! layer the proxy never uses (redirects are the client's to follow, retries are the candidate
//! loop's). Here a request is an [`http::Uri`] (a plain parse) handed to the pool.
//!
//! Proxies come from the environment, as curl reads them (`HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY`, `NO_PROXY`, upper or lower case), when the client is built:
//! - an `https://` upstream is reached through an HTTP `CONNECT` tunnel, then TLS to the
//!   upstream itself, so the proxy sees only the host name;
//! - an `http://` upstream is sent to the proxy in absolute form, with its
//!   `Proxy-Authorization` when the proxy URL carries a user and password.
//!
//! TLS: rustls with the ring provider and the webpki roots; ALPN offers HTTP/2 and HTTP/1.1, so
//! api.anthropic.com is spoken to over HTTP/2 as before.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::outcome::NetworkKind;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Pooled connections unused this long are closed.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// TCP keep-alive probes on pooled connections, so a peer that vanished is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

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

type Pool = hyper_util::client::legacy::Client<HttpsConnector<Connect>, Full<Bytes>>;

/// Cheap to clone: clones share the pools.
#[derive(Clone)]
pub struct UpstreamClient {
    /// One pool per lane, indexed by the sending thread's lane.
    lanes: Arc<[Pool]>,
    proxies: Arc<Matcher>,
}

impl UpstreamClient {
    /// A client whose connections (TCP, any proxy tunnel) must be made within `connect_timeout`,
    /// with the proxies the environment names now.
    pub fn new(connect_timeout: Duration) -> Result<Self, String> {
        Self::with_proxies(connect_timeout, Matcher::from_env())
    }

    fn with_proxies(connect_timeout: Duration, proxies: Matcher) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(TCP_KEEPALIVE));
        http.set_connect_timeout(Some(connect_timeout));
        let proxies = Arc::new(proxies);
        let connect = Connect {
            http,
            proxies: proxies.clone(),
            timeout: connect_timeout,
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(connect);
        let lanes = (0..=MAX_LANES)
            .map(|_| {
                hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE)
                    .pool_timer(TokioTimer::new())
                    .build(https.clone())
            })
            .collect();
        Ok(Self { lanes, proxies })
    }

    /// Send `req`; the answer's body streams as it arrives.
    pub async fn send(
        &self,
        mut req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        if req.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
            if let Some(auth) = self.http_proxy_auth(req.uri()) {
                req.headers_mut()
                    .insert(http::header::PROXY_AUTHORIZATION, auth);
            }
        }
        let lane = LANE.with(std::cell::Cell::get);
        self.lanes[lane.min(self.lanes.len() - 1)]
            .request(req)
            .await
    }

    /// `Proxy-Authorization` for a plain-HTTP request sent through a proxy with credentials.
    fn http_proxy_auth(&self, uri: &Uri) -> Option<HeaderValue> {
        let mut auth = self.proxies.intercept(uri)?.basic_auth()?.clone();
        auth.set_sensitive(true);
        Some(auth)
    }
}

/// What went wrong, in the failover policy's terms.
pub fn kind_of(e: &hyper_util::client::legacy::Error) -> NetworkKind {
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
    if e.is_connect() {
        NetworkKind::Connect
    } else {
        NetworkKind::Io
    }
}

/// The connection to the proxy or the tunnel through it took longer than the connect timeout.
#[derive(Debug)]
struct ConnectTimeout(Duration);

impl std::fmt::Display for ConnectTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no connection within {} s", self.0.as_secs())
    }
}

impl std::error::Error for ConnectTimeout {}

/// The TCP side of a connection: straight to the upstream, to an HTTP proxy, or through a
/// `CONNECT` tunnel. TLS, when the upstream is `https://`, is added on top by hyper-rustls.
#[derive(Clone)]
struct Connect {
    http: HttpConnector,
    proxies: Arc<Matcher>,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Connect {
    type Response = Tcp;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Tcp, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let proxy = self.proxies.intercept(&dst);
        let timeout = self.timeout;
        Box::pin(async move {
            let connecting = async move {
                let Some(proxy) = proxy else {
                    let io = call(&mut http, dst).await?;
                    return Ok(Tcp { io, proxied: false });
                };
                if dst.scheme() == Some(&http::uri::Scheme::HTTPS) {
                    let mut tunnel = Tunnel::new(proxy.uri().clone(), http);
                    if let Some(auth) = proxy.basic_auth() {
                        tunnel = tunnel.with_auth(auth.clone());
                    }
                    let io = call(&mut tunnel, dst)
                        .await
                        .map_err(|e| format!("proxy tunnel to {}: {e}", proxy.uri()))?;
                    Ok(Tcp { io, proxied: false })
                } else {
                    let io = call(&mut http, proxy.uri().clone()).await?;
                    Ok(Tcp { io, proxied: true })
                }
            };
            tokio::time::timeout(timeout, connecting)
                .await
                .map_err(|_| Box::new(ConnectTimeout(timeout)) as BoxError)?
        })
    }
}

/// `poll_ready`, then `call`, as the service contract asks.
async fn call<S>(service: &mut S, dst: Uri) -> Result<S::Response, BoxError>
where
    S: tower_service::Service<Uri>,
    S::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(Into::into)?;
    service.call(dst).await.map_err(Into::into)
}

/// A TCP stream that knows whether it goes to a proxy (then requests are sent in absolute form).
struct Tcp {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for Tcp {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl hyper::rt::Read for Tcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Tcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
