//! mosq: show and change the queue of MOSIX jobs (`mosrun -q`).

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use mosix_core::client::{Client, QueueChange, QueueView};
use mosix_core::config::Paths;

/// Show and change the queue of MOSIX jobs.
///
/// `mosrun -q[PRI] [-m MB] program` queues a job: the process exists at once (its pid, its
/// parent waiting for it) and starts when the cluster has room for it — a CPU to spare and, with
/// -m, a node with that much free memory — in priority order (lower first), then submission
/// order, cluster-wide: every node queues its own jobs and the first of each node's queue
/// travels in the gossip; a node starts its first job when it is the first of all it knows.
///
/// Without a verb, mosq lists this node's queue (first first, with why the first waits) and,
/// for every other node with queued jobs, how many and its first job's priority. `delete`,
/// `run` and `pri` change a job of this node: its owner's or, for root, anyone's.
#[derive(Debug, Parser)]
#[command(
    name = "mosq",
    version,
    after_long_help = "Examples:\n  mosq                    this node's queue and the others' first jobs\n  mosq pri 4242 10        job 4242 now has priority 10 (lower first)\n  mosq run 4242           start it now, ahead of its turn\n  mosq delete 4242        take it out: its mosrun exits 1, saying so\n\nJSON (--json): {node, jobs: [{pid, uid, priority, submitted_ms, mem_mb, command, waits_for}], others: [[node, {priority, submitted_ms, queued}]]}.\n\nExit status: 0 on success, 1 on failure (no such queued job, not yours, no service), 2 on a usage error."
)]
struct Cli {
    /// What to do (default: list).
    #[command(subcommand)]
    verb: Option<Verb>,
    /// Print JSON (list).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// List this node's queue and the others' first jobs.
    List,
    /// Take a job out of the queue: it ends without running (its mosrun exits 1).
    Delete {
        /// The queued process.
        pid: u32,
    },
    /// Start a job now, ahead of its turn.
    Run {
        /// The queued process.
        pid: u32,
    },
    /// Give a job another priority (lower first).
    Pri {
        /// The queued process.
        pid: u32,
        /// Its new priority.
        priority: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => mosix_core::cli::report("mosq", e.as_ref()),
    }
}

fn run(cli: &Cli) -> Result<()> {
    let mut client = Client::connect(&Paths::from_env())?;
    let change = match cli.verb {
        None | Some(Verb::List) => {
            let v = client.queue()?;
            if cli.json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                print(&v);
            }
            return Ok(());
        }
        Some(Verb::Delete { pid }) => (pid, QueueChange::Delete),
        Some(Verb::Run { pid }) => (pid, QueueChange::Run),
        Some(Verb::Pri { pid, priority }) => (pid, QueueChange::Priority(priority)),
    };
    client.queue_change(change.0, change.1)?;
    Ok(())
}

fn print(v: &QueueView) {
    if v.jobs.is_empty() {
        println!("no job queued at node {}", v.node);
    } else {
        println!(
            "{:>7} {:>6} {:>4} {:>8} {:>7}  COMMAND",
            "PID", "UID", "PRI", "WAITED", "MEM"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for j in &v.jobs {
            let waited = now.saturating_sub(j.submitted_ms) / 1000;
            let mem = if j.mem_mb == 0 {
                "-".to_owned()
            } else {
                format!("{}M", j.mem_mb)
            };
            println!(
                "{:>7} {:>6} {:>4} {:>7}s {:>7}  {}",
                j.pid, j.uid, j.priority, waited, mem, j.command
            );
        }
        if let Some(first) = v.jobs.first() {
            println!("first: {}", first.waits_for);
        }
    }
    for (n, h) in &v.others {
        println!(
            "node {n}: {} queued, first with priority {}",
            h.queued, h.priority
        );
    }
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
        let c = Cli::try_parse_from(["mosq", "pri", "42", "7"]).unwrap();
        assert!(matches!(
            c.verb,
            Some(Verb::Pri {
                pid: 42,
                priority: 7
            })
        ));
        assert!(Cli::try_parse_from(["mosq", "--json"]).unwrap().json);
        assert!(Cli::try_parse_from(["mosq", "run"]).is_err());
    }
}
