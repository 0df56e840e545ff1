//! Start-up and the foreground run of `neurolink proxy start`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use neurolink_shared::config::{self, EnvSource, Strategy};
use neurolink_shared::paths::Paths;
use neurolink_shared::token_store::Store;
use tokio::net::TcpListener;

use crate::accounts;
use crate::auth::endpoint::Endpoint;
use crate::auth::refresh::Refresher;
use crate::auth::OAuthCell;
use crate::clock::{Clock, SystemClock};
use crate::pool::Pool;
use crate::pool::{AccountId, Credential};
use crate::server::runtime::{Overrides, Runtime};
use crate::server::{self, App, Settings};
use neurolink_shared::ipc::{AccountChange, Event};

/// What `proxy start` was asked for; `None` means "from the config file, else the default".
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub config: Option<std::path::PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub strategy: Option<Strategy>,
    /// `--debug`: also write `proxy-debug-*.jsonl` (headers and bodies, secrets masked).
    pub debug: bool,
    /// Point Claude Code's settings at the proxy (and start the guard); off with `--no-settings`.
    pub settings: bool,
}

/// Load everything, bind, print where we listen, serve until SIGINT/SIGTERM.
pub async fn start(opts: StartOptions) -> anyhow::Result<()> {
    raise_fd_limit();
    let paths = Paths::from_env();
    let loaded = config::load(opts.config.as_deref(), &paths, &EnvSource::Process)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let cfg = loaded.config;
    let overrides = Overrides {
        host: opts.host.clone(),
        port: opts.port,
        strategy: opts.strategy,
    };
    let (host, port) = overrides.listen(&cfg);
    if !is_loopback(&host) && cfg.server.auth_key().is_none() {
        bail!(
            "refusing to listen on {host} without an auth key: anyone who can reach it could use your accounts. \
             Set server.authKey in the config (e.g. authKey: \"${{NEUROLINK_PROXY_KEY}}\"), or listen on 127.0.0.1"
        );
    }

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let found = accounts::discover(
        &cfg,
        &paths,
        std::env::var("ANTHROPIC_API_KEY").ok(),
        clock.now_ms(),
    );
    for w in &found.warnings {
        tracing::warn!("{w}");
    }
    let account_count = found.specs.len();
    for s in found.specs.iter().filter(|s| s.disabled.is_some()) {
        tracing::warn!(account = %s.label, "not used: {}", s.disabled.as_deref().unwrap_or_default());
    }

    let runtime = Runtime::new(cfg.clone(), &overrides, None)
        .map_err(anyhow::Error::msg)
        .context("building the HTTP client")?;
    let strategy = runtime.strategy;

    let signals = shutdown_signal();
    crate::lifecycle::claim(&paths).await?;
    let listener = TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| {
            format!("cannot listen on {host}:{port} (is another proxy running? try --port)")
        })?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let settings = Settings {
        listen: (host.clone(), port),
        host: host.clone(),
        port: addr.port(),
        started_at_ms: clock.now_ms(),
        config_path: opts.config.clone(),
        overrides,
        paths: paths.clone(),
        env_api_key: std::env::var("ANTHROPIC_API_KEY")
            .ok()
            .map(neurolink_shared::Secret::new),
    };
    let refresher = Refresher::new(
        runtime.client.clone(),
        Endpoint::from_config(&cfg.providers.anthropic_oauth),
        Store::for_paths(&paths),
        paths.legacy_credentials(),
        clock.clone(),
    );
    let mut pool =
        Pool::new(found.specs, strategy).with_quota_threshold(cfg.routing.quota_threshold.0);
    match neurolink_shared::quotas::read(&paths.quotas()) {
        Ok(saved) => {
            // Routing knows last run's utilisation until fresh headers arrive.
            for id in 0..pool.accounts().len() {
                let label = pool.accounts()[id].spec.label.clone();
                if let Some(q) = saved.get(&*label) {
                    pool.set_quota(id, q.clone());
                }
            }
        }
        Err(e) => tracing::warn!("{e}; starting without saved quotas"),
    }
    let watched_config = loaded
        .path
        .clone()
        .unwrap_or_else(|| paths.home.join("proxy-config.yaml"));
    let logs = crate::logs::start(paths.logs(), opts.debug);
    tokio::spawn(clean_logs_every(paths.logs()));
    let app = Arc::new(App::new(pool, clock, runtime, refresher, settings, logs));
    refresh_expired_at_start(&app).await;
    let usable = (0..account_count)
        .filter(|&id| app.pool().state(id, app.now_ms()) != crate::pool::State::Disabled)
        .count();
    tokio::spawn(keep_tokens_fresh(app.clone()));
    tokio::spawn(crate::store_watch::watch(app.clone()));
    tokio::spawn(announce_cooldown_ends(app.clone()));
    tokio::spawn(flush_quotas_every(app.clone()));
    let _config_watcher = match crate::config_watch::watch(app.clone(), watched_config.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                "cannot watch {} ({e}); use `neurolink rpc config.reload` after editing it",
                watched_config.display()
            );
            None
        }
    };

    neurolink_shared::atomic_file::create_private_dir(&paths.home)
        .context("creating NEUROLINK_HOME")?;
    let socket = crate::ipc::bind(&paths.socket()).with_context(|| {
        format!(
            "cannot open the control socket {}",
            paths.socket().display()
        )
    })?;
    tokio::spawn(crate::ipc::serve(socket, paths.socket(), app.clone()));
    let now = crate::clock::rfc3339(app.now_ms());
    let state = crate::lifecycle::ProxyState {
        pid: std::process::id(),
        port: addr.port(),
        host: host.clone(),
        strategy: strategy.as_str().into(),
        start_time: crate::clock::rfc3339(app.settings.started_at_ms),
        ready: Some(true),
        ready_at: Some(now),
        health_path: Some("/health".into()),
        status_path: Some("/status".into()),
        fallback_chain: cfg
            .routing
            .fallback_chain
            .iter()
            .filter_map(|f| serde_json::to_value(f).ok())
            .collect(),
        guard_pid: None,
        managed_by: Some("manual".into()),
        passthrough: Some(false),
        claude_settings: None,
        extra: Default::default(),
    };
    let mut state = state;
    let local = if is_loopback(&host) || host == "0.0.0.0" || host == "::" {
        "127.0.0.1".to_string()
    } else {
        host.clone()
    };
    let proxy_url = format!("http://{local}:{}", addr.port());
    if opts.settings {
        match neurolink_shared::paths::claude_settings() {
            Some(path) => match crate::claude_settings::apply(&path, &proxy_url) {
                Ok(saved) => {
                    tracing::info!(
                        "Claude Code now uses the proxy ({} in {})",
                        crate::claude_settings::BASE_URL_KEY,
                        path.display()
                    );
                    state.claude_settings = Some(saved);
                }
                Err(e) => tracing::warn!("Claude settings left unchanged: {e}"),
            },
            None => tracing::warn!("no home folder: Claude settings left unchanged"),
        }
        match crate::guard::spawn() {
            Ok(pid) => state.guard_pid = Some(pid),
            Err(e) => tracing::warn!("could not start the guard ({e}); a crash would leave Claude settings pointing here"),
        }
    }
    crate::lifecycle::write_state(&paths, &state).context("writing proxy-state.json")?;
    let url = format!("http://{addr}");
    println!(
        "neurolink proxy listening on {url} ({}, {usable} of {account_count} accounts usable)",
        strategy.as_str()
    );
    if account_count == 0 {
        println!(
            "No Anthropic account yet; requests will get a 401 until you add one:\n  \
             export ANTHROPIC_API_KEY=sk-ant-...   (then restart), or\n  \
             add accounts.anthropic[] to {}, or\n  \
             neurolink auth login anthropic",
            paths.home.join("proxy-config.yaml").display()
        );
    }
    println!("Point Claude Code at it:  export ANTHROPIC_BASE_URL={url}");
    let stop = {
        let app = app.clone();
        async move {
            tokio::select! {
                () = signals => {}
                () = app.shutdown.cancelled() => tracing::info!("stop requested over the control socket"),
            }
            app.shutdown.cancel();
            app.emit(neurolink_shared::ipc::Event::daemon(
                neurolink_shared::ipc::DaemonEventKind::Stopping,
                "the daemon is stopping",
            ));
        }
    };
    let limits = server::ClientLimits {
        header_timeout: Duration::from_secs(cfg.server.client_header_timeout_secs.0.max(1)),
        max_connections: usize::try_from(cfg.server.max_connections.0).unwrap_or(usize::MAX),
    };
    // A serving thread per core.
    let lanes = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let served = server::run(listener, app.clone(), limits, lanes, stop).await;
    flush_quotas(&app).await;
    app.logs.flush();
    if let Some(saved) = &state.claude_settings {
        if let Err(e) = crate::claude_settings::restore(saved) {
            tracing::warn!("could not restore Claude settings: {e}");
        }
    }
    crate::lifecycle::release(&paths);
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// OAuth accounts, for the token maintenance below.
fn oauth_accounts(app: &App) -> Vec<(AccountId, Arc<OAuthCell>)> {
    app.pool()
        .accounts()
        .iter()
        .enumerate()
        .filter_map(|(id, a)| match &a.spec.credential {
            Credential::OAuth(cell) if a.spec.disabled.is_none() => Some((id, cell.clone())),
            _ => None,
        })
        .collect()
}

