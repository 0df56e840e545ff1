//! The dashboard's state and its reducer: every change comes in as a [`Msg`] and goes through
//! [`update`], which changes the [`State`] and returns the [`Command`]s to run (calls to the
//! daemon, starting it, copying to the clipboard, quitting). Nothing here does I/O or reads a
//! clock, so it is tested with plain values.

use std::collections::{BTreeMap, HashMap, VecDeque};

use neurolink_shared::ipc::methods::{HelloResult, LoginStarted, StatusView};
use neurolink_shared::ipc::{
    AccountChange, AccountState, AccountView, Call, DaemonEventKind, Event, RequestRecord,
};
use neurolink_shared::time::{parse_rfc3339, Millis};

use crate::input::Action;

/// Requests kept for the Requests screen.
pub const MAX_REQUESTS: usize = 1000;
/// Lines kept on the Events screen.
pub const MAX_EVENTS: usize = 500;
/// Seconds of request/token rate history (sparklines).
pub const HISTORY_SECS: usize = 300;
/// Quota samples kept per account (for the burn rate).
pub const MAX_QUOTA_SAMPLES: usize = 120;
/// How long a status-line message stays.
pub const STATUS_TTL_MS: Millis = 6000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Overview,
    Accounts,
    Requests,
    Fallbacks,
    Events,
}

impl Screen {
    pub const ALL: [Screen; 5] = [
        Screen::Overview,
        Screen::Accounts,
        Screen::Requests,
        Screen::Fallbacks,
        Screen::Events,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Screen::Overview => "Overview",
            Screen::Accounts => "Accounts",
            Screen::Requests => "Requests",
            Screen::Fallbacks => "Fallbacks",
            Screen::Events => "Events",
        }
    }

    fn index(self) -> usize {
        Screen::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// The link to the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// Trying to connect (first start, or after a loss).
    Connecting,
    Connected,
    /// Nothing answers on the socket; the next try is at `retry_at`.
    NoDaemon {
        error: String,
        retry_at: Millis,
    },
}

/// What a key does depends on what is on screen.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Help,
    /// Typing a filter for the Requests screen.
    Filter,
    /// Waiting for y/n on an action that is hard to undo.
    Confirm(Confirm),
    /// A browser login is open: show the URL, take the pasted code.
    Login(LoginPrompt),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    Disable(String),
    StopDaemon,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoginPrompt {
    pub login_id: String,
    pub url: String,
    pub code: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Error,
}

/// A line on the Events screen.
#[derive(Debug, Clone, PartialEq)]
pub struct EventLine {
    pub at: Millis,
    pub level: Level,
    pub text: String,
}

/// Requests and tokens finished in one second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Second {
    pub at_sec: u64,
    pub requests: u64,
    pub tokens: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub now: Millis,
    pub socket: String,
    pub link: Link,
    pub hello: Option<HelloResult>,
    pub status: Option<StatusView>,
    pub accounts: Vec<AccountView>,
    /// Newest last.
    pub requests: VecDeque<RequestRecord>,
    pub events: VecDeque<EventLine>,
    /// Per-second rates, oldest first.
    pub history: VecDeque<Second>,
    /// Per account: (time, 5h used, 7d used) as reported, oldest first.
    pub quota_samples: HashMap<String, VecDeque<(Millis, f64, f64)>>,
    /// Finished requests by outcome: `ok` or their error class.
    pub outcomes: BTreeMap<String, u64>,
    pub fallback_use: BTreeMap<String, u64>,
    pub last_served: Option<String>,
    pub screen: Screen,
    pub mode: Mode,
    pub selected_account: usize,
    pub account_detail: bool,
    /// Position in the filtered request list, 0 = newest.
    pub selected_request: usize,
    pub request_detail: bool,
    pub filter: String,
    /// While paused, the Requests screen shows only the first `n` requests received.
    pub paused_at: Option<usize>,
    pub status_line: Option<(Level, String, Millis)>,
    pub color: bool,
    pub quit: bool,
}

