//! Drawing the dashboard: a pure function of the [`App`], so tests render it on ratatui's
//! `TestBackend` and read the buffer.
//!
//! Every string that came from Redis (queue and job names, error messages, arguments) goes
//! through [`printable`] before it reaches a cell: the terminal would otherwise obey an escape
//! sequence inside a job name, and a newline would break the layout.

use std::borrow::Cow;

use queue::admin::{JobView, State};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table, TableState, Tabs, Wrap};
use ratatui::Frame;

use super::app::{count_of, App, Focus, Status, THROUGHPUT_MINUTES};
use crate::cmd::jobs::Row as JobRow;
use crate::output::{printable, relative};

/// The key bindings, as the help line lists them.
pub const HELP: &str = "↑/↓ select · Enter open · Esc back · Tab/1-7 state · PgUp/PgDn page · \
                        p pause/resume queue · r retry job · q quit";

/// The regions of the screen.
#[derive(Debug, Clone, Copy)]
pub struct Areas {
    pub queues: Rect,
    pub tabs: Rect,
    pub jobs: Rect,
    pub status: Rect,
}

/// Splits the screen: the queue table as tall as its rows (at most half the screen), the state
/// tabs, the job list in the rest, and the status line.
pub fn layout(area: Rect, app: &App) -> Areas {
    let rows = app.snapshot.queues.len().max(1) as u16;
    let queues_h = (rows + 3).min((area.height / 2).max(4));
    // The help wraps on an 80-column terminal; a failed refresh has a line of its own, so an
    // action's result still shows while Redis is away.
    let status_h = if app.help { 2 } else { 1 } + u16::from(app.refresh_error.is_some());
    let [queues, tabs, jobs, status] = Layout::vertical([
        Constraint::Length(queues_h),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(status_h),
    ])
    .areas(area);
    Areas {
        queues,
        tabs,
        jobs,
        status,
    }
}

/// How many job rows fit in the job list (inside its border, under its header).
pub fn page_size(area: Rect, app: &App) -> usize {
    layout(area, app).jobs.height.saturating_sub(3).max(1) as usize
}

/// Draws the whole dashboard.
pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let areas = layout(frame.area(), app);
    draw_queues(frame, areas.queues, app);
    draw_tabs(frame, areas.tabs, app);
    draw_jobs(frame, areas.jobs, app);
    draw_status(frame, areas.status, app);
    if let Some(view) = &app.detail {
        draw_detail(frame, frame.area(), app, view);
    }
}

/// "running" / "paused".
const STATE_W: u16 = 7;
/// "100.0%".
const FAIL_W: u16 = 7;
const NUMBER_COLUMNS: [(&str, u16); 6] = [
    ("PENDING", 7),
    ("SCHED", 5),
    ("RETRY", 5),
    ("ACTIVE", 6),
    ("DEAD", 5),
    ("DONE", 5),
];

fn draw_queues(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let focused = app.focus == Focus::Queues && app.detail.is_none();
    let block = Block::bordered()
        .title(" queues ")
        .border_style(border(focused));
    if app.snapshot.queues.is_empty() {
        let text = if app.snapshot.taken_ms == 0 {
            "reading Redis…"
        } else {
            "no queues yet: enqueue a job or start a worker"
        };
        frame.render_widget(Paragraph::new(text).dim().block(block), area);
        return;
    }
    let name_w = app
        .snapshot
        .queues
        .iter()
        .map(|q| printable(&q.stats.queue).chars().count())
        .max()
        .unwrap_or(0)
        .clamp(5, 24) as u16;
    // Whatever the fixed columns leave (borders, the highlight symbol, one space between
    // columns) goes to the sparkline: one character a minute, the newest on the right.
    let fixed: u16 = name_w + STATE_W + NUMBER_COLUMNS.iter().map(|(_, w)| w).sum::<u16>() + FAIL_W;
    let gaps = NUMBER_COLUMNS.len() as u16 + 3;
    let spark_w = area
        .width
        .saturating_sub(2 + 2 + fixed + gaps)
        .min(THROUGHPUT_MINUTES as u16);
    let spark_header = if spark_w >= 18 {
        format!("COMPLETED/MIN, {spark_w}m")
    } else {
        format!("LAST {spark_w}m")
    };
    let mut header = vec![Cell::from("QUEUE"), Cell::from("STATE")];
    header.extend(NUMBER_COLUMNS.iter().map(|(h, _)| Cell::from(*h)));
    header.push(Cell::from(spark_header));
    header.push(Cell::from("FAIL 1h"));
    let rows = app.snapshot.queues.iter().map(|q| {
        let s = &q.stats;
        let state = if s.paused {
            Cell::from("paused").yellow()
        } else {
            Cell::from("running").green()
        };
        let dead = Cell::from(compact(s.dead));
        let dead = if s.dead > 0 { dead.red() } else { dead };
        let fail = Cell::from(format!("{:.1}%", s.error_rate_1h * 100.0));
        let fail = if s.error_rate_1h > 0.05 {
            fail.red()
        } else {
            fail
        };
        let minutes = &q.completed_per_minute;
        let recent = &minutes[minutes.len().saturating_sub(spark_w as usize)..];
        Row::new(vec![
            Cell::from(printable(&s.queue).into_owned()),
            state,
            Cell::from(compact(s.pending)),
            Cell::from(compact(s.scheduled)),
            Cell::from(compact(s.retrying)),
            Cell::from(compact(s.active)),
            dead,
            Cell::from(compact(s.completed)),
            Cell::from(sparkline(recent)),
            fail,
        ])
    });
    let mut widths = vec![Constraint::Length(name_w), Constraint::Length(STATE_W)];
    widths.extend(NUMBER_COLUMNS.iter().map(|(_, w)| Constraint::Length(*w)));
    widths.push(Constraint::Length(spark_w));
    widths.push(Constraint::Length(FAIL_W));
    let table = Table::new(rows, widths)
        .header(Row::new(header).bold())
        .block(block)
        .highlight_symbol("> ")
        .row_highlight_style(highlight(focused));
    let mut state = TableState::default().with_selected(Some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_tabs(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let title = |short: bool| {
        State::ALL
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let n = app
                    .selected_queue()
                    .map(|q| compact(count_of(&q.stats, *st)))
                    .unwrap_or_default();
                let name = if short { short_name(*st) } else { st.name() };
                format!("{} {name} {n}", i + 1)
            })
            .collect::<Vec<_>>()
    };
    let selected = State::ALL.iter().position(|s| *s == app.state);
    let style = Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD);
    let full = title(false);
    // A tab is padded by a space on both sides and divided from the next by one character.
    let full_w: usize = full.iter().map(|t| t.chars().count() + 3).sum::<usize>() - 1;
    let tabs = if full_w <= area.width as usize {
        Tabs::new(full)
    } else {
        // Short names, unpadded, fit 80 columns.
        Tabs::new(title(true)).padding("", "").divider(" │ ")
    };
    let tabs = tabs.select(selected).highlight_style(style);
    frame.render_widget(tabs, area);
}