/// An expired account gets one refresh attempt at start; if it fails, it is disabled (as the
/// seed does).
async fn refresh_expired_at_start(app: &Arc<App>) {
    for (id, cell) in oauth_accounts(app) {
        if !cell.is_expired(app.now_ms()) {
            continue;
        }
        if let Err(e) = app.refresher.refresh(&cell, false).await {
            let label = app
                .pool()
                .account(id)
                .map(|a| a.spec.label.clone())
                .unwrap_or_default();
            tracing::warn!(account = %label, "expired token could not be refreshed at start ({e}); account disabled");
            app.pool().disable(
                id,
                format!("token expired and the refresh at start failed ({e}); log in again with `neurolink auth login anthropic`"),
            );
            app.refresher
                .disable_on_disk(&cell.persist, "refresh_failed")
                .await;
        }
    }
}

/// Refresh tokens nearing expiry while idle, including accounts that are cooling (a token must
/// not expire while its account waits out a quota window), and retry unsaved token writes.
async fn keep_tokens_fresh(app: Arc<App>) {
    loop {
        // Read each round: a reload may change `server.tokenCheckSecs`.
        tokio::time::sleep(app.runtime().token_check).await;
        for (id, cell) in oauth_accounts(&app) {
            if app.pool().disabled_reason(id).is_some() {
                continue;
            }
            app.refresher.retry_unsaved(&cell).await;
            if !(cell.needs_refresh(app.now_ms()) && cell.has_refresh_token()) {
                continue;
            }
            match app.refresher.refresh(&cell, false).await {
                Ok(done) => {
                    let label = app
                        .pool()
                        .account(id)
                        .map(|a| a.spec.label.clone())
                        .unwrap_or_default();
                    crate::passthrough::refreshed(&app, &label, done, "expiring, idle");
                }
                Err(_) => crate::passthrough::refresh_failed(&app, id, &cell).await,
            }
        }
    }
}

