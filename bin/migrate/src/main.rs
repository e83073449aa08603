//! migrate: ask the node service to move one process.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use mosix_core::cli::{NodeArg, RunningNodes};
use mosix_core::client::{Client, Migrated, Target};
use mosix_core::config::Paths;

/// Move a MOSIX process to another node, back home, or to the best node now.
///
/// NODE is a node number, an address or a host name from the map; 0 and `home` send the process
/// home; `balance` asks the balancer where it would run fastest now, by the load information
/// this node has, and leaves it where it is when no node is clearly better. The process keeps
/// running where it is until it is ready to go; it keeps its pid, files and terminal at home.
/// A process already on another node goes straight to the new one: its memory does not pass
/// through home. Root may move any process; a user may move the processes they could kill.
#[derive(Debug, Parser)]
#[command(
    name = "migrate",
    version,
    after_long_help = "Examples:\n  migrate 1234 3          move process 1234 to node 3\n  migrate 1234 home       bring it back\n  migrate 1234 balance --wait\n\nErrors say why a process cannot move: no such process, not a MOSIX process (start it with mosrun), it has threads or shared memory, the node is down or blocked.\n\nExit status: 0 when the move was accepted (with --wait: done), 1 otherwise, 2 on a usage error."
)]
struct Cli {
    /// The process (a pid of this node).
    pid: u32,
    /// Where to: NODE, home (or 0), or balance.
    to: String,
    /// Wait until the move is done and print where the process is.
    #[arg(long)]
    wait: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => mosix_core::cli::report("migrate", e.as_ref()),
    }
}

fn run(cli: &Cli) -> Result<()> {
    let mut client = Client::connect(&Paths::from_env())?;
    let to = match cli.to.as_str() {
        "balance" => Target::Balance,
        other => {
            let nodes = RunningNodes::new(&client.config()?)?;
            match nodes.node_or_home(other)? {
                NodeArg::Node(n) if n != nodes.me => Target::Node(n),
                NodeArg::Node(_) | NodeArg::Home => Target::Home,
            }
        }
    };
    if cli.wait {
        // Moving a large process over a slow link, or waiting for one to come home first,
        // takes longer than an ordinary request.
        client.set_timeout(Some(std::time::Duration::from_secs(300)));
    }
    let Migrated { node, done } = client.migrate(cli.pid, to, cli.wait)?;
    if cli.json {
        println!(
            "{}",
            serde_json::json!({ "pid": cli.pid, "node": node, "done": done })
        );
    } else if done {
        match node {
            0 => println!("process {} is home", cli.pid),
            n => println!("process {} is on node {n}", cli.pid),
        }
    } else if cli.wait {
        println!("process {} is moving to node {node}", cli.pid);
    }
    Ok(())
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
        let c = Cli::try_parse_from(["migrate", "1234", "home", "--wait"]).unwrap();
        assert_eq!(c.pid, 1234);
        assert!(c.wait);
        assert!(Cli::try_parse_from(["migrate", "x", "2"]).is_err());
    }
}
