//! Running the proxy as a login service: a systemd user unit on Linux (`Restart=on-failure`,
//! `RestartSec=5`), a launchd agent on macOS (`KeepAlive`, 5 s throttle). Both run exactly
//! `neurolink proxy start` with the chosen flags. Rendering is pure (tested); installing runs
//! `systemctl --user` / `launchctl`, or with `--dry-run` prints what it would write and run.

use std::path::{Path, PathBuf};

pub const SYSTEMD_UNIT: &str = "neurolink-proxy.service";
pub const LAUNCHD_LABEL: &str = "com.neurolink.proxy";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Launchd,
}

impl Manager {
    pub fn current() -> Self {
        if cfg!(target_os = "macos") {
            Manager::Launchd
        } else {
            Manager::Systemd
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Manager::Systemd => "systemctl",
            Manager::Launchd => "launchctl",
        }
    }
}

/// What the service runs.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub exe: PathBuf,
    /// Arguments after the executable: `proxy start ...`.
    pub args: Vec<String>,
    /// `NEUROLINK_HOME`, `CLAUDE_CONFIG_DIR` and the like, when set (never secrets).
    pub env: Vec<(String, String)>,
    pub neurolink_home: PathBuf,
}

/// A systemd value: quoted when needed, `%` doubled (systemd expands specifiers).
fn systemd_quote(s: &str) -> String {
    let s = s.replace('%', "%%");
    if s.chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'))
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

/// An `ExecStart=` word: as [`systemd_quote`], and `$` doubled, since systemd expands `$VAR` and
/// `${VAR}` there (a config path or a folder with a `$` in its name would change meaning).
fn systemd_exec_word(s: &str) -> String {
    systemd_quote(&s.replace('$', "$$"))
}

pub fn render_systemd(spec: &ServiceSpec) -> String {
    let mut exec = vec![systemd_exec_word(&spec.exe.to_string_lossy())];
    exec.extend(spec.args.iter().map(|a| systemd_exec_word(a)));
    let mut out = String::new();
    out.push_str("[Unit]\nDescription=NeuroLink proxy for Claude Code\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nType=simple\n");
    out.push_str(&format!("ExecStart={}\n", exec.join(" ")));
    for (k, v) in &spec.env {
        out.push_str(&format!(
            "Environment={}\n",
            systemd_quote(&format!("{k}={v}"))
        ));
    }
    // Keys referenced as ${VAR} in the config can live here, outside the unit.
    out.push_str(&format!(
        "EnvironmentFile=-{}\n",
        systemd_quote(&spec.neurolink_home.join(".env").to_string_lossy())
    ));
    out.push_str("Restart=on-failure\nRestartSec=5\n\n[Install]\nWantedBy=default.target\n");
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn render_launchd(spec: &ServiceSpec) -> String {
    let mut args = format!(
        "    <string>{}</string>\n",
        xml(&spec.exe.to_string_lossy())
    );
    for a in &spec.args {
        args.push_str(&format!("    <string>{}</string>\n", xml(a)));
    }
    let mut env = String::new();
    for (k, v) in &spec.env {
        env.push_str(&format!(
            "    <key>{}</key>\n    <string>{}</string>\n",
            xml(k),
            xml(v)
        ));
    }
    let log = spec.neurolink_home.join("logs").join("launchd.log");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
<plist version=\"1.0\">\n<dict>\n  <key>Label</key>\n  <string>{LAUNCHD_LABEL}</string>\n\
  <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n\
  <key>EnvironmentVariables</key>\n  <dict>\n{env}  </dict>\n\
  <key>RunAtLoad</key>\n  <true/>\n  <key>KeepAlive</key>\n  <true/>\n  <key>ThrottleInterval</key>\n  <integer>5</integer>\n\
  <key>StandardOutPath</key>\n  <string>{log}</string>\n  <key>StandardErrorPath</key>\n  <string>{log}</string>\n\
</dict>\n</plist>\n",
        log = xml(&log.to_string_lossy()),
    )
}

/// Where the unit or plist goes.
pub fn file_path(manager: Manager, home: &Path) -> PathBuf {
    match manager {
        Manager::Systemd => std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map_or_else(|| home.join(".config"), PathBuf::from)
            .join("systemd/user")
            .join(SYSTEMD_UNIT),
        Manager::Launchd => home
            .join("Library/LaunchAgents")
            .join(format!("{LAUNCHD_LABEL}.plist")),
    }
}

/// The commands that load (or unload) the service.
pub fn commands(manager: Manager, file: &Path, install: bool) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let f = file.to_string_lossy().into_owned();
    match (manager, install) {
        (Manager::Systemd, true) => vec![
            s(&["systemctl", "--user", "daemon-reload"]),
            s(&["systemctl", "--user", "enable", "--now", SYSTEMD_UNIT]),
        ],
        (Manager::Systemd, false) => vec![
            s(&["systemctl", "--user", "disable", "--now", SYSTEMD_UNIT]),
            s(&["systemctl", "--user", "daemon-reload"]),
        ],
        // `bootstrap`/`bootout` into the user's GUI domain: `load`/`unload` are deprecated
        // and report failures only on stderr with a zero exit status.
        (Manager::Launchd, true) => vec![vec![
            "launchctl".into(),
            "bootstrap".into(),
            gui_domain(),
            f,
        ]],
        (Manager::Launchd, false) => vec![vec![
            "launchctl".into(),
            "bootout".into(),
            format!("{}/{LAUNCHD_LABEL}", gui_domain()),
        ]],
    }
}