/// Tell subscribers when a cooldown runs out (the pool has no timers: a cooling account just
/// becomes pickable again), so a dashboard need not poll. Sleeps until the soonest end, or until
/// an account starts cooling: an idle daemon with nothing cooling never wakes for this.
async fn announce_cooldown_ends(app: Arc<App>) {
    let mut cooling: Vec<String> = Vec::new();
    loop {
        let now = app.now_ms();
        let mut soonest: Option<u64> = None;
        let (still, ended): (Vec<String>, Vec<String>) = {
            let pool = app.pool();
            let mut still = Vec::new();
            let mut ended = Vec::new();
            for (id, a) in pool.accounts().iter().enumerate() {
                match pool.state(id, now) {
                    crate::pool::State::Cooling { until } => {
                        soonest = Some(soonest.map_or(until, |s| s.min(until)));
                        still.push(a.spec.label.to_string());
                    }
                    crate::pool::State::Active if cooling.iter().any(|c| **c == *a.spec.label) => {
                        ended.push(a.spec.label.to_string())
                    }
                    _ => {}
                }
            }
            (still, ended)
        };
        for label in ended {
            app.emit(Event::account(
                label,
                AccountChange::CooldownEnded,
                neurolink_shared::ipc::AccountState::Active,
                None,
            ));
        }
        cooling = still;
        // A cooldown that starts after the look above leaves a permit: no wake-up is lost.
        let started = app.cooldown_started.notified();
        match soonest {
            Some(until) => {
                // A millisecond past the end, so the next look sees it over.
                let wait = Duration::from_millis(until.saturating_sub(now) + 1);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = started => {}
                }
            }
            None => started.await,
        }
    }
}

