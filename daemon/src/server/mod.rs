//! The HTTP side of the daemon: shared state ([`App`]), routes, and a serve loop that stops on a
//! signal and gives in-flight answers a bounded time to finish.

mod chat;
pub mod errors;
pub mod routes;
pub mod runtime;
pub mod status;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use neurolink_shared::Secret;
use tokio::net::TcpListener;

use std::collections::VecDeque;

use neurolink_shared::ipc::{Event, RequestRecord};

use crate::auth::refresh::Refresher;
use crate::clock::{Clock, Millis};
use crate::pool::Pool;
pub use runtime::Runtime;

/// How long in-flight answers may run after a stop signal before the daemon exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Anthropic's own request size limit; larger bodies get 413 here instead of after an upload.
pub const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;

/// What is fixed for the daemon's life; everything that a reload can change is in [`Runtime`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// The address asked for at start (config or flags), before binding.
    pub listen: (String, u16),
    /// Where the daemon actually listens.
    pub host: String,
    pub port: u16,
    pub started_at_ms: Millis,
    pub paths: neurolink_shared::paths::Paths,
    /// `--config`, if given (reloads read the same file).
    pub config_path: Option<std::path::PathBuf>,
    /// The command line's `--host`, `--port`, `--strategy`: a reload keeps them.
    pub overrides: runtime::Overrides,
    /// `ANTHROPIC_API_KEY` as it was at start.
    pub env_api_key: Option<Secret>,
}

/// State shared by every request.
pub struct App {
    pool: Mutex<Pool>,
    pub clock: Arc<dyn Clock>,
    pub refresher: Refresher,
    pub settings: Settings,
    /// Quotas changed since the last write of `account-quotas.json`.
    pub quotas_dirty: std::sync::atomic::AtomicBool,
    /// Events for IPC subscribers. A broadcast never blocks the sender: a subscriber that falls
    /// behind loses messages and is told so (see `ipc`).
    pub events: tokio::sync::broadcast::Sender<Event>,
    /// The last finished requests, for `logs.tail`.
    recent: Mutex<VecDeque<Arc<RequestRecord>>>,
    /// Cancelled by a signal or the `shutdown` IPC call.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The settings in force; replaced as a whole by a reload.
    runtime: RwLock<Arc<Runtime>>,
    /// The accounts' credentials, for masking logs. Kept apart from the pool so that building a
    /// redactor never takes the pool lock (see [`App::redactor`]).
    credentials: RwLock<Arc<Vec<crate::pool::Credential>>>,
    /// The request log.
    pub logs: crate::logs::LogSender,
    /// Browser logins started over IPC, by login id.
    pub logins: Mutex<std::collections::HashMap<String, crate::auth::login::PendingLogin>>,
    /// How each provider link has served, and which ones asked to wait.
    pub provider_stats: crate::providers::stats::ProviderStats,
    /// Gemini's thought signatures of the calls it made, for the next turn.
    pub signatures: Arc<crate::translate::gemini::Signatures>,
    /// An account started cooling: the task that announces cooldown ends looks again (it
    /// otherwise sleeps until the soonest end it knows of).
    pub cooldown_started: tokio::sync::Notify,
}

/// How many finished requests `logs.tail` can return.
pub const RECENT_REQUESTS: usize = 1000;
/// Events buffered per subscriber before it counts as lagging.
pub const EVENT_BUFFER: usize = 1024;