/// launchd's domain for this user's agents: `gui/<uid>`.
fn gui_domain() -> String {
    #[cfg(unix)]
    let uid = rustix::process::getuid().as_raw();
    #[cfg(not(unix))]
    let uid = 0;
    format!("gui/{uid}")
}

fn tool_present(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// Install: write the file and load it. `dry_run` prints instead. Returns a human report.
pub fn install(
    manager: Manager,
    spec: &ServiceSpec,
    home: &Path,
    dry_run: bool,
) -> Result<String, String> {
    let file = file_path(manager, home);
    let content = match manager {
        Manager::Systemd => render_systemd(spec),
        Manager::Launchd => render_launchd(spec),
    };
    let cmds = commands(manager, &file, true);
    let listing = listing(&cmds);
    if dry_run {
        return Ok(format!(
            "# would write {}\n{content}\n# then run:\n{listing}\n",
            file.display()
        ));
    }
    if !tool_present(manager.tool()) {
        return Err(format!(
            "{} is not available on this machine, so the service cannot be installed here.\n\
             This is the file it would use ({}):\n\n{content}\nRun the proxy in the foreground instead: neurolink proxy start",
            manager.tool(),
            file.display()
        ));
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&file, &content).map_err(|e| format!("{}: {e}", file.display()))?;
    run_all(&cmds)?;
    Ok(format!(
        "installed {} and started it; it restarts on failure\n",
        file.display()
    ))
}

pub fn uninstall(manager: Manager, home: &Path, dry_run: bool) -> Result<String, String> {
    let file = file_path(manager, home);
    let cmds = commands(manager, &file, false);
    let listing = listing(&cmds);
    if dry_run {
        return Ok(format!(
            "# would run:\n{listing}\n# and remove {}\n",
            file.display()
        ));
    }
    if !file.exists() {
        return Ok(format!(
            "not installed ({} does not exist)\n",
            file.display()
        ));
    }
    if tool_present(manager.tool()) {
        run_all(&cmds)?;
    }
    std::fs::remove_file(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(format!("stopped and removed {}\n", file.display()))
}

/// Commands as shown to a person, one per line.
fn listing(cmds: &[Vec<String>]) -> String {
    cmds.iter()
        .map(|c| format!("  {}", c.join(" ")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_all(cmds: &[Vec<String>]) -> Result<(), String> {
    for c in cmds {
        let status = std::process::Command::new(&c[0])
            .args(&c[1..])
            .status()
            .map_err(|e| format!("{}: {e}", c.join(" ")))?;
        if !status.success() {
            return Err(format!("`{}` failed ({status})", c.join(" ")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            exe: PathBuf::from("/opt/my tools/neurolink"),
            args: ["proxy", "start", "--port", "55669", "--host", "127.0.0.1"]
                .map(String::from)
                .to_vec(),
            env: vec![("NEUROLINK_HOME".into(), "/home/a/.neurolink".into())],
            neurolink_home: PathBuf::from("/home/a/.neurolink"),
        }
    }

    #[test]
    fn systemd_unit_restarts_on_failure_and_quotes_paths() {
        let u = render_systemd(&spec());
        assert!(
            u.contains(
                "ExecStart=\"/opt/my tools/neurolink\" proxy start --port 55669 --host 127.0.0.1\n"
            ),
            "{u}"
        );
        assert!(u.contains("Restart=on-failure\nRestartSec=5\n"), "{u}");
        assert!(
            u.contains("Environment=NEUROLINK_HOME=/home/a/.neurolink\n"),
            "{u}"
        );
        assert!(
            u.contains("EnvironmentFile=-/home/a/.neurolink/.env\n"),
            "{u}"
        );
        assert!(u.contains("[Install]\nWantedBy=default.target"), "{u}");
        assert_eq!(systemd_quote("50%"), "50%%");
    }

    /// systemd expands `$VAR` in `ExecStart=`: a `$` in a path must reach the program as `$`.
    #[test]
    fn a_dollar_in_a_path_is_kept_literal_in_exec_start() {
        let mut s = spec();
        s.exe = PathBuf::from("/home/a/$HOME/neurolink");
        s.args = ["proxy", "start", "--config", "/cfg/${X} y.yaml"]
            .map(String::from)
            .to_vec();
        let u = render_systemd(&s);
        assert!(
            u.contains(
                r#"ExecStart=/home/a/$$HOME/neurolink proxy start --config "/cfg/$${X} y.yaml""#
            ),
            "{u}"
        );
        // Environment= does not expand `$`: left as is there.
        s.env = vec![("CLAUDE_CONFIG_DIR".into(), "/c/$d".into())];
        assert!(render_systemd(&s).contains("Environment=CLAUDE_CONFIG_DIR=/c/$d\n"));
    }

    #[test]
    fn launchd_plist_keeps_alive_with_a_five_second_throttle() {
        let p = render_launchd(&spec());
        assert!(
            p.contains("<key>Label</key>\n  <string>com.neurolink.proxy</string>"),
            "{p}"
        );
        assert!(p.contains("<string>/opt/my tools/neurolink</string>\n    <string>proxy</string>\n    <string>start</string>"), "{p}");
        assert!(p.contains("<key>KeepAlive</key>\n  <true/>"), "{p}");
        assert!(
            p.contains("<key>ThrottleInterval</key>\n  <integer>5</integer>"),
            "{p}"
        );
        assert!(
            p.contains("<key>NEUROLINK_HOME</key>\n    <string>/home/a/.neurolink</string>"),
            "{p}"
        );
    }

    #[test]
    fn dry_run_prints_file_and_commands() {
        let out = install(Manager::Systemd, &spec(), Path::new("/home/a"), true).unwrap();
        assert!(out.contains("would write"), "{out}");
        assert!(
            out.contains("systemctl --user enable --now neurolink-proxy.service"),
            "{out}"
        );
        let out = install(Manager::Launchd, &spec(), Path::new("/Users/a"), true).unwrap();
        assert!(
            out.contains("/Users/a/Library/LaunchAgents/com.neurolink.proxy.plist"),
            "{out}"
        );
        let uid = rustix::process::getuid().as_raw();
        assert!(
            out.contains(&format!(
                "launchctl bootstrap gui/{uid} /Users/a/Library/LaunchAgents/com.neurolink.proxy.plist"
            )),
            "{out}"
        );
        let out = uninstall(Manager::Launchd, Path::new("/Users/a"), true).unwrap();
        assert!(
            out.contains(&format!("launchctl bootout gui/{uid}/com.neurolink.proxy")),
            "{out}"
        );
    }

    #[test]
    fn systemd_analyze_accepts_the_unit_where_present() {
        if !tool_present("systemd-analyze") {
            // Not on this machine: rendering is still pinned by the test above.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec();
        s.exe = std::env::current_exe().unwrap();
        let p = dir.path().join(SYSTEMD_UNIT);
        std::fs::write(&p, render_systemd(&s)).unwrap();
        // System-mode verification checks the same syntax and needs no user session.
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("Failed to initialize manager") {
            return; // no systemd to ask in this environment
        }
        assert!(out.status.success(), "systemd-analyze verify: {err}");
    }
}
