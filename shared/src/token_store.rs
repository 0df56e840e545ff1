//! NeuroLink's account files: the multi-account `tokens.json` and the legacy single-account
//! `anthropic-credentials.json` (NeuroLink's formats; the obfuscation test vector is in the tests below).
//!
//! `tokens.json` is normally obfuscated: `base64(xor(json, hex(sha256(home + "-neurolink-token-store"))))`,
//! where the XOR runs over UTF-16 code units of which only the low byte is kept. We decode both that
//! and the plain form, and encode with every non-ASCII character escaped so the low-byte step is
//! lossless. Fields we do not know are kept in `extra` so a rewrite preserves them.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Secret;

/// `expiresAt` NeuroLink writes for API keys (`Number.MAX_SAFE_INTEGER`).
pub const NEVER_EXPIRES_MS: i64 = 9_007_199_254_740_991;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenStoreFile {
    pub version: String,
    pub last_modified: i64,
    pub providers: serde_json::Map<String, serde_json::Value>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One `providers.<key>` entry.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEntry {
    pub tokens: StoredTokens,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub last_accessed: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for StoredEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredEntry")
            .field("tokens", &self.tokens)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredTokens {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub expires_at: i64,
    #[serde(default)]
    pub token_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTokens")
            .field("access_token", &Secret::new(self.access_token.clone()))
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("expires_at", &self.expires_at)
            .field("token_type", &self.token_type)
            .finish_non_exhaustive()
    }
}

impl StoredTokens {
    /// NeuroLink treats `tokenType == "Bearer"` as OAuth and anything else as an API key.
    pub fn is_oauth(&self) -> bool {
        self.token_type == "Bearer"
    }

    /// The `email:<address>` token NeuroLink appends to `scope` at login.
    pub fn email(&self) -> Option<&str> {
        self.scope
            .as_deref()?
            .split_whitespace()
            .find_map(|t| t.strip_prefix("email:"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a token store: {reason}", path.display())]
    Decode { path: PathBuf, reason: String },
    #[error("{}:{line}:{column}: {message}{}", path.display(), if *obfuscated { " (position in the decoded text)" } else { "" })]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        obfuscated: bool,
    },
}

impl StoreError {
    /// A JSON error in `path`, with serde's own " at line N column M" left to the position fields.
    fn parse(path: &Path, e: &serde_json::Error, obfuscated: bool) -> Self {
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string();
        StoreError::Parse {
            path: path.into(),
            line: e.line(),
            column: e.column(),
            message,
            obfuscated,
        }
    }
}

/// The 64 ASCII bytes of the XOR key for `home` (NeuroLink's `deriveEncryptionKey`).
pub fn obfuscation_key(home: &str) -> [u8; 64] {
    let digest = Sha256::digest(format!("{home}-neurolink-token-store").as_bytes());
    let mut key = [0u8; 64];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in digest.iter().enumerate() {
        key[2 * i] = HEX[(b >> 4) as usize];
        key[2 * i + 1] = HEX[(b & 0xf) as usize];
    }
    key
}

/// Decode file content to JSON text. Returns the text and whether it was obfuscated.
pub fn decode(content: &str, home: &str) -> Result<(String, bool), String> {
    let trimmed = content.trim();
    if trimmed.starts_with('{') {
        return Ok((trimmed.to_string(), false));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .map_err(|e| format!("neither JSON nor base64 ({e})"))?;
    let key = obfuscation_key(home);
    // Latin-1: each byte is the code point of the same value.
    let text: String = bytes
        .iter()
        .enumerate()
        .map(|(i, b)| char::from(b ^ key[i % 64]))
        .collect();
    Ok((text, true))
}

/// Encode JSON text the way NeuroLink reads it. Non-ASCII characters must already be escaped
/// (see [`to_ascii_json`]).
pub fn encode(json_ascii: &str, home: &str) -> String {
    let key = obfuscation_key(home);
    let bytes: Vec<u8> = json_ascii
        .bytes()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 64])
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Compact JSON with every non-ASCII character written as `\uXXXX`.
pub fn to_ascii_json(value: &impl Serialize) -> Result<String, serde_json::Error> {
    let text = serde_json::to_string(value)?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    Ok(out)
}

/// Decode and parse store file content read from `path`; returns whether it was obfuscated.
fn parse_content(
    path: &Path,
    content: &str,
    home: &str,
) -> Result<(TokenStoreFile, bool), StoreError> {
    let (text, obfuscated) = decode(content, home).map_err(|reason| StoreError::Decode {
        path: path.into(),
        reason,
    })?;
    let file = serde_json::from_str(&text).map_err(|e| StoreError::parse(path, &e, obfuscated))?;
    Ok((file, obfuscated))
}

/// Read `tokens.json`. `Ok(None)` when the file does not exist.
pub fn read_store(path: &Path, home: &str) -> Result<Option<TokenStoreFile>, StoreError> {
    let content = match std::fs::read_to_string(path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.into(),
                source,
            })
        }
    };
    parse_content(path, &content, home).map(|(file, _)| Some(file))
}

