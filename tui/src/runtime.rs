//! The dashboard's I/O: the terminal, the keyboard, the 1 s tick, and the link to the daemon.
//! Everything it learns becomes a [`Msg`] for the reducer; every [`Command`] the reducer returns
//! is run here without blocking the screen (calls run on their own tasks).
//!
//! The link connects, takes a snapshot (hello, status, accounts, recent requests), subscribes,
//! and then forwards events. When the daemon goes away (or drops a lagging subscriber) it tries
//! again with a growing pause (0.25 s to 5 s), and a new connection starts with a new snapshot.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use neurolink_shared::ipc::methods::{self, LogsResult, NoParams, TailParams};
use neurolink_shared::ipc::{Call, Connection, Events};
use neurolink_shared::time::now_ms;
use tokio::sync::{mpsc, Notify};

use crate::input;
use crate::model::{self, Command, Mode, Msg, State};
use crate::view;

/// Redraws at most this often while messages stream in (keys redraw at once): 10 frames a
/// second keep a live log readable and the dashboard light.
const FRAME: Duration = Duration::from_millis(100);
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Where the dashboard looks.
#[derive(Debug, Clone)]
pub struct Options {
    pub socket: PathBuf,
    /// The `neurolink` binary that `s` starts (default: beside this program, else on PATH).
    pub daemon_bin: Option<PathBuf>,
    /// The `NEUROLINK_HOME` a daemon started from here uses (default: the environment's).
    pub neurolink_home: Option<PathBuf>,
}

/// What the link task is asked to do.
enum LinkCmd {
    Call(Call),
    Resync,
    /// Try to connect now (a daemon was just started).
    Reconnect,
}

/// Run the dashboard until the user quits (or SIGTERM).
pub fn run(options: Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Restores the terminal on a panic too.
    let mut terminal = ratatui::init();
    let result = rt.block_on(main_loop(&mut terminal, options));
    ratatui::restore();
    result
}

async fn main_loop(
    terminal: &mut ratatui::DefaultTerminal,
    options: Options,
) -> anyhow::Result<()> {
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut state = State::new(options.socket.display().to_string(), now_ms(), color);
    let (msg_tx, mut msgs) = mpsc::unbounded_channel::<Msg>();
    let (link_tx, link_rx) = mpsc::unbounded_channel::<LinkCmd>();
    tokio::spawn(link(options.socket.clone(), msg_tx.clone(), link_rx));
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = sigterm();
    let mut last_draw = tokio::time::Instant::now() - FRAME;
    terminal.draw(|f| view::render(f, &state))?;
    loop {
        let (msg, urgent) = tokio::select! {
            _ = tick.tick() => (Some(Msg::Tick(now_ms())), false),
            m = msgs.recv() => (m, false),
            k = keys.next() => match k {
                Some(Ok(TermEvent::Key(key))) => {
                    let action = match state.mode {
                        Mode::Filter | Mode::Login(_) => input::text_key(key),
                        _ => input::key(key),
                    };
                    (action.map(Msg::Key), true)
                }
                Some(Ok(TermEvent::Resize(..))) => (None, true),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            },
            _ = term.recv() => break,
        };
        let mut pending: Vec<Msg> = msg.into_iter().collect();
        while let Ok(m) = msgs.try_recv() {
            pending.push(m);
        }
        for m in pending {
            for cmd in model::update(&mut state, m) {
                run_command(cmd, &link_tx, &msg_tx, &options);
            }
        }
        if state.quit {
            break;
        }
        if !urgent {
            // Many events in a burst make one frame.
            tokio::time::sleep_until(last_draw + FRAME).await;
            while let Ok(m) = msgs.try_recv() {
                for cmd in model::update(&mut state, m) {
                    run_command(cmd, &link_tx, &msg_tx, &options);
                }
            }
        }
        terminal.draw(|f| view::render(f, &state))?;
        last_draw = tokio::time::Instant::now();
    }
    Ok(())
}

fn run_command(
    cmd: Command,
    link: &mpsc::UnboundedSender<LinkCmd>,
    msgs: &mpsc::UnboundedSender<Msg>,
    options: &Options,
) {
    match cmd {
        Command::Call(c) => {
            let _ = link.send(LinkCmd::Call(c));
        }
        Command::Resync => {
            let _ = link.send(LinkCmd::Resync);
        }
        Command::StartDaemon => {
            let _ = msgs.send(Msg::Started(start_daemon(options)));
            let _ = link.send(LinkCmd::Reconnect);
        }
        Command::Copy(text) => copy(&text),
        Command::Quit => {}
    }
}

/// OSC 52: terminals that allow it put the text on the clipboard; others ignore it.
fn copy(text: &str) {
    use std::io::Write;
    let b64 = base64::engine::general_purpose::STANDARD.encode(text);
    let mut out = std::io::stdout();
    let _ = write!(out, "\x1b]52;c;{b64}\x07");
    let _ = out.flush();
}

