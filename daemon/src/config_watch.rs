//! The config file is watched: a saved change is applied like `config.reload`, an invalid one is
//! reported (log and a `config_invalid` event) and the old config stays.
//!
//! The folder is watched rather than the file, because editors save by writing a new file and
//! renaming it over the old one. Only events that can change the content count (create, write,
//! rename, remove; never a read or a metadata change), bursts are coalesced, and a reload happens
//! only when the file's bytes differ from the last ones seen: reading the file (an editor, `cat`,
//! `config check`, the reload itself) must never cause a reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use crate::server::App;

/// Quiet time after the last change before reloading.
const SETTLE: Duration = Duration::from_millis(300);

/// Watch `file` (it may not exist yet). Returns the watcher, which must be kept alive.
pub fn watch(app: Arc<App>, file: PathBuf) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let name = file.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if can_change_content(&event.kind)
            && event
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
    let mut last = fingerprint(&file);
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
            let now = fingerprint(&file);
            if now == last {
                continue;
            }
            last = now;
            tracing::info!("config file changed; reloading");
            let _ = crate::reload::reload(&app).await;
        }
    });
    Ok(watcher)
}

/// Whether a file event can mean new content. Opening, reading and closing a file, and changes
/// of its times or mode, do not.
pub(crate) fn can_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        // Closing a file that was open for writing ends a save.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
    }
}

/// A hash of the file's bytes (`None`: it does not exist or cannot be read).
fn fingerprint(file: &Path) -> Option<[u8; 32]> {
    std::fs::read(file)
        .ok()
        .map(|bytes| Sha256::digest(&bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RenameMode};

    #[test]
    fn reads_and_metadata_changes_are_not_changes() {
        assert!(!can_change_content(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!can_change_content(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!can_change_content(&EventKind::Modify(
            ModifyKind::Metadata(MetadataKind::AccessTime)
        )));
        assert!(can_change_content(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(can_change_content(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(can_change_content(&EventKind::Create(CreateKind::File)));
    }
}