/// Side effects the reducer asks for; the runtime runs them and reports back with [`Msg`]s.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A daemon call; its answer comes back as [`Msg::Done`] (or a resync for reads).
    Call(Call),
    /// Re-read the status, the accounts and the recent requests.
    Resync,
    /// Start a daemon in the background, as a service would.
    StartDaemon,
    /// Put text on the clipboard (OSC 52, where the terminal allows).
    Copy(String),
    Quit,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Tick(Millis),
    Key(Action),
    /// Connected and subscribed: a fresh snapshot.
    Snapshot {
        hello: HelloResult,
        status: StatusView,
        accounts: Vec<AccountView>,
        records: Vec<RequestRecord>,
    },
    Status(StatusView),
    Accounts(Vec<AccountView>),
    Lost {
        error: String,
        retry_at: Millis,
    },
    Event(Event),
    /// A call finished: what to say about it.
    Done(Result<String, String>),
    LoginStarted(LoginStarted),
    /// Starting the daemon was tried.
    Started(Result<String, String>),
}

impl State {
    pub fn new(socket: String, now: Millis, color: bool) -> Self {
        Self {
            now,
            socket,
            link: Link::Connecting,
            hello: None,
            status: None,
            accounts: Vec::new(),
            requests: VecDeque::new(),
            events: VecDeque::new(),
            history: VecDeque::new(),
            quota_samples: HashMap::new(),
            outcomes: BTreeMap::new(),
            fallback_use: BTreeMap::new(),
            last_served: None,
            screen: Screen::Overview,
            mode: Mode::Normal,
            selected_account: 0,
            account_detail: false,
            selected_request: 0,
            request_detail: false,
            filter: String::new(),
            paused_at: None,
            status_line: None,
            color,
            quit: false,
        }
    }

    /// The account under the cursor.
    pub fn account(&self) -> Option<&AccountView> {
        self.accounts.get(self.selected_account)
    }

    /// The requests the Requests screen shows: filtered, newest first, frozen while paused.
    pub fn visible_requests(&self) -> Vec<&RequestRecord> {
        let upto = self.paused_at.unwrap_or(self.requests.len());
        let needle = self.filter.to_lowercase();
        self.requests
            .iter()
            .take(upto)
            .rev()
            .filter(|r| needle.is_empty() || matches_filter(r, &needle))
            .collect()
    }

    fn say(&mut self, level: Level, text: impl Into<String>) {
        let text = text.into();
        self.status_line = Some((level, text.clone(), self.now + STATUS_TTL_MS));
        self.log(level, text);
    }

