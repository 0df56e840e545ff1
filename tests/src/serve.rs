//! The accept loop every fake server shares: one task per connection, HTTP/1 with keep-alive;
//! over TLS, HTTP/2 when the client chose it by ALPN.

use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Serve `handler` on `listener` until the returned task is aborted, over TLS when `tls` is
/// given; `state` is handed to every request, and `on_accept` sees each new TCP connection
/// (before any handshake). A handler's error closes the connection without an answer (how a fake
/// plays a server that drops the request).
pub fn spawn<S, H, F, B, E>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<S>,
    on_accept: fn(&S),
    handler: H,
) -> tokio::task::JoinHandle<()>
where
    S: Send + Sync + 'static,
    H: Fn(Arc<S>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            on_accept(&state);
            let state = state.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handler(state.clone(), req));
                let Some(tls) = tls else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                    return;
                };
                // A client that does not trust the certificate ends here.
                let Ok(stream) = tls.accept(tcp).await else {
                    return;
                };
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = TokioIo::new(stream);
                let _ = if h2 {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                };
            });
        }
    })
}