/// An Anthropic account found in the store.
#[derive(Debug, Clone)]
pub struct StoredAccount {
    /// The store key, e.g. `anthropic:alice@example.com`.
    pub key: String,
    /// The label: text after `anthropic:`.
    pub label: String,
    pub entry: StoredEntry,
}

/// Every `anthropic:<label>` entry, in file order. An entry that does not have the expected shape
/// is reported in `problems` and skipped, so one bad entry does not hide the others.
pub fn anthropic_accounts(file: &TokenStoreFile, problems: &mut Vec<String>) -> Vec<StoredAccount> {
    file.providers
        .iter()
        .filter_map(|(key, value)| {
            let label = key.strip_prefix("anthropic:")?;
            match serde_json::from_value::<StoredEntry>(value.clone()) {
                Ok(entry) if !entry.tokens.access_token.is_empty() => Some(StoredAccount {
                    key: key.clone(),
                    label: label.to_string(),
                    entry,
                }),
                Ok(_) => {
                    problems.push(format!(
                        "tokens.json: `providers.{key}.tokens.accessToken` is empty; skipped"
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!(
                        "tokens.json: `providers.{key}` is not a valid entry ({e}); skipped"
                    ));
                    None
                }
            }
        })
        .collect()
}

/// The legacy `anthropic-credentials.json`.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyCredentials {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub oauth: Option<LegacyOAuth>,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyOAuth {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_at: Option<i64>,
}

pub fn read_legacy(path: &Path) -> Result<Option<LegacyCredentials>, StoreError> {
    let content = match std::fs::read_to_string(path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.into(),
                source,
            })
        }
    };
    serde_json::from_str(&content)
        .map(Some)
        .map_err(|e| StoreError::parse(path, &e, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_HOME: &str = "/home/alice";
    const VECTOR_PLAIN: &str = r#"{"version":"2.0","lastModified":1,"providers":{}}"#;
    const VECTOR_FILE: &str =
        "TxYQAxFDWllaElsaVxoEGx9DVVJARXkLUg1RCARWQFhUHkMSQwtFCgJXFBIbWB5KTQ==";

    #[test]
    fn key_matches_the_protocol_test_vector() {
        let key = obfuscation_key(VECTOR_HOME);
        assert_eq!(
            std::str::from_utf8(&key).unwrap(),
            "44ffc03640a8e4493a93314d6d7aa2bbe2ab1d3cf2fa9be704f74fac300a4c23"
        );
    }

    #[test]
    fn decodes_and_encodes_the_test_vector() {
        assert_eq!(
            decode(VECTOR_FILE, VECTOR_HOME).unwrap(),
            (VECTOR_PLAIN.to_string(), true)
        );
        assert_eq!(encode(VECTOR_PLAIN, VECTOR_HOME), VECTOR_FILE);
    }

    #[test]
    fn non_ascii_survives_a_round_trip() {
        let v = serde_json::json!({"version":"2.0","lastModified":1,"providers":{"anthropic:é":{"x":"日本"}}});
        let ascii = to_ascii_json(&v).unwrap();
        assert!(ascii.is_ascii());
        let file = encode(&ascii, VECTOR_HOME);
        let (text, _) = decode(&file, VECTOR_HOME).unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn unknown_fields_are_kept() {
        let text = r#"{"version":"2.0","lastModified":5,"future":1,"providers":{"anthropic:a":{"tokens":{"accessToken":"t","expiresAt":1,"tokenType":"Bearer","newField":"keep"},"createdAt":1,"lastAccessed":1,"other":true}}}"#;
        let file: TokenStoreFile = serde_json::from_str(text).unwrap();
        let accounts = anthropic_accounts(&file, &mut Vec::new());
        assert_eq!(accounts[0].entry.tokens.extra["newField"], "keep");
        assert_eq!(accounts[0].entry.extra["other"], true);
        let again = serde_json::to_value(&file).unwrap();
        assert_eq!(again["future"], 1);
    }

    #[test]
    fn plain_json_store_and_parse_error_position() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.json");
        std::fs::write(&p, "{\n  \"version\": \"2.0\",\n  oops\n}").unwrap();
        let err = read_store(&p, "/h").unwrap_err().to_string();
        assert!(err.contains("tokens.json:3:"), "{err}");
        assert!(read_store(&dir.path().join("absent.json"), "/h")
            .unwrap()
            .is_none());
    }
}

/// How long a writer waits for another process holding the store's lock.
pub const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] crate::atomic_file::LockError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the token store: {0}")]
    Encode(#[from] serde_json::Error),
}

