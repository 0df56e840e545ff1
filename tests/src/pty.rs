//! A program in a pseudo-terminal, its screen read through a terminal emulator (`vt100`): what
//! a person at that terminal would see, for the dashboard's end-to-end tests.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running program in a pty; killed on drop.
pub struct Terminal {
    child: std::process::Child,
    pty: Arc<pty_process::blocking::Pty>,
    screen: Arc<Mutex<vt100::Parser>>,
}

impl Terminal {
    /// Run `program args` in a `rows`×`cols` terminal with `env` (and nothing else but `PATH`).
    pub fn spawn(
        program: &Path,
        args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
        rows: u16,
        cols: u16,
    ) -> anyhow::Result<Self> {
        let (pty, pts) = pty_process::blocking::open()?;
        pty.resize(pty_process::Size::new(rows, cols))?;
        let mut cmd = pty_process::blocking::Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TERM", "xterm-256color");
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        let child = cmd.spawn(pts)?;
        let pty = Arc::new(pty);
        let screen = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
        {
            let (pty, screen) = (pty.clone(), screen.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match (&*pty).read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if let Ok(mut p) = screen.lock() {
                                p.process(&buf[..n]);
                            }
                        }
                    }
                }
            });
        }
        Ok(Self { child, pty, screen })
    }

    /// Type `keys`.
    pub fn send(&self, keys: &str) -> std::io::Result<()> {
        (&*self.pty).write_all(keys.as_bytes())
    }

    /// The screen's text now.
    pub fn contents(&self) -> String {
        self.screen
            .lock()
            .map(|p| p.screen().contents())
            .unwrap_or_default()
    }

    /// Wait until the screen shows `text` (up to `timeout`); the screen when it does.
    pub fn wait_for(&self, text: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_until(timeout, |s| s.contains(text))
            .map_err(|screen| anyhow::anyhow!("the screen never showed {text:?}:\n{screen}"))
    }

    /// Wait until `ok(screen)`; `Err(last screen)` after `timeout`.
    pub fn wait_until(
        &self,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.contents();
            if ok(&s) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The program's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the program has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
