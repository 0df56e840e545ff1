//! The accept loop every fake server shares: HTTP/1 with keep-alive, one task per connection.

use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serve `handler` on `listener` until the returned task is aborted; `state` is handed to every
/// request, and `on_accept` sees each new connection. A handler's error closes the connection
/// without an answer (how a fake plays a server that drops the request).
pub fn spawn<S, H, F, B, E>(
    listener: TcpListener,
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
            tokio::spawn(async move {
                let svc = service_fn(move |req| handler(state.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}