impl App {
    pub fn new(
        pool: Pool,
        clock: Arc<dyn Clock>,
        runtime: Runtime,
        refresher: Refresher,
        settings: Settings,
        logs: crate::logs::LogSender,
    ) -> Self {
        let credentials = credentials_of(&pool);
        Self {
            pool: Mutex::new(pool),
            clock,
            refresher,
            quotas_dirty: std::sync::atomic::AtomicBool::new(false),
            events: tokio::sync::broadcast::channel(EVENT_BUFFER).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_REQUESTS)),
            shutdown: tokio_util::sync::CancellationToken::new(),
            logins: Mutex::new(std::collections::HashMap::new()),
            provider_stats: Default::default(),
            signatures: Default::default(),
            cooldown_started: tokio::sync::Notify::new(),
            logs,
            runtime: RwLock::new(Arc::new(runtime)),
            credentials: RwLock::new(Arc::new(credentials)),
            settings,
        }
    }

    /// The settings in force. A request takes this once and keeps it to its end.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Put a new runtime in force (a reload); requests already running keep theirs.
    pub fn set_runtime(&self, runtime: Runtime) {
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(runtime);
    }

    /// The config in force.
    pub fn config(&self) -> Arc<neurolink_shared::config::ProxyConfig> {
        self.runtime().config.clone()
    }

    /// Change the pool's accounts (`f` runs under the pool lock), then refresh the credential
    /// list the redactor reads.
    pub fn change_accounts<T>(&self, f: impl FnOnce(&mut Pool) -> T) -> T {
        let (out, credentials) = {
            let mut pool = self.pool();
            let out = f(&mut pool);
            (out, credentials_of(&pool))
        };
        *self.credentials.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(credentials);
        out
    }

    /// Tell subscribers; nobody listening is fine.
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Every secret the daemon knows (account keys and current tokens, the proxy's auth key),
    /// for masking debug logs.
    ///
    /// Takes no pool lock (it reads the credential list kept beside the pool): it runs while
    /// answers are finished, and a lock taken here again would deadlock the daemon.
    pub fn redactor(&self) -> crate::logs::redact::Redactor {
        let mut known: Vec<String> = Vec::new();
        let credentials = self
            .credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for credential in credentials.iter() {
            match credential {
                crate::pool::Credential::ApiKey(k) => known.push(k.expose().to_string()),
                crate::pool::Credential::OAuth(cell) => {
                    let t = cell.tokens();
                    known.push(t.access.expose().to_string());
                    if let Some(r) = t.refresh {
                        known.push(r.expose().to_string());
                    }
                }
            }
        }
        let rt = self.runtime();
        if let Some(k) = &rt.auth_key {
            known.push(k.expose().to_string());
        }
        known.extend(rt.routes.secrets());
        crate::logs::redact::Redactor::new(known)
    }

    /// A request finished: log it, keep it for `logs.tail` and tell subscribers.
    pub fn record(&self, record: RequestRecord) {
        let record = Arc::new(record);
        self.logs.record(record.clone());
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT_REQUESTS {
                recent.pop_front();
            }
            recent.push_back(record.clone());
        }
        // The event carries its own copy; make it only when someone listens.
        if self.events.receiver_count() > 0 {
            self.emit(Event::Requests {
                record: Box::new((*record).clone()),
            });
        }
    }

    /// The last `limit` finished requests, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<RequestRecord> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .skip(recent.len().saturating_sub(limit))
            .map(|r| (**r).clone())
            .collect()
    }

    /// The pool, locked. Held only for bookkeeping, never across an await.
    pub fn pool(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding the lock leaves counters possibly half-updated, which is harmless;
        // keep serving rather than poisoning every later request.
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state of the account `label` now (disabled when there is none).
    pub fn state_of(&self, label: &str) -> neurolink_shared::ipc::AccountState {
        let now = self.now_ms();
        let pool = self.pool();
        pool.accounts()
            .iter()
            .position(|a| *a.spec.label == *label)
            .map_or(neurolink_shared::ipc::AccountState::Disabled, |id| {
                pool.state(id, now).view()
            })
    }

    pub fn now_ms(&self) -> Millis {
        self.clock.now_ms()
    }
}

fn credentials_of(pool: &Pool) -> Vec<crate::pool::Credential> {
    pool.accounts()
        .iter()
        .map(|a| a.spec.credential.clone())
        .collect()
}

/// What the listener allows each client: enforced before the auth key is checked, so they hold
/// for a `0.0.0.0` listener too.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// A client must send a request's headers within this (slow-header attacks); an idle
    /// keep-alive connection is closed after it too.
    pub header_timeout: Duration,
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
}

