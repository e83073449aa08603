//! mostimeof: the CPU time MOSIX processes used, wherever they ran.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use mosix_core::client::Client;
use mosix_core::config::Paths;

/// Print the CPU time (user and system, in seconds) that each MOSIX process of this node has
/// used, at home and on every node it ran on.
///
/// A process running elsewhere reports its time home about once a second: the figure may be
/// that much behind (AGE). A PID that is not a MOSIX process of this node is named on standard
/// error.
#[derive(Debug, Parser)]
#[command(
    name = "mostimeof",
    version,
    after_long_help = "Examples:\n  mostimeof 1234\n  mostimeof --json 1234 1240\n\nJSON (--json): an array with one object per process found: pid, cpu_s, node (where it runs now: 0 = here), age_ms (how old the figure is).\n\nExit status: 0, or 1 when this node is not configured or a PID is not a MOSIX process of this node; 2 on a usage error."
)]
struct Cli {
    /// The processes (pids of this node).
    #[arg(required = true, value_name = "PID")]
    pids: Vec<u32>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => mosix_core::cli::report("mostimeof", e.as_ref()),
    }
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let rows = Client::connect(&Paths::from_env())?.procs(false)?;
    let mut found = Vec::new();
    let mut missing = false;
    for &pid in &cli.pids {
        match rows.iter().find(|r| r.pid == pid) {
            Some(r) => found.push(r),
            None => {
                eprintln!("mostimeof: {pid} is not a MOSIX process of this node");
                missing = true;
            }
        }
    }
    if cli.json {
        let v: Vec<_> = found
            .iter()
            .map(|r| {
                serde_json::json!({
                    "pid": r.pid,
                    "cpu_s": r.cpu_ms as f64 / 1000.0,
                    "node": r.node,
                    "age_ms": r.cpu_age_ms,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else if !found.is_empty() {
        println!("{:>7} {:>10} {:>4} {:>6}", "PID", "CPU(s)", "NODE", "AGE");
        for r in found {
            println!(
                "{:>7} {:>10.2} {:>4} {:>5.1}s",
                r.pid,
                r.cpu_ms as f64 / 1000.0,
                r.node,
                r.cpu_age_ms as f64 / 1000.0
            );
        }
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
