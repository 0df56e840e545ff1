//! Fixed values for the dashboard's tests: accounts, records, a connected state.

use std::collections::BTreeMap;

use neurolink_shared::ipc::methods::{HelloResult, StatusView};
use neurolink_shared::ipc::{
    AccountSource, AccountState, AccountView, AttemptRecord, CountersView, CredentialKind,
    RequestRecord,
};
use neurolink_shared::time::{rfc3339, Millis};

use crate::model::{update, Msg, State};

/// 2026-12-01T12:00:00Z.
pub const NOW: Millis = 1_796_126_400_000;

pub fn account(label: &str, kind: CredentialKind, state: AccountState) -> AccountView {
    AccountView {
        label: label.into(),
        kind,
        source: match kind {
            CredentialKind::Oauth => AccountSource::TokenStore,
            CredentialKind::ApiKey => AccountSource::Config,
        },
        weight: 1,
        state,
        cooldown_until: None,
        cooldown_remaining_secs: None,
        backoff_level: 0,
        quota: None,
        token_expires_at: None,
        disabled_reason: None,
        last_error: None,
        excluded_models: Vec::new(),
        counters: CountersView::default(),
    }
}

/// Request number `i` (a second apart, ending a minute before [`NOW`]).
pub fn record(i: u64, status: u16, account: Option<&str>, error: Option<&str>) -> RequestRecord {
    RequestRecord {
        time: rfc3339(NOW - 60_000 + i * 1000),
        request_id: format!("req_nl_{i:024}"),
        method: "POST".into(),
        path: "/v1/messages".into(),
        model: Some("claude-sonnet-4-5".into()),
        stream: i.is_multiple_of(2),
        account: account.map(Into::into),
        status,
        attempts: account
            .map(|a| {
                vec![AttemptRecord {
                    account: a.into(),
                    outcome: if status == 200 {
                        "success"
                    } else {
                        "rate_limit"
                    }
                    .into(),
                }]
            })
            .unwrap_or_default(),
        fallback_provider: None,
        ttfb_ms: Some(300 + i),
        total_ms: 1200 + i * 10,
        input_tokens: 1000 + i,
        output_tokens: 200,
        error_class: error.map(str::to_string),
    }
}

pub fn status(accounts: usize) -> StatusView {
    StatusView {
        status: "running".into(),
        version: "0.1.0".into(),
        pid: 4242,
        host: "127.0.0.1".into(),
        port: 55669,
        strategy: "fill-first".into(),
        started_at: rfc3339(NOW - 3_723_000),
        uptime: 3723.0,
        fallback_chain: Vec::new(),
        account_count: accounts,
        usable_accounts: accounts,
        totals: CountersView {
            requests: 42,
            successes: 39,
            errors: BTreeMap::from([("rate_limit".into(), 3)]),
            input_tokens: 52_000,
            output_tokens: 8_400,
            ..CountersView::default()
        },
        providers: Vec::new(),
    }
}

/// A dashboard connected to a daemon with `accounts`, having seen `records`.
pub fn connected(accounts: Vec<AccountView>, records: Vec<RequestRecord>) -> State {
    let mut s = State::new("/home/alice/.neurolink/daemon.sock".into(), NOW, true);
    let n = accounts.len();
    update(
        &mut s,
        Msg::Snapshot {
            hello: HelloResult {
                protocol: neurolink_shared::ipc::PROTOCOL_VERSION,
                version: "0.1.0".into(),
                pid: 4242,
            },
            status: status(n),
            accounts,
            records,
        },
    );
    update(&mut s, Msg::Tick(NOW));
    s
}
