//! Snapshots of every screen from fixed states, at 80×24 and 160×48. A change in what a screen
//! shows shows up here as a diff to review (`cargo insta review`, or `INSTA_UPDATE=always`).

use std::collections::BTreeMap;

use neurolink_shared::ipc::{AccountState, CredentialKind, QuotaView};
use neurolink_shared::time::rfc3339;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::fixtures::{account, connected, record, NOW};
use crate::input::Action;
use crate::model::{update, Link, Msg, Screen, State};

fn quota(five_hour: f64, seven_day: f64) -> QuotaView {
    QuotaView {
        five_hour,
        five_hour_status: "allowed".into(),
        five_hour_reset_at: ((NOW + 3 * 3_600_000) / 1000) as i64,
        seven_day,
        seven_day_status: "allowed".into(),
        seven_day_reset_at: ((NOW + 4 * 86_400_000) / 1000) as i64,
        overage_status: "rejected".into(),
        updated_at: Some(rfc3339(NOW)),
    }
}

/// The pool with everything going on: one serving with quota, one cooling near its limit, one
/// disabled with errors.
fn busy() -> State {
    let mut work = account(
        "work@example.com",
        CredentialKind::Oauth,
        AccountState::Active,
    );
    work.quota = Some(quota(0.42, 0.18));
    work.token_expires_at = Some(rfc3339(NOW + 5 * 3_600_000));
    work.counters.requests = 30;
    work.counters.successes = 30;
    let mut personal = account("personal", CredentialKind::Oauth, AccountState::Cooling);
    personal.quota = Some(quota(0.91, 0.64));
    personal.cooldown_until = Some(rfc3339(NOW + 95_000));
    personal.backoff_level = 2;
    personal.token_expires_at = Some(rfc3339(NOW + 40 * 60_000));
    personal.last_error = Some("429 rate_limit_error".into());
    personal.counters.requests = 10;
    personal.counters.errors = BTreeMap::from([("rate_limit".into(), 3)]);
    let mut ci = account("ci-key", CredentialKind::ApiKey, AccountState::Disabled);
    ci.disabled_reason = Some("disabled by a user".into());
    let records = (0..12)
        .map(|i| match i % 4 {
            3 => record(i, 429, Some("personal"), Some("rate_limit")),
            _ => record(i, 200, Some("work@example.com"), None),
        })
        .chain([record(12, 502, None, Some("network"))])
        .collect();
    connected(vec![work, personal, ci], records)
}

fn draw(state: &State, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal.draw(|f| super::render(f, state)).expect("drawing");
    terminal.backend().to_string()
}

fn on(mut state: State, screen: Screen) -> State {
    state.screen = screen;
    state
}

macro_rules! snapshots {
    ($($name:ident => $state:expr;)*) => {
        $(
            #[test]
            fn $name() {
                let state = $state;
                insta::assert_snapshot!(concat!(stringify!($name), "_80x24"), draw(&state, 80, 24));
                insta::assert_snapshot!(concat!(stringify!($name), "_160x48"), draw(&state, 160, 48));
            }
        )*
    };
}

snapshots! {
    no_daemon => {
        let mut s = State::new("/home/alice/.neurolink/daemon.sock".into(), NOW, true);
        update(&mut s, Msg::Lost { error: "no daemon is listening".into(), retry_at: NOW + 2000 });
        s
    };
    overview_empty => connected(Vec::new(), Vec::new());
    overview_busy => busy();
    accounts_empty => on(connected(Vec::new(), Vec::new()), Screen::Accounts);
    accounts_cooling_disabled_quotas => on(busy(), Screen::Accounts);
    account_detail => {
        let mut s = on(busy(), Screen::Accounts);
        update(&mut s, Msg::Key(Action::Down));
        update(&mut s, Msg::Key(Action::Enter));
        s
    };
    requests_with_errors => on(busy(), Screen::Requests);
    requests_filtered_paused => {
        let mut s = on(busy(), Screen::Requests);
        update(&mut s, Msg::Key(Action::Filter));
        for c in "429".chars() {
            update(&mut s, Msg::Key(Action::Char(c)));
        }
        update(&mut s, Msg::Key(Action::Enter));
        update(&mut s, Msg::Key(Action::Pause));
        s
    };
    fallbacks_unconfigured => on(busy(), Screen::Fallbacks);
    fallbacks_in_use => {
        use neurolink_shared::ipc::methods::ProviderView;
        let mut s = on(busy(), Screen::Fallbacks);
        if let Some(st) = &mut s.status {
            st.fallback_chain = vec![
                serde_json::json!({"provider": "openai", "model": "gpt-4o"}),
                serde_json::json!({"provider": "google-ai", "model": "gemini-2.5-pro"}),
                serde_json::json!({"provider": "ollama", "model": "qwen3"}),
            ];
            st.providers = vec![
                ProviderView { link: "google-ai/gemini-2.5-pro".into(), requests: 3, successes: 0, failures: 3,
                    last_error: Some("google-ai: Resource has been exhausted".into()),
                    cooling_until: Some(neurolink_shared::time::rfc3339(crate::fixtures::NOW + 31_000)),
                    ..ProviderView::default() },
                ProviderView { link: "google-ai/gemini-2.5-flash".into(), requests: 2, successes: 2,
                    input_tokens: 800, output_tokens: 120, ..ProviderView::default() },
                ProviderView { link: "openai/gpt-4o".into(), requests: 14, successes: 12, failures: 2,
                    input_tokens: 52_000, output_tokens: 3_100,
                    last_error: Some("openai: boom".into()), ..ProviderView::default() },
            ];
        }
        s
    };
    events => {
        let mut s = on(busy(), Screen::Events);
        update(&mut s, Msg::Event(neurolink_shared::ipc::Event::account(
            "personal",
            neurolink_shared::ipc::AccountChange::Cooling,
            AccountState::Cooling,
            Some("rate_limit".into()),
        )));
        s
    };
    help => {
        let mut s = busy();
        update(&mut s, Msg::Key(Action::Help));
        s
    };
    confirm_disable => {
        let mut s = on(busy(), Screen::Accounts);
        update(&mut s, Msg::Key(Action::Disable));
        s
    };
}

#[test]
fn no_color_draws_no_color() {
    let mut s = busy();
    s.color = false;
    s.screen = Screen::Accounts;
    let mut terminal = Terminal::new(TestBackend::new(120, 30)).expect("test terminal");
    terminal.draw(|f| super::render(f, &s)).expect("drawing");
    let buffer = terminal.backend().buffer().clone();
    assert!(buffer
        .content()
        .iter()
        .all(|c| c.fg == ratatui::style::Color::Reset));
    assert_eq!(s.link, Link::Connected);
}