/// Serve on `listener` until `shutdown` completes, then wait up to [`SHUTDOWN_GRACE`] for
/// in-flight answers.
///
/// Connections are served by `lanes` threads, each running a single-threaded runtime of its
/// own; this task only accepts, and hands each connection to the lane serving the fewest.
/// Why: a request crosses two tasks (the client's connection and the upstream connection), and
/// on a work-stealing runtime they often sit on two threads, so every hand-off between them was
/// a cross-thread wake-up. In a lane a connection, and every task it starts, stays on one
/// thread; each lane also has its own upstream pool ([`crate::upstream::client::set_lane`]).
/// That cut the proxy's CPU per request by about a fifth (BENCHMARKS.md).
///
/// The accept loop is ours rather than `axum::serve`'s: hyper's header-read timeout needs a
/// timer that `axum::serve` does not give it, and the connection cap needs the accept.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    limits: ClientLimits,
    lanes: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let lanes = (1..=lanes.clamp(1, crate::upstream::client::MAX_LANES))
        .map(|n| Lane::start(n, app.clone(), limits))
        .collect::<std::io::Result<Vec<_>>>()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, most often: wait a little, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small SSE events must leave at once, not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse_busy(tcp, limits.max_connections));
            continue;
        };
        let Some(lane) = lanes.iter().min_by_key(|l| l.open.load(Ordering::Relaxed)) else {
            break;
        };
        match tcp.into_std() {
            Ok(tcp) => lane.give(tcp, slot),
            Err(e) => tracing::warn!("cannot hand a connection over: {e}"),
        }
    }
    drop(listener);
    // Closing the hand-over channels tells each lane to finish what it serves.
    let finished: Vec<_> = lanes.into_iter().map(|l| l.finished).collect();
    for done in finished {
        let _ = done.await;
    }
    Ok(())
}

/// A connection handed to a lane, with its place under the connection cap.
type Handover = (std::net::TcpStream, tokio::sync::OwnedSemaphorePermit);

/// A serving thread, as the accept loop sees it.
struct Lane {
    handover: tokio::sync::mpsc::UnboundedSender<Handover>,
    /// Connections it serves now: the accept loop gives the next one to the least busy lane.
    open: Arc<AtomicUsize>,
    /// Resolves when the lane has finished (or abandoned, after the grace time) its answers.
    finished: tokio::sync::oneshot::Receiver<()>,
}

impl Lane {
    fn start(n: usize, app: Arc<App>, limits: ClientLimits) -> std::io::Result<Self> {
        let (handover, arrivals) = tokio::sync::mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let (done, finished) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let counter = open.clone();
        std::thread::Builder::new()
            .name(format!("neurolink-lane-{n}"))
            .spawn(move || {
                crate::upstream::client::set_lane(n);
                runtime.block_on(serve_lane(arrivals, counter, app, limits));
                let _ = done.send(());
            })?;
        Ok(Self {
            handover,
            open,
            finished,
        })
    }

    fn give(&self, tcp: std::net::TcpStream, slot: tokio::sync::OwnedSemaphorePermit) {
        self.open.fetch_add(1, Ordering::Relaxed);
        if self.handover.send((tcp, slot)).is_err() {
            // The lane's thread is gone (it panicked): the connection is dropped, closed.
            self.open.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!("a serving thread is gone; connection closed");
        }
    }
}

/// One lane's loop: serve each connection handed over until the channel closes, then give
/// in-flight answers up to [`SHUTDOWN_GRACE`].
async fn serve_lane(
    mut arrivals: tokio::sync::mpsc::UnboundedReceiver<Handover>,
    open: Arc<AtomicUsize>,
    app: Arc<App>,
    limits: ClientLimits,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};

    let service = routes::Service::new(app);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    while let Some((tcp, slot)) = arrivals.recv().await {
        let tcp = match tokio::net::TcpStream::from_std(tcp) {
            Ok(tcp) => tcp,
            Err(e) => {
                open.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!("cannot serve a connection: {e}");
                continue;
            }
        };
        let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service.clone()));
        let open = open.clone();
        tokio::spawn(async move {
            let _ = conn.await;
            open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!(
                "answers still running after {} s; stopping anyway",
                SHUTDOWN_GRACE.as_secs()
            );
        }
    }
}

/// Above the connection cap: an Anthropic-shaped 503, then close.
async fn refuse_busy(mut tcp: tokio::net::TcpStream, cap: usize) {
    use tokio::io::AsyncWriteExt;
    let body = serde_json::json!({
        "type": "error",
        "error": {"type": "overloaded_error", "message": format!("the proxy is serving its maximum of {cap} connections (server.maxConnections); try again")},
    })
    .to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = tcp.write_all(head.as_bytes()).await;
        let _ = tcp.write_all(body.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}