    fn log(&mut self, level: Level, text: impl Into<String>) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(EventLine {
            at: self.now,
            level,
            text: text.into(),
        });
    }

    fn add_request(&mut self, r: RequestRecord) {
        let outcome = match (&r.error_class, r.status) {
            (None, 200..=299) => "ok".to_string(),
            (Some(c), _) => c.clone(),
            (None, s) => format!("http_{s}"),
        };
        *self.outcomes.entry(outcome).or_default() += 1;
        if let Some(p) = &r.fallback_provider {
            *self.fallback_use.entry(p.clone()).or_default() += 1;
        }
        if let Some(account) = &r.account {
            self.last_served = Some(account.to_string());
        }
        let at = parse_rfc3339(&r.time).unwrap_or(self.now) + r.total_ms;
        self.count(at / 1000, r.input_tokens + r.output_tokens);
        if self.requests.len() == MAX_REQUESTS {
            self.requests.pop_front();
            if let Some(p) = &mut self.paused_at {
                *p = p.saturating_sub(1);
            }
        }
        self.requests.push_back(r);
    }

    fn count(&mut self, sec: u64, tokens: u64) {
        self.roll(sec);
        if let Some(s) = self.history.iter_mut().rev().find(|s| s.at_sec == sec) {
            s.requests += 1;
            s.tokens += tokens;
        }
    }

    /// Keep one entry per second up to `sec`, at most [`HISTORY_SECS`].
    fn roll(&mut self, sec: u64) {
        let last = self.history.back().map(|s| s.at_sec);
        let from = match last {
            Some(l) if l >= sec => return,
            Some(l) => (l + 1).max(sec.saturating_sub(HISTORY_SECS as u64 - 1)),
            None => sec.saturating_sub(HISTORY_SECS as u64 - 1),
        };
        for s in from..=sec {
            self.history.push_back(Second {
                at_sec: s,
                ..Second::default()
            });
        }
        while self.history.len() > HISTORY_SECS {
            self.history.pop_front();
        }
    }

    fn set_accounts(&mut self, accounts: Vec<AccountView>) {
        for a in &accounts {
            let Some(q) = &a.quota else { continue };
            let at = q
                .updated_at
                .as_deref()
                .and_then(parse_rfc3339)
                .unwrap_or(self.now);
            let samples = self.quota_samples.entry(a.label.clone()).or_default();
            if samples.back().is_some_and(|(t, _, _)| *t >= at) {
                continue;
            }
            if samples.len() == MAX_QUOTA_SAMPLES {
                samples.pop_front();
            }
            samples.push_back((at, q.five_hour, q.seven_day));
        }
        self.accounts = accounts;
        self.selected_account = self
            .selected_account
            .min(self.accounts.len().saturating_sub(1));
    }
}

fn matches_filter(r: &RequestRecord, needle: &str) -> bool {
    r.status.to_string() == needle
        || r.account
            .as_deref()
            .is_some_and(|a| a.to_lowercase().contains(needle))
        || r.model
            .as_deref()
            .is_some_and(|m| m.to_lowercase().contains(needle))
        || r.path.to_lowercase().contains(needle)
        || r.error_class.as_deref().is_some_and(|c| c.contains(needle))
        || r.request_id.to_lowercase().contains(needle)
}

/// Apply `msg`; return what to do.
pub fn update(state: &mut State, msg: Msg) -> Vec<Command> {
    match msg {
        Msg::Tick(now) => {
            state.now = now;
            state.roll(now / 1000);
            if state
                .status_line
                .as_ref()
                .is_some_and(|(_, _, until)| *until <= now)
            {
                state.status_line = None;
            }
            // Countdowns run on the local clock between snapshots.
            for a in &mut state.accounts {
                if let Some(until) = a.cooldown_until.as_deref().and_then(parse_rfc3339) {
                    a.cooldown_remaining_secs = Some(until.saturating_sub(now).div_ceil(1000));
                }
            }
            Vec::new()
        }
        Msg::Snapshot {
            hello,
            status,
            accounts,
            records,
        } => {
            let first = state.hello.is_none();
            state.link = Link::Connected;
            state.hello = Some(hello.clone());
            state.status = Some(status);
            state.set_accounts(accounts);
            if first || state.requests.is_empty() {
                state.requests.clear();
                state.outcomes.clear();
                for r in records {
                    state.add_request(r);
                }
            }
            if !hello.compatible() {
                state.say(
                    Level::Error,
                    format!(
                        "daemon {} speaks protocol {}; this dashboard expects {}",
                        hello.version,
                        hello.protocol,
                        neurolink_shared::ipc::PROTOCOL_VERSION
                    ),
                );
            } else {
                state.log(
                    Level::Info,
                    format!("connected to daemon {} (pid {})", hello.version, hello.pid),
                );
            }
            Vec::new()
        }
        Msg::Status(s) => {
            state.status = Some(s);
            Vec::new()
        }
        Msg::Accounts(a) => {
            state.set_accounts(a);
            Vec::new()
        }
        Msg::Lost { error, retry_at } => {
            if state.link == Link::Connected {
                state.log(Level::Error, format!("lost the daemon: {error}"));
            }
            state.link = Link::NoDaemon { error, retry_at };
            Vec::new()
        }
        Msg::Event(e) => on_event(state, e),
        Msg::Done(Ok(text)) => {
            // The daemon's own event tells the Events screen; the status line confirms.
            state.status_line = Some((Level::Info, text, state.now + STATUS_TTL_MS));
            vec![Command::Resync]
        }
        Msg::Done(Err(text)) => {
            state.say(Level::Error, text);
            Vec::new()
        }
        Msg::Started(r) => {
            match r {
                Ok(t) => state.say(Level::Info, t),
                Err(t) => state.say(Level::Error, t),
            }
            Vec::new()
        }
        Msg::LoginStarted(l) => {
            state.mode = Mode::Login(LoginPrompt {
                login_id: l.login_id,
                url: l.authorize_url.clone(),
                code: String::new(),
            });
            state.say(
                Level::Info,
                "login started: open the URL (copied where the terminal allows), approve, paste the code",
            );
            vec![Command::Copy(l.authorize_url)]
        }
        Msg::Key(action) => on_key(state, action),
    }
}

