//! Overview: the daemon, the pool at a glance, traffic sparklines, outcomes, fallback use.

use std::time::Duration;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline};
use ratatui::Frame;

use neurolink_shared::ipc::AccountState;
use neurolink_shared::time::span;

use super::{block, bold, fg};
use crate::model::State;

pub fn render(frame: &mut Frame, area: Rect, state: &State) {
    let [top, spark_req, spark_tok, bottom] = Layout::vertical([
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Min(3),
    ])
    .areas(area);
    let [daemon_area, pool_area] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
    daemon(frame, daemon_area, state);
    pool(frame, pool_area, state);
    let window = spark_req.width.saturating_sub(2) as usize;
    let reqs: Vec<u64> = last(state, window, |s| s.requests);
    let toks: Vec<u64> = last(state, window, |s| s.tokens);
    let (r_now, t_now) = (per_sec(state, |s| s.requests), per_sec(state, |s| s.tokens));
    frame.render_widget(
        Sparkline::default()
            .block(block(&format!(
                "requests/s  now {r_now:.1}  (last {} s)",
                reqs.len()
            )))
            .data(&reqs)
            .style(fg(state, Color::Cyan)),
        spark_req,
    );
    frame.render_widget(
        Sparkline::default()
            .block(block(&format!("tokens/s  now {t_now:.0}")))
            .data(&toks)
            .style(fg(state, Color::Magenta)),
        spark_tok,
    );
    let [outcomes_area, fallback_area] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);
    let lines: Vec<Line> = if state.outcomes.is_empty() {
        vec![Line::from("no request yet")]
    } else {
        state
            .outcomes
            .iter()
            .map(|(k, v)| {
                let color = if k == "ok" { Color::Green } else { Color::Red };
                Line::from(vec![
                    Span::styled(format!("{k:<20}"), fg(state, color)),
                    Span::raw(format!("{v:>8}")),
                ])
            })
            .collect()
    };
    frame.render_widget(
        Paragraph::new(lines).block(block("outcomes")),
        outcomes_area,
    );
    let lines: Vec<Line> = if state.fallback_use.is_empty() {
        vec![Line::from("no fallback used")]
    } else {
        state
            .fallback_use
            .iter()
            .map(|(k, v)| Line::from(format!("{k:<20}{v:>8}")))
            .collect()
    };
    frame.render_widget(
        Paragraph::new(lines).block(block("fallbacks")),
        fallback_area,
    );
}

fn daemon(frame: &mut Frame, area: Rect, state: &State) {
    let lines = match &state.status {
        Some(s) => vec![
            Line::from(vec![
                Span::styled("address  ", bold()),
                Span::raw(format!("http://{}:{}", s.host, s.port)),
            ]),
            Line::from(vec![
                Span::styled("version  ", bold()),
                Span::raw(format!("{} (pid {})", s.version, s.pid)),
            ]),
            Line::from(vec![
                Span::styled("uptime   ", bold()),
                Span::raw(span(Duration::from_secs_f64(s.uptime.max(0.0)))),
            ]),
            Line::from(vec![
                Span::styled("strategy ", bold()),
                Span::raw(s.strategy.clone()),
            ]),
        ],
        None => vec![Line::from("waiting for the daemon's status")],
    };
    frame.render_widget(Paragraph::new(lines).block(block("daemon")), area);
}

fn pool(frame: &mut Frame, area: Rect, state: &State) {
    let count = |st: AccountState| state.accounts.iter().filter(|a| a.state == st).count();
    let (active, cooling, disabled) = (
        count(AccountState::Active),
        count(AccountState::Cooling),
        count(AccountState::Disabled),
    );
    let lines = vec![
        Line::from(vec![
            Span::styled(format!("{active} active  "), fg(state, Color::Green)),
            Span::styled(format!("{cooling} cooling  "), fg(state, Color::Yellow)),
            Span::styled(format!("{disabled} disabled"), fg(state, Color::Red)),
        ]),
        Line::from(vec![
            Span::styled("served last  ", bold()),
            Span::raw(state.last_served.clone().unwrap_or_else(|| "-".into())),
        ]),
        Line::from(vec![
            Span::styled("requests     ", bold()),
            Span::raw(
                state
                    .status
                    .as_ref()
                    .map(|s| format!("{} ({} ok)", s.totals.requests, s.totals.successes))
                    .unwrap_or_default(),
            ),
        ]),
        Line::from(vec![
            Span::styled("tokens       ", bold()),
            Span::raw(
                state
                    .status
                    .as_ref()
                    .map(|s| {
                        format!(
                            "{} in / {} out",
                            s.totals.input_tokens, s.totals.output_tokens
                        )
                    })
                    .unwrap_or_default(),
            ),
        ]),
    ];
    frame.render_widget(Paragraph::new(lines).block(block("pool")), area);
}

/// The last `n` seconds of one measure, oldest first.
fn last(state: &State, n: usize, f: impl Fn(&crate::model::Second) -> u64) -> Vec<u64> {
    let skip = state.history.len().saturating_sub(n);
    state.history.iter().skip(skip).map(f).collect()
}

/// The average per second over the last 10 complete seconds.
fn per_sec(state: &State, f: impl Fn(&crate::model::Second) -> u64) -> f64 {
    let n = state.history.len();
    if n < 2 {
        return 0.0;
    }
    let recent: Vec<u64> = state
        .history
        .iter()
        .skip(n.saturating_sub(11))
        .take(n.saturating_sub(1).min(10))
        .map(f)
        .collect();
    recent.iter().sum::<u64>() as f64 / recent.len().max(1) as f64
}
