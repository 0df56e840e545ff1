//! The control socket: `$NEUROLINK_HOME/daemon.sock`, mode 0600, JSON-RPC 2.0 lines
//! (`neurolink_shared::ipc`, `docs/ipc.md`).
//!
//! Each connection gets a reader (requests in) and a writer task (responses and events out,
//! through a bounded channel). A subscription forwards the daemon's broadcast of events; a
//! subscriber that falls behind gets a final `lagged` event and is disconnected. Nothing here can
//! slow the proxy: the broadcast never waits for anyone.

mod framing;
mod handlers;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use interprocess::local_socket::tokio::{prelude::*, Listener};
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use neurolink_shared::ipc::client::SharedStream;
use neurolink_shared::ipc::methods::SubscribeResult;
use neurolink_shared::ipc::{
    codes, Call, DaemonEventKind, Event, Notification, Response, Topic, MAX_LINE, METHODS,
};
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::server::App;

/// Messages queued for one connection's writer.
const CONNECTION_QUEUE: usize = 256;

/// Bind the socket (replacing a stale file) with mode 0600.
pub fn bind(path: &Path) -> std::io::Result<Listener> {
    if path.exists() {
        // Start-up already made sure no live daemon owns it (see `lifecycle`).
        let _ = std::fs::remove_file(path);
    }
    let name = path.to_fs_name::<GenericFilePath>()?;
    let listener = ListenerOptions::new().name(name).create_tokio()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(listener)
}

/// Accept connections until the daemon stops.
pub async fn serve(listener: Listener, path: PathBuf, app: Arc<App>) {
    loop {
        tokio::select! {
            () = app.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    if !peer_is_owner(&stream, &path) {
                        tracing::warn!("refused a control-socket connection from another user");
                        continue;
                    }
                    tokio::spawn(connection(SharedStream(Arc::new(stream)), app.clone()));
                }
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Only the socket's owner may connect: its euid must match the socket file's owner.
fn peer_is_owner(stream: &interprocess::local_socket::tokio::Stream, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(owner) = std::fs::metadata(path).map(|m| m.uid()) else {
            return false;
        };
        match stream.peer_creds().ok().and_then(|c| c.euid()) {
            Some(uid) => uid == owner,
            // The OS does not tell: the 0600 mode is the guard.
            None => true,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (stream, path);
        true
    }
}

enum Out {
    Response(Response),
    Event(Notification),
    /// Close the connection after what is queued.
    Close,
}

/// A connection's writer gives up on a client that has not taken a line for this long (its
/// socket buffer is full and it reads nothing): the connection is closed.
const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(60);

async fn connection(stream: SharedStream, app: Arc<App>) {
    let (tx, mut rx) = mpsc::channel::<Out>(CONNECTION_QUEUE);
    // The lag notice travels beside the queue, never in it: it is sent exactly when the queue is
    // full. The writer takes it before anything still queued, writes it last, and closes.
    let (lag_tx, mut lag_rx) = tokio::sync::oneshot::channel::<Notification>();
    let mut writer = stream.clone();
    // Set when the writer is done (a dropped subscriber, a broken pipe): the reader stops too, so
    // the socket closes and the client sees the end.
    let writer_done = tokio_util::sync::CancellationToken::new();
    let done = writer_done.clone();
    let writer_task = tokio::spawn(async move {
        let _done = done.drop_guard();
        loop {
            let (line, last) = tokio::select! {
                biased;
                notice = &mut lag_rx, if !lag_rx.is_terminated() => match notice {
                    Ok(n) => (serde_json::to_string(&n), true),
                    // No lag notice will come (the subscription ended normally).
                    Err(_) => continue,
                },
                out = rx.recv() => match out {
                    Some(Out::Response(r)) => (serde_json::to_string(&r), false),
                    Some(Out::Event(n)) => (serde_json::to_string(&n), false),
                    Some(Out::Close) | None => break,
                },
            };
            let Ok(mut line) = line else { continue };
            line.push('\n');
            match tokio::time::timeout(WRITE_STALL, writer.write_all(line.as_bytes())).await {
                Ok(Ok(())) if !last => {}
                _ => break,
            }
        }
        // The client reads end-of-stream: a dropped subscriber knows it was dropped.
        let _ = writer.shutdown().await;
    });
    let mut lag_tx = Some(lag_tx);
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut subscribed = false;
    loop {
        let read = tokio::select! {
            r = framing::read_line(&mut reader, &mut line, MAX_LINE) => r,
            () = writer_done.cancelled() => break,
        };
        match read {
            framing::Line::Text => {}
            framing::Line::End => break,
            framing::Line::TooLong => {
                let _ = tx.send(Out::Response(framing::too_long(MAX_LINE))).await;
                break;
            }
        }
        let request = match framing::parse(&line) {
            None => continue,
            Some(Ok(request)) => request,
            Some(Err(answer)) => {
                let _ = tx.send(Out::Response(answer)).await;
                continue;
            }
        };
        let id = request.id.clone().unwrap_or(Value::Null);
        let call = match Call::parse(&request.method, request.params) {
            Ok(c) => c,
            Err(mut e) => {
                if e.code == codes::METHOD_NOT_FOUND {
                    e.message = format!(
                        "unknown method `{}` (daemon {}); methods: {}",
                        request.method,
                        env!("CARGO_PKG_VERSION"),
                        METHODS.join(", ")
                    );
                }
                let _ = tx.send(Out::Response(Response::err(id, e))).await;
                continue;
            }
        };
        if matches!(call, Call::Subscribe(_)) && !subscribed {
            subscribed = true;
            let topics = handlers::topics(&call);
            let rx = app.events.subscribe();
            let result = SubscribeResult {
                topics: topics.clone(),
            };
            let _ = tx
                .send(Out::Response(Response::ok(
                    id,
                    serde_json::to_value(result).unwrap_or(Value::Null),
                )))
                .await;
            if let Some(lag) = lag_tx.take() {
                tokio::spawn(forward_events(rx, topics, tx.clone(), lag));
            }
            continue;
        }
        let shutdown = matches!(call, Call::Shutdown(_));
        let response = match handlers::handle(&app, call).await {
            Ok(result) => Response::ok(id, result),
            Err(e) => Response::err(id, e),
        };
        let _ = tx.send(Out::Response(response)).await;
        if shutdown {
            // Answer first, then stop: the caller hears "ok" before the socket goes away.
            tokio::task::yield_now().await;
            app.shutdown.cancel();
        }
    }
    let _ = tx.send(Out::Close).await;
    let _ = writer_task.await;
}

/// Forward broadcast events of `topics` to one subscriber. A subscriber that lags (the daemon's
/// broadcast overtook it, or its connection's queue is full because it reads nothing) gets the
/// `lagged` notice through `lag`, outside the full queue, and is disconnected; one whose
/// connection is gone ends the task.
async fn forward_events(
    mut rx: tokio::sync::broadcast::Receiver<Event>,
    topics: Vec<Topic>,
    tx: mpsc::Sender<Out>,
    lag: tokio::sync::oneshot::Sender<Notification>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let why = loop {
        match rx.recv().await {
            Ok(event) => {
                if !topics.contains(&event.topic()) {
                    continue;
                }
                match tx.try_send(Out::Event(Notification::event(event))) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        break "the subscriber's queue is full".to_string()
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(RecvError::Lagged(n)) => break format!("{n} events were missed"),
            Err(RecvError::Closed) => return,
        }
    };
    let event = Event::daemon(
        DaemonEventKind::Lagged,
        format!("subscription dropped: {why}; subscribe again"),
    );
    let _ = lag.send(Notification::event(event));
}
