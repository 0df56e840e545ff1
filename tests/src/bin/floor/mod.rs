//! The stack's floor: the smallest reverse proxy the proxy's own crates make (tokio, hyper's
//! server and client), with none of the proxy's work (no pool, no log, no quota reading). The
//! bench runs it next to nginx so its table says how much of the proxy's CPU per request is the
//! stack and how much is the proxy.
//!
//! Served like the proxy: one thread per core, each a single-threaded runtime accepting on the
//! shared listener, with an upstream pool of its own. `client` picks the upstream client:
//! - `legacy`: hyper-util's pooled client, as the proxy uses;
//! - `conn`: hyper's connection-level client with a hand-kept pool of idle connections.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

type Answer = http::Response<Either<Incoming, Full<Bytes>>>;

type Legacy = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

#[derive(Clone)]
enum Client {
    Legacy(Box<Legacy>),
    Conn(Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>>),
}

/// Serve on `listener` until the process ends, forwarding to `upstream` (host:port).
pub fn serve(
    listener: std::net::TcpListener,
    upstream: String,
    client: &str,
) -> anyhow::Result<()> {
    let lanes = std::thread::available_parallelism().map_or(2, usize::from);
    listener.set_nonblocking(true)?;
    let mut threads = Vec::new();
    for _ in 0..lanes {
        let listener = listener.try_clone()?;
        let upstream = upstream.clone();
        let client = match client {
            "legacy" => Client::Legacy(Box::new(
                hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http(),
            )),
            _ => Client::Conn(Arc::default()),
        };
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(lane(listener, upstream, client))
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

async fn lane(
    listener: std::net::TcpListener,
    upstream: String,
    client: Client,
) -> anyhow::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let upstream: Arc<str> = upstream.into();
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                forward(client.clone(), upstream.clone(), req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn forward(
    client: Client,
    upstream: Arc<str>,
    req: http::Request<Incoming>,
) -> Result<Answer, Infallible> {
    let (mut parts, body) = req.into_parts();
    // Read whole, as the proxy does (it needs the model before choosing an account).
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match format!("http://{upstream}{path}").parse() {
        Ok(uri) => uri,
        Err(_) => return Ok(bad_gateway()),
    };
    let req = http::Request::from_parts(parts, Full::new(body));
    let answer = match client {
        Client::Legacy(c) => c.request(req).await.ok(),
        Client::Conn(pool) => conn_send(&pool, &upstream, req).await,
    };
    Ok(answer.map_or_else(bad_gateway, |r| r.map(Either::Left)))
}

/// Send on an idle pooled connection, or a new one; the connection goes back once the answer's
/// headers are in (HTTP/1.1: it is ready again when the body has been read).
async fn conn_send(
    pool: &Mutex<Vec<SendRequest<Full<Bytes>>>>,
    upstream: &str,
    req: http::Request<Full<Bytes>>,
) -> Option<http::Response<Incoming>> {
    let idle = {
        let mut idle = pool.lock().ok()?;
        idle.retain(|s| !s.is_closed());
        // Connections still reading an earlier answer's body stay in the pool.
        let ready = idle.iter().rposition(SendRequest::is_ready);
        ready.map(|i| idle.swap_remove(i))
    };
    let mut sender = match idle {
        Some(s) => s,
        None => {
            let tcp = TcpStream::connect(upstream).await.ok()?;
            let _ = tcp.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .ok()?;
            tokio::spawn(conn);
            sender
        }
    };
    let answer = sender.send_request(req).await.ok();
    // Ready again once the connection task has read the body; `is_ready` is checked at reuse.
    if !sender.is_closed() {
        if let Ok(mut idle) = pool.lock() {
            idle.push(sender);
        }
    }
    answer
}

fn bad_gateway() -> Answer {
    let mut r = http::Response::new(Either::Right(Full::new(Bytes::from_static(b"bad gateway"))));
    *r.status_mut() = http::StatusCode::BAD_GATEWAY;
    r
}
