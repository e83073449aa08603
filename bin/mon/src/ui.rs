//! Drawing the monitor: a title, the bar chart, the totals and the key help. Reads the state,
//! changes nothing.

use mosix_core::client::NodeView;
use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use crate::app::{App, Layout, Mode};
use crate::rows::bytes;

const EIGHTHS: [&str; 9] = [" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"];
const AXIS_W: u16 = 8;

/// Draws the whole screen.
pub fn draw(app: &App, f: &mut Frame) {
    let rows = ratatui::layout::Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(if app.totals { 1 } else { 0 }),
        Constraint::Length(1),
    ])
    .split(f.area());
    f.render_widget(title(app), rows[0]);
    f.render_widget(Chart { app }, rows[1]);
    if app.totals {
        f.render_widget(totals(app), rows[2]);
    }
    f.render_widget(
        Paragraph::new(Line::from(Span::styled(
            " l load  L log  s speed  m mem  r raw  u util  d dead  t totals  w/v/V/a layout  \u{2190}\u{2192} scroll  q quit",
            Style::default().fg(Color::DarkGray),
        ))),
        rows[3],
    );
}

fn title(app: &App) -> Paragraph<'static> {
    let me = app
        .view
        .as_ref()
        .map_or_else(|| "?".to_owned(), |v| v.me.to_string());
    let mut spans = vec![
        Span::styled(
            format!(" MOSIX monitor, node #{me} "),
            Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ),
        Span::raw(format!("  {}", app.mode.title())),
    ];
    if let Some(e) = &app.error {
        spans.push(Span::styled(
            format!("  [{e}]"),
            Style::default().fg(Color::Red),
        ));
    }
    Paragraph::new(Line::from(spans))
}

fn totals(app: &App) -> Paragraph<'static> {
    let Some(v) = &app.view else {
        return Paragraph::new("");
    };
    let up: Vec<&NodeView> = v.nodes.iter().filter(|n| n.up).collect();
    let figs: Vec<_> = up.iter().filter_map(|n| n.figures).collect();
    let cpus: u32 = figs.iter().map(|f| f.cpus).sum();
    let load: u64 = figs.iter().map(|f| u64::from(f.load)).sum();
    let total: u64 = figs.iter().map(|f| f.mem_total).sum();
    let free: u64 = figs.iter().map(|f| f.mem_free).sum();
    Paragraph::new(format!(
        " {} of {} nodes up, {cpus} CPUs, total load {load}, memory {} available of {}",
        up.len(),
        v.nodes.len(),
        bytes(free),
        bytes(total)
    ))
    .style(Style::default().add_modifier(Modifier::BOLD))
}

/// The geometry of one column a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    /// Columns a node takes (bar plus gap).
    step: u16,
    /// Columns of the bar.
    bar: u16,
    /// Rows of the labels under the bars.
    label_rows: u16,
    /// Labels written downwards.
    vertical: bool,
}

fn digits(n: u16) -> u16 {
    match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    }
}

fn geometry(layout: Layout, width: u16, count: usize, max_node: u16) -> Geometry {
    let d = digits(max_node);
    let wide = Geometry {
        step: d.max(2) + 2,
        bar: d.max(2),
        label_rows: 1,
        vertical: false,
    };
    let vertical = Geometry {
        step: 2,
        bar: 1,
        label_rows: d,
        vertical: true,
    };
    let tight = Geometry {
        step: 1,
        bar: 1,
        label_rows: d,
        vertical: true,
    };
    let fits = |g: Geometry| usize::from(width / g.step) >= count;
    match layout {
        Layout::Wide => wide,
        Layout::Vertical => vertical,
        Layout::Tight => tight,
        Layout::Auto if fits(wide) => wide,
        Layout::Auto if fits(vertical) => vertical,
        Layout::Auto => tight,
    }
}

/// One bar: how much is solid, how much more is '+', and the colour.
struct Bar {
    solid: f64,
    plus: f64,
    color: Color,
    top: Option<String>,
}

fn load_color(load: u32) -> Color {
    match load {
        0..75 => Color::Green,
        75..150 => Color::Yellow,
        _ => Color::Red,
    }
}

fn nice_max(x: f64, step: f64) -> f64 {
    ((x / step).ceil() * step).max(step)
}

