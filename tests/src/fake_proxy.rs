//! A fake outbound HTTP proxy on 127.0.0.1, port 0, for the daemon's `HTTP_PROXY` and
//! `HTTPS_PROXY` support.
//!
//! - A plain request (absolute form, `POST http://127.0.0.1:P/v1/messages HTTP/1.1`) is recorded
//!   and piped to its target, which must be a loopback address.
//! - A `CONNECT host:443` is recorded and answered `200`; what the client sends next (the TLS
//!   ClientHello, whose server name is in clear text) is recorded too. A target given as a
//!   loopback address (`CONNECT 127.0.0.1:P`) then gets the tunnel's bytes both ways; any other
//!   target is never contacted, and the tunnel closes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One request the proxy received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `POST http://127.0.0.1:P/v1/messages?beta=true HTTP/1.1` or `CONNECT host:443 HTTP/1.1`.
    pub request_line: String,
    /// The `Proxy-Authorization` header, if any.
    pub proxy_authorization: Option<String>,
    /// For a CONNECT: the first bytes sent through the tunnel.
    pub tunneled: Vec<u8>,
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    changed: Notify,
}

pub struct FakeProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl FakeProxy {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, s.clone()));
            }
        });
        Ok(Self { addr, state })
    }

    /// `http://user:password@127.0.0.1:P` (or without credentials).
    pub fn url(&self, credentials: Option<&str>) -> String {
        match credentials {
            Some(c) => format!("http://{c}@{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Wait (up to 30 s) until `n` requests were seen, and return them.
    pub async fn wait_for(&self, n: usize) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let changed = self.state.changed.notified();
            let seen = self.seen();
            if seen.len() >= n || tokio::time::Instant::now() > deadline {
                return seen;
            }
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }
}

async fn serve(mut conn: TcpStream, state: Arc<State>) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let proxy_authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_string());
    let record = |tunneled: Vec<u8>| {
        state
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Seen {
                request_line: request_line.clone(),
                proxy_authorization: proxy_authorization.clone(),
                tunneled,
            });
        state.changed.notify_waiters();
    };
    if request_line.starts_with("CONNECT ") {
        let target = request_line
            .split(' ')
            .nth(1)
            .and_then(|authority| authority.parse::<SocketAddr>().ok())
            .filter(|a| a.ip().is_loopback());
        if conn
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return record(Vec::new());
        }
        let mut hello = buf[head_end..].to_vec();
        let mut chunk = [0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk)).await
        {
            hello.extend_from_slice(&chunk[..n]);
        }
        record(hello.clone());
        let Some(target) = target else { return };
        let Ok(mut upstream) = TcpStream::connect(target).await else {
            return;
        };
        if upstream.write_all(&hello).await.is_ok() {
            let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
        }
        return;
    }
    record(Vec::new());
    // Absolute form: pipe to the target, which must be on loopback.
    let target = request_line
        .split(' ')
        .nth(1)
        .and_then(|u| u.strip_prefix("http://"))
        .and_then(|rest| rest.split('/').next())
        .and_then(|authority| authority.parse::<SocketAddr>().ok())
        .filter(|a| a.ip().is_loopback());
    let Some(target) = target else {
        let _ = conn
            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        let _ = conn
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    if upstream.write_all(&buf).await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
    }
}