fn draw_jobs(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let focused = app.focus == Focus::Jobs && app.detail.is_none();
    let Some(q) = app.selected_queue() else {
        frame.render_widget(Block::bordered().title(" jobs "), area);
        return;
    };
    let count = count_of(&q.stats, app.state);
    let pages = count.div_ceil(app.page_size as u64).max(1);
    let title = format!(
        " {} jobs of {} · page {} of {pages} ",
        app.state.name(),
        printable(&q.stats.queue),
        app.page + 1
    );
    let block = Block::bordered().title(title).border_style(border(focused));
    if !app.jobs_current() {
        frame.render_widget(Paragraph::new("reading…").dim().block(block), area);
        return;
    }
    if app.snapshot.jobs.is_empty() {
        let text = format!("no {} jobs", app.state.name());
        frame.render_widget(Paragraph::new(text).dim().block(block), area);
        return;
    }
    let now = app.snapshot.taken_ms;
    let when_header = match app.state {
        State::Pending | State::Recovered => "ENQUEUED",
        State::Scheduled | State::Retrying => "RUNS",
        State::Active => "LEASE ENDS",
        State::Dead => "DIED",
        _ => "FINISHED",
    };
    let rows = app.snapshot.jobs.iter().map(|v| {
        let r = JobRow::from_view(v);
        let when = match app.state {
            State::Pending | State::Recovered => r.created_ms,
            _ => r.at_ms,
        };
        let name = match &r.name {
            Some(n) => Cell::from(printable(n).into_owned()),
            None => Cell::from("<undecodable>").red(),
        };
        let attempts = match (r.attempt, r.max_attempts) {
            (Some(a), Some(m)) => format!("{a}/{m}"),
            _ => String::new(),
        };
        let error = r.last_error.or(r.decode_error).unwrap_or_default();
        Row::new(vec![
            Cell::from(r.id),
            name,
            Cell::from(attempts),
            Cell::from(when.map(|w| relative(w, now)).unwrap_or_default()),
            Cell::from(one_line(&error).into_owned()).red(),
        ])
    });
    let widths = [
        Constraint::Length(26),
        Constraint::Fill(1),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Fill(2),
    ];
    let header = Row::new(["ID", "NAME", "ATTEMPT", when_header, "LAST ERROR"]).bold();
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .highlight_symbol("> ")
        .row_highlight_style(highlight(focused));
    let mut state = TableState::default().with_selected(focused.then_some(app.job));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_status(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let mut lines = Vec::new();
    if let Some(e) = &app.refresh_error {
        let text = format!(
            "cannot refresh: {}; the figures shown are older",
            one_line(e)
        );
        lines.push(Line::from(text).red());
    }
    lines.push(if app.help {
        Line::from(HELP)
    } else {
        match &app.status {
            Some(Status::Error(e)) => Line::from(one_line(e).into_owned()).red(),
            Some(Status::Info(s)) => Line::from(one_line(s).into_owned()),
            None => Line::from("? keys · q quit").dim(),
        }
    });
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), area);
}

