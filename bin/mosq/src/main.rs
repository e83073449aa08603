//! mosq: show and change the queue of MOSIX jobs (`mosrun -q`).

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use mosix_core::client::{Client, QueueChange, QueueRow, QueueView};
use mosix_core::config::Paths;

/// Show and change the queue of MOSIX jobs.
///
/// `mosrun -q[PRI] [-m MB] program` queues a job: the process exists at once (its pid, its
/// parent waiting for it) and starts when the cluster has room for it — a CPU to spare and, with
/// -m, a node with that much free memory — in priority order (lower first), then submission
/// order, cluster-wide: every node queues its own jobs and the first of each node's queue
/// travels in the gossip; a node starts its first job when it is the first of all it knows.
///
/// Without a verb, mosq lists the queue of the whole cluster in the order the jobs will start:
/// this node's jobs and those of every other node of the cluster that has jobs queued (asked
/// over the link; a node that does not answer within 3 s is named with the reason), with why
/// this node's first job waits. `--here` lists this node's queue only, and the other nodes'
/// counts and first priorities as the gossip brings them. `delete`, `run` and `pri` change a
/// job of this node (run them on the node that lists it): its owner's or, for root, anyone's.
#[derive(Debug, Parser)]
#[command(
    name = "mosq",
    version,
    after_long_help = "Examples:\n  mosq                    the cluster's queue, in the order the jobs will start\n  mosq --here             this node's queue, and how many wait at the others\n  mosq pri 4242 10        job 4242 now has priority 10 (lower first)\n  mosq run 4242           start it now, ahead of its turn\n  mosq delete 4242        take it out: its mosrun exits 1, saying so\n\nJSON (--json): {node, jobs: [{pid, uid, priority, submitted_ms, mem_mb, command, waits_for}], others: [[node, {priority, submitted_ms, queued}]], cluster: [{node, jobs: [...], error}]} (cluster is empty with --here).\n\nExit status: 0 on success, 1 on failure (no such queued job, not yours, no service), 2 on a usage error."
)]
struct Cli {
    /// What to do (default: list).
    #[command(subcommand)]
    verb: Option<Verb>,
    /// Print JSON (list).
    #[arg(long)]
    json: bool,
    /// List this node's queue only (the others' counts from the gossip).
    #[arg(long)]
    here: bool,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// List the cluster's queue (with --here: this node's).
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
            let v = client.queue(!cli.here)?;
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
    // Every job listed, in the order they start: priority, submission, node.
    let mut rows: Vec<(u16, &QueueRow)> = v.jobs.iter().map(|j| (v.node.get(), j)).collect();
    for q in &v.cluster {
        rows.extend(q.jobs.iter().map(|j| (q.node.get(), j)));
    }
    rows.sort_by_key(|(n, j)| (j.priority, j.submitted_ms, *n, j.pid));
    if rows.is_empty() {
        println!("no job queued at node {}", v.node);
    } else {
        println!(
            "{:>5} {:>7} {:>6} {:>4} {:>8} {:>7}  COMMAND",
            "NODE", "PID", "UID", "PRI", "WAITED", "MEM"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for (n, j) in &rows {
            let waited = now.saturating_sub(j.submitted_ms) / 1000;
            let mem = if j.mem_mb == 0 {
                "-".to_owned()
            } else {
                format!("{}M", j.mem_mb)
            };
            println!(
                "{n:>5} {:>7} {:>6} {:>4} {:>7}s {:>7}  {}",
                j.pid, j.uid, j.priority, waited, mem, j.command
            );
        }
        if let Some(first) = v.jobs.first() {
            println!("first of node {}: {}", v.node, first.waits_for);
        }
    }
    for q in &v.cluster {
        if let Some(e) = &q.error {
            println!("node {}: its queue is not listed: {e}", q.node);
        }
    }
    if v.cluster.is_empty() {
        for (n, h) in &v.others {
            println!(
                "node {n}: {} queued, first with priority {}",
                h.queued, h.priority
            );
        }
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
