//! Accounts: one row each (state with a live countdown, backoff, token expiry, 5h/7d quota,
//! counters), the pace forecast of the selected one and of the pool; Enter opens its details.

use std::time::Duration;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use neurolink_shared::ipc::{AccountState, AccountView, CredentialKind};
use neurolink_shared::time::{parse_rfc3339, relative, span, Millis};

use super::{bar, block, bold, fg, quota_color};
use crate::forecast::{self, Pace, Window};
use crate::model::State;

pub fn render(frame: &mut Frame, area: Rect, state: &State) {
    if state.accounts.is_empty() {
        let text = vec![
            Line::from("No account yet."),
            Line::from(""),
            Line::from("Press l to log in a Claude account here, or run `neurolink auth login anthropic`;"),
            Line::from("API keys go under accounts.anthropic in proxy-config.yaml. The daemon picks them up live."),
        ];
        frame.render_widget(Paragraph::new(text).block(block("accounts")), area);
        return;
    }
    if state.account_detail {
        if let Some(a) = state.account() {
            detail(frame, area, state, a);
            return;
        }
    }
    let forecast_height = 5;
    let [table_area, forecast_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(forecast_height)]).areas(area);
    table(frame, table_area, state);
    pace(frame, forecast_area, state);
}

fn state_cell<'a>(state: &State, a: &AccountView) -> Span<'a> {
    match a.state {
        AccountState::Active => Span::styled("active", fg(state, Color::Green)),
        AccountState::Cooling => Span::styled(
            format!(
                "cooling {}",
                span(Duration::from_secs(a.cooldown_remaining_secs.unwrap_or(0)))
            ),
            fg(state, Color::Yellow),
        ),
        AccountState::Disabled => Span::styled("disabled", fg(state, Color::Red)),
    }
}

fn kind(a: &AccountView) -> &'static str {
    match a.kind {
        CredentialKind::ApiKey => "key",
        CredentialKind::Oauth => "oauth",
    }
}

fn errors(a: &AccountView) -> u64 {
    a.counters.errors.values().sum()
}

