//! The HTTP side of the daemon: shared state ([`App`]), routes, and a serve loop that stops on a
//! signal and gives in-flight answers a bounded time to finish.

pub mod errors;
mod routes;
mod status;

use std::future::{Future, IntoFuture};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use neurolink_shared::config::Strategy;
use neurolink_shared::Secret;
use tokio::net::TcpListener;

use crate::auth::refresh::Refresher;
use crate::clock::{Clock, Millis};
use crate::pool::Pool;

/// How long in-flight answers may run after a stop signal before the daemon exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Anthropic's own request size limit; larger bodies get 413 here instead of after an upload.
pub const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub base_url: String,
    pub auth_key: Option<Secret>,
    pub headers_timeout: Duration,
    pub idle_timeout: Duration,
    pub host: String,
    pub port: u16,
    pub strategy: Strategy,
    pub started_at_ms: Millis,
    /// The config the accounts were discovered with (re-used when the token store changes).
    pub config: Arc<neurolink_shared::config::ProxyConfig>,
    pub paths: neurolink_shared::paths::Paths,
    /// `ANTHROPIC_API_KEY` as it was at start.
    pub env_api_key: Option<Secret>,
}

/// State shared by every request.
pub struct App {
    pool: Mutex<Pool>,
    pub clock: Arc<dyn Clock>,
    pub client: reqwest::Client,
    pub refresher: Refresher,
    pub settings: Settings,
    /// Quotas changed since the last write of `account-quotas.json`.
    pub quotas_dirty: std::sync::atomic::AtomicBool,
}

impl App {
    pub fn new(
        pool: Pool,
        clock: Arc<dyn Clock>,
        client: reqwest::Client,
        refresher: Refresher,
        settings: Settings,
    ) -> Self {
        Self {
            pool: Mutex::new(pool),
            clock,
            client,
            refresher,
            settings,
            quotas_dirty: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The pool, locked. Held only for bookkeeping, never across an await.
    pub fn pool(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding the lock leaves counters possibly half-updated, which is harmless;
        // keep serving rather than poisoning every later request.
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn now_ms(&self) -> Millis {
        self.clock.now_ms()
    }
}

/// Serve on `listener` until `shutdown` completes, then wait up to [`SHUTDOWN_GRACE`] for
/// in-flight answers.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let router = routes::router(app);
    let listener = listener.tap_io(|tcp| {
        // Small SSE events must leave at once, not wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopped_tx.send(());
    });
    let mut serve = std::pin::pin!(serve.into_future());
    tokio::select! {
        r = &mut serve => return r,
        _ = stopped_rx => {}
    }
    match tokio::time::timeout(SHUTDOWN_GRACE, serve).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                "answers still running after {} s; stopping anyway",
                SHUTDOWN_GRACE.as_secs()
            );
            Ok(())
        }
    }
}
