//! The smaller screens: fallbacks, events, key help, and the screen shown without a daemon.

use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

use neurolink_shared::time::relative;

use super::{block, bold, fg};
use crate::input::HELP;
use crate::model::{Level, Link, State};
use neurolink_shared::ipc::methods::ProviderView;

/// One provider link: its counters since the daemon started, and whether it asked to wait.
fn link_line(name: &str, view: Option<&ProviderView>, state: &State) -> Line<'static> {
    let now = state.now;
    let Some(v) = view else {
        return Line::from(vec![
            Span::raw(format!("{name:<37}")),
            Span::styled("not used yet", fg(state, Color::DarkGray)),
        ]);
    };
    let numbers = format!(
        "{name:<37} {:>6} {:>6} {:>6} {:>9} {:>9}  ",
        v.requests, v.successes, v.failures, v.input_tokens, v.output_tokens
    );
    let state = match (&v.cooling_until, &v.last_error) {
        (Some(until), _) => {
            let when = neurolink_shared::time::parse_rfc3339(until)
                .map(|ms| relative(ms, now))
                .unwrap_or_else(|| until.clone());
            Span::styled(format!("waiting, free {when}"), fg(state, Color::Yellow))
        }
        (None, Some(e)) if v.failures > 0 && v.successes == 0 => {
            Span::styled(format!("failing: {e}"), fg(state, Color::Red))
        }
        _ => Span::styled("ready", fg(state, Color::Green)),
    };
    Line::from(vec![Span::raw(numbers), state])
}

pub fn fallbacks(frame: &mut Frame, area: Rect, state: &State) {
    let chain = state
        .status
        .as_ref()
        .map(|s| s.fallback_chain.clone())
        .unwrap_or_default();
    let providers = state
        .status
        .as_ref()
        .map(|s| s.providers.clone())
        .unwrap_or_default();
    let mut lines = Vec::new();
    if chain.is_empty() {
        lines.extend([
            Line::from("No fallback chain configured."),
            Line::from(""),
            Line::from("When every Anthropic account is cooling, the proxy can answer from another provider."),
            Line::from("Add to proxy-config.yaml, for example:"),
            Line::from(""),
            Line::from("  routing:"),
            Line::from("    fallback-chain:"),
            Line::from("      - { provider: openai, model: gpt-4o }"),
            Line::from("  providers:"),
            Line::from("    openai: { apiKey: \"${OPENAI_API_KEY}\" }"),
        ]);
    } else {
        lines.push(Line::from(Span::styled(
            format!(
                "   {:<34} {:>6} {:>6} {:>6} {:>9} {:>9}  state",
                "chain, in order", "reqs", "ok", "failed", "tokens in", "out"
            ),
            bold(),
        )));
        for (i, link) in chain.iter().enumerate() {
            let provider = link["provider"].as_str().unwrap_or("?");
            let model = link["model"].as_str().unwrap_or("?");
            lines.push(link_line(
                &format!("{}. {provider}/{model}", i + 1),
                providers
                    .iter()
                    .find(|p| p.link == format!("{provider}/{model}")),
                state,
            ));
        }
    }
    // Links used through model mappings (not in the chain).
    let mapped: Vec<_> = providers
        .iter()
        .filter(|p| {
            !chain.iter().any(|l| {
                format!(
                    "{}/{}",
                    l["provider"].as_str().unwrap_or_default(),
                    l["model"].as_str().unwrap_or_default()
                ) == p.link
            })
        })
        .collect();
    if !mapped.is_empty() {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled("   model mappings used", bold())));
        for p in mapped {
            lines.push(link_line(&format!("   {}", p.link), Some(p), state));
        }
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block("fallbacks")),
        area,
    );
}

pub fn events(frame: &mut Frame, area: Rect, state: &State) {
    let height = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = state
        .events
        .iter()
        .rev()
        .take(height)
        .map(|e| {
            let color = match e.level {
                Level::Info => Color::Reset,
                Level::Error => Color::Red,
            };
            Line::from(vec![
                Span::styled(
                    format!("{:>10}  ", relative(e.at, state.now)),
                    fg(state, Color::DarkGray),
                ),
                Span::styled(e.text.clone(), fg(state, color)),
            ])
        })
        .collect();
    let lines = if lines.is_empty() {
        vec![Line::from(
            "Reloads, invalid configs, refreshes, cooldowns and lag show here.",
        )]
    } else {
        lines
    };
    frame.render_widget(
        Paragraph::new(lines).block(block("events (newest first)")),
        area,
    );
}

pub fn no_daemon(frame: &mut Frame, area: Rect, state: &State) {
    let mut lines = vec![
        Line::from(Span::styled("No daemon is running.", bold())),
        Line::from(""),
        Line::from(vec![
            Span::raw("Press "),
            Span::styled("s", fg(state, Color::Cyan)),
            Span::raw(" to start one in the background, or run:"),
        ]),
        Line::from("  neurolink proxy start"),
        Line::from(""),
        Line::from(format!("Control socket: {}", state.socket)),
    ];
    match &state.link {
        Link::NoDaemon { error, retry_at } => {
            lines.push(Line::from(Span::styled(
                format!("Last try: {error}"),
                fg(state, Color::DarkGray),
            )));
            lines.push(Line::from(format!(
                "Trying again {} (automatically).",
                relative(*retry_at, state.now)
            )));
        }
        Link::Connecting => lines.push(Line::from("Connecting...")),
        Link::Connected => {}
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block("neurolink")),
        area,
    );
}

pub fn help(frame: &mut Frame, area: Rect, state: &State) {
    let width = area.width.saturating_sub(4).min(64);
    let height = (HELP.len() as u16 + 4).min(area.height);
    let rect = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + area.height.saturating_sub(height) / 2,
        width,
        height,
    };
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<16}"), fg(state, Color::Cyan)),
                Span::raw(*what),
            ])
        })
        .collect();
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(block("keys (any key closes)")),
        rect,
    );
}
