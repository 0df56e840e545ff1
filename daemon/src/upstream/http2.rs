//! HTTP/2 to an upstream, with the `h2` crate directly (the implementation hyper uses inside).
//!
//! Why not hyper's HTTP/2 client: per request it sends the request through a channel to the
//! connection's task, which spawns a task that waits for the answer and, for a request with a
//! body, another that sends the body; each task is sized for hyper's largest HTTP/2 future
//! (the whole connection), so each spawn copies kilobytes. Measured with callgrind on the
//! HTTPS path: about a tenth of the proxy's instructions per request. Here the request's own
//! task sends the headers and the body (h2 buffers it until the flow-control window allows) and
//! awaits the answer; only the connection has a task.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

/// Flow-control windows and limits, as hyper's client sets them: 2 MB per stream and 5 MB per
/// connection let an answer stream at full speed over a long round trip.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_FRAME: u32 = 16 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;

/// One HTTP/2 connection's sending side; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct Sender {
    send: h2::client::SendRequest<Bytes>,
    /// Set when the connection's task ends (the upstream closed it, or it failed).
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Start HTTP/2 on `io` and the task that drives the connection.
pub async fn handshake<T>(io: T) -> Result<Sender, h2::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .enable_push(false)
        .handshake::<_, Bytes>(TokioIo::new(io))
        .await?;
    let closed = Arc::new(AtomicBool::new(false));
    let done = closed.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("upstream HTTP/2 connection ended: {e}");
        }
        done.store(true, Ordering::Relaxed);
    });
    Ok(Sender { send, closed })
}

/// Why an HTTP/2 request failed, and whether it surely never reached the upstream.
#[derive(Debug)]
pub struct SendFailure {
    pub error: h2::Error,
    /// The connection was closed before the request went out: it may go again elsewhere.
    pub unsent: Option<http::Request<Full<Bytes>>>,
}

impl SendFailure {
    /// The request went out but the upstream says it did not process it: it may go again
    /// (see [`refused`]).
    pub fn refused(&self) -> bool {
        self.unsent.is_none() && refused(&self.error)
    }
}

/// Whether `e` says the upstream left the stream unprocessed (RFC 9113 §8.7): it reset the
/// stream with `REFUSED_STREAM`, or its GOAWAY named a last stream below this one. h2 gives the
/// second as a remote GOAWAY error on exactly those streams; a GOAWAY with `NO_ERROR` (how
/// servers rotate connections) is told apart from one that ends a failing connection, whose
/// error may reach streams the server did process.
pub fn refused(e: &h2::Error) -> bool {
    e.is_remote()
        && match e.reason() {
            Some(h2::Reason::REFUSED_STREAM) => e.is_reset(),
            Some(h2::Reason::NO_ERROR) => e.is_go_away(),
            _ => false,
        }
}

