//! mtop: top for MOSIX processes.
//!
//! As in mon, collection, state and drawing are apart: a collector thread asks the node service
//! for the processes and this node's figures every delay and sends a [`app::Snapshot`]; the
//! event loop applies snapshots and keys to [`app::App`]; [`ui::draw`] only reads it.
//! `mtop --once` takes two snapshots a delay apart (the CPU share needs two) and prints.

mod app;
mod ui;

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use mosix_core::cli::{uid_of, user_name};
use mosix_core::client::Client;
use mosix_core::config::Paths;

use app::{App, Key, Snapshot};

/// Show this node's MOSIX processes like top: how much CPU each uses, where it runs and how
/// often it moved.
///
/// The processes are this node's MOSIX processes wherever they run, busiest first, and with -G
/// the guests running here. Columns: PID, USER, N# (where it runs: 0 here, N node N), FROM
/// (a guest's home node), MIGS (moves so far), S (state; L locked, M cannot move), %CPU (of
/// one CPU, over the last interval, wherever the process runs), TIME (CPU time, wherever),
/// TTY, COMMAND. Keys: q quits, s changes the delay, c shows whole command lines, i hides
/// processes that used no CPU in the last interval, G shows or hides guests, the arrows and
/// PgUp/PgDn scroll.
///
/// With -A, the MOSIX processes of the whole cluster: every node that is up is asked for its
/// own, and FROM is the home of each process of another node (N# where it runs). A node that
/// did not answer is named on the message line.
///
/// With --once, mtop takes two samples a delay apart and prints them once, as a table or as
/// JSON with --json.
#[derive(Debug, Parser)]
#[command(
    name = "mtop",
    version,
    after_long_help = "Examples:\n  mtop                 watch this node's MOSIX processes\n  mtop -G -d 3         with the guests, every 3 seconds\n  mtop --once --json   one sample for scripts\n\nJSON (--once --json): an array with one object per process: pid, node (0 = here), from (the home of a guest, else null), nmigs, lock, cantmove (null or a reason), command, user, state (F: frozen), tty, cpu_ms, cpu_pct (null for a process that appeared during the sample), remote_pid, frozen (null, or why it is frozen).\n\nExit status: 0, or 1 when this node is not configured.\n\nEnvironment: NO_COLOR (set and not empty) draws the screen without colours, keeping bold and reversed text."
)]
struct Cli {
    /// Seconds between refreshes; with --once, the interval over which %CPU is measured.
    #[arg(short = 'd', long, value_name = "SECS", default_value_t = 1.0, value_parser = delay)]
    delay: f64,
    /// Also show guests: processes of other nodes running here.
    #[arg(short = 'G', long, conflicts_with = "all_nodes")]
    guests: bool,
    /// Every MOSIX process of the cluster, asked of every node that is up.
    #[arg(short = 'A')]
    all_nodes: bool,
    /// Hide processes that used no CPU in the last interval.
    #[arg(short = 'i', long)]
    idle: bool,
    /// Show whole command lines instead of program names.
    #[arg(short = 'c', long)]
    command_line: bool,
    /// Print one sample and exit.
    #[arg(long)]
    once: bool,
    /// With --once: print JSON.
    #[arg(long, requires = "once")]
    json: bool,
}

