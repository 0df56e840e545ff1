//! Keys to actions. What an action does depends on the mode (see `model::update`); this only
//! names it, so the key map is in one place and the help screen lists the same keys.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    /// Go to screen N (0-based).
    Screen(usize),
    NextScreen,
    PrevScreen,
    Up,
    Down,
    Enter,
    Back,
    Filter,
    Pause,
    Refresh,
    Enable,
    Disable,
    ClearCooldown,
    Login,
    Reload,
    StartDaemon,
    StopDaemon,
    Copy,
    Yes,
    Backspace,
    /// A character typed into a text field (filter, login code).
    Char(char),
}

/// The key help: (keys, what they do), as the help screen and the footer show it.
pub const HELP: &[(&str, &str)] = &[
    ("1-5 Tab S-Tab", "switch screen"),
    ("j k ↑ ↓", "move"),
    ("Enter / Esc", "open / close details"),
    ("r", "refresh the account's token"),
    ("e / d", "enable / disable the account"),
    ("c", "clear the account's cooldown"),
    ("l", "log in a new account"),
    ("R", "reload the config file"),
    ("/", "filter requests (text, status, account)"),
    ("space", "pause the request list"),
    ("s / S", "start / stop the daemon"),
    ("?", "this help"),
    ("q Ctrl-C", "quit"),
];

/// The action of a key press when typing text (filter, login code).
pub fn text_key(key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return match key.code {
            KeyCode::Char('c') => Some(Action::Quit),
            KeyCode::Char('y') => Some(Action::Copy),
            _ => None,
        };
    }
    match key.code {
        KeyCode::Enter => Some(Action::Enter),
        KeyCode::Esc => Some(Action::Back),
        KeyCode::Backspace => Some(Action::Backspace),
        KeyCode::Char(c) => Some(Action::Char(c)),
        _ => None,
    }
}

/// The action of a key press in the normal mode.
pub fn key(key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match key.code {
        KeyCode::Char('c') if ctrl => Action::Quit,
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char(c @ '1'..='5') => Action::Screen(c as usize - '1' as usize),
        KeyCode::Tab => Action::NextScreen,
        KeyCode::BackTab => Action::PrevScreen,
        KeyCode::Char('j') | KeyCode::Down => Action::Down,
        KeyCode::Char('k') | KeyCode::Up => Action::Up,
        KeyCode::Char('h') | KeyCode::Left => Action::PrevScreen,
        KeyCode::Char('l') if ctrl => Action::NextScreen,
        KeyCode::Right => Action::NextScreen,
        KeyCode::Enter => Action::Enter,
        KeyCode::Esc => Action::Back,
        KeyCode::Char('/') => Action::Filter,
        KeyCode::Char(' ') => Action::Pause,
        KeyCode::Char('r') => Action::Refresh,
        KeyCode::Char('e') => Action::Enable,
        KeyCode::Char('d') => Action::Disable,
        KeyCode::Char('c') => Action::ClearCooldown,
        KeyCode::Char('l') => Action::Login,
        KeyCode::Char('R') => Action::Reload,
        KeyCode::Char('s') => Action::StartDaemon,
        KeyCode::Char('S') => Action::StopDaemon,
        KeyCode::Char('y') | KeyCode::Char('Y') => Action::Yes,
        KeyCode::Char('n') | KeyCode::Char('N') => Action::Back,
        _ => return None,
    })
}
