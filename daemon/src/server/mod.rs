//! The HTTP side of the daemon: shared state ([`App`]), routes, and a serve loop that stops on a
//! signal and gives in-flight answers a bounded time to finish.

mod chat;
pub mod errors;
mod routes;
pub mod runtime;
pub mod status;

use std::future::Future;
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
            .position(|a| a.spec.label == label)
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
/// The accept loop is ours rather than `axum::serve`'s: hyper's header-read timeout needs a
/// timer that `axum::serve` does not give it, and the connection cap needs the accept.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    limits: ClientLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let router = routes::router(app);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
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
        let service = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!(
                "answers still running after {} s; stopping anyway",
                SHUTDOWN_GRACE.as_secs()
            );
        }
    }
    Ok(())
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
