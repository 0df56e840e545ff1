//! A connection that carries calls and events at once, for long-lived clients (the dashboard).
//!
//! One task reads every line the daemon sends: an answer goes to the call waiting for its id, an
//! event to the [`Events`] channel. Calls can be made from anywhere while events stream in, and
//! neither loses the other's messages. When the daemon goes away, waiting calls fail with
//! [`ClientError::Closed`] and the event channel ends.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::client::{ClientError, SharedStream};
use super::methods::{Method, SubscribeParams, SubscribeResult};
use super::protocol::{Event, Notification, Request, Response, Topic, MAX_LINE};

/// Events read but not yet taken; when full, reading waits (and the daemon, seeing its queue for
/// this client fill, eventually sends `lagged` and closes).
const EVENT_BUFFER: usize = 1024;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

/// The events of a subscribed [`Connection`]; `None` once the connection closed.
pub type Events = mpsc::Receiver<Event>;

pub struct Connection {
    writer: tokio::sync::Mutex<SharedStream>,
    pending: Pending,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// Connect to the socket at `path`; events (after [`Connection::subscribe`]) arrive on the
    /// returned channel.
    pub async fn connect(path: &Path) -> Result<(Self, Events), ClientError> {
        let shared = SharedStream::connect(path).await?;
        let pending: Pending = Arc::default();
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        let reader = tokio::spawn(read_loop(
            BufReader::new(shared.clone()),
            pending.clone(),
            events_tx,
        ));
        Ok((
            Self {
                writer: tokio::sync::Mutex::new(shared),
                pending,
                next_id: AtomicU64::new(1),
                reader,
            },
            events,
        ))
    }

    /// Call method `M`.
    pub async fn request<M: Method>(&self, params: &M::Params) -> Result<M::Result, ClientError> {
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let v = self.call(M::NAME, Some(params)).await?;
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(format!("{}: {e}", M::NAME)))
    }

    /// Receive events of `topics` (every topic when `None`) on the channel from `connect`.
    pub async fn subscribe(&self, topics: Option<Vec<Topic>>) -> Result<Vec<Topic>, ClientError> {
        let r: SubscribeResult = self
            .request::<super::methods::Subscribe>(&SubscribeParams { topics })
            .await?;
        Ok(r.topics)
    }

    /// Call `method` with untyped params.
    pub async fn call(&self, method: &str, params: Option<Value>) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let mut line = serde_json::to_string(&Request::new(id, method, params))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push('\n');
        let written = self.writer.lock().await.write_all(line.as_bytes()).await;
        if let Err(e) = written {
            lock(&self.pending).remove(&id);
            return Err(e.into());
        }
        let r = rx.await.map_err(|_| ClientError::Closed)?;
        match (r.result, r.error) {
            (_, Some(e)) => Err(ClientError::Remote(e)),
            (Some(v), None) => Ok(v),
            (None, None) => Ok(Value::Null),
        }
    }

    /// The daemon closed the connection (or it broke).
    pub fn is_closed(&self) -> bool {
        self.reader.is_finished()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn read_loop(
    mut reader: BufReader<SharedStream>,
    pending: Pending,
    events: mpsc::Sender<Event>,
) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if n > MAX_LINE {
            break;
        }
        let Ok(v) = serde_json::from_str::<Value>(line.trim_end()) else {
            continue;
        };
        if v.get("method").and_then(Value::as_str) == Some("event") {
            if let Ok(n) = serde_json::from_value::<Notification>(v) {
                // A client that dropped its receiver still gets its answers.
                let _ = events.send(n.params).await;
            }
            continue;
        }
        let Some(id) = v.get("id").and_then(Value::as_u64) else {
            continue;
        };
        if let Ok(r) = serde_json::from_value::<Response>(v) {
            if let Some(tx) = lock(&pending).remove(&id) {
                let _ = tx.send(r);
            }
        }
    }
    // Waiting calls learn the connection is gone.
    lock(&pending).clear();
}
