//! The config file is watched: a saved change is applied like `config.reload`, an invalid one is
//! reported (log and a `config_invalid` event) and the old config stays.
//!
//! The folder is watched rather than the file, because editors save by writing a new file and
//! renaming it over the old one. Bursts of events (one save is often several) are coalesced.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::server::App;

/// Quiet time after the last change before reloading.
const SETTLE: Duration = Duration::from_millis(300);

/// Watch `file` (it may not exist yet). Returns the watcher, which must be kept alive.
pub fn watch(app: Arc<App>, file: PathBuf) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let name = file.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
        {
            let _ = tx.send(());
        }
    })?;
    let dir = file
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).map_err(notify::Error::io)?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let the burst finish.
            loop {
                match tokio::time::timeout(SETTLE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            tracing::info!("config file changed; reloading");
            let _ = crate::reload::reload(&app).await;
        }
    });
    Ok(watcher)
}
