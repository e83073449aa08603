//! mtop's state, and how snapshots and keys change it. Drawing only reads it.

use std::collections::HashMap;
use std::time::Duration;

use mosix_core::client::ProcRow;
use mosix_core::load::Figures;
use mosix_core::node::NodeId;
use serde::Serialize;

/// What the collector brings every interval.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Milliseconds on a monotonic clock when it was taken.
    pub at_ms: u64,
    /// This node.
    pub me: NodeId,
    /// This node's figures, if measured yet.
    pub figures: Option<Figures>,
    /// This node's MOSIX processes and the guests running here, each with its user's name.
    pub procs: Vec<(ProcRow, String)>,
    /// Nodes that did not answer (`-A`), with why.
    pub missing: Vec<String>,
}

/// One process as mtop shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Proc {
    /// What the service says of it.
    #[serde(flatten)]
    pub row: ProcRow,
    /// Its user.
    pub user: String,
    /// Percent of one CPU it used since the previous snapshot (`None` for a process not seen
    /// before).
    pub cpu_pct: Option<f64>,
}

impl Proc {
    /// Whether it used no CPU since the previous snapshot.
    pub fn idle(&self) -> bool {
        self.cpu_pct.is_some_and(|p| p < 0.05)
    }

    /// Its command: the program's name, or the whole command line.
    pub fn command(&self, full: bool) -> &str {
        if full {
            return &self.row.command;
        }
        let first = self.row.command.split_whitespace().next().unwrap_or("");
        first.rsplit('/').next().unwrap_or(first)
    }
}

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A character.
    Char(char),
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// One row up.
    Up,
    /// One row down.
    Down,
    /// A page up.
    PageUp,
    /// A page down.
    PageDown,
}

/// A process's CPU time at its last report seen, when that was measured (ms on the snapshots'
/// clock), and the share shown then.
#[derive(Debug, Clone, Copy)]
struct Base {
    cpu_ms: u64,
    at: i64,
    pct: Option<f64>,
}

/// The shortest span over which a CPU share is computed, ms: less is the jitter between two
/// readings of one report of a process on another node, not a new report.
const MIN_SPAN_MS: i64 = 50;

/// The shortest and longest refresh delays.
pub const DELAY_RANGE: (f64, f64) = (0.1, 3600.0);

/// mtop's state.
#[derive(Debug, Clone)]
pub struct App {
    /// This node.
    pub me: Option<NodeId>,
    /// Its figures.
    pub figures: Option<Figures>,
    /// Every process of the last snapshot, guests included, busiest first.
    pub procs: Vec<Proc>,
    /// Each process at the previous snapshot, by (home node, pid).
    prev: HashMap<(Option<u16>, u32), Base>,
    /// Time between refreshes.
    pub delay: Duration,
    /// Show whole command lines.
    pub full_command: bool,
    /// Hide processes that used no CPU in the last interval.
    pub hide_idle: bool,
    /// Show guests.
    pub guests: bool,
    /// The first row shown.
    pub offset: usize,
    /// Rows on a page (from the terminal's height).
    pub page: usize,
    /// The delay being typed after `s`.
    pub prompt: Option<String>,
    /// A one-line message (a bad delay, say).
    pub message: Option<String>,
    /// The last collection error.
    pub error: Option<String>,
    /// Set when the user asked to quit.
    pub quit: bool,
}

impl App {
    /// A fresh state.
    pub fn new(delay: Duration, full_command: bool, hide_idle: bool, guests: bool) -> App {
        App {
            me: None,
            figures: None,
            procs: Vec::new(),
            prev: HashMap::new(),
            delay,
            full_command,
            hide_idle,
            guests,
            offset: 0,
            page: 20,
            prompt: None,
            message: None,
            error: None,
            quit: false,
        }
    }

