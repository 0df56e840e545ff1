//! JSON-RPC 2.0 over newline-delimited JSON. These types are the IPC boundary: change them with
//! care, and bump [`PROTOCOL_VERSION`] when an old client would misread a new daemon.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Sent by `hello`; a client that knows a different version warns.
///
/// 2: every `accounts.*` method and `auth.login.complete` answer `{account}`; account events say
/// what happened in `change` (`cooling`, `cooldown_ended`, ...) and why in `reason`.
pub const PROTOCOL_VERSION: u32 = 2;
/// The longest line either side accepts.
pub const MAX_LINE: usize = 1024 * 1024;

/// Standard JSON-RPC error codes, and ours (-32000 and below).
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL: i64 = -32603;
    /// The operation was understood but failed (a refresh, a login, a reload).
    pub const FAILED: i64 = -32000;
    /// No account with that label.
    pub const NO_SUCH_ACCOUNT: i64 = -32001;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub jsonrpc: String,
    /// Absent for notifications (which the daemon does not expect from clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

impl Request {
    pub fn new(id: u64, method: &str, params: Option<Value>) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id: Some(id.into()),
            method: method.into(),
            params,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub jsonrpc: String,
    pub id: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl Response {
    pub fn ok(id: Value, result: Value) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id,
            result: Some(result),
            error: None,
        }
    }
    pub fn err(id: Value, error: RpcError) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id,
            result: None,
            error: Some(error),
        }
    }
}

/// A message the daemon pushes to a subscriber: `{"jsonrpc":"2.0","method":"event","params":…}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    pub jsonrpc: String,
    pub method: String,
    pub params: Event,
}

impl Notification {
    pub fn event(params: Event) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            method: "event".into(),
            params,
        }
    }
}

/// Topics a client may subscribe to.
pub const TOPICS: &[&str] = &["accounts", "requests", "daemon"];

/// A topic of [`Event`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topic {
    Accounts,
    Requests,
    Daemon,
}

impl Topic {
    pub const ALL: [Topic; 3] = [Topic::Accounts, Topic::Requests, Topic::Daemon];
}

/// Where an account's state stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    /// Can take requests.
    Active,
    /// Waiting out a cooldown (`cooldownUntil`).
    Cooling,
    /// Not used until enabled again (`disabledReason` says why).
    Disabled,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Active => "active",
            AccountState::Cooling => "cooling",
            AccountState::Disabled => "disabled",
        }
    }
}

/// How an account authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    ApiKey,
    Oauth,
}

/// Where an account was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountSource {
    /// `tokens.json` (`neurolink auth login`).
    TokenStore,
    /// NeuroLink's older `anthropic-credentials.json`.
    LegacyCredentials,
    /// `ANTHROPIC_API_KEY` when the daemon started.
    Environment,
    /// `accounts.anthropic[]` of the config file.
    Config,
}

/// What happened to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountChange {
    /// An answer benched it (`reason`: the outcome class, e.g. `rate_limit`, `auth`).
    Cooling,
    /// Its cooldown ran out: usable again.
    CooldownEnded,
    /// Disabled (by a user, or after repeated refresh failures: `reason`).
    Disabled,
    Enabled,
    /// Cooldown and backoff cleared by a user.
    Reset,
    /// Its OAuth token was refreshed.
    Refreshed,
    /// A login or a config change added it.
    Added,
    /// It left the token store or the config.
    Removed,
    /// A change a newer daemon knows and this client does not.
    #[serde(other)]
    Other,
}

/// What a daemon event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonEventKind {
    ConfigReloaded,
    ConfigInvalid,
    Stopping,
    /// The last message a subscriber that fell behind receives; subscribe again (and resync).
    Lagged,
    #[serde(other)]
    Other,
}