fn draw_detail(frame: &mut Frame<'_>, area: Rect, app: &App, view: &JobView) {
    let w = (area.width.saturating_mul(9) / 10).max(area.width.min(40));
    let h = (area.height.saturating_mul(8) / 10).max(area.height.min(10));
    let popup = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let title = format!(" job {} · Esc closes · r retries · ↑/↓ scroll ", view.id);
    let block = Block::bordered()
        .title(title)
        .border_style(Style::new().fg(Color::Cyan));
    let text: Vec<Line<'_>> = detail_lines(view, app.snapshot.taken_ms)
        .into_iter()
        .map(Line::from)
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(text)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((app.detail_scroll, 0)),
        popup,
    );
}

/// The detail pane's text, as `queue job show` lays it out: the envelope, the arguments
/// decoded to JSON, the result, and the error history.
fn detail_lines(v: &JobView, now: i64) -> Vec<String> {
    let r = JobRow::from_view(v);
    let job = v.job.as_ref().ok();
    let mut lines = vec![
        format!("queue      {}", printable(&r.queue)),
        format!("state      {}", r.state),
        format!(
            "name       {}",
            r.name.as_deref().map_or("<undecodable>".into(), printable)
        ),
    ];
    if let Some(e) = &r.decode_error {
        lines.push(format!("decode     {}", one_line(e)));
    }
    if let Some(p) = r.priority {
        lines.push(format!("priority   {p}"));
    }
    if let (Some(a), Some(m)) = (r.attempt, r.max_attempts) {
        lines.push(format!("attempts   {a} of {m} used"));
    }
    if let Some(c) = r.created_ms {
        lines.push(format!("created    {} ({})", iso(c), relative(c, now)));
    }
    if let Some(at) = r.at_ms {
        let label = v.state.at_label();
        lines.push(format!("{label:<10} {} ({})", iso(at), relative(at, now)));
    }
    if let Some(u) = job.and_then(|j| j.unique_key.as_deref()) {
        lines.push(format!("unique key {}", printable(u)));
    }
    if let Some(j) = job {
        match queue::wire::decode_value::<serde_json::Value>(&j.args, "arguments") {
            Ok(args) => {
                let pretty = serde_json::to_string_pretty(&args).unwrap_or_default();
                // JSON escapes C0 controls but not DEL, the C1 set or bidi overrides.
                for (i, l) in pretty.lines().enumerate() {
                    let label = if i == 0 { "args      " } else { "          " };
                    lines.push(format!("{label} {}", printable(l)));
                }
            }
            Err(_) => {
                let hex: String = j.args.iter().map(|b| format!("{b:02x}")).collect();
                lines.push(format!("args (hex) {hex}"));
            }
        }
    }
    if let Some(o) = &v.outcome {
        let result = o
            .result
            .as_deref()
            .and_then(|r| queue::wire::decode_value::<serde_json::Value>(r, "result").ok());
        if let Some(res) = result {
            lines.push(format!("result     {}", printable(&res.to_string())));
        }
        if let Some(e) = &o.error {
            lines.push(format!("reason     {}", one_line(e)));
        }
    }
    if let Some(j) = job.filter(|j| !j.errors.is_empty()) {
        lines.push("errors".into());
        for f in &j.errors {
            lines.push(format!(
                "  #{} {} {}: {}",
                f.attempt,
                iso(f.at_ms),
                printable(&f.kind),
                one_line(&f.message)
            ));
        }
    }
    lines
}

/// Completed jobs per minute as one character a minute, scaled to the busiest minute shown;
/// a minute without any is a dot, so an idle queue reads as idle rather than blank.
pub fn sparkline(values: &[u64]) -> Line<'static> {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0);
    let spans: Vec<Span<'static>> = values
        .iter()
        .map(|&v| {
            if v == 0 || max == 0 {
                return Span::raw("·").dim();
            }
            // 1..=8 eighths: any completion at all shows as at least the lowest bar.
            let level = ((v * 8).div_ceil(max)).clamp(1, 8) as usize;
            Span::raw(BARS[level - 1].to_string()).green()
        })
        .collect();
    Line::from(spans)
}

/// A state's name in at most six characters, for the tabs of a narrow terminal.
fn short_name(s: State) -> &'static str {
    match s {
        State::Pending => "pend",
        State::Scheduled => "sched",
        State::Retrying => "retry",
        State::Recovered => "recov",
        State::Active => "active",
        State::Dead => "dead",
        _ => "done",
    }
}

/// A count in at most five characters.
fn compact(n: u64) -> String {
    match n {
        0..=99_999 => n.to_string(),
        100_000..=9_999_999 => format!("{}k", n / 1000),
        _ => format!("{}M", n / 1_000_000),
    }
}

/// An error message on one line: newlines read as spaces, other controls are escaped.
fn one_line(s: &str) -> Cow<'_, str> {
    if s.contains('\n') {
        Cow::Owned(printable(&s.replace('\n', " ")).into_owned())
    } else {
        printable(s)
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn border(focused: bool) -> Style {
    if focused {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new()
    }
}

fn highlight(focused: bool) -> Style {
    if focused {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new().add_modifier(Modifier::BOLD)
    }
}