    /// Applies a snapshot (or the error that came instead).
    pub fn update(&mut self, snap: Result<Snapshot, String>) {
        let snap = match snap {
            Ok(s) => s,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        self.error = None;
        if !snap.missing.is_empty() {
            self.message = Some(snap.missing.join("; "));
        }
        self.me = Some(snap.me);
        self.figures = snap.figures;
        let mut next = HashMap::new();
        let mut procs: Vec<Proc> = snap
            .procs
            .into_iter()
            .map(|(row, user)| {
                // The CPU time of a process on another node is what it last reported home
                // (about once a second): its share is over the time between two reports, and
                // without a new report the share shown stays.
                // Signed: a report read just after mtop started is older than mtop's clock.
                let measured = snap.at_ms as i64 - row.cpu_age_ms as i64;
                let key = (row.from, row.pid);
                let base = match self.prev.get(&key) {
                    Some(b) if measured >= b.at + MIN_SPAN_MS => Base {
                        cpu_ms: row.cpu_ms,
                        at: measured,
                        pct: Some(
                            row.cpu_ms.saturating_sub(b.cpu_ms) as f64 * 100.0
                                / (measured - b.at) as f64,
                        ),
                    },
                    // No new report: the last share stays, and so does its base.
                    Some(b) => *b,
                    None => Base {
                        cpu_ms: row.cpu_ms,
                        at: measured,
                        pct: None,
                    },
                };
                next.insert(key, base);
                let cpu_pct = base.pct;
                Proc { row, user, cpu_pct }
            })
            .collect();
        procs.sort_by(|a, b| {
            b.cpu_pct
                .unwrap_or(0.0)
                .total_cmp(&a.cpu_pct.unwrap_or(0.0))
                .then(a.row.from.cmp(&b.row.from))
                .then(a.row.pid.cmp(&b.row.pid))
        });
        self.prev = next;
        self.procs = procs;
        self.offset = self.offset.min(self.visible().len().saturating_sub(1));
    }

    /// The processes shown, in order.
    pub fn visible(&self) -> Vec<&Proc> {
        self.procs
            .iter()
            .filter(|p| self.guests || p.row.from.is_none())
            .filter(|p| !self.hide_idle || !p.idle())
            .collect()
    }

    /// Counts for the summary line: own processes here, own processes away, guests.
    pub fn counts(&self) -> (usize, usize, usize) {
        let own = |p: &&Proc| p.row.from.is_none();
        let here = self.procs.iter().filter(own).filter(|p| p.row.node == 0);
        let away = self.procs.iter().filter(own).filter(|p| p.row.node != 0);
        let guests = self.procs.iter().filter(|p| p.row.from.is_some());
        (here.count(), away.count(), guests.count())
    }

    /// Applies a key.
    pub fn key(&mut self, k: Key) {
        if let Some(text) = &mut self.prompt {
            match k {
                Key::Char(c) if c.is_ascii_digit() || c == '.' => text.push(c),
                Key::Backspace => {
                    text.pop();
                }
                Key::Enter => {
                    let text = self.prompt.take().unwrap_or_default();
                    match text.parse::<f64>() {
                        Ok(s) if (DELAY_RANGE.0..=DELAY_RANGE.1).contains(&s) => {
                            self.delay = Duration::from_secs_f64(s);
                            self.message = None;
                        }
                        _ => {
                            self.message = Some(format!(
                                "not a delay: {text:?} (seconds, {} to {})",
                                DELAY_RANGE.0, DELAY_RANGE.1
                            ));
                        }
                    }
                }
                Key::Esc => self.prompt = None,
                _ => {}
            }
            return;
        }
        let last = self.visible().len().saturating_sub(1);
        match k {
            Key::Char('q') | Key::Esc => self.quit = true,
            Key::Char('s') | Key::Char('d') => {
                self.prompt = Some(String::new());
                self.message = None;
            }
            Key::Char('c') => self.full_command = !self.full_command,
            Key::Char('i') => self.hide_idle = !self.hide_idle,
            Key::Char('G') => self.guests = !self.guests,
            Key::Up => self.offset = self.offset.saturating_sub(1),
            Key::Down => self.offset = (self.offset + 1).min(last),
            Key::PageUp => self.offset = self.offset.saturating_sub(self.page.max(1)),
            Key::PageDown => self.offset = (self.offset + self.page.max(1)).min(last),
            _ => {}
        }
        self.offset = self.offset.min(self.visible().len().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, from: Option<u16>, node: u16, cpu_ms: u64, command: &str) -> ProcRow {
        ProcRow {
            pid,
            node,
            from,
            tty: 0,
            state: 'R',
            cpu_ms,
            cpu_age_ms: 0,
            command: command.into(),
            nmigs: 0,
            lock: false,
            cantmove: None,
            remote_pid: None,
            frozen: None,
            uid: None,
        }
    }

    fn snap(at_ms: u64, procs: Vec<ProcRow>) -> Result<Snapshot, String> {
        Ok(Snapshot {
            at_ms,
            me: NodeId::new(1).unwrap(),
            figures: None,
            procs: procs.into_iter().map(|r| (r, "root".into())).collect(),
            missing: Vec::new(),
        })
    }

    #[test]
    fn cpu_percent_is_the_cpu_time_over_the_interval_and_the_busiest_come_first() {
        let mut app = App::new(Duration::from_secs(1), false, false, true);
        app.update(snap(
            1_000,
            vec![
                row(10, None, 2, 500, "/bin/a x"),
                row(11, None, 0, 100, "b"),
                row(10, Some(3), 0, 0, "guest"),
            ],
        ));
        assert!(app.procs.iter().all(|p| p.cpu_pct.is_none()));
        app.update(snap(
            3_000,
            vec![
                row(10, None, 2, 2_500, "/bin/a x"),
                row(11, None, 0, 100, "b"),
                row(10, Some(3), 0, 1_000, "guest"),
                row(12, None, 0, 7, "new"),
            ],
        ));
        let shown: Vec<_> = app
            .visible()
            .iter()
            .map(|p| (p.row.pid, p.row.from, p.cpu_pct))
            .collect();
        assert_eq!(
            shown,
            [
                (10, None, Some(100.0)),
                (10, Some(3), Some(50.0)),
                (11, None, Some(0.0)),
                (12, None, None),
            ]
        );
        assert_eq!(app.counts(), (2, 1, 1));
        assert_eq!(app.procs[0].command(false), "a");
        assert_eq!(app.procs[0].command(true), "/bin/a x");
    }

    #[test]
    fn a_remote_process_s_share_is_over_the_time_between_its_reports() {
        let mut app = App::new(Duration::from_secs(1), false, false, false);
        let away = |cpu_ms, cpu_age_ms| ProcRow {
            cpu_age_ms,
            ..row(5, None, 2, cpu_ms, "a")
        };
        app.update(snap(100, vec![away(1_000, 300)]));
        // Reported 1.2 s later with 600 ms more: 50 %, though mtop's snapshots are 1 s apart.
        app.update(snap(1_100, vec![away(1_600, 100)]));
        assert_eq!(app.procs[0].cpu_pct, Some(50.0));
        // No new report (the same one, read a little later): the share stays.
        app.update(snap(1_600, vec![away(1_600, 602)]));
        assert_eq!(app.procs[0].cpu_pct, Some(50.0));
        // The next report counts from the last one, not from the snapshot in between.
        app.update(snap(2_100, vec![away(2_600, 100)]));
        assert_eq!(app.procs[0].cpu_pct, Some(100.0));
    }

    #[test]
    fn keys_hide_idle_and_guests_and_set_the_delay() {
        let mut app = App::new(Duration::from_secs(1), false, false, true);
        app.update(snap(
            0,
            vec![row(1, None, 0, 0, "a"), row(2, Some(2), 0, 0, "b")],
        ));
        app.update(snap(
            1_000,
            vec![row(1, None, 0, 0, "a"), row(2, Some(2), 0, 9, "b")],
        ));
        assert_eq!(app.visible().len(), 2);
        app.key(Key::Char('i'));
        assert_eq!(app.visible().len(), 1, "the idle one is hidden");
        app.key(Key::Char('G'));
        assert_eq!(app.visible().len(), 0, "and the busy guest too");
        app.key(Key::Char('c'));
        assert!(app.full_command);

        for k in [
            Key::Char('s'),
            Key::Char('2'),
            Key::Char('.'),
            Key::Char('5'),
        ] {
            app.key(k);
        }
        assert!(!app.quit, "q is text while the prompt is open");
        app.key(Key::Enter);
        assert_eq!(app.delay, Duration::from_millis(2_500));
        for k in [Key::Char('s'), Key::Char('0'), Key::Enter] {
            app.key(k);
        }
        assert_eq!(app.delay, Duration::from_millis(2_500));
        assert!(app.message.as_deref().unwrap().contains("not a delay"));
        app.key(Key::Char('q'));
        assert!(app.quit);
    }

    #[test]
    fn an_error_keeps_the_last_processes() {
        let mut app = App::new(Duration::from_secs(1), false, false, false);
        app.update(snap(0, vec![row(1, None, 0, 0, "a")]));
        app.update(Err("the service went away".into()));
        assert_eq!(app.procs.len(), 1);
        assert_eq!(app.error.as_deref(), Some("the service went away"));
    }
}