/// The chart: y axis, one bar a node, labels under the bars.
struct Chart<'a> {
    app: &'a App,
}

impl Widget for Chart<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.app;
        let nodes = app.shown();
        if area.width <= AXIS_W + 1 || area.height < 3 {
            return;
        }
        if app.view.is_none() {
            buf.set_string(
                area.x + 1,
                area.y + 1,
                "waiting for the node service...",
                Style::default(),
            );
            return;
        }
        if nodes.is_empty() {
            buf.set_string(
                area.x + 1,
                area.y + 1,
                "no node is up (press d to show dead nodes)",
                Style::default(),
            );
            return;
        }
        let max_node = nodes.iter().map(|n| n.node.get()).max().unwrap_or(1);
        let plot_w = area.width - AXIS_W;
        let g = geometry(app.layout, plot_w, nodes.len(), max_node);
        let bar_h = area.height.saturating_sub(g.label_rows);
        if bar_h == 0 {
            return;
        }
        let figs = |n: &NodeView| n.figures.filter(|_| n.up);
        let (scale, axis): (f64, Box<dyn Fn(f64) -> String>) = match app.mode {
            Mode::Load | Mode::LogLoad => {
                let m = nodes
                    .iter()
                    .filter_map(|n| figs(n).map(|f| f64::from(f.load)))
                    .fold(100.0, f64::max);
                (nice_max(m, 100.0), Box::new(|v| format!("{v:.0}")))
            }
            Mode::Speed => {
                let m = nodes
                    .iter()
                    .filter_map(|n| figs(n).map(|f| f64::from(f.speed)))
                    .fold(1.0, f64::max);
                (nice_max(m, 5000.0), Box::new(|v| format!("{v:.0}")))
            }
            Mode::Memory | Mode::RawMemory => {
                let m = nodes
                    .iter()
                    .filter_map(|n| figs(n).map(|f| f.mem_total as f64))
                    .fold(1.0, f64::max);
                (m, Box::new(|v| bytes(v as u64)))
            }
            Mode::Util => (100.0, Box::new(|v| format!("{v:.0}%"))),
        };
        let log = app.mode == Mode::LogLoad;
        let frac = |v: f64| -> f64 {
            if log {
                (1.0 + v).ln() / (1.0 + scale).ln()
            } else {
                v / scale
            }
        };
        // Y axis: top, middle and bottom values.
        let axis_style = Style::default().fg(Color::DarkGray);
        let mid = if log {
            (scale + 1.0).sqrt() - 1.0
        } else {
            scale / 2.0
        };
        for (row, v) in [(0u16, scale), (bar_h / 2, mid), (bar_h - 1, 0.0)] {
            let s = axis(v);
            let s: String = s.chars().take(usize::from(AXIS_W - 2)).collect();
            let x = area.x + AXIS_W - 2 - u16::try_from(s.chars().count()).unwrap_or(0);
            buf.set_string(x, area.y + row, &s, axis_style);
            buf.set_string(area.x + AXIS_W - 1, area.y + row, "┤", axis_style);
        }
        for row in 0..bar_h {
            if let Some(c) = buf.cell_mut((area.x + AXIS_W - 1, area.y + row))
                && c.symbol() == " "
            {
                c.set_symbol("│").set_style(axis_style);
            }
        }

        let fits = usize::from(plot_w / g.step);
        for (i, n) in nodes.iter().skip(app.offset).take(fits).enumerate() {
            let x = area.x + AXIS_W + u16::try_from(i).unwrap_or(0) * g.step + 1;
            let bar = bar_of(app.mode, n, &frac);
            let label_y = area.y + bar_h;
            let label_style = if n.is_self {
                Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED)
            } else if !n.up {
                Style::default().fg(Color::Red)
            } else {
                Style::default()
            };
            let label = n.node.to_string();
            if g.vertical {
                for (k, ch) in label.chars().enumerate() {
                    buf.set_string(
                        x,
                        label_y + u16::try_from(k).unwrap_or(0),
                        ch.to_string(),
                        label_style,
                    );
                }
            } else {
                let pad = g
                    .bar
                    .saturating_sub(u16::try_from(label.len()).unwrap_or(0))
                    / 2;
                buf.set_string(x + pad, label_y, &label, label_style);
            }
            let Some(bar) = bar else {
                // Dead, never heard of, or quiet.
                let (mark, style) = if !n.up {
                    ("X", Style::default().fg(Color::Red))
                } else {
                    ("q", Style::default().fg(Color::DarkGray))
                };
                buf.set_string(x, label_y - 1, mark, style);
                continue;
            };
            draw_bar(buf, x, area.y, bar_h, g.bar, &bar);
        }
    }
}