/// What subscribers hear about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "topic", rename_all = "lowercase")]
pub enum Event {
    /// An account changed.
    Accounts {
        label: String,
        change: AccountChange,
        /// The account's state after the change.
        state: AccountState,
        /// Why, where there is more to say (an outcome class, a refresh error).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A request finished (boxed: records are much larger than the other events).
    Requests { record: Box<RequestRecord> },
    /// The daemon itself.
    Daemon {
        kind: DaemonEventKind,
        message: String,
    },
}

impl Event {
    pub fn topic(&self) -> Topic {
        match self {
            Event::Accounts { .. } => Topic::Accounts,
            Event::Requests { .. } => Topic::Requests,
            Event::Daemon { .. } => Topic::Daemon,
        }
    }

    /// An account event.
    pub fn account(
        label: impl Into<String>,
        change: AccountChange,
        state: AccountState,
        reason: Option<String>,
    ) -> Self {
        Event::Accounts {
            label: label.into(),
            change,
            state,
            reason,
        }
    }

    /// A daemon event.
    pub fn daemon(kind: DaemonEventKind, message: impl Into<String>) -> Self {
        Event::Daemon {
            kind,
            message: message.into(),
        }
    }
}

/// An account's label as records carry it: shared with the pool, not copied into every record
/// (a request's record was a third of its allocations). Serialized as a plain string.
pub type Label = std::sync::Arc<str>;

/// Text that is nearly always one of a few fixed strings (an outcome class, a method, a route),
/// borrowed then and owned otherwise. Serialized as a plain string.
pub type Name = std::borrow::Cow<'static, str>;

/// One attempt of a request on one account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    pub account: Label,
    /// `success`, `rate_limit`, `auth`, `server_error`, `network`, `timeout`...
    pub outcome: Name,
}

/// One finished client request (also a line of the request log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// RFC 3339.
    pub time: String,
    pub request_id: String,
    pub method: Name,
    pub path: Name,
    /// The model the client asked for, shared with the request that named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<std::sync::Arc<str>>,
    pub stream: bool,
    /// The account that answered, if any did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<Label>,
    pub status: u16,
    pub attempts: Vec<AttemptRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<u64>,
    pub total_ms: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
}

/// One account as `/status`, `accounts.list` and the dashboard show it. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub label: String,
    pub kind: CredentialKind,
    pub source: AccountSource,
    pub weight: u32,
    pub state: AccountState,
    /// RFC 3339, while cooling.
    pub cooldown_until: Option<String>,
    pub cooldown_remaining_secs: Option<u64>,
    pub backoff_level: u32,
    pub quota: Option<QuotaView>,
    /// RFC 3339, for OAuth accounts.
    pub token_expires_at: Option<String>,
    pub disabled_reason: Option<String>,
    pub last_error: Option<String>,
    pub excluded_models: Vec<String>,
    pub counters: CountersView,
}

/// The unified 5h/7d windows last seen for an account (utilisation 0.0-1.0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaView {
    pub five_hour: f64,
    pub five_hour_status: String,
    /// Epoch seconds.
    pub five_hour_reset_at: i64,
    pub seven_day: f64,
    pub seven_day_status: String,
    pub seven_day_reset_at: i64,
    pub overage_status: String,
    /// RFC 3339.
    pub updated_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CountersView {
    pub requests: u64,
    pub successes: u64,
    /// Failed attempts by class (`rate_limit`, `auth`, `server_error`, `network`...).
    pub errors: std::collections::BTreeMap<String, u64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::RequestRecord;

    /// Shared labels and borrowed names read and write the plain strings of the log format.
    #[test]
    fn a_request_record_reads_and_writes_plain_strings() {
        let line = r#"{"time":"2026-12-02T10:00:00.000Z","requestId":"req_nl_x","method":"POST","path":"/v1/messages","model":"claude-sonnet-4-5","stream":true,"account":"work","status":200,"attempts":[{"account":"home","outcome":"rate_limit"},{"account":"work","outcome":"success"}],"ttfbMs":12,"totalMs":40,"inputTokens":10,"outputTokens":2}"#;
        let record: RequestRecord = serde_json::from_str(line).expect("a record");
        assert_eq!(record.account.as_deref(), Some("work"));
        assert_eq!(&*record.attempts[0].account, "home");
        assert_eq!(record.attempts[0].outcome, "rate_limit");
        assert_eq!(record.method, "POST");
        assert_eq!(serde_json::to_string(&record).expect("json"), line);
    }
}