fn on_event(state: &mut State, e: Event) -> Vec<Command> {
    match e {
        Event::Requests { record } => {
            state.add_request(*record);
            Vec::new()
        }
        Event::Accounts {
            label,
            change,
            state: after,
            reason,
        } => {
            if let Some(a) = state.accounts.iter_mut().find(|a| a.label == label) {
                a.state = after;
                if after != AccountState::Cooling {
                    a.cooldown_until = None;
                    a.cooldown_remaining_secs = None;
                }
            }
            let why = reason.map(|r| format!(" ({r})")).unwrap_or_default();
            let level = match change {
                AccountChange::Cooling | AccountChange::Disabled | AccountChange::Removed => {
                    Level::Error
                }
                _ => Level::Info,
            };
            let change = serde_json::to_value(change)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            state.log(level, format!("{label}: {change}{why}"));
            // The event says what changed; the snapshot brings cooldowns, quotas and counters.
            vec![Command::Resync]
        }
        Event::Daemon { kind, message } => {
            let level = match kind {
                DaemonEventKind::ConfigInvalid | DaemonEventKind::Lagged => Level::Error,
                _ => Level::Info,
            };
            state.log(level, message);
            match kind {
                DaemonEventKind::Lagged => {
                    // Events were missed: start over from a snapshot.
                    state.requests.clear();
                    vec![Command::Resync]
                }
                DaemonEventKind::ConfigReloaded => vec![Command::Resync],
                _ => Vec::new(),
            }
        }
    }
}

