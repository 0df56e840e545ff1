//! Rendering: a pure function of the [`State`]. Each screen has its module; this one draws the
//! frame around them (tabs, the link to the daemon, the footer with keys and the status line) and
//! the overlays (help, confirmations, the login prompt).

mod accounts;
mod misc;
mod overview;
mod requests;
#[cfg(test)]
mod tests;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Tabs, Wrap};
use ratatui::Frame;

use crate::model::{Confirm, Level, Link, Mode, Screen, State};

/// Draw everything.
pub fn render(frame: &mut Frame, state: &State) {
    let [top, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    header(frame, top, state);
    match (&state.link, state.screen) {
        (Link::Connected, Screen::Overview) => overview::render(frame, body, state),
        (Link::Connected, Screen::Accounts) => accounts::render(frame, body, state),
        (Link::Connected, Screen::Requests) => requests::render(frame, body, state),
        (Link::Connected, Screen::Fallbacks) => misc::fallbacks(frame, body, state),
        (_, Screen::Events) => misc::events(frame, body, state),
        (_, _) => misc::no_daemon(frame, body, state),
    }
    footer(frame, foot, state);
    match &state.mode {
        Mode::Help => misc::help(frame, frame.area(), state),
        Mode::Confirm(c) => {
            let question = match c {
                Confirm::Disable(label) => {
                    format!("Disable {label}? It stops serving until enabled (e). y/n")
                }
                Confirm::StopDaemon => {
                    "Stop the daemon? In-flight answers finish first. y/n".to_string()
                }
            };
            popup(frame, "Confirm", &[question], state);
        }
        Mode::Login(p) => {
            let lines = vec![
                "Open this page, log in and approve (copied to the clipboard where the terminal allows; Ctrl-Y copies again):".to_string(),
                p.url.clone(),
                String::new(),
                format!("Paste the code it shows, then Enter (Esc cancels): {}", p.code),
            ];
            popup(frame, "Log in an account", &lines, state);
        }
        Mode::Normal | Mode::Filter => {}
    }
}

/// A color, or nothing with `NO_COLOR`.
pub(crate) fn fg(state: &State, color: Color) -> Style {
    if state.color {
        Style::default().fg(color)
    } else {
        Style::default()
    }
}

pub(crate) fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

pub(crate) fn block(title: &str) -> Block<'_> {
    Block::default().borders(Borders::ALL).title(title)
}

fn header(frame: &mut Frame, area: Rect, state: &State) {
    let [tabs_area, link_area] =
        Layout::horizontal([Constraint::Min(10), Constraint::Length(24)]).areas(area);
    let titles: Vec<Line> = Screen::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| Line::from(format!("{} {}", i + 1, s.title())))
        .collect();
    let selected = Screen::ALL
        .iter()
        .position(|s| *s == state.screen)
        .unwrap_or(0);
    let tabs = Tabs::new(titles)
        .select(selected)
        .highlight_style(fg(state, Color::Cyan).add_modifier(Modifier::BOLD | Modifier::REVERSED))
        .divider("|")
        .padding("", "");
    frame.render_widget(tabs, tabs_area);
    let link = match &state.link {
        Link::Connected => {
            let addr = state
                .status
                .as_ref()
                .map_or(String::new(), |s| format!("{}:{}", s.host, s.port));
            Span::styled(format!("● {addr}"), fg(state, Color::Green))
        }
        Link::Connecting => Span::styled("◌ connecting", fg(state, Color::Yellow)),
        Link::NoDaemon { .. } => Span::styled("○ no daemon", fg(state, Color::Red)),
    };
    frame.render_widget(
        Paragraph::new(Line::from(link)).alignment(ratatui::layout::Alignment::Right),
        link_area,
    );
}

fn footer(frame: &mut Frame, area: Rect, state: &State) {
    let line = if let Some((level, text, _)) = &state.status_line {
        let color = match level {
            Level::Info => Color::Green,
            Level::Error => Color::Red,
        };
        Line::from(Span::styled(text.clone(), fg(state, color)))
    } else if state.mode == Mode::Filter {
        Line::from(format!(
            "filter: {}▏ (Enter keeps it, Esc clears)",
            state.filter
        ))
    } else {
        let keys = match state.screen {
            Screen::Accounts => "Enter details  r refresh  e/d enable/disable  c clear cooldown  l login  ? help  q quit",
            Screen::Requests => "Enter details  / filter  space pause  j/k move  ? help  q quit",
            _ => "1-5 screens  l login  R reload config  s/S start/stop daemon  ? help  q quit",
        };
        Line::from(Span::styled(keys, fg(state, Color::DarkGray)))
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn popup(frame: &mut Frame, title: &str, lines: &[String], state: &State) {
    let area = frame.area();
    let width = area.width.saturating_sub(8).min(100);
    let height = (lines.len() as u16 + 4).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height.saturating_sub(height)) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, rect);
    let text: Vec<Line> = lines.iter().map(|l| Line::from(l.as_str())).collect();
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(block(title).border_style(fg(state, Color::Cyan))),
        rect,
    );
}

/// `▓▓▓▓░░░░ 42%` in `width` cells (the bar takes what the number leaves).
pub(crate) fn bar(used: f64, width: usize) -> String {
    let used = used.clamp(0.0, 1.0);
    let cells = width.saturating_sub(5).max(1);
    let full = ((used * cells as f64).round() as usize).min(cells);
    format!(
        "{}{} {:>3.0}%",
        "▓".repeat(full),
        "░".repeat(cells - full),
        used * 100.0
    )
}

/// The color of a utilisation.
pub(crate) fn quota_color(used: f64) -> Color {
    if used >= 0.9 {
        Color::Red
    } else if used >= 0.7 {
        Color::Yellow
    } else {
        Color::Green
    }
}
