//! `account-quotas.json`: the last unified 5h/7d utilisation seen per account, in NeuroLink's
//! format (docs/formats.md), keyed by account label.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountQuota {
    /// 5-hour window utilisation, 0.0-1.0 (may exceed 1).
    pub session_used: f64,
    pub session_status: String,
    /// Epoch seconds.
    pub session_reset_at: i64,
    /// 7-day window utilisation.
    pub weekly_used: f64,
    pub weekly_status: String,
    pub weekly_reset_at: i64,
    pub fallback_percentage: f64,
    pub overage_status: String,
    /// Epoch milliseconds when captured.
    pub last_updated: i64,
    /// Fields written by other versions, kept on rewrite.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl AccountQuota {
    /// Read the unified rate-limit headers of one answer. `None` unless both window utilisations
    /// are present and numeric (NeuroLink writes an entry only then).
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>, now_ms: i64) -> Option<Self> {
        let num = |name: &str| get(name).and_then(|v| v.trim().parse::<f64>().ok());
        let int = |name: &str| {
            get(name)
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(0)
        };
        let text = |name: &str| get(name).unwrap_or("unknown").to_string();
        Some(Self {
            session_used: num("anthropic-ratelimit-unified-5h-utilization")?,
            session_status: text("anthropic-ratelimit-unified-5h-status"),
            session_reset_at: int("anthropic-ratelimit-unified-5h-reset"),
            weekly_used: num("anthropic-ratelimit-unified-7d-utilization")?,
            weekly_status: text("anthropic-ratelimit-unified-7d-status"),
            weekly_reset_at: int("anthropic-ratelimit-unified-7d-reset"),
            fallback_percentage: num("anthropic-ratelimit-unified-fallback-percentage")
                .unwrap_or(0.0),
            overage_status: text("anthropic-ratelimit-unified-overage-status"),
            last_updated: now_ms,
            extra: serde_json::Map::new(),
        })
    }

    /// The larger of the two window utilisations.
    pub fn max_used(&self) -> f64 {
        self.session_used.max(self.weekly_used)
    }
}

pub type Quotas = BTreeMap<String, AccountQuota>;

/// Read the file; a missing file is empty, a broken one is an error naming path, line and column.
pub fn read(path: &Path) -> Result<Quotas, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Quotas::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Write the file (pretty JSON, 0600, atomically).
pub fn write(path: &Path, quotas: &Quotas) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(quotas).map_err(std::io::Error::other)?;
    crate::atomic_file::write_private(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_captured_header_set() {
        let headers = [
            ("anthropic-ratelimit-unified-5h-reset", "1785518400"),
            ("anthropic-ratelimit-unified-5h-status", "rejected"),
            ("anthropic-ratelimit-unified-5h-utilization", "1.01"),
            ("anthropic-ratelimit-unified-7d-reset", "1786006800"),
            ("anthropic-ratelimit-unified-7d-status", "allowed"),
            ("anthropic-ratelimit-unified-7d-utilization", "0.69"),
            ("anthropic-ratelimit-unified-fallback-percentage", "0.5"),
            ("anthropic-ratelimit-unified-overage-status", "rejected"),
        ];
        let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        let q = AccountQuota::from_headers(get, 7).unwrap();
        assert_eq!(
            (q.session_used, q.weekly_used, q.session_reset_at),
            (1.01, 0.69, 1785518400)
        );
        assert_eq!(
            (q.session_status.as_str(), q.overage_status.as_str()),
            ("rejected", "rejected")
        );
        assert_eq!(q.last_updated, 7);
        assert_eq!(q.max_used(), 1.01);
        assert!(AccountQuota::from_headers(|_| None, 0).is_none());
    }

    #[test]
    fn file_round_trip_keeps_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("account-quotas.json");
        std::fs::write(&p, r#"{"a@x":{"sessionUsed":0.4,"sessionStatus":"allowed","sessionResetAt":1,"weeklyUsed":0.1,"weeklyStatus":"allowed","weeklyResetAt":2,"fallbackPercentage":0.5,"overageStatus":"rejected","lastUpdated":3,"future":true}}"#).unwrap();
        let q = read(&p).unwrap();
        write(&p, &q).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v["a@x"]["future"], true);
        assert_eq!(v["a@x"]["sessionUsed"], 0.4);
        assert!(read(&dir.path().join("none.json")).unwrap().is_empty());
    }
}