fn on_key(state: &mut State, action: Action) -> Vec<Command> {
    use neurolink_shared::ipc::methods::{LabelParams, LoginCompleteParams, NoParams};
    match (&mut state.mode, action) {
        (_, Action::Quit) => {
            state.quit = true;
            vec![Command::Quit]
        }
        (Mode::Help, _) => {
            state.mode = Mode::Normal;
            Vec::new()
        }
        (Mode::Confirm(c), Action::Yes) => {
            let c = c.clone();
            state.mode = Mode::Normal;
            match c {
                Confirm::Disable(label) => {
                    vec![Command::Call(Call::AccountsDisable(LabelParams::new(
                        label,
                    )))]
                }
                Confirm::StopDaemon => vec![Command::Call(Call::Shutdown(NoParams {}))],
            }
        }
        (Mode::Confirm(_), _) => {
            state.mode = Mode::Normal;
            state.say(Level::Info, "cancelled");
            Vec::new()
        }
        (Mode::Filter, Action::Char(c)) => {
            state.filter.push(c);
            state.selected_request = 0;
            Vec::new()
        }
        (Mode::Filter, Action::Backspace) => {
            state.filter.pop();
            Vec::new()
        }
        (Mode::Filter, Action::Enter) => {
            state.mode = Mode::Normal;
            Vec::new()
        }
        (Mode::Filter, Action::Back) => {
            state.filter.clear();
            state.mode = Mode::Normal;
            Vec::new()
        }
        (Mode::Filter, _) => Vec::new(),
        (Mode::Login(p), Action::Char(c)) => {
            p.code.push(c);
            Vec::new()
        }
        (Mode::Login(p), Action::Backspace) => {
            p.code.pop();
            Vec::new()
        }
        (Mode::Login(p), Action::Enter) => {
            let (login_id, code) = (p.login_id.clone(), p.code.trim().to_string());
            if code.is_empty() {
                return Vec::new();
            }
            state.mode = Mode::Normal;
            state.say(Level::Info, "completing the login...");
            vec![Command::Call(Call::AuthLoginComplete(
                LoginCompleteParams { login_id, code },
            ))]
        }
        (Mode::Login(p), Action::Copy) => vec![Command::Copy(p.url.clone())],
        (Mode::Login(_), Action::Back) => {
            state.mode = Mode::Normal;
            state.say(Level::Info, "login cancelled");
            Vec::new()
        }
        (Mode::Login(_), _) => Vec::new(),
        (Mode::Normal, a) => normal_key(state, a),
    }
}

/// Keys of the normal mode.
fn normal_key(state: &mut State, action: Action) -> Vec<Command> {
    use neurolink_shared::ipc::methods::{LabelParams, LoginStartParams, NoParams};
    let none = Vec::new();
    match action {
        Action::Help => {
            state.mode = Mode::Help;
            none
        }
        Action::Screen(n) => {
            if let Some(s) = Screen::ALL.get(n) {
                state.screen = *s;
            }
            none
        }
        Action::NextScreen | Action::PrevScreen => {
            let i = state.screen.index();
            let n = Screen::ALL.len();
            let next = if action == Action::NextScreen {
                (i + 1) % n
            } else {
                (i + n - 1) % n
            };
            state.screen = Screen::ALL[next];
            none
        }
        Action::Down | Action::Up => {
            let down = action == Action::Down;
            match state.screen {
                Screen::Accounts => {
                    let max = state.accounts.len().saturating_sub(1);
                    state.selected_account = step(state.selected_account, down, max);
                }
                Screen::Requests => {
                    let max = state.visible_requests().len().saturating_sub(1);
                    state.selected_request = step(state.selected_request, down, max);
                }
                _ => {}
            }
            none
        }
        Action::Enter => {
            match state.screen {
                Screen::Accounts => state.account_detail = !state.accounts.is_empty(),
                Screen::Requests => state.request_detail = !state.visible_requests().is_empty(),
                _ => {}
            }
            none
        }
        Action::Back => {
            state.account_detail = false;
            state.request_detail = false;
            none
        }
        Action::Filter if state.screen == Screen::Requests => {
            state.mode = Mode::Filter;
            none
        }
        Action::Pause if state.screen == Screen::Requests => {
            state.paused_at = match state.paused_at {
                Some(_) => None,
                None => Some(state.requests.len()),
            };
            none
        }
        Action::StartDaemon => match state.link {
            Link::Connected => {
                state.say(Level::Info, "a daemon is already running");
                none
            }
            _ => {
                state.say(Level::Info, "starting the daemon...");
                vec![Command::StartDaemon]
            }
        },
        Action::StopDaemon if state.link == Link::Connected => {
            state.mode = Mode::Confirm(Confirm::StopDaemon);
            none
        }
        Action::Refresh | Action::Enable | Action::Disable | Action::ClearCooldown => {
            if state.link != Link::Connected {
                state.say(Level::Error, "no daemon: start one first (s)");
                return none;
            }
            let Some(label) = state.account().map(|a| a.label.clone()) else {
                state.say(Level::Error, "no account selected (Accounts screen, j/k)");
                return none;
            };
            let p = LabelParams::new(label.clone());
            match action {
                Action::Refresh => {
                    state.say(Level::Info, format!("refreshing {label}..."));
                    vec![Command::Call(Call::AccountsRefresh(p))]
                }
                Action::Enable => vec![Command::Call(Call::AccountsEnable(p))],
                Action::ClearCooldown => vec![Command::Call(Call::AccountsReset(p))],
                _ => {
                    state.mode = Mode::Confirm(Confirm::Disable(label));
                    none
                }
            }
        }
        Action::Login | Action::Reload if state.link != Link::Connected => {
            state.say(Level::Error, "no daemon: start one first (s)");
            none
        }
        Action::Login => vec![Command::Call(Call::AuthLoginStart(
            LoginStartParams::default(),
        ))],
        Action::Reload => vec![Command::Call(Call::ConfigReload(NoParams {}))],
        _ => none,
    }
}

