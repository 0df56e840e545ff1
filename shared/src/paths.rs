//! Every file location the project uses, resolved once from the environment.
//!
//! `NEUROLINK_HOME` overrides `~/.neurolink` (tests point it at a temp dir); `CLAUDE_CONFIG_DIR`
//! overrides `~/.claude`. Nothing else in the workspace builds these paths by hand.

use std::path::{Path, PathBuf};

/// The user's home directory as NeuroLink sees it (`$HOME`). The token store's obfuscation key is
/// derived from this string, so it must match Node's `os.homedir()` on POSIX.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// The files of one NeuroLink home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `$NEUROLINK_HOME`, else `~/.neurolink`.
    pub home: PathBuf,
}

impl Paths {
    /// Resolve from `NEUROLINK_HOME` / `HOME`. Falls back to `./.neurolink` when neither is set.
    pub fn from_env() -> Self {
        let home = match std::env::var_os("NEUROLINK_HOME").filter(|h| !h.is_empty()) {
            Some(h) => PathBuf::from(h),
            None => home_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".neurolink"),
        };
        Self { home }
    }

    pub fn at(home: impl Into<PathBuf>) -> Self {
        Self { home: home.into() }
    }

    /// The config file to use when `--config` is not given: `proxy-config.yaml`, else
    /// `proxy-config.yml`, else `proxy-config.json`, else `None`.
    pub fn default_config(&self) -> Option<PathBuf> {
        self.config_candidates().into_iter().next()
    }

    /// Every default config file present, the one used first (`.yaml`, `.yml`, then `.json`).
    pub fn config_candidates(&self) -> Vec<PathBuf> {
        ["proxy-config.yaml", "proxy-config.yml", "proxy-config.json"]
            .iter()
            .map(|n| self.home.join(n))
            .filter(|p| p.is_file())
            .collect()
    }

    pub fn tokens(&self) -> PathBuf {
        self.home.join("tokens.json")
    }

    pub fn legacy_credentials(&self) -> PathBuf {
        self.home.join("anthropic-credentials.json")
    }

    pub fn quotas(&self) -> PathBuf {
        self.home.join("account-quotas.json")
    }

    pub fn state(&self) -> PathBuf {
        self.home.join("proxy-state.json")
    }

    pub fn logs(&self) -> PathBuf {
        self.home.join("logs")
    }

    pub fn socket(&self) -> PathBuf {
        self.home.join("daemon.sock")
    }
}

/// Claude Code's settings file: `$CLAUDE_CONFIG_DIR/settings.json`, else `~/.claude/settings.json`.
pub fn claude_settings() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CLAUDE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Some(Path::new(&dir).join("settings.json"));
    }
    home_dir().map(|h| h.join(".claude").join("settings.json"))
}
