//! One daemon per NeuroLink home: `proxy-state.json` says who runs (NeuroLink's format,
//! docs/formats.md). Start refuses when it names a live daemon, and takes over a stale
//! one; stop removes it (and the socket) if they are still ours.

use std::time::Duration;

use neurolink_shared::ipc::IpcClient;
use neurolink_shared::paths::Paths;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyState {
    pub pid: u32,
    pub port: u16,
    pub host: String,
    pub strategy: String,
    pub start_time: String,
    #[serde(default)]
    pub ready: Option<bool>,
    #[serde(default)]
    pub ready_at: Option<String>,
    #[serde(default)]
    pub health_path: Option<String>,
    #[serde(default)]
    pub status_path: Option<String>,
    #[serde(default)]
    pub fallback_chain: Vec<serde_json::Value>,
    #[serde(default)]
    pub guard_pid: Option<u32>,
    #[serde(default)]
    pub managed_by: Option<String>,
    #[serde(default)]
    pub passthrough: Option<bool>,
    /// What Claude Code's settings held before we pointed them here (restored on stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claude_settings: Option<crate::claude_settings::Saved>,
    /// Fields other versions wrote.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

pub fn read_state(paths: &Paths) -> Option<ProxyState> {
    let text = std::fs::read_to_string(paths.state()).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn write_state(paths: &Paths, state: &ProxyState) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(state).map_err(std::io::Error::other)?;
    neurolink_shared::atomic_file::write_private(&paths.state(), text.as_bytes())
}

/// Whether a process with this pid exists (a zombie, exited but not yet reaped, does not count).
pub fn pid_alive(pid: u32) -> bool {
    // Linux: /proc also tells a zombie (dead, not yet reaped) from a live process.
    if cfg!(target_os = "linux") {
        return match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state letter follows the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
            Err(_) => false,
        };
    }
    alive_by_signal(pid)
}

/// A daemon answers on this home's socket (what "live" means: a pid alone may have been reused).
pub async fn daemon_answers(paths: &Paths) -> Option<serde_json::Value> {
    let mut client =
        tokio::time::timeout(Duration::from_secs(2), IpcClient::connect(&paths.socket()))
            .await
            .ok()?
            .ok()?;
    client
        .call_timeout("hello", None, Duration::from_secs(2))
        .await
        .ok()
}

/// Refuse to start when a live daemon owns this home; clean up after a dead one.
pub async fn claim(paths: &Paths) -> anyhow::Result<()> {
    if let Some(state) = read_state(paths) {
        if pid_alive(state.pid)
            && state.pid != std::process::id()
            && daemon_answers(paths).await.is_some()
        {
            anyhow::bail!(
                "a neurolink proxy is already running (pid {}, http://{}:{}); stop it with `neurolink proxy stop`, \
                 or use another NEUROLINK_HOME",
                state.pid,
                state.host,
                state.port
            );
        }
        tracing::info!(
            pid = state.pid,
            "taking over from a daemon that is no longer running"
        );
        let _ = std::fs::remove_file(paths.state());
    } else if daemon_answers(paths).await.is_some() {
        anyhow::bail!(
            "a neurolink proxy answers on {} although no state file names it; stop it first",
            paths.socket().display()
        );
    }
    Ok(())
}

/// Remove the state file and socket if they still belong to this process.
pub fn release(paths: &Paths) {
    if read_state(paths).is_some_and(|s| s.pid == std::process::id()) {
        let _ = std::fs::remove_file(paths.state());
        let _ = std::fs::remove_file(paths.socket());
    }
}

/// `kill(pid, 0)`: the process exists (ours, or another user's: `EPERM`).
#[cfg(unix)]
fn alive_by_signal(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

#[cfg(not(unix))]
fn alive_by_signal(_pid: u32) -> bool {
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_live_pid_is_alive_and_a_reaped_one_is_not() {
        let me = std::process::id();
        assert!(pid_alive(me));
        #[cfg(unix)]
        assert!(alive_by_signal(me));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
        #[cfg(unix)]
        assert!(!alive_by_signal(pid));
        // pid 1 belongs to another user (or to us in a container): alive either way.
        #[cfg(unix)]
        assert!(alive_by_signal(1));
    }
}
