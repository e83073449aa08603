//! mps: ps for MOSIX processes, with the node each runs on.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use mosix_core::cli;
use mosix_core::client::{Client, ProcRow};
use mosix_core::config::Paths;
use serde::Serialize;

/// Report this node's MOSIX processes, wherever they run.
///
/// Columns: PID TTY NODE STAT TIME COMMAND. NODE is where the process runs: 0 here, N on node N;
/// TIME counts its CPU time wherever it ran. A process that cannot migrate says why in the
/// CANTMOVE column of `mps u`. With -G, guests — processes of other nodes running here — are
/// listed too, with their home node in FROM. The usual selectors work: `a` every user's
/// processes (the default is your own), `u` user-oriented columns, `x` (accepted; processes
/// without a terminal are always listed), PIDs.
///
/// With -A, the MOSIX processes of the whole cluster: every node that is up is asked for its
/// own (the processes whose home it is, wherever they run); HOME is their home node and NODE
/// the node they run on. A node that did not answer is named on standard error.
#[derive(Debug, Parser)]
#[command(
    name = "mps",
    version,
    after_long_help = "Examples:\n  mps                 your MOSIX processes and where they run\n  mps a -G            everyone's, and the guests running here\n  mps -A a            every MOSIX process of the cluster\n  mps --json 1234\n\nJSON (--json): an array with one object per process: pid, node (0 = here), nmigs, lock, cantmove (null or a reason), command, tty, state (F: frozen), cpu_ms, user, uid, frozen (null, or why it is frozen); for guests also from (their home node); with -A also home (its home node; node is then where it runs, never 0).\n\nExit status: 0, or 1 when this node is not configured; with -A, 1 also when a node that is up did not answer (the others are listed)."
)]
struct Cli {
    /// Also list guests: processes of other nodes running here.
    #[arg(short = 'G', conflicts_with = "all_nodes")]
    guests: bool,
    /// The MOSIX processes of every node of the cluster that is up.
    #[arg(short = 'A')]
    all_nodes: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// `a`, `u`, `x` selectors and PIDs.
    #[arg(value_name = "a|u|x|PID")]
    select: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Row {
    #[serde(flatten)]
    row: ProcRow,
    user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    home: Option<u16>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => mosix_core::cli::report("mps", e.as_ref()),
    }
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let mut all = false;
    let mut user_cols = false;
    let mut pids = Vec::new();
    for s in &cli.select {
        if let Ok(p) = s.parse::<u32>() {
            pids.push(p);
            continue;
        }
        for c in s.trim_start_matches('-').chars() {
            match c {
                'a' => all = true,
                'u' => user_cols = true,
                'x' => {}
                other => {
                    return mosix_core::usage!(
                        "unknown selector '{other}' (mps takes a, u, x and PIDs)"
                    );
                }
            }
        }
    }
    let mut client = Client::connect(&Paths::from_env())?;
    // (home node with -A, row)
    let mut missing = false;
    let found: Vec<(Option<u16>, ProcRow)> = if cli.all_nodes {
        let mut v = Vec::new();
        for n in client.procs_all()? {
            if let Some(e) = &n.error {
                eprintln!("mps: node {} did not answer: {e}", n.node);
                missing = true;
            }
            let home = n.node.get();
            v.extend(n.rows.into_iter().map(|mut r| {
                if r.node == 0 {
                    r.node = home;
                }
                (Some(home), r)
            }));
        }
        v
    } else {
        client
            .procs(cli.guests)?
            .into_iter()
            .map(|r| (None, r))
            .collect()
    };
    let me = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .ok();
    let rows: Vec<Row> = found
        .into_iter()
        .map(|(home, mut r)| {
            if r.uid.is_none() && home.is_none() {
                r.uid = if r.from.is_some() {
                    r.remote_pid.and_then(cli::uid_of)
                } else {
                    cli::uid_of(r.pid)
                };
            }
            Row {
                user: r.uid.map_or_else(|| "?".into(), cli::user_name),
                row: r,
                home,
            }
        })
        .filter(|r| pids.is_empty() || pids.contains(&r.row.pid))
        .filter(|r| {
            all || !pids.is_empty() || r.row.from.is_some() || r.row.uid == me || me == Some(0)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if cli.json {
        serde_json::to_writer(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(if missing {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let mut header = String::new();
    if user_cols {
        header.push_str(&format!("{:<10} ", "USER"));
    }
    if cli.all_nodes {
        header.push_str(&format!("{:>4} ", "HOME"));
    }
    header.push_str(&format!("{:>7} {:<8} {:>4} ", "PID", "TTY", "NODE"));
    if cli.guests {
        header.push_str(&format!("{:>4} ", "FROM"));
    }
    header.push_str(&format!("{:<4} {:>6} ", "STAT", "TIME"));
    if user_cols {
        header.push_str(&format!("{:>4} {:<14} ", "MIGS", "CANTMOVE"));
    }
    header.push_str("COMMAND");
    writeln!(out, "{header}")?;
    for r in &rows {
        let p = &r.row;
        let mut line = String::new();
        if user_cols {
            line.push_str(&format!("{:<10} ", r.user));
        }
        if let Some(h) = r.home {
            line.push_str(&format!("{h:>4} "));
        }
        line.push_str(&format!(
            "{:>7} {:<8} {:>4} ",
            p.pid,
            cli::tty_name(p.tty),
            p.node
        ));
        if cli.guests {
            line.push_str(&format!(
                "{:>4} ",
                p.from.map_or_else(|| "-".into(), |f| f.to_string())
            ));
        }
        let mut stat = p.state.to_string();
        if p.lock {
            stat.push('L');
        }
        line.push_str(&format!("{:<4} {:>6} ", stat, cli::cpu_time(p.cpu_ms)));
        if user_cols {
            line.push_str(&format!(
                "{:>4} {:<14} ",
                p.nmigs,
                p.cantmove.as_deref().unwrap_or("-")
            ));
        }
        line.push_str(&p.command);
        writeln!(out, "{line}")?;
    }
    Ok(if missing {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
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
}
