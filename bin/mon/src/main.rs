//! mon: the MOSIX cluster monitor.
//!
//! Collection, state and drawing are kept apart: a collector thread asks the node service for
//! the cluster view every interval and sends it over a channel; the event loop applies
//! snapshots and keys to [`app::App`]; [`ui::draw`] only reads the state. `mon --once` prints
//! the same data as a table or JSON.

mod app;
mod cli;
mod rows;
mod ui;
mod web;

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use mosix_core::client::{Client, ClusterView};
use mosix_core::config::Paths;

use app::{App, Key, Layout, Mode};
use cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse_from(cli::classic_args(std::env::args_os()));
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => mosix_core::cli::report("mon", e.as_ref()),
    }
}

fn fetch(paths: &Paths) -> Result<ClusterView, mosix_core::client::ClientError> {
    Client::connect(paths)?.view()
}

fn run(cli: &Cli) -> Result<()> {
    let paths = Paths::from_env();
    // Fail at once, and plainly, on a node that is not configured.
    let first = fetch(&paths)?;
    if let Some(addr) = cli.web {
        return web::serve(addr, paths);
    }
    if cli.once {
        let mut out = std::io::stdout().lock();
        if cli.prometheus {
            use std::io::Write;
            out.write_all(mosix_core::metrics::cluster_text(&first).as_bytes())?;
        } else if cli.json {
            rows::print_json(&first, &mut out)?;
        } else {
            rows::print_table(&first, &mut out)?;
        }
        return Ok(());
    }
    let mode = if cli.log_load {
        Mode::LogLoad
    } else if cli.speed {
        Mode::Speed
    } else if cli.memory {
        Mode::Memory
    } else if cli.raw_memory {
        Mode::RawMemory
    } else if cli.util {
        Mode::Util
    } else {
        Mode::Load
    };
    let layout = if cli.wide {
        Layout::Wide
    } else if cli.vertical {
        Layout::Vertical
    } else if cli.tight {
        Layout::Tight
    } else {
        Layout::Auto
    };
    let mut app = App::new(mode, layout, cli.dead, cli.totals);
    app.update(Ok(first));
    if let Some(n) = cli.start {
        app.start_at(n);
    }

    let (tx, rx) = mpsc::channel();
    let interval = Duration::from_millis(cli.interval);
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(interval);
            let snap = fetch(&paths).map_err(|e| e.to_string());
            if tx.send(snap).is_err() {
                return;
            }
        }
    });

    // ratatui::init() installs a panic hook that restores the terminal.
    let mut terminal = ratatui::init();
    let no_color = mosix_core::cli::no_color();
    let result = (|| -> Result<()> {
        while !app.quit {
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
                        Some(Key::Quit)
                    }
                    KeyCode::Char(c) => Some(Key::Char(c)),
                    KeyCode::Esc => Some(Key::Quit),
                    KeyCode::Left => Some(Key::Left),
                    KeyCode::Right => Some(Key::Right),
                    KeyCode::Home => Some(Key::Home),
                    KeyCode::End => Some(Key::End),
                    _ => None,
                };
                if let Some(key) = key {
                    app.key(key);
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
    fn classic_start_node() {
        let c = Cli::try_parse_from(cli::classic_args(["mon".into(), "+5".into(), "-m".into()]))
            .unwrap();
        assert_eq!(c.start, Some(5));
        assert!(c.memory);
        assert!(Cli::try_parse_from(["mon", "-m", "-s"]).is_err());
        assert!(Cli::try_parse_from(["mon", "--json"]).is_err());
    }

    #[test]
    fn cli_man_page_and_completions_are_current() {
        mosix_core::cli::docgen::check_tool(env!("CARGO_MANIFEST_DIR"), Cli::command(), "1")
            .unwrap();
    }
}