impl Sender {
    /// Whether the connection is gone (no request can be sent on it).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Send `req` (absolute URI), its body in one piece; the answer's body streams.
    pub async fn send(
        &mut self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<RecvBody>, SendFailure> {
        // Waits while the connection has as many streams open as the upstream allows; fails
        // at once when the connection is gone or going (the upstream sent GOAWAY), with the
        // request not sent. A going connection may live on for minutes while its last streams
        // finish: it is marked closed so that the pool stops handing it out now.
        let send = match std::future::poll_fn(|cx| self.send.poll_ready(cx)).await {
            Ok(()) => &mut self.send,
            Err(error) => {
                self.closed.store(true, Ordering::Relaxed);
                return Err(SendFailure {
                    error,
                    unsent: Some(req),
                });
            }
        };
        let (mut parts, body) = req.into_parts();
        let data = body_bytes(body);
        strip_connection_headers(&mut parts.headers);
        if !data.is_empty() || parts.method == http::Method::POST {
            parts
                .headers
                .entry(header::CONTENT_LENGTH)
                .or_insert_with(|| http::HeaderValue::from(data.len()));
        }
        let end = data.is_empty();
        let (answer, mut stream) = send
            .send_request(http::Request::from_parts(parts, ()), end)
            .map_err(|error| SendFailure {
                error,
                unsent: None,
            })?;
        if !end {
            // Buffered by h2 until the window allows; the body is bounded by the proxy's
            // request size limit.
            stream.send_data(data, true).map_err(|error| SendFailure {
                error,
                unsent: None,
            })?;
        }
        let answer = answer.await.map_err(|error| {
            if error.is_go_away() && error.is_remote() {
                // The upstream is going away: no later request should be handed this one.
                self.closed.store(true, Ordering::Relaxed);
            }
            SendFailure {
                error,
                unsent: None,
            }
        })?;
        Ok(answer.map(|recv| RecvBody { recv }))
    }
}

/// The bytes of a `Full` body: it is ready at once, in one frame.
fn body_bytes(mut body: Full<Bytes>) -> Bytes {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(&mut body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// Headers HTTP/2 forbids (RFC 9113 §8.2.2): h2 refuses a request that carries one. The
/// passthrough already drops hop-by-hop headers, so this is one pass over the names that finds
/// nothing; it is for any other caller.
fn strip_connection_headers(headers: &mut HeaderMap) {
    let forbidden = |name: &header::HeaderName| {
        [
            header::CONNECTION,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
        ]
        .contains(name)
            || matches!(name.as_str(), "keep-alive" | "proxy-connection")
    };
    let te_other_than_trailers = |headers: &HeaderMap| {
        headers
            .get(header::TE)
            .is_some_and(|te| te.as_bytes() != b"trailers")
    };
    let found = headers
        .keys()
        .any(|name| forbidden(name) || name == header::TE);
    if !found {
        return;
    }
    let names: Vec<header::HeaderName> = headers.keys().filter(|n| forbidden(n)).cloned().collect();
    for name in names {
        headers.remove(name);
    }
    if te_other_than_trailers(headers) {
        headers.remove(header::TE);
    }
}

/// An HTTP/2 answer's body. Each chunk's bytes are given back to the flow-control window as
/// soon as they are handed on (the relay does not hold them). Dropping it before the end
/// resets the stream (h2 sends `CANCEL`), which is how a client's leaving reaches the upstream.
#[derive(Debug)]
pub struct RecvBody {
    recv: h2::RecvStream,
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let recv = &mut self.recv;
        match recv.poll_data(cx) {
            Poll::Ready(Some(Ok(data))) => {
                // Fails only once the stream is closed, when the window no longer matters.
                let _ = recv.flow_control().release_capacity(data.len());
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => match recv.poll_trailers(cx) {
                Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                Poll::Ready(Ok(None)) => Poll::Ready(None),
                Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                Poll::Pending => Poll::Pending,
            },
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn connection_specific_headers_are_dropped_and_te_trailers_kept() {
        let mut h = headers(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("x-api-key", "k"),
        ]);
        strip_connection_headers(&mut h);
        assert_eq!(h, headers(&[("te", "trailers"), ("x-api-key", "k")]));

        let mut h = headers(&[("te", "gzip"), ("anthropic-version", "2023-06-01")]);
        strip_connection_headers(&mut h);
        assert_eq!(h, headers(&[("anthropic-version", "2023-06-01")]));

        let clean = headers(&[("content-type", "application/json"), ("x-api-key", "k")]);
        let mut h = clean.clone();
        strip_connection_headers(&mut h);
        assert_eq!(h, clean);
    }

    /// An h2 server on loopback whose one connection `serve` drives, and a sender connected to
    /// it.
    async fn h2_pair<F, Fut>(serve: F) -> (std::net::SocketAddr, Sender)
    where
        F: FnOnce(h2::server::Connection<tokio::net::TcpStream, Bytes>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            if let Ok(conn) = h2::server::handshake(tcp).await {
                serve(conn).await;
            }
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let sender = handshake(TokioIo::new(tcp)).await.expect("handshake");
        (addr, sender)
    }

    fn post(addr: std::net::SocketAddr) -> http::Request<Full<Bytes>> {
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query("/v1/messages")
            .build()
            .expect("uri");
        http::Request::post(uri)
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request")
    }

    /// An upstream that sent GOAWAY takes no new stream, but its connection lives on while a
    /// stream it accepted before streams: the sender says closed at once, so the pool drops it
    /// instead of handing it to every later request (each would fail on it first).
    #[tokio::test]
    async fn a_connection_told_goaway_counts_as_closed_while_its_last_stream_runs() {
        let (addr, mut sender) = h2_pair(|mut conn| async move {
            let Some(Ok((_req, mut respond))) = conn.accept().await else {
                return;
            };
            // The answer starts and never ends; then the upstream says it is going away.
            let open = respond.send_response(http::Response::new(()), false);
            conn.graceful_shutdown();
            while conn.accept().await.is_some() {}
            drop(open);
        })
        .await;
        let answer = sender
            .send(post(addr))
            .await
            .expect("the first answer starts");
        // Until the GOAWAY has arrived, the connection takes streams.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::future::poll_fn(|cx| sender.send.poll_ready(cx))
            .await
            .is_ok()
        {
            assert!(tokio::time::Instant::now() < deadline, "no GOAWAY seen");
            tokio::task::yield_now().await;
        }
        assert!(!sender.is_closed(), "nothing was sent on it yet");
        let failed = sender.send(post(addr)).await.expect_err("no new stream");
        assert!(failed.unsent.is_some(), "the request is given back");
        assert!(sender.is_closed());
        drop(answer);
    }

    /// A stream the upstream resets with `REFUSED_STREAM` before answering was not processed
    /// and may go again; one reset for any other reason may have been processed.
    #[tokio::test]
    async fn only_a_stream_refused_unprocessed_may_go_again() {
        let (addr, mut sender) = h2_pair(|mut conn| async move {
            let mut reasons = [h2::Reason::REFUSED_STREAM, h2::Reason::INTERNAL_ERROR].into_iter();
            while let Some(Ok((_req, mut respond))) = conn.accept().await {
                match reasons.next() {
                    Some(reason) => respond.send_reset(reason),
                    None => {
                        let _ = respond.send_response(http::Response::new(()), true);
                    }
                }
            }
        })
        .await;
        let refused = sender.send(post(addr)).await.expect_err("refused");
        assert!(refused.refused(), "{:?}", refused.error);
        let failed = sender.send(post(addr)).await.expect_err("reset");
        assert!(!failed.refused(), "{:?}", failed.error);
        let answer = sender.send(post(addr)).await.expect("answered");
        assert_eq!(answer.status(), 200);
        assert!(
            !sender.is_closed(),
            "a reset stream leaves the connection usable"
        );
    }

    /// An upstream that rotates its connection sends GOAWAY naming the last stream it will
    /// process; a stream opened after that one was not processed and may go again, while the
    /// one before it is answered. Written frame by frame, since the GOAWAY must race a stream
    /// the server has already read.
    #[tokio::test]
    async fn a_stream_left_out_by_goaway_may_go_again() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
            let len = u32::try_from(payload.len()).expect("small");
            let mut f = len.to_be_bytes()[1..].to_vec();
            f.extend([kind, flags]);
            f.extend(stream.to_be_bytes());
            f.extend(payload);
            f
        }
        const HEADERS: u8 = 1;
        const SETTINGS: u8 = 4;
        const GOAWAY: u8 = 7;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let mut preface = [0u8; 24];
            if tcp.read_exact(&mut preface).await.is_err() {
                return;
            }
            let _ = tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await;
            let mut streams = Vec::new();
            loop {
                let mut head = [0u8; 9];
                if tcp.read_exact(&mut head).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0u8; len];
                if tcp.read_exact(&mut payload).await.is_err() {
                    return;
                }
                let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                match head[3] {
                    SETTINGS if head[4] & 1 == 0 => {
                        let _ = tcp.write_all(&frame(SETTINGS, 1, 0, &[])).await;
                    }
                    HEADERS => streams.push(stream),
                    _ => {}
                }
                if streams.len() == 2 {
                    // Stream 3 was read; the server goes away after stream 1 (NO_ERROR), then
                    // starts stream 1's answer: `:status 200` (static table index 8) and
                    // END_HEADERS, the body still to come, so the connection lives on.
                    let mut goaway = 1u32.to_be_bytes().to_vec();
                    goaway.extend(0u32.to_be_bytes());
                    let _ = tcp.write_all(&frame(GOAWAY, 0, 0, &goaway)).await;
                    let _ = tcp.write_all(&frame(HEADERS, 0x4, 1, &[0x88])).await;
                    streams.clear();
                }
            }
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut first = handshake(TokioIo::new(tcp)).await.expect("handshake");
        let mut second = first.clone();
        let (answered, left_out) = tokio::join!(first.send(post(addr)), second.send(post(addr)));
        let answered = answered.expect("stream 1 is answered");
        assert_eq!(answered.status(), 200);
        let left_out = left_out.expect_err("stream 3 is left out");
        assert!(left_out.refused(), "{:?}", left_out.error);
        assert!(
            first.is_closed(),
            "a connection going away takes no new request"
        );
        drop(answered);
    }

    #[test]
    fn a_full_body_is_read_in_one_piece() {
        assert_eq!(
            body_bytes(Full::new(Bytes::from_static(b"{}"))),
            Bytes::from_static(b"{}")
        );
        assert!(body_bytes(Full::new(Bytes::new())).is_empty());
    }
}
