//! Pointing Claude Code at the proxy: `env.ANTHROPIC_BASE_URL` (and the seed's
//! `ENABLE_TOOL_SEARCH`) in `$CLAUDE_CONFIG_DIR/settings.json` or `~/.claude/settings.json`, and
//! putting back exactly what was there when the proxy stops, or when the guard sees it die.
//!
//! Every other key and the key order are kept. A settings file that does not parse is left alone.
//! What was there before is remembered in `proxy-state.json` (`claudeSettings`), so the guard, a
//! separate process, can restore it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The keys the proxy manages under `env` (NeuroLink's `PROXY_MANAGED_KEYS`).
pub const BASE_URL_KEY: &str = "ANTHROPIC_BASE_URL";
pub const TOOL_SEARCH_KEY: &str = "ENABLE_TOOL_SEARCH";

/// What to put back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Saved {
    pub path: PathBuf,
    /// The file's exact text before; `None` when there was no file.
    pub original: Option<String>,
    /// The URL we wrote: restore only while it is still ours.
    pub url: String,
}

/// A settings file as read: its exact text and its parsed top level.
type Read = Option<(String, Map<String, Value>)>;

fn read(path: &Path) -> Result<Read, String> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(Some((text, Map::new()))),
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(Some((text, map))),
            Ok(_) => Err(format!("{}: not a JSON object", path.display())),
            Err(e) => Err(format!(
                "{}:{}:{}: {e}",
                path.display(),
                e.line(),
                e.column()
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write(path: &Path, map: &Map<String, Value>) -> Result<(), String> {
    let mut text = serde_json::to_string_pretty(map).map_err(|e| e.to_string())?;
    text.push('\n');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    neurolink_shared::atomic_file::write_private(path, text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Set our keys; returns what to restore later.
pub fn apply(path: &Path, url: &str) -> Result<Saved, String> {
    let (original, mut map) = match read(path)? {
        Some((text, map)) => (Some(text), map),
        None => (None, Map::new()),
    };
    let env = map
        .entry("env")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(env) = env else {
        return Err(format!(
            "{}: `env` is not an object; leaving the file alone",
            path.display()
        ));
    };
    env.insert(BASE_URL_KEY.into(), Value::String(url.into()));
    env.insert(TOOL_SEARCH_KEY.into(), Value::String("true".into()));
    write(path, &map)?;
    Ok(Saved {
        path: path.to_path_buf(),
        original,
        url: url.to_string(),
    })
}

/// Put back what [`apply`] changed, unless someone pointed Claude Code elsewhere meanwhile.
/// Changes the user made to other keys meanwhile are kept.
pub fn restore(saved: &Saved) -> Result<(), String> {
    let Some((_, mut current)) = read(&saved.path)? else {
        return Ok(());
    };
    let ours = current
        .get("env")
        .and_then(|e| e.get(BASE_URL_KEY))
        .and_then(Value::as_str)
        .is_some_and(|u| u == saved.url);
    if !ours {
        return Ok(());
    }
    let before: Map<String, Value> = match &saved.original {
        Some(text) if !text.trim().is_empty() => match serde_json::from_str(text) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        },
        _ => Map::new(),
    };
    let before_env = before.get("env").and_then(Value::as_object);
    if let Some(Value::Object(env)) = current.get_mut("env") {
        for key in [BASE_URL_KEY, TOOL_SEARCH_KEY] {
            match before_env.and_then(|e| e.get(key)) {
                Some(v) => {
                    env.insert(key.into(), v.clone());
                }
                None => {
                    env.shift_remove(key);
                }
            }
        }
        if env.is_empty() && before_env.is_none() {
            current.shift_remove("env");
        }
    }
    if current == before {
        // Nothing else changed: the file goes back byte for byte (or away, if there was none).
        return match &saved.original {
            Some(text) => {
                neurolink_shared::atomic_file::write_private(&saved.path, text.as_bytes())
                    .map_err(|e| format!("{}: {e}", saved.path.display()))
            }
            None => std::fs::remove_file(&saved.path)
                .map_err(|e| format!("{}: {e}", saved.path.display())),
        };
    }
    write(&saved.path, &current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_then_restore_gives_back_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("settings.json");
        let original = "{\n    \"model\": \"opus\",\n    \"env\": {\"FOO\": \"bar\", \"ANTHROPIC_BASE_URL\": \"http://127.0.0.1:9999\"},\n    \"z\": 1\n}\n";
        std::fs::write(&p, original).unwrap();
        let saved = apply(&p, "http://127.0.0.1:5").unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["env"][BASE_URL_KEY], "http://127.0.0.1:5");
        assert_eq!(v["env"][TOOL_SEARCH_KEY], "true");
        assert_eq!(v["env"]["FOO"], "bar");
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["model", "env", "z"], "key order kept");
        restore(&saved).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), original);
    }

    #[test]
    fn no_file_before_means_no_file_after_and_user_edits_survive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("settings.json");
        let saved = apply(&p, "http://127.0.0.1:1").unwrap();
        restore(&saved).unwrap();
        assert!(!p.exists());
        let saved = apply(&p, "http://127.0.0.1:1").unwrap();
        let mut v: Map<String, Value> =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        v.insert("theme".into(), "dark".into());
        std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
        restore(&saved).unwrap();
        let after: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(after, serde_json::json!({"theme": "dark"}));
    }

    #[test]
    fn a_url_changed_meanwhile_is_left_alone_and_broken_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("settings.json");
        let saved = apply(&p, "http://127.0.0.1:2").unwrap();
        std::fs::write(&p, r#"{"env":{"ANTHROPIC_BASE_URL":"http://127.0.0.1:3"}}"#).unwrap();
        restore(&saved).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("127.0.0.1:3"));
        std::fs::write(&p, "{ broken").unwrap();
        assert!(apply(&p, "http://127.0.0.1:1")
            .unwrap_err()
            .contains("settings.json:1:"));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{ broken");
    }
}
