//! A small async client for the daemon's socket.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use interprocess::local_socket::tokio::{prelude::*, Stream};
use interprocess::local_socket::{GenericFilePath, ToFsName};
use serde_json::Value;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};

use super::protocol::{Notification, Request, Response, RpcError, MAX_LINE};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no daemon is listening at {} (start one with `neurolink proxy start`)", path.display())]
    NotRunning { path: PathBuf },
    #[error("the daemon closed the connection")]
    Closed,
    #[error("the daemon answered something unreadable: {0}")]
    Protocol(String),
    #[error("{0}")]
    Remote(#[from] RpcError),
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("the daemon did not answer within {0:?}")]
    Timeout(Duration),
}

/// One local-socket stream used for reading and writing at once (`&Stream` does both; the
/// `Arc` lets a buffered reader and the writer share it).
#[derive(Clone)]
pub struct SharedStream(pub Arc<Stream>);

impl SharedStream {
    /// Connect to the daemon's socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let name = path
            .to_fs_name::<GenericFilePath>()
            .map_err(|_| ClientError::NotRunning { path: path.into() })?;
        let stream = Stream::connect(name)
            .await
            .map_err(|_| ClientError::NotRunning { path: path.into() })?;
        Ok(Self(Arc::new(stream)))
    }
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_shutdown(cx)
    }
}

pub struct IpcClient {
    reader: BufReader<SharedStream>,
    writer: SharedStream,
    next_id: u64,
    line: String,
}

impl IpcClient {
    /// Connect to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ClientError> {
        let shared = SharedStream::connect(path).await?;
        Ok(Self {
            reader: BufReader::new(shared.clone()),
            writer: shared,
            next_id: 1,
            line: String::new(),
        })
    }

    /// Send one call and wait for its answer (notifications that arrive first are skipped).
    pub async fn call(
        &mut self,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_string(&Request::new(id, method, params))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        loop {
            let v = self.read_value().await?;
            if v.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            let r: Response =
                serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string()))?;
            return match (r.result, r.error) {
                (_, Some(e)) => Err(ClientError::Remote(e)),
                (Some(v), None) => Ok(v),
                (None, None) => Ok(Value::Null),
            };
        }
    }

    /// Call method `M` with typed params and result.
    pub async fn request<M: super::Method>(
        &mut self,
        params: &M::Params,
    ) -> Result<M::Result, ClientError> {
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let v = self.call(M::NAME, Some(params)).await?;
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(format!("{}: {e}", M::NAME)))
    }

    /// [`IpcClient::call`] with a deadline.
    pub async fn call_timeout(
        &mut self,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        tokio::time::timeout(timeout, self.call(method, params))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// The next pushed event (after `subscribe`).
    pub async fn next_event(&mut self) -> Result<Notification, ClientError> {
        loop {
            let v = self.read_value().await?;
            if v.get("method").and_then(Value::as_str) == Some("event") {
                return serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string()));
            }
        }
    }

    async fn read_value(&mut self) -> Result<Value, ClientError> {
        self.line.clear();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut self.line)
            .await?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        if n > MAX_LINE {
            return Err(ClientError::Protocol("line too long".into()));
        }
        serde_json::from_str(self.line.trim_end()).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}