fn delay(s: &str) -> Result<f64, String> {
    let (lo, hi) = app::DELAY_RANGE;
    match s.parse::<f64>() {
        Ok(d) if (lo..=hi).contains(&d) => Ok(d),
        _ => Err(format!("a delay is {lo} to {hi} seconds")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => mosix_core::cli::report("mtop", e.as_ref()),
    }
}

/// Takes snapshots; remembers user names so that the user database is asked once per user.
struct Collector {
    paths: Paths,
    start: Instant,
    names: HashMap<u32, String>,
    /// Every node's processes (`-A`).
    all: bool,
}

impl Collector {
    fn snapshot(&mut self) -> Result<Snapshot> {
        let mut c = Client::connect(&self.paths)?;
        let view = c.view()?;
        let mut missing = Vec::new();
        let rows = if self.all {
            // The processes of other nodes show their home in FROM, and where they run in N#.
            let mut rows = Vec::new();
            for n in c.procs_all()? {
                if let Some(e) = n.error {
                    missing.push(format!("node {} did not answer: {e}", n.node));
                }
                let home = n.node.get();
                rows.extend(n.rows.into_iter().map(|mut r| {
                    if n.node != view.me {
                        if r.node == 0 {
                            r.node = home;
                        }
                        r.from = Some(home);
                        r.remote_pid = None;
                    }
                    r
                }));
            }
            rows
        } else {
            c.procs(true)?
        };
        let at_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let procs = rows
            .into_iter()
            .map(|r| {
                // A guest's pid is its pid at home; here it is the remote pid.
                let local = if r.from.is_some() {
                    r.remote_pid
                } else {
                    Some(r.pid)
                };
                let uid = r
                    .uid
                    .filter(|_| self.all)
                    .or_else(|| local.and_then(uid_of));
                let user = match uid {
                    Some(uid) => self
                        .names
                        .entry(uid)
                        .or_insert_with(|| user_name(uid))
                        .clone(),
                    None => "?".to_owned(),
                };
                (r, user)
            })
            .collect();
        Ok(Snapshot {
            at_ms,
            me: view.me,
            figures: view.get(view.me).and_then(|v| v.figures),
            procs,
            missing,
        })
    }
}

fn run(cli: &Cli) -> Result<()> {
    let mut collector = Collector {
        paths: Paths::from_env(),
        start: Instant::now(),
        names: HashMap::new(),
        all: cli.all_nodes,
    };
    let delay = Duration::from_secs_f64(cli.delay);
    let mut app = App::new(
        delay,
        cli.command_line,
        cli.idle,
        cli.guests || cli.all_nodes,
    );
    // Fail at once, and plainly, on a node that is not configured.
    app.update(Ok(collector.snapshot()?));
    if cli.once {
        std::thread::sleep(delay);
        app.update(Ok(collector.snapshot()?));
        let mut out = std::io::stdout().lock();
        if cli.json {
            serde_json::to_writer(&mut out, &app.visible())?;
            writeln!(out)?;
        } else {
            for l in ui::summary(&app) {
                writeln!(out, "{l}")?;
            }
            writeln!(out, "{}", ui::header())?;
            for p in app.visible() {
                writeln!(out, "{}", ui::line(p, app.full_command))?;
            }
        }
        return Ok(());
    }

    let (tx, rx) = mpsc::channel();
    let delay_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
    let wanted = Arc::clone(&delay_ms);
    std::thread::spawn(move || {
        loop {
            // Sleep in short steps, so that a shorter delay set with `s` applies at once.
            let since = Instant::now();
            while since.elapsed() < Duration::from_millis(wanted.load(Ordering::Relaxed)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let snap = collector.snapshot().map_err(|e| format!("{e:#}"));
            if tx.send(snap).is_err() {
                return;
            }
        }
    });

    let mut terminal = ratatui::init();
    let no_color = mosix_core::cli::no_color();
    let result = (|| -> Result<()> {
        while !app.quit {
            app.page = usize::from(terminal.size()?.height.saturating_sub(ui::CHROME_ROWS));
            terminal.draw(|f| {
                ui::draw(&app, f);
                if no_color {
                    ui::without_colours(f.buffer_mut());
                }
            })?;
            if event::poll(Duration::from_millis(100))?
                && let Event::Key(k) = event::read()?
                && k.kind == KeyEventKind::Press
            {
                let key = match k.code {
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        app.quit = true;
                        None
                    }
                    KeyCode::Char(c) => Some(Key::Char(c)),
                    KeyCode::Enter => Some(Key::Enter),
                    KeyCode::Esc => Some(Key::Esc),
                    KeyCode::Backspace => Some(Key::Backspace),
                    KeyCode::Up => Some(Key::Up),
                    KeyCode::Down => Some(Key::Down),
                    KeyCode::PageUp => Some(Key::PageUp),
                    KeyCode::PageDown => Some(Key::PageDown),
                    _ => None,
                };
                if let Some(key) = key {
                    app.key(key);
                    delay_ms.store(app.delay.as_millis() as u64, Ordering::Relaxed);
                }
            }
            while let Ok(snap) = rx.try_recv() {
                app.update(snap);
            }
        }
        Ok(())
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_man_page_and_completions_are_current() {
        mosix_core::cli::docgen::check_tool(env!("CARGO_MANIFEST_DIR"), Cli::command(), "1")
            .unwrap();
    }

    #[test]
    fn arguments() {
        let c = Cli::try_parse_from(["mtop", "-G", "-d", "2.5", "-ic"]).unwrap();
        assert!(c.guests && c.idle && c.command_line);
        assert_eq!(c.delay, 2.5);
        assert!(Cli::try_parse_from(["mtop", "-d", "0"]).is_err());
        assert!(Cli::try_parse_from(["mtop", "--json"]).is_err());
        assert!(Cli::try_parse_from(["mtop", "--once", "--json"]).is_ok());
    }
}