/// `tokens.json` as a store shared between processes: every change is a locked
/// read-modify-write, and a file that does not parse is never overwritten.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
    /// `$HOME` as NeuroLink derives the obfuscation key from it.
    home: String,
}

/// A store held under its lock: read it, change it, write it, then drop to release.
pub struct Locked {
    store: Store,
    _lock: crate::atomic_file::FileLock,
    pub file: TokenStoreFile,
}

impl Store {
    pub fn new(path: PathBuf, home: String) -> Self {
        Self { path, home }
    }

    /// The store of a NeuroLink home, keyed by the process's `$HOME`.
    pub fn for_paths(paths: &crate::paths::Paths) -> Self {
        let home = crate::paths::home_dir()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::new(paths.tokens(), home)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read without locking (a snapshot; writers replace the file atomically).
    pub fn read(&self) -> Result<Option<TokenStoreFile>, StoreError> {
        read_store(&self.path, &self.home)
    }

    /// Take the lock and read the current content (an empty store when the file is missing).
    /// Blocking: call from a thread that may block.
    pub fn lock(&self) -> Result<Locked, UpdateError> {
        let lock = crate::atomic_file::FileLock::acquire(&self.path, LOCK_TIMEOUT)?;
        let content = match std::fs::read_to_string(&self.path) {
            Ok(c) => Some(c),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(StoreError::Read {
                    path: self.path.clone(),
                    source,
                }
                .into())
            }
        };
        let file = match content {
            None => TokenStoreFile::empty(),
            Some(c) => parse_content(&self.path, &c, &self.home)?.0,
        };
        Ok(Locked {
            store: self.clone(),
            _lock: lock,
            file,
        })
    }

