//! Per-account counters shown in `/status`.

use std::collections::BTreeMap;

use serde::Serialize;

/// Token usage of one answer, read from the stream as it passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

impl Usage {
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Attempts sent to this account.
    pub requests: u64,
    pub successes: u64,
    /// Failed attempts by class (`rate_limit`, `auth`, `server_error`, `network`, `timeout`,
    /// `empty_stream`, `policy_rejected`, `unretryable`, `stream_error`).
    pub errors: BTreeMap<&'static str, u64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

impl Counters {
    pub fn add_usage(&mut self, u: Usage) {
        self.input_tokens += u.input_tokens;
        self.output_tokens += u.output_tokens;
        self.cache_creation_input_tokens += u.cache_creation_input_tokens;
        self.cache_read_input_tokens += u.cache_read_input_tokens;
    }

    /// Add another account's counters (for totals).
    pub fn absorb(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.successes += other.successes;
        for (class, n) in &other.errors {
            *self.errors.entry(class).or_default() += n;
        }
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_creation_input_tokens += other.cache_creation_input_tokens;
        self.cache_read_input_tokens += other.cache_read_input_tokens;
    }

    pub fn add_error(&mut self, class: &'static str) {
        *self.errors.entry(class).or_default() += 1;
    }
}