fn table(frame: &mut Frame, area: Rect, state: &State) {
    let wide = area.width >= 120;
    let gauge = if wide { 14 } else { 11 };
    let mut header = vec!["account", "kind", "state", "5h", "7d", "reqs", "errs"];
    if wide {
        header.extend(["backoff", "token", "last error"]);
    }
    let rows: Vec<Row> = state
        .accounts
        .iter()
        .map(|a| {
            let quota = |used: Option<f64>| match used {
                Some(u) => Cell::from(Span::styled(bar(u, gauge), fg(state, quota_color(u)))),
                None => Cell::from("-"),
            };
            let mut cells = vec![
                Cell::from(a.label.clone()),
                Cell::from(kind(a)),
                Cell::from(state_cell(state, a)),
                quota(a.quota.as_ref().map(|q| q.five_hour)),
                quota(a.quota.as_ref().map(|q| q.seven_day)),
                Cell::from(a.counters.requests.to_string()),
                Cell::from(Span::styled(
                    errors(a).to_string(),
                    fg(
                        state,
                        if errors(a) > 0 {
                            Color::Red
                        } else {
                            Color::Reset
                        },
                    ),
                )),
            ];
            if wide {
                cells.push(Cell::from(a.backoff_level.to_string()));
                cells.push(Cell::from(token(a, state.now)));
                cells.push(Cell::from(
                    a.last_error
                        .clone()
                        .or(a.disabled_reason.clone())
                        .unwrap_or_default(),
                ));
            }
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![
        Constraint::Min(12),
        Constraint::Length(5),
        Constraint::Length(14),
        Constraint::Length(gauge as u16),
        Constraint::Length(gauge as u16),
        Constraint::Length(6),
        Constraint::Length(5),
    ];
    if wide {
        widths.extend([
            Constraint::Length(7),
            Constraint::Length(12),
            Constraint::Min(10),
        ]);
    }
    let t = Table::new(rows, widths)
        .header(Row::new(header).style(bold()))
        .block(block("accounts"))
        .row_highlight_style(fg(state, Color::Cyan).add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ");
    let mut ts = TableState::default().with_selected(Some(state.selected_account));
    frame.render_stateful_widget(t, area, &mut ts);
}

fn token(a: &AccountView, now: Millis) -> String {
    match a.token_expires_at.as_deref().and_then(parse_rfc3339) {
        Some(t) if t > now + 365 * 86_400_000 => "never".into(),
        Some(t) => relative(t, now),
        None => "-".into(),
    }
}

/// The windows of an account with their forecasts.
fn windows(state: &State, a: &AccountView) -> Vec<(&'static str, Window, Pace, f64)> {
    let Some(q) = &a.quota else { return Vec::new() };
    let samples = state.quota_samples.get(&a.label);
    let pick = |i: usize| -> Vec<(Millis, f64)> {
        samples
            .map(|s| {
                s.iter()
                    .map(|(t, f, w)| (*t, if i == 0 { *f } else { *w }))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for (i, (name, used, reset, length)) in [
        (
            "5h",
            q.five_hour,
            q.five_hour_reset_at,
            forecast::FIVE_HOURS,
        ),
        (
            "7d",
            q.seven_day,
            q.seven_day_reset_at,
            forecast::SEVEN_DAYS,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let w = Window {
            used,
            reset_at_ms: u64::try_from(reset).unwrap_or(0).saturating_mul(1000),
            length,
        };
        let s = pick(i);
        let rate = forecast::burn_rate(&w, &s, state.now);
        out.push((name, w, forecast::forecast(&w, &s, state.now), rate));
    }
    out
}

fn verdict(pace: Pace, now: Millis) -> String {
    match pace {
        Pace::Unknown => "no data yet".into(),
        Pace::OnPace { at_reset } => {
            format!(
                "on pace (about {:.0} % when it resets)",
                (at_reset * 100.0).min(100.0)
            )
        }
        Pace::Exhausts {
            at_ms,
            before_reset,
        } => format!(
            "reaches 100 % {}, {} before the window resets",
            relative(at_ms, now),
            span(before_reset)
        ),
    }
}

fn pace(frame: &mut Frame, area: Rect, state: &State) {
    let mut lines = Vec::new();
    if let Some(a) = state.account() {
        let ws = windows(state, a);
        if ws.is_empty() {
            lines.push(Line::from(format!(
                "{}: no quota reported (API keys have none)",
                a.label
            )));
        }
        for (name, w, p, _) in &ws {
            let color = match p {
                Pace::Exhausts { .. } => Color::Red,
                _ => Color::Green,
            };
            lines.push(Line::from(vec![
                Span::styled(format!("{} {name}: ", a.label), bold()),
                Span::styled(verdict(*p, state.now), fg(state, color)),
                Span::raw(format!("  (resets {})", relative(w.reset_at_ms, state.now))),
            ]));
        }
    }
    let pooled: Vec<(f64, f64)> = state
        .accounts
        .iter()
        .filter(|a| a.state != AccountState::Disabled)
        .filter_map(|a| windows(state, a).first().map(|(_, w, _, r)| (w.used, *r)))
        .collect();
    if !pooled.is_empty() {
        let (headroom, lasts) = forecast::pool_headroom(&pooled);
        let lasts = lasts.map_or("nothing is burning".to_string(), |d| {
            format!("lasts about {} at the current pace", span(d))
        });
        lines.push(Line::from(format!(
            "pool 5h: {:.0} % of one window left across {} accounts, {lasts}",
            headroom * 100.0,
            pooled.len()
        )));
    }
    frame.render_widget(Paragraph::new(lines).block(block("pace")), area);
}

/// One cell of a text sparkline for a utilisation (0.0-1.0).
fn spark(used: f64) -> char {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    LEVELS[((used.clamp(0.0, 1.0) * 7.0).round() as usize).min(7)]
}

fn detail(frame: &mut Frame, area: Rect, state: &State, a: &AccountView) {
    let [info, recent] = Layout::vertical([Constraint::Length(12), Constraint::Min(3)]).areas(area);
    let source = serde_json::to_value(a.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut lines = vec![
        Line::from(vec![
            Span::styled("state     ", bold()),
            state_cell(state, a),
        ]),
        Line::from(format!(
            "kind      {} from {source}, weight {}",
            kind(a),
            a.weight
        )),
        Line::from(format!("backoff   level {}", a.backoff_level)),
        Line::from(format!("token     expires {}", token(a, state.now))),
        Line::from(format!(
            "excluded  {}",
            if a.excluded_models.is_empty() {
                "-".to_string()
            } else {
                a.excluded_models.join(", ")
            }
        )),
        Line::from(format!(
            "counters  {} requests, {} ok, errors {:?}, tokens {} in / {} out",
            a.counters.requests,
            a.counters.successes,
            a.counters.errors,
            a.counters.input_tokens,
            a.counters.output_tokens
        )),
    ];
    for (name, w, p, _) in windows(state, a) {
        lines.push(Line::from(format!(
            "{name}        {}  {}",
            bar(w.used, 24),
            verdict(p, state.now)
        )));
    }
    if let Some(samples) = state.quota_samples.get(&a.label).filter(|s| s.len() > 1) {
        let shown = samples.len().min(48);
        let trend: String = samples
            .iter()
            .skip(samples.len() - shown)
            .map(|(_, five_hour, _)| spark(*five_hour))
            .collect();
        lines.push(Line::from(format!(
            "5h trend  {trend}  (last {shown} reports)"
        )));
    }
    if let Some(r) = &a.disabled_reason {
        lines.push(Line::from(Span::styled(
            format!("disabled  {r}"),
            fg(state, Color::Red),
        )));
    }
    if let Some(e) = &a.last_error {
        lines.push(Line::from(Span::styled(
            format!("last err  {e}"),
            fg(state, Color::Red),
        )));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(&format!("{} (Esc back)", a.label))),
        info,
    );
    let rows: Vec<Line> = state
        .requests
        .iter()
        .rev()
        .filter(|r| r.attempts.iter().any(|t| *t.account == *a.label))
        .take(recent.height.saturating_sub(2) as usize)
        .map(|r| {
            Line::from(format!(
                "{}  {}  {}  {} ms",
                r.time.get(11..19).unwrap_or(&r.time),
                r.status,
                r.model.as_deref().unwrap_or("-"),
                r.total_ms
            ))
        })
        .collect();
    frame.render_widget(Paragraph::new(rows).block(block("recent requests")), recent);
}