fn step(i: usize, down: bool, max: usize) -> usize {
    if down {
        (i + 1).min(max)
    } else {
        i.saturating_sub(1)
    }
}

/// What a finished call says in the status line.
pub fn describe(call: &Call) -> String {
    match call {
        Call::AccountsRefresh(p) => format!("{}: token refreshed", p.label),
        Call::AccountsEnable(p) => format!("{}: enabled", p.label),
        Call::AccountsDisable(p) => format!("{}: disabled", p.label),
        Call::AccountsReset(p) => format!("{}: cooldown cleared", p.label),
        Call::AuthLoginComplete(_) => "login complete: account added".into(),
        Call::ConfigReload(_) => "config reloaded".into(),
        Call::Shutdown(_) => "the daemon is stopping".into(),
        other => format!("{} done", other.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, NOW};
    use neurolink_shared::ipc::methods::{LabelParams, NoParams};
    use neurolink_shared::ipc::CredentialKind;
    use neurolink_shared::time::rfc3339;

    fn account(label: &str, state: AccountState) -> AccountView {
        fixtures::account(label, CredentialKind::Oauth, state)
    }

    fn record(status: u16, account: &str) -> RequestRecord {
        let error = (status != 200).then_some("rate_limit");
        fixtures::record(0, status, Some(account), error)
    }

    fn connected(accounts: Vec<AccountView>) -> State {
        fixtures::connected(accounts, Vec::new())
    }

    #[test]
    fn disabling_asks_first() {
        let mut s = connected(vec![account("work", AccountState::Active)]);
        s.screen = Screen::Accounts;
        assert!(update(&mut s, Msg::Key(Action::Disable)).is_empty());
        assert_eq!(s.mode, Mode::Confirm(Confirm::Disable("work".into())));
        assert_eq!(
            update(&mut s, Msg::Key(Action::Yes)),
            vec![Command::Call(Call::AccountsDisable(LabelParams::new(
                "work"
            )))]
        );
        assert_eq!(s.mode, Mode::Normal);
        // "n" (or anything else) cancels.
        update(&mut s, Msg::Key(Action::Disable));
        assert!(update(&mut s, Msg::Key(Action::Back)).is_empty());
        assert_eq!(s.mode, Mode::Normal);
    }

    #[test]
    fn account_events_change_the_row_and_ask_for_a_snapshot() {
        let mut s = connected(vec![account("work", AccountState::Active)]);
        let cmds = update(
            &mut s,
            Msg::Event(Event::account(
                "work",
                AccountChange::Cooling,
                AccountState::Cooling,
                Some("rate_limit".into()),
            )),
        );
        assert_eq!(cmds, vec![Command::Resync]);
        assert_eq!(s.accounts[0].state, AccountState::Cooling);
        assert_eq!(
            s.events.back().map(|e| e.text.as_str()),
            Some("work: cooling (rate_limit)")
        );
    }

    #[test]
    fn a_countdown_runs_on_ticks() {
        let mut a = account("work", AccountState::Cooling);
        a.cooldown_until = Some(rfc3339(NOW + 90_000));
        a.cooldown_remaining_secs = Some(90);
        let mut s = connected(vec![a]);
        update(&mut s, Msg::Tick(NOW + 30_000));
        assert_eq!(s.accounts[0].cooldown_remaining_secs, Some(60));
    }

    #[test]
    fn requests_filter_and_pause() {
        let mut s = connected(vec![]);
        for (status, account) in [(200, "work"), (429, "personal"), (200, "personal")] {
            update(
                &mut s,
                Msg::Event(Event::Requests {
                    record: Box::new(record(status, account)),
                }),
            );
        }
        assert_eq!(s.visible_requests().len(), 3);
        assert_eq!(s.outcomes.get("ok"), Some(&2));
        assert_eq!(s.last_served.as_deref(), Some("personal"));
        s.filter = "429".into();
        assert_eq!(s.visible_requests().len(), 1);
        s.filter = "PERS".into();
        assert_eq!(s.visible_requests().len(), 2);
        s.filter.clear();
        s.screen = Screen::Requests;
        update(&mut s, Msg::Key(Action::Pause));
        update(
            &mut s,
            Msg::Event(Event::Requests {
                record: Box::new(record(200, "work")),
            }),
        );
        assert_eq!(s.visible_requests().len(), 3, "frozen while paused");
        update(&mut s, Msg::Key(Action::Pause));
        assert_eq!(s.visible_requests().len(), 4);
    }

    #[test]
    fn lag_resyncs_and_a_lost_daemon_shows() {
        let mut s = connected(vec![account("work", AccountState::Active)]);
        update(
            &mut s,
            Msg::Event(Event::Requests {
                record: Box::new(record(200, "work")),
            }),
        );
        let cmds = update(
            &mut s,
            Msg::Event(Event::daemon(DaemonEventKind::Lagged, "dropped")),
        );
        assert_eq!(cmds, vec![Command::Resync]);
        assert!(s.requests.is_empty());
        update(
            &mut s,
            Msg::Lost {
                error: "gone".into(),
                retry_at: NOW + 500,
            },
        );
        assert!(matches!(s.link, Link::NoDaemon { .. }));
        // Account actions need a daemon; starting one does not.
        s.screen = Screen::Accounts;
        assert!(update(&mut s, Msg::Key(Action::Refresh)).is_empty());
        assert_eq!(
            update(&mut s, Msg::Key(Action::StartDaemon)),
            vec![Command::StartDaemon]
        );
    }

    #[test]
    fn a_login_shows_the_url_copies_it_and_sends_the_code() {
        let mut s = connected(vec![]);
        assert_eq!(
            update(&mut s, Msg::Key(Action::Login)),
            vec![Command::Call(Call::AuthLoginStart(Default::default()))]
        );
        let cmds = update(
            &mut s,
            Msg::LoginStarted(LoginStarted {
                authorize_url: "http://127.0.0.1:1/authorize".into(),
                login_id: "abc".into(),
            }),
        );
        assert_eq!(
            cmds,
            vec![Command::Copy("http://127.0.0.1:1/authorize".into())]
        );
        for c in "code#state".chars() {
            update(&mut s, Msg::Key(Action::Char(c)));
        }
        let cmds = update(&mut s, Msg::Key(Action::Enter));
        assert_eq!(
            cmds,
            vec![Command::Call(Call::AuthLoginComplete(
                neurolink_shared::ipc::methods::LoginCompleteParams {
                    login_id: "abc".into(),
                    code: "code#state".into()
                }
            ))]
        );
        assert_eq!(
            update(&mut s, Msg::Key(Action::Reload)),
            vec![Command::Call(Call::ConfigReload(NoParams {}))]
        );
    }
}
