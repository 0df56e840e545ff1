//! The guard: a small detached process (`neurolink proxy guard --parent-pid PID`) that watches the
//! daemon and, if it dies without cleaning up (`kill -9`, a crash), restores Claude Code's
//! settings and removes the state file and socket, then exits. A clean stop removes the state
//! file itself, which tells the guard to exit quietly.

use std::process::ExitCode;
use std::time::Duration;

use neurolink_shared::paths::Paths;

use crate::lifecycle::{pid_alive, read_state};

/// How often the guard looks; restoring happens within about this long after a crash.
pub const POLL: Duration = Duration::from_millis(500);

/// Start the guard for this daemon. Returns its pid.
pub fn spawn() -> std::io::Result<u32> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "proxy",
        "guard",
        "--parent-pid",
        &std::process::id().to_string(),
    ])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    #[cfg(unix)]
    {
        // Its own process group: a Ctrl-C aimed at the daemon's terminal does not reach it.
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    // Reap it when it exits, so it never lingers as a zombie of a long-running daemon.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}

/// The guard's loop.
pub fn run(parent_pid: u32, poll: Duration) -> ExitCode {
    let paths = Paths::from_env();
    // The state file is read again only when it changed: a `stat` is silent to the daemon's
    // file watcher, while reading the file woke it twice a second for nothing.
    let mut seen = None;
    let mut state = None;
    loop {
        std::thread::sleep(poll);
        let Ok(meta) = std::fs::metadata(paths.state()) else {
            // Stopped cleanly: nothing left to do.
            return ExitCode::SUCCESS;
        };
        let stamp = version(&meta);
        if seen.as_ref() != Some(&stamp) {
            state = read_state(&paths);
            seen = Some(stamp);
        }
        let Some(state) = &state else {
            return ExitCode::SUCCESS;
        };
        if state.pid != parent_pid {
            // Another daemon owns the home now.
            return ExitCode::SUCCESS;
        }
        if pid_alive(parent_pid) {
            continue;
        }
        if let Some(saved) = &state.claude_settings {
            if let Err(e) = crate::claude_settings::restore(saved) {
                eprintln!("neurolink guard: could not restore Claude settings: {e}");
            }
        }
        let _ = std::fs::remove_file(paths.state());
        let _ = std::fs::remove_file(paths.socket());
        return ExitCode::SUCCESS;
    }
}

/// What tells one version of the state file from the next: it is replaced by a rename (a new
/// inode) each time it is written.
fn version(meta: &std::fs::Metadata) -> (Option<std::time::SystemTime>, u64, u64) {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    (meta.modified().ok(), meta.len(), inode)
}
