//! Requests: the live log, newest first, colored by outcome; `/` filters, space pauses, Enter
//! shows one request.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use neurolink_shared::ipc::RequestRecord;

use super::{block, bold, fg};
use crate::model::State;

fn color(r: &RequestRecord) -> Color {
    match (r.status, &r.error_class) {
        (200..=299, None) => Color::Green,
        (429, _) => Color::Yellow,
        (200..=299, Some(_)) => Color::Yellow,
        _ => Color::Red,
    }
}

fn attempts(r: &RequestRecord) -> String {
    r.attempts
        .iter()
        .map(|a| format!("{}:{}", a.account, a.outcome))
        .collect::<Vec<_>>()
        .join(" → ")
}

pub fn render(frame: &mut Frame, area: Rect, state: &State) {
    let visible = state.visible_requests();
    let mut title = format!("requests ({} shown)", visible.len());
    if state.paused_at.is_some() {
        title.push_str("  PAUSED (space resumes)");
    }
    if !state.filter.is_empty() {
        title.push_str(&format!("  filter: {}", state.filter));
    }
    if state.request_detail {
        if let Some(r) = visible.get(state.selected_request) {
            detail(frame, area, state, r);
            return;
        }
    }
    if visible.is_empty() {
        let text = if state.requests.is_empty() {
            "No request yet. Point Claude Code at the proxy: ANTHROPIC_BASE_URL=http://<address> claude"
        } else {
            "Nothing matches the filter (Esc in the filter clears it)."
        };
        frame.render_widget(Paragraph::new(text).block(block(&title)), area);
        return;
    }
    let wide = area.width >= 120;
    // Only the rows that fit are built (the log holds up to a thousand), with the selected one
    // in view.
    let fits = usize::from(area.height.saturating_sub(3)).max(1);
    let offset = state.selected_request.saturating_sub(fits - 1);
    let rows: Vec<Row> = visible
        .iter()
        .skip(offset)
        .take(fits)
        .map(|r| {
            let mut cells = vec![
                Cell::from(r.time.get(11..19).unwrap_or(&r.time).to_string()),
                Cell::from(Span::styled(r.status.to_string(), fg(state, color(r)))),
                Cell::from(r.model.as_deref().unwrap_or("-").to_string()),
                Cell::from(r.account.as_deref().unwrap_or("-").to_string()),
                Cell::from(r.ttfb_ms.map_or("-".into(), |t| format!("{t}"))),
                Cell::from(format!("{}", r.total_ms)),
                Cell::from(format!("{}/{}", r.input_tokens, r.output_tokens)),
            ];
            if wide {
                cells.push(Cell::from(attempts(r)));
            }
            Row::new(cells)
        })
        .collect();
    let mut header = vec![
        "time",
        "st",
        "model",
        "account",
        "ttfb",
        "total",
        "tok in/out",
    ];
    let mut widths = vec![
        Constraint::Length(8),
        Constraint::Length(3),
        Constraint::Min(12),
        Constraint::Length(14),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(11),
    ];
    if wide {
        header.push("attempts");
        widths.push(Constraint::Min(20));
    }
    let t = Table::new(rows, widths)
        .header(Row::new(header).style(bold()))
        .block(block(&title))
        .row_highlight_style(fg(state, Color::Cyan).add_modifier(Modifier::REVERSED));
    let mut ts = TableState::default().with_selected(Some(state.selected_request - offset));
    frame.render_stateful_widget(t, area, &mut ts);
}

fn detail(frame: &mut Frame, area: Rect, state: &State, r: &RequestRecord) {
    let lines = vec![
        Line::from(vec![
            Span::styled("id        ", bold()),
            Span::raw(r.request_id.clone()),
        ]),
        Line::from(format!("time      {}", r.time)),
        Line::from(format!(
            "request   {} {}{}",
            r.method,
            r.path,
            if r.stream { " (stream)" } else { "" }
        )),
        Line::from(format!("model     {}", r.model.as_deref().unwrap_or("-"))),
        Line::from(vec![
            Span::raw("status    "),
            Span::styled(r.status.to_string(), fg(state, color(r))),
            Span::raw(
                r.error_class
                    .as_ref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
            ),
        ]),
        Line::from(format!("account   {}", r.account.as_deref().unwrap_or("-"))),
        Line::from(format!("attempts  {}", attempts(r))),
        Line::from(format!(
            "timing    first byte {} ms, total {} ms",
            r.ttfb_ms.map_or("-".into(), |t| t.to_string()),
            r.total_ms
        )),
        Line::from(format!(
            "tokens    {} in, {} out",
            r.input_tokens, r.output_tokens
        )),
    ];
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block("request (Esc back)")),
        area,
    );
}
