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

pub fn fallbacks(frame: &mut Frame, area: Rect, state: &State) {
    let chain = state
        .status
        .as_ref()
        .map(|s| s.fallback_chain.clone())
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
        lines.push(Line::from(Span::styled("chain, in order", bold())));
        for (i, link) in chain.iter().enumerate() {
            let provider = link["provider"].as_str().unwrap_or("?");
            let model = link["model"].as_str().unwrap_or("?");
            let used = state.fallback_use.get(provider).copied().unwrap_or(0);
            lines.push(Line::from(format!(
                "{}. {provider:<16} {model:<28} used {used}",
                i + 1
            )));
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
