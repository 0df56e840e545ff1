//! How a connection to an upstream is made: straight over TCP, to an HTTP proxy, or through a
//! proxy's `CONNECT` tunnel; hyper-rustls adds TLS on top for `https://` upstreams (offering
//! HTTP/2 and HTTP/1.1 by ALPN).
//!
//! Proxies come from the environment, as curl reads them (`HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY`, `NO_PROXY`, upper or lower case), when the client is built:
//! - an `https://` upstream is reached through an HTTP `CONNECT` tunnel, then TLS to the
//!   upstream itself, so the proxy sees only the host name;
//! - an `http://` upstream is sent to the proxy in absolute form, with its
//!   `Proxy-Authorization` when the proxy URL carries a user and password.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::trust::ExtraRoots;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// TCP keep-alive probes on pooled connections, so a peer that vanished is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A connection as the pool holds it: TCP, maybe TLS on top.
pub type Stream = MaybeHttpsStream<Tcp>;

/// Makes [`Stream`]s; cheap to clone.
pub type Connector = HttpsConnector<Connect>;

/// The connector for `proxies`, whose connections (TCP, any proxy tunnel) must be made within
/// `timeout`, trusting the built-in roots and `roots`.
pub fn connector(
    timeout: Duration,
    proxies: Arc<Matcher>,
    roots: &ExtraRoots,
) -> Result<Connector, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.set_connect_timeout(Some(timeout));
    let connect = Connect {
        http,
        proxies,
        timeout,
    };
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(roots.rustls_config()?)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(connect))
}

/// Open a connection to `dst`'s scheme and authority.
pub async fn open(connector: &Connector, dst: Uri) -> Result<Stream, BoxError> {
    let mut connector = connector.clone();
    call(&mut connector, dst).await
}

/// The connection to the proxy or the tunnel through it took longer than the connect timeout.
#[derive(Debug)]
pub struct ConnectTimeout(Duration);

impl std::fmt::Display for ConnectTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no connection within {} s", self.0.as_secs())
    }
}

impl std::error::Error for ConnectTimeout {}

/// The TCP side of a connection: straight to the upstream, to an HTTP proxy, or through a
/// `CONNECT` tunnel. TLS, when the upstream is `https://`, is added on top by hyper-rustls.
#[derive(Clone)]
pub struct Connect {
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
pub struct Tcp {
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
