//! Drawing mtop, and the text of its rows (the same for the screen and `--once`). Reads the
//! state, changes nothing.

use mosix_core::cli::{cpu_time, tty_name};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::{App, Proc};

/// The column titles.
pub fn header() -> String {
    format!(
        "{:>7} {:<9} {:>5} {:>5} {:>4} {:<3} {:>5} {:>7} {:<6} COMMAND",
        "PID", "USER", "N#", "FROM", "MIGS", "S", "%CPU", "TIME", "TTY"
    )
}

/// One process: N# is where it runs (0 = here), FROM the home of a guest, S its state with L
/// when it is locked and M when it cannot move.
pub fn line(p: &Proc, full: bool) -> String {
    let r = &p.row;
    let mut state = r.state.to_string();
    if r.lock {
        state.push('L');
    }
    if r.cantmove.is_some() {
        state.push('M');
    }
    let user: String = p.user.chars().take(9).collect();
    format!(
        "{:>7} {:<9} {:>5} {:>5} {:>4} {:<3} {:>5} {:>7} {:<6} {}",
        r.pid,
        user,
        r.node,
        r.from.map_or_else(|| "-".to_owned(), |f| f.to_string()),
        r.nmigs,
        state,
        p.cpu_pct
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}")),
        cpu_time(r.cpu_ms),
        tty_name(r.tty),
        p.command(full)
    )
}

/// The summary lines above the table.
pub fn summary(app: &App) -> [String; 2] {
    let me = app.me.map_or_else(|| "?".to_owned(), |m| m.to_string());
    let node = match &app.figures {
        Some(f) => format!(
            "load {}  speed {} \u{d7} {} CPU{}  memory {} MiB available of {} MiB  util {}%",
            f.load,
            f.speed,
            f.cpus,
            if f.cpus == 1 { "" } else { "s" },
            f.mem_free >> 20,
            f.mem_total >> 20,
            f.util
        ),
        None => "not measured yet".to_owned(),
    };
    let (here, away, guests) = app.counts();
    [
        format!("mtop - node #{me}  {node}"),
        format!(
            "{} processes of this node: {here} here, {away} on other nodes; {guests} guest{} here   delay {:.1} s",
            here + away,
            if guests == 1 { "" } else { "s" },
            app.delay.as_secs_f64()
        ),
    ]
}

/// Lines of the screen that are not process rows (two of summary, the prompt, the column
/// titles, the key help): a page of rows is the terminal's height less these.
pub const CHROME_ROWS: u16 = 5;

/// Draws the whole screen.
pub fn draw(app: &App, f: &mut Frame) {
    let rows = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .split(f.area());
    let [top, second] = summary(app);
    let mut first = vec![Span::styled(
        top,
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if let Some(e) = &app.error {
        first.push(Span::styled(
            format!("  [{e}]"),
            Style::default().fg(Color::Red),
        ));
    }
    f.render_widget(
        Paragraph::new(vec![Line::from(first), Line::from(second)]),
        rows[0],
    );
    let status = if let Some(text) = &app.prompt {
        Line::from(format!(
            "Change delay from {:.1} to: {text}",
            app.delay.as_secs_f64()
        ))
    } else if let Some(m) = &app.message {
        Line::from(Span::styled(m.clone(), Style::default().fg(Color::Yellow)))
    } else {
        Line::from("")
    };
    f.render_widget(Paragraph::new(status), rows[1]);
    f.render_widget(
        Paragraph::new(header())
            .style(Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)),
        rows[2],
    );
    let shown: Vec<Line> = app
        .visible()
        .into_iter()
        .skip(app.offset)
        .take(app.page)
        .map(|p| {
            let style = if p.row.from.is_some() {
                Style::default().fg(Color::Cyan)
            } else if p.row.node != 0 {
                Style::default().fg(Color::Green)
            } else {
                Style::default()
            };
            Line::from(Span::styled(line(p, app.full_command), style))
        })
        .collect();
    f.render_widget(Paragraph::new(shown), rows[3]);
    f.render_widget(
        Paragraph::new(Line::from(Span::styled(
            " q quit  s delay  c command line  i idle  G guests  \u{2191}\u{2193} PgUp PgDn scroll   green: on another node, cyan: guest",
            Style::default().fg(Color::DarkGray),
        ))),
        rows[4],
    );
}

/// Takes the colours off a drawn screen (`NO_COLOR`), keeping bold and reversed text.
pub fn without_colours(buf: &mut ratatui::buffer::Buffer) {
    for cell in &mut buf.content {
        cell.set_fg(Color::Reset);
        cell.set_bg(Color::Reset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosix_core::client::ProcRow;

    #[test]
    fn a_row_lines_up_with_the_header() {
        let p = Proc {
            row: ProcRow {
                pid: 4242,
                node: 3,
                from: None,
                tty: 0,
                state: 'R',
                cpu_ms: 61_000,
                cpu_age_ms: 0,
                command: "/usr/bin/gzip -9".into(),
                nmigs: 2,
                lock: true,
                cantmove: None,
                remote_pid: Some(17),
                frozen: None,
                uid: None,
            },
            user: "root".into(),
            cpu_pct: Some(99.5),
        };
        let l = line(&p, false);
        let h = header();
        assert!(l.ends_with(" gzip"), "{l}");
        assert_eq!(l.find("gzip"), h.find("COMMAND"), "{h}\n{l}");
        assert!(l.contains(" 99.5 "), "{l}");
        assert!(l.contains(" RL "), "{l}");
        assert!(l.contains("1:01"), "{l}");
        assert!(line(&p, true).ends_with("/usr/bin/gzip -9"));
    }
}