/// Log cleanup at start and then hourly.
async fn clean_logs_every(dir: std::path::PathBuf) {
    let mut tick = tokio::time::interval(crate::logs::rotate::INTERVAL);
    loop {
        tick.tick().await;
        let d = dir.clone();
        let r = tokio::task::spawn_blocking(move || {
            crate::logs::rotate::cleanup(
                &d,
                std::time::SystemTime::now(),
                crate::logs::rotate::MAX_AGE,
                crate::logs::rotate::MAX_TOTAL_BYTES,
            )
        })
        .await;
        match r {
            Ok(Ok(removed)) if !removed.is_empty() => {
                tracing::info!("removed old logs: {}", removed.join(", "))
            }
            Ok(Err(e)) => tracing::warn!("log cleanup failed: {e}"),
            _ => {}
        }
    }
}

/// `account-quotas.json` is written at most this often (NeuroLink's `FLUSH_INTERVAL_MS`).
pub const QUOTA_FLUSH: Duration = Duration::from_secs(5);

async fn flush_quotas_every(app: Arc<App>) {
    let mut tick = tokio::time::interval(QUOTA_FLUSH);
    loop {
        tick.tick().await;
        flush_quotas(&app).await;
    }
}

/// Merge the pool's quotas into `account-quotas.json` when they changed, under the file's lock
/// (other entries, written by other tools, are kept).
async fn flush_quotas(app: &Arc<App>) {
    if !app
        .quotas_dirty
        .swap(false, std::sync::atomic::Ordering::Relaxed)
    {
        return;
    }
    let ours: Vec<(String, neurolink_shared::quotas::AccountQuota)> = app
        .pool()
        .accounts()
        .iter()
        .filter_map(|a| {
            a.health
                .quota
                .clone()
                .map(|q| (a.spec.label.to_string(), q))
        })
        .collect();
    let path = app.settings.paths.quotas();
    let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let _lock = neurolink_shared::atomic_file::FileLock::acquire(&path, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        // A file that does not parse is reported, never overwritten.
        let mut all = neurolink_shared::quotas::read(&path)?;
        for (label, q) in ours {
            all.insert(label, q);
        }
        neurolink_shared::quotas::write(&path, &all).map_err(|e| format!("{}: {e}", path.display()))
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!("could not save quotas: {e}");
            app.quotas_dirty
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Err(e) => tracing::warn!("could not save quotas: {e}"),
    }
}

pub(crate) fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Completes on Ctrl-C or SIGTERM.
/// Completes on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when it
/// is first polled: a signal that arrives right after start-up must not kill the process before
/// it cleans up.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => tokio::select! {
                    _ = int.recv() => tracing::info!("Ctrl-C: stopping"),
                    _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!("cannot listen for signals: {e}");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Each open stream holds two sockets; the default soft limit (often 1024) would cap the proxy at
/// a few hundred concurrent streams.
fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!("could not raise the open-file limit: {e}");
    }
}
