//! Every secret the fakes issued or were handed, and a scan of a folder for them in plain text.
//!
//! The fake OAuth server notes each access token, refresh token, authorization code and minted
//! API key it gives out, and each refresh token a test registers with it; the harness notes the
//! tokens a test plants in a `tokens.json`. When a [`TestHome`](crate::harness::TestHome) is
//! dropped it scans every file under it (logs, state files, the token store, Claude's settings
//! and backups, whatever the run wrote) for every secret noted so far by any test in the process,
//! and fails the test on a hit. Files the test planted itself and left unchanged are skipped.
//!
//! A secret matches only as a whole token: the bytes around it must not be letters, digits, `-`
//! or `_`, so `at-1` is found in `"at-1"` but not in `format-10`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static NOTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Remember `secret`: no file under a temp home may show it.
pub fn note(secret: &str) {
    if !secret.is_empty() {
        NOTED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(secret.to_string());
    }
}

/// Every secret noted so far.
pub fn noted() -> Vec<String> {
    NOTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// A secret found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    pub secret: String,
}

/// Every noted secret in every file under `dir`, skipping the files in `planted` whose content
/// is still what the test wrote (`Some`), or whatever it is now (`None`: a file that is plain text
/// by its format, which the proxy keeps in that format).
pub fn scan(dir: &Path, planted: &HashMap<PathBuf, Option<Vec<u8>>>) -> Vec<Finding> {
    let secrets = noted();
    let mut findings = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if !kind.is_file() {
                continue; // sockets, pipes, links
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if planted
                .get(&path)
                .is_some_and(|p| p.as_ref().is_none_or(|p| *p == bytes))
            {
                continue;
            }
            for s in &secrets {
                if contains_token(&bytes, s.as_bytes()) {
                    findings.push(Finding {
                        path: path.clone(),
                        secret: s.clone(),
                    });
                }
            }
        }
    }
    findings
}

/// Whether `needle` occurs in `hay` as a whole token.
pub fn contains_token(hay: &[u8], needle: &[u8]) -> bool {
    let part = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if needle.is_empty() || hay.len() < needle.len() {
        return false;
    }
    (0..=hay.len() - needle.len()).any(|i| {
        hay[i..].starts_with(needle)
            && (i == 0 || !part(hay[i - 1]))
            && hay.get(i + needle.len()).is_none_or(|b| !part(*b))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_matches_only_as_a_whole_token() {
        assert!(contains_token(br#"{"accessToken":"at-1"}"#, b"at-1"));
        assert!(contains_token(b"at-1", b"at-1"));
        assert!(contains_token(b"token at-1\n", b"at-1"));
        assert!(!contains_token(b"format-1", b"at-1"));
        assert!(!contains_token(b"at-10", b"at-1"));
        assert!(!contains_token(b"at_1", b"at-1"));
        assert!(!contains_token(b"", b"at-1"));
    }

    #[test]
    fn the_scan_finds_a_noted_secret_in_any_file_but_an_unchanged_planted_one() {
        let dir = tempfile::tempdir().unwrap();
        note("sk-scan-self-test-1");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("daemon.log"), "refreshed sk-scan-self-test-1 ok").unwrap();
        let planted_path = dir.path().join("tokens.json");
        let planted = br#"{"t":"sk-scan-self-test-1"}"#.to_vec();
        std::fs::write(&planted_path, &planted).unwrap();
        let mut skip = HashMap::new();
        skip.insert(planted_path.clone(), Some(planted));

        let found = scan(dir.path(), &skip);
        assert_eq!(
            found,
            vec![Finding {
                path: logs.join("daemon.log"),
                secret: "sk-scan-self-test-1".into()
            }]
        );

        // Rewritten by the run, the planted file is scanned like any other.
        std::fs::write(&planted_path, r#"{"t":"sk-scan-self-test-1","n":2}"#).unwrap();
        assert_eq!(scan(dir.path(), &skip).len(), 2);
    }
}
