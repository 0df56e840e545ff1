//! How each provider link has served since the daemon started, and which ones asked to wait.
//!
//! A link that answered 429 (or 529) with a wait is skipped until then, like a cooling account;
//! without a wait it is tried again on the next request (a provider is one endpoint, and the
//! next request may well get through).

use std::collections::BTreeMap;
use std::sync::Mutex;

use neurolink_shared::ipc::methods::ProviderView;

use crate::clock::{rfc3339, Millis};
use crate::translate::TokenUsage;

#[derive(Debug, Default, Clone)]
struct Entry {
    requests: u64,
    successes: u64,
    failures: u64,
    input_tokens: u64,
    output_tokens: u64,
    last_error: Option<String>,
    cooling_until: Option<Millis>,
}

/// Per-link counters, by `provider/model`.
#[derive(Debug, Default)]
pub struct ProviderStats {
    links: Mutex<BTreeMap<String, Entry>>,
}

impl ProviderStats {
    fn with<R>(&self, link: &str, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        f(links.entry(link.to_string()).or_default())
    }

    /// Whether `link` asked to be left alone until later than `now`.
    pub fn cooling(&self, link: &str, now: Millis) -> bool {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .get(link)
            .and_then(|e| e.cooling_until)
            .is_some_and(|until| until > now)
    }

    pub fn success(&self, link: &str, usage: TokenUsage) {
        self.with(link, |e| {
            e.requests += 1;
            e.successes += 1;
            e.input_tokens += usage.input + usage.cache_read;
            e.output_tokens += usage.output;
            e.cooling_until = None;
        });
    }

    /// A failed attempt; `wait_until` when the provider said how long to wait.
    pub fn failure(&self, link: &str, message: &str, wait_until: Option<Millis>) {
        self.with(link, |e| {
            e.requests += 1;
            e.failures += 1;
            e.last_error = Some(message.to_string());
            if wait_until.is_some() {
                e.cooling_until = wait_until;
            }
        });
    }

    /// Every link used so far.
    pub fn views(&self, now: Millis) -> Vec<ProviderView> {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .iter()
            .map(|(link, e)| ProviderView {
                link: link.clone(),
                requests: e.requests,
                successes: e.successes,
                failures: e.failures,
                input_tokens: e.input_tokens,
                output_tokens: e.output_tokens,
                last_error: e.last_error.clone(),
                cooling_until: e.cooling_until.filter(|&u| u > now).map(rfc3339),
            })
            .collect()
    }
}
