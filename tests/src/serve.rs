//! The accept loop every fake server shares: HTTP/1 with keep-alive, one task per connection.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serve `handler` on `listener` until the returned task is aborted; `state` is handed to every
/// request, and `on_accept` sees each new connection.
pub fn spawn<S, H, F, B>(
    listener: TcpListener,
    state: Arc<S>,
    on_accept: fn(&S),
    handler: H,
) -> tokio::task::JoinHandle<()>
where
    S: Send + Sync + 'static,
    H: Fn(Arc<S>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
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