    /// Locked read-modify-write: `change` edits the current content; it is written back
    /// obfuscated unless `change` returns `Err`. A plain store (NeuroLink reads one too; a
    /// hand-edited file may be one) is obfuscated by its first rewrite, so no token that this
    /// proxy wrote sits in plain text where a `grep` or a backup would show it.
    pub fn update<R, E>(
        &self,
        change: impl FnOnce(&mut TokenStoreFile) -> Result<R, E>,
    ) -> Result<Result<R, E>, UpdateError> {
        let mut locked = self.lock()?;
        match change(&mut locked.file) {
            Ok(r) => {
                locked.write()?;
                Ok(Ok(r))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

impl Locked {
    /// Write the (changed) content back, still under the lock.
    pub fn write(&mut self) -> Result<(), UpdateError> {
        self.file.last_modified = now_ms();
        let data = encode(&to_ascii_json(&self.file)?, &self.store.home);
        crate::atomic_file::write_private(&self.store.path, data.as_bytes()).map_err(|source| {
            UpdateError::Write {
                path: self.store.path.clone(),
                source,
            }
        })
    }

    /// The typed entry `anthropic:<label>`, if present and well-formed.
    pub fn entry(&self, label: &str) -> Option<StoredEntry> {
        self.file.entry(label)
    }
}

impl TokenStoreFile {
    pub fn empty() -> Self {
        Self {
            version: "2.0".into(),
            last_modified: now_ms(),
            providers: serde_json::Map::new(),
            extra: serde_json::Map::new(),
        }
    }

    pub fn entry(&self, label: &str) -> Option<StoredEntry> {
        let v = self.providers.get(&format!("anthropic:{label}"))?;
        serde_json::from_value(v.clone()).ok()
    }

    /// Replace the entry `anthropic:<label>`, keeping fields of the old one that the typed entry
    /// does not know about.
    pub fn set_entry(&mut self, label: &str, entry: &StoredEntry) -> Result<(), serde_json::Error> {
        let value = serde_json::to_value(entry)?;
        self.providers.insert(format!("anthropic:{label}"), value);
        Ok(())
    }
}

impl StoredEntry {
    /// Persistently disable (NeuroLink's `markDisabled`).
    pub fn disable(&mut self, reason: &str) {
        self.disabled = Some(true);
        self.disabled_at = Some(now_ms());
        self.disabled_reason = Some(reason.to_string());
    }

    /// NeuroLink's `markEnabled`: `disabled: false`, reason and time removed.
    pub fn enable(&mut self) {
        self.disabled = Some(false);
        self.disabled_at = None;
        self.disabled_reason = None;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod store_tests {
    use super::*;

    const FIXTURE: &str = r#"{"version":"2.0","lastModified":1,"future":{"x":1},"providers":{"anthropic:alice@example.com":{"tokens":{"accessToken":"at-1","refreshToken":"rt-1","expiresAt":5,"tokenType":"Bearer","scope":"user:inference email:alice@example.com","newTokenField":true},"createdAt":1,"lastAccessed":2,"otherField":"kept"},"openai:x":{"tokens":{"accessToken":"o"}}}}"#;

    fn store(dir: &Path, content: Option<&str>) -> Store {
        let s = Store::new(dir.join("tokens.json"), "/home/alice".into());
        if let Some(c) = content {
            std::fs::write(s.path(), c).unwrap();
        }
        s
    }

    #[test]
    fn update_keeps_unknown_fields_and_obfuscates_a_plain_store() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), Some(FIXTURE));
        s.update(|f| {
            let mut e = f.entry("alice@example.com").unwrap();
            e.tokens.access_token = "at-2".into();
            f.set_entry("alice@example.com", &e)
        })
        .unwrap()
        .unwrap();
        let text = std::fs::read_to_string(s.path()).unwrap();
        assert!(
            !text.contains("at-2"),
            "a plain store is obfuscated: {text}"
        );
        let (json, obfuscated) = decode(&text, "/home/alice").unwrap();
        assert!(obfuscated);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["future"]["x"], 1);
        assert_eq!(v["providers"]["openai:x"]["tokens"]["accessToken"], "o");
        let a = &v["providers"]["anthropic:alice@example.com"];
        assert_eq!(a["tokens"]["accessToken"], "at-2");
        assert_eq!(a["tokens"]["newTokenField"], true);
        assert_eq!(a["otherField"], "kept");
    }

    #[test]
    fn obfuscated_store_stays_obfuscated_and_new_stores_are_obfuscated() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), Some(&encode(FIXTURE, "/home/alice")));
        s.update(|_| Ok::<_, ()>(())).unwrap().unwrap();
        let text = std::fs::read_to_string(s.path()).unwrap();
        assert!(!text.contains("alice"), "still obfuscated");
        assert!(s
            .read()
            .unwrap()
            .unwrap()
            .providers
            .contains_key("anthropic:alice@example.com"));

        let fresh = tempfile::tempdir().unwrap();
        let s = store(fresh.path(), None);
        s.update(|f| {
            let e: StoredEntry = serde_json::from_value(serde_json::json!({"tokens":{"accessToken":"a","expiresAt":1,"tokenType":"api-key"}})).unwrap();
            f.set_entry("k", &e)
        })
        .unwrap()
        .unwrap();
        let (text, obfuscated) =
            decode(&std::fs::read_to_string(s.path()).unwrap(), "/home/alice").unwrap();
        assert!(obfuscated);
        assert!(text.contains("anthropic:k"));
    }

    #[test]
    fn unparsable_store_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), Some("{\"version\": oops"));
        let err = s.update(|_| Ok::<_, ()>(())).unwrap_err().to_string();
        assert!(err.contains("tokens.json:1:"), "{err}");
        assert_eq!(
            std::fs::read_to_string(s.path()).unwrap(),
            "{\"version\": oops"
        );
    }

    #[test]
    fn concurrent_updates_from_threads_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), None);
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for j in 0..10 {
                        s.update(|f| {
                            f.providers
                                .insert(format!("test:{i}-{j}"), serde_json::json!(1));
                            Ok::<_, ()>(())
                        })
                        .unwrap()
                        .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(
            s.read().unwrap().unwrap().providers.len(),
            80,
            "no lost update"
        );
    }

    #[test]
    fn disable_and_enable_follow_neurolink() {
        let mut e: StoredEntry = serde_json::from_value(
            serde_json::json!({"tokens":{"accessToken":"a","expiresAt":1,"tokenType":"Bearer"}}),
        )
        .unwrap();
        e.disable("refresh_failed");
        assert_eq!(
            (e.disabled, e.disabled_reason.as_deref()),
            (Some(true), Some("refresh_failed"))
        );
        e.enable();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["disabled"], false);
        assert!(v.get("disabledReason").is_none() && v.get("disabledAt").is_none());
    }
}
