//! Log cleanup (docs/design.md §8): at start and hourly, delete log files older than 7 days, then the
//! oldest while the folder is over 500 MB.

use std::path::Path;
use std::time::{Duration, SystemTime};

pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_TOTAL_BYTES: u64 = 500 * 1024 * 1024;
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// Ours: `proxy-*.jsonl` (NeuroLink's `proxy-attempts-*` and `proxy-debug-*` included).
fn is_log_file(name: &str) -> bool {
    name.starts_with("proxy-") && name.ends_with(".jsonl")
}

/// Apply the policy to `dir` as of `now`; returns the names removed.
pub fn cleanup(
    dir: &Path,
    now: SystemTime,
    max_age: Duration,
    max_total: u64,
) -> std::io::Result<Vec<String>> {
    let mut files: Vec<(String, SystemTime, u64)> = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_log_file(&name) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        files.push((name, meta.modified().unwrap_or(now), meta.len()));
    }
    files.sort_by_key(|(_, modified, _)| *modified);
    let mut removed = Vec::new();
    let mut total: u64 = files.iter().map(|(_, _, len)| len).sum();
    for (name, modified, len) in &files {
        let too_old = now.duration_since(*modified).is_ok_and(|age| age > max_age);
        if too_old || total > max_total {
            std::fs::remove_file(dir.join(name))?;
            total = total.saturating_sub(*len);
            removed.push(name.clone());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, bytes: usize, age: Duration) {
        let p = dir.join(name);
        std::fs::write(&p, vec![b'x'; bytes]).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn removes_old_files_then_oldest_while_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let day = Duration::from_secs(86_400);
        file(d, "proxy-2026-01-01.jsonl", 10, 8 * day);
        file(d, "proxy-debug-2026-01-02.jsonl", 10, 6 * day);
        file(d, "proxy-2026-01-03.jsonl", 10, 5 * day);
        file(d, "proxy-2026-01-04.jsonl", 10, day);
        file(d, "notes.txt", 10, 30 * day);
        let removed = cleanup(d, SystemTime::now(), MAX_AGE, 25).unwrap();
        assert_eq!(
            removed,
            ["proxy-2026-01-01.jsonl", "proxy-debug-2026-01-02.jsonl"]
        );
        assert!(d.join("notes.txt").exists(), "other files are left alone");
        assert!(
            d.join("proxy-2026-01-03.jsonl").exists() && d.join("proxy-2026-01-04.jsonl").exists()
        );
        assert!(cleanup(&d.join("missing"), SystemTime::now(), MAX_AGE, 1)
            .unwrap()
            .is_empty());
    }
}