/// Start `neurolink proxy start` detached (its own process group, no terminal), as a service
/// would: it outlives the dashboard. Its output goes to `logs/daemon-started-by-tui.log`.
fn start_daemon(options: &Options) -> Result<String, String> {
    let bin = options
        .daemon_bin
        .clone()
        .unwrap_or_else(default_daemon_bin);
    let paths = match &options.neurolink_home {
        Some(home) => neurolink_shared::paths::Paths::at(home.clone()),
        None => neurolink_shared::paths::Paths::from_env(),
    };
    let _ = std::fs::create_dir_all(paths.logs());
    let log_path = paths.logs().join("daemon-started-by-tui.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let err = log
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(["proxy", "start"])
        .env("NEUROLINK_HOME", &paths.home)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let pid = child.id();
    // Reap it if it exits while the dashboard runs (no zombie).
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(format!(
        "started the daemon (pid {pid}); its output goes to {}",
        log_path.display()
    ))
}

fn default_daemon_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let name = format!("neurolink{}", std::env::consts::EXE_SUFFIX);
    if exe.file_name().is_some_and(|n| n == name.as_str()) {
        return exe;
    }
    match exe.parent().map(|d| d.join(&name)) {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from(name),
    }
}

fn sigterm() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut s) = signal(SignalKind::terminate()) {
            tokio::spawn(async move {
                s.recv().await;
                let _ = tx.send(()).await;
            });
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

async fn link(
    socket: PathBuf,
    msgs: mpsc::UnboundedSender<Msg>,
    mut cmds: mpsc::UnboundedReceiver<LinkCmd>,
) {
    let mut pause = FIRST_RETRY;
    loop {
        let error = match connect(&socket).await {
            Ok((conn, events, snapshot)) => {
                pause = FIRST_RETRY;
                let _ = msgs.send(snapshot);
                serve(conn, events, &mut cmds, &msgs).await
            }
            Err(e) => e,
        };
        let retry_at = now_ms() + pause.as_millis() as u64;
        let _ = msgs.send(Msg::Lost { error, retry_at });
        let deadline = tokio::time::Instant::now() + pause;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(LinkCmd::Reconnect) => { pause = FIRST_RETRY; break }
                    Some(LinkCmd::Call(_)) => {
                        let _ = msgs.send(Msg::Done(Err("no daemon: start one first (s)".into())));
                    }
                    Some(LinkCmd::Resync) => {}
                }
            }
        }
        pause = (pause * 2).min(MAX_RETRY);
    }
}

/// Connect, read a snapshot, subscribe.
async fn connect(socket: &Path) -> Result<(Arc<Connection>, Events, Msg), String> {
    let (conn, events) = Connection::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let snapshot = async {
        let hello = conn
            .request::<methods::Hello>(&methods::HelloParams {
                client: Some("neurolink-tui".into()),
            })
            .await?;
        // Subscribe before the snapshot: nothing that happens in between is missed.
        conn.subscribe(None).await?;
        let status = conn.request::<methods::Status>(&NoParams {}).await?;
        let accounts = conn.request::<methods::AccountsList>(&NoParams {}).await?;
        let LogsResult { records } = conn
            .request::<methods::LogsTail>(&TailParams {
                limit: Some(model::MAX_REQUESTS),
            })
            .await?;
        Ok::<_, neurolink_shared::ipc::ClientError>(Msg::Snapshot {
            hello,
            status,
            accounts: accounts.accounts,
            records,
        })
    }
    .await
    .map_err(|e| e.to_string())?;
    Ok((Arc::new(conn), events, snapshot))
}

/// Forward events and run commands until the connection ends; returns why it ended.
async fn serve(
    conn: Arc<Connection>,
    mut events: Events,
    cmds: &mut mpsc::UnboundedReceiver<LinkCmd>,
    msgs: &mpsc::UnboundedSender<Msg>,
) -> String {
    // Resyncs coalesce: a burst of account events makes one re-read.
    let resync = Arc::new(Notify::new());
    let resyncer = tokio::spawn({
        let (conn, msgs, resync) = (conn.clone(), msgs.clone(), resync.clone());
        async move {
            loop {
                resync.notified().await;
                if let Ok(s) = conn.request::<methods::Status>(&NoParams {}).await {
                    let _ = msgs.send(Msg::Status(s));
                }
                if let Ok(a) = conn.request::<methods::AccountsList>(&NoParams {}).await {
                    let _ = msgs.send(Msg::Accounts(a.accounts));
                }
            }
        }
    });
    let why = loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(e) => { let _ = msgs.send(Msg::Event(e)); }
                None => break "the daemon closed the connection".to_string(),
            },
            c = cmds.recv() => match c {
                None => break "the dashboard is closing".to_string(),
                Some(LinkCmd::Resync) => resync.notify_one(),
                Some(LinkCmd::Reconnect) => {}
                Some(LinkCmd::Call(call)) => {
                    let (conn, msgs) = (conn.clone(), msgs.clone());
                    tokio::spawn(async move {
                        let _ = msgs.send(call_daemon(&conn, call).await);
                    });
                }
            },
        }
    };
    resyncer.abort();
    why
}

async fn call_daemon(conn: &Connection, call: Call) -> Msg {
    let done = model::describe(&call);
    match conn.call(call.name(), Some(call.params())).await {
        Ok(v) => match call {
            Call::AuthLoginStart(_) => match serde_json::from_value(v) {
                Ok(started) => Msg::LoginStarted(started),
                Err(e) => Msg::Done(Err(format!("unreadable login answer: {e}"))),
            },
            _ => Msg::Done(Ok(done)),
        },
        Err(e) => Msg::Done(Err(format!("{}: {e}", call.name()))),
    }
}