fn bar_of(mode: Mode, n: &NodeView, frac: &dyn Fn(f64) -> f64) -> Option<Bar> {
    let f = n.figures.filter(|_| n.up)?;
    Some(match mode {
        Mode::Load | Mode::LogLoad => Bar {
            solid: frac(f64::from(f.load)),
            plus: 0.0,
            color: load_color(f.load),
            top: None,
        },
        Mode::Speed => Bar {
            solid: frac(f64::from(f.speed)),
            plus: 0.0,
            color: Color::Cyan,
            top: Some(f.cpus.to_string()),
        },
        Mode::Memory | Mode::RawMemory => {
            let free = if mode == Mode::Memory {
                f.mem_free
            } else {
                f.mem_rawfree
            };
            let used = f.mem_total.saturating_sub(free);
            Bar {
                solid: frac(used as f64),
                plus: frac(f.mem_total as f64),
                color: Color::Magenta,
                top: None,
            }
        }
        Mode::Util => Bar {
            solid: frac(f64::from(f.util)),
            plus: 0.0,
            color: Color::Blue,
            top: None,
        },
    })
}

fn draw_bar(buf: &mut Buffer, x: u16, top: u16, h: u16, w: u16, bar: &Bar) {
    let eighths = (bar.solid.clamp(0.0, 1.0) * f64::from(h) * 8.0).round() as u32;
    let plus_rows = (bar.plus.clamp(0.0, 1.0) * f64::from(h)).round() as u16;
    let style = Style::default().fg(bar.color);
    let full_rows = eighths / 8;
    let rest = eighths % 8;
    for r in 0..h {
        // r counts rows from the bottom.
        let y = top + h - 1 - r;
        let sym = if u32::from(r) < full_rows {
            Some((EIGHTHS[8], style))
        } else if u32::from(r) == full_rows && rest > 0 {
            Some((EIGHTHS[rest as usize], style))
        } else if r < plus_rows {
            Some(("+", Style::default().fg(Color::Green)))
        } else {
            None
        };
        if let Some((s, st)) = sym {
            for dx in 0..w {
                buf.set_string(x + dx, y, s, st);
            }
        }
    }
    if let Some(t) = &bar.top {
        let used = u16::try_from(full_rows + u32::from(rest > 0)).unwrap_or(h);
        let y = if used >= h { top } else { top + h - 1 - used };
        buf.set_string(x, y, t, Style::default().add_modifier(Modifier::BOLD));
    }
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
    use crate::app::Key;
    use mosix_core::client::ClusterView;
    use mosix_core::load::Figures;
    use mosix_core::{NodeId, Status};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use std::net::Ipv4Addr;

    fn view(loads: &[Option<u32>]) -> ClusterView {
        ClusterView {
            files: Default::default(),
            me: NodeId::new(1).unwrap(),
            interval_ms: 1000,
            dead_after_ms: 10_000,
            nodes: loads
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let n = u16::try_from(i + 1).unwrap();
                    NodeView {
                        node: NodeId::new(n).unwrap(),
                        addr: Ipv4Addr::new(10, 0, 0, u8::try_from(n).unwrap()),
                        is_self: i == 0,
                        up: l.is_some(),
                        age_ms: Some(0),
                        status: if l.is_some() {
                            Status::CONF | Status::UP
                        } else {
                            Status::CONF
                        },
                        figures: l.map(|load| Figures {
                            load,
                            speed: 10_000,
                            cpus: 2,
                            mem_total: 4 << 30,
                            mem_free: 3 << 30,
                            mem_rawfree: 2 << 30,
                            util: 50,
                            foreign: 0,
                            foreign_guests: 0,
                            own: 0,
                        }),
                        cluster: None,
                    }
                })
                .collect(),
            cluster: "local".into(),
            partners: Vec::new(),
            own_guests: 0,
            max_grid_guests: None,
        }
    }

    fn render(app: &App, w: u16, h: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(app, f)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol().to_owned()).collect())
            .collect()
    }

    #[test]
    fn no_color_keeps_the_text_and_its_emphasis_only() {
        let mut app = App::new(Mode::Load, Layout::Wide, false, false);
        app.update(Ok(view(&[Some(0), Some(200), Some(100), None])));
        let mut t = Terminal::new(TestBackend::new(60, 14)).unwrap();
        t.draw(|f| draw(&app, f)).unwrap();
        let mut buf = t.backend().buffer().clone();
        let coloured = |b: &ratatui::buffer::Buffer| {
            b.content
                .iter()
                .filter(|c| c.fg != Color::Reset || c.bg != Color::Reset)
                .count()
        };
        let emphasis = |b: &ratatui::buffer::Buffer| {
            b.content.iter().filter(|c| !c.modifier.is_empty()).count()
        };
        let (text, bold) = (buf.clone(), emphasis(&buf));
        assert!(coloured(&buf) > 0 && bold > 0);
        without_colours(&mut buf);
        assert_eq!(coloured(&buf), 0);
        assert_eq!(emphasis(&buf), bold);
        assert!(
            buf.content
                .iter()
                .zip(&text.content)
                .all(|(a, b)| a.symbol() == b.symbol())
        );
    }

    fn column(lines: &[String], label: &str) -> usize {
        // The label row is the one right above the help line.
        let row = &lines[lines.len() - 2];
        let byte = row.find(label).unwrap();
        row[..byte].chars().count()
    }

    #[test]
    fn bars_grow_with_load_and_dead_nodes_hide() {
        let mut app = App::new(Mode::Load, Layout::Wide, false, false);
        app.update(Ok(view(&[Some(0), Some(200), Some(100), None])));
        let lines = render(&app, 60, 14);
        let label_row = &lines[lines.len() - 2];
        assert!(label_row.contains('1') && label_row.contains('2') && label_row.contains('3'));
        assert!(!label_row.contains('4'), "node 4 is dead: {label_row}");
        // Node 2 (load 200 = the scale) has a bar up to the top row; node 3 half of it.
        let x2 = column(&lines, "2");
        let x3 = column(&lines, "3");
        let height = |x: usize| {
            lines[1..lines.len() - 2]
                .iter()
                .filter(|l| l.chars().nth(x).is_some_and(|c| c != ' '))
                .count()
        };
        assert!(height(x2) > height(x3), "{lines:#?}");
        assert!(height(x3) > 0);
        app.key(Key::Char('d'));
        let lines = render(&app, 60, 14);
        assert!(lines[lines.len() - 2].contains('4'));
        assert!(lines.iter().any(|l| l.contains('X')));
    }

    #[test]
    fn memory_shows_used_and_free() {
        let mut app = App::new(Mode::Memory, Layout::Auto, false, true);
        app.update(Ok(view(&[Some(0), Some(0)])));
        let lines = render(&app, 50, 16);
        assert!(lines.iter().any(|l| l.contains('+')));
        assert!(lines.iter().any(|l| l.contains('█')));
        assert!(lines.iter().any(|l| l.contains("2 of 2 nodes up, 4 CPUs")));
    }

    #[test]
    fn auto_layout_narrows_to_fit() {
        assert!(!geometry(Layout::Auto, 100, 10, 10).vertical);
        assert_eq!(geometry(Layout::Auto, 100, 40, 40).step, 2);
        assert_eq!(geometry(Layout::Auto, 100, 90, 90).step, 1);
    }

    #[test]
    fn scrolling_stays_in_range() {
        let mut app = App::new(Mode::Load, Layout::Wide, true, false);
        app.update(Ok(view(&[Some(0), Some(0), Some(0)])));
        app.key(Key::End);
        assert_eq!(app.offset, 2);
        app.key(Key::Right);
        assert_eq!(app.offset, 2);
        app.key(Key::Home);
        app.key(Key::Left);
        assert_eq!(app.offset, 0);
        app.start_at(2);
        assert_eq!(app.offset, 1);
    }
}
