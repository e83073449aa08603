//! migrate: ask the node service to move one process.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use mosix_core::cli::{NodeArg, RunningNodes};
use mosix_core::client::{CheckpointThen, Client, ClientError, Migrated, Target};
use mosix_core::config::Paths;
use mosix_core::procs::MoveProgress;

/// Move a MOSIX process to another node, back home, or to the best node now; freeze it;
/// checkpoint it.
///
/// NODE is a node number, an address or a host name from the map; 0 and `home` send the process
/// home; `balance` asks the balancer where it would run fastest now, by the load information
/// this node has, and leaves it where it is when no node is clearly better. `freeze` stops a
/// process of this node (one that runs elsewhere comes home first) and moves its memory to
/// this node's freeze area (`[freeze] dir`
/// of mosix.toml), out of RAM: it keeps its pid, parent, files and terminal, signals sent to it
/// are delivered when it continues (SIGKILL ends it at once and removes its file), and `mps`
/// shows it frozen. `continue` (or `home`) brings it back and it goes on where it stopped. The process keeps
/// running where it is until it is ready to go; it keeps its pid, files and terminal at home.
/// A process already on another node goes straight to the new one: its memory does not pass
/// through home. Root may move any process; a user may move the processes they could kill.
///
/// `checkpoint` writes what is needed to resume the process later (its memory, registers,
/// signal state, descriptors with their paths and offsets, working directory, environment) to
/// a file, with its owner's rights, and lets it go on; `chkstop` then stops it (SIGCONT
/// resumes it), `chkexit` ends it. The file is FILE.N for the Nth checkpoint of a process
/// started with `mosrun -C FILE`, else ckpt.PID.N in the process's working directory. A process
/// on another node comes home for it. `mosrun -I FILE` shows what a checkpoint holds.
///
/// `lock` keeps a running process where it is: no automatic move (as if started with
/// `mosrun -L`; moves asked for by name still happen); `unlock` lets the balancer move it again.
#[derive(Debug, Parser)]
#[command(
    name = "migrate",
    version,
    after_long_help = "Examples:\n  migrate 1234 3          move process 1234 to node 3\n  migrate 1234 3 --live   the same, sending its memory while it runs\n  migrate 1234 home       bring it back\n  migrate 1234 balance --wait\n  migrate 1234 freeze     free its memory until `migrate 1234 continue`\n  migrate 1234 checkpoint write a checkpoint; it goes on\n  migrate 1234 lock       no automatic moves of it from now on\n\nErrors say why a process cannot move: no such process, not a MOSIX process (start it with mosrun), it has threads or shared memory, the node is down or blocked.\n\nJSON (--json): {pid, node, done, frozen} when the move was accepted; {pid, checkpoint, bytes, stopped_ms} for a checkpoint; {pid, lock} for lock and unlock; when it failed, {pid, error, kind} with kind one of refused, gone, link-lost, kernel (the message also goes to standard error).\n\nExit status: 0 when the move was accepted (with --wait: done), 1 otherwise, 2 on a usage error."
)]
struct Cli {
    /// The process (a pid of this node).
    pid: u32,
    /// Where to: NODE, home (or 0), balance, freeze or continue; or checkpoint, chkstop,
    /// chkexit; or lock, unlock.
    to: String,
    /// Wait until the move is done and print where the process is (on a terminal, with the
    /// time so far and where it is).
    #[arg(long)]
    wait: bool,
    /// With --wait: give up waiting after SECS seconds (0: no limit); the move goes on.
    #[arg(long, value_name = "SECS", default_value_t = 300, requires = "wait")]
    timeout: u64,
    /// Move it live: its memory is sent while it runs, and it stops only for what it wrote
    /// meanwhile: from home to a node, from the node it runs on to another, or home (the node
    /// it leaves sends it). Processes larger than `[moves] live_above_mib` of the mosix.toml of
    /// the node they leave move live anyway.
    #[arg(long)]
    live: bool,
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
    let then = match cli.to.as_str() {
        "checkpoint" => Some(CheckpointThen::Continue),
        "chkstop" => Some(CheckpointThen::Stop),
        "chkexit" => Some(CheckpointThen::Exit),
        _ => None,
    };
    if let lock @ ("lock" | "unlock") = cli.to.as_str() {
        let on = lock == "lock";
        client.lock(cli.pid, on)?;
        if cli.json {
            println!("{}", serde_json::json!({ "pid": cli.pid, "lock": on }));
        } else if on {
            println!("process {} locked: no automatic moves", cli.pid);
        } else {
            println!("process {} unlocked: the balancer may move it", cli.pid);
        }
        return Ok(());
    }
    if let Some(then) = then {
        let t = match client.checkpoint(cli.pid, then) {
            Ok(t) => t,
            Err(e) => {
                if cli.json {
                    println!(
                        "{}",
                        serde_json::json!({ "pid": cli.pid, "error": e.to_string(), "kind": "refused" })
                    );
                }
                return Err(e.into());
            }
        };
        if cli.json {
            println!(
                "{}",
                serde_json::json!({
                    "pid": cli.pid,
                    "checkpoint": t.file,
                    "bytes": t.bytes,
                    "stopped_ms": t.stopped_ms,
                })
            );
        } else {
            let then = match then {
                CheckpointThen::Continue => "it goes on",
                CheckpointThen::Stop => "it is stopped (SIGCONT resumes it)",
                CheckpointThen::Exit => "it has ended",
            };
            println!(
                "process {} checkpointed to {} ({} MiB; stopped {} ms); {then}",
                cli.pid,
                t.file,
                t.bytes >> 20,
                t.stopped_ms
            );
        }
        return Ok(());
    }
    let to = match cli.to.as_str() {
        "balance" => Target::Balance,
        "freeze" => Target::Freeze,
        "continue" => Target::Continue,
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
        client.set_timeout((cli.timeout > 0).then(|| std::time::Duration::from_secs(cli.timeout)));
    }
    let pid = cli.pid;
    let watch = move || {
        let mut client = Client::connect(&Paths::from_env()).ok()?;
        if let Ok(Some(m)) = client.moving(pid) {
            return Some(sending(&m));
        }
        let rows = client.procs(false).ok()?;
        let r = rows.iter().find(|r| r.pid == pid)?;
        Some(match (r.frozen.is_some(), r.node) {
            (true, _) => "frozen".to_owned(),
            (false, 0) => "at home".to_owned(),
            (false, n) => format!("on node {n}"),
        })
    };
    let moved = mosix_core::cli::with_progress(&format!("process {pid}"), watch, || {
        client.migrate_live(cli.pid, to, cli.wait, cli.live)
    });
    let Migrated { node, done } = match moved {
        Ok(m) => m,
        Err(e) => {
            if cli.json
                && let Some(kind) = failure_kind(&e)
            {
                println!(
                    "{}",
                    serde_json::json!({ "pid": cli.pid, "error": e.to_string(), "kind": kind })
                );
            }
            return Err(e.into());
        }
    };
    if cli.json {
        let frozen = to == Target::Freeze;
        println!(
            "{}",
            serde_json::json!({
                "pid": cli.pid,
                "node": if frozen { 0 } else { node },
                "done": done,
                "frozen": frozen && done,
            })
        );
    } else if to == Target::Freeze {
        if done {
            println!("process {} is frozen", cli.pid);
        }
    } else if to == Target::Continue && done {
        println!("process {} continues at home", cli.pid);
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

/// The kind of a failed move, for `--json`: the service's own word for it, or `refused` for a
/// request the service turned down with only a message.
fn failure_kind(e: &ClientError) -> Option<&'static str> {
    match e {
        ClientError::Move(f) => Some(f.kind()),
        ClientError::Refused(_) => Some("refused"),
        _ => None,
    }
}

/// What a move being sent shows on a terminal (short: one line of a narrow terminal).
fn sending(m: &MoveProgress) -> String {
    let mib = |b: u64| b >> 20;
    match (m.total, m.live) {
        (0, _) => format!("to node {}: making its image", m.to),
        (t, false) => format!(
            "to node {}: {}/{} MiB sent ({} %)",
            m.to,
            mib(m.sent),
            mib(t),
            100 * m.sent.min(t) / t
        ),
        (t, true) => format!(
            "to node {}, live: {} MiB sent, {} MiB in all",
            m.to,
            mib(m.sent),
            mib(t)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn a_move_being_sent_shows_how_much_of_its_memory_went() {
        let m = |sent, total, live| MoveProgress {
            to: 3,
            live,
            sent,
            total,
        };
        assert_eq!(sending(&m(0, 0, false)), "to node 3: making its image");
        assert_eq!(
            sending(&m(256 << 20, 1 << 30, false)),
            "to node 3: 256/1024 MiB sent (25 %)"
        );
        // A live move's rounds send again what the process wrote: more than its memory.
        assert_eq!(
            sending(&m(1536 << 20, 1 << 30, true)),
            "to node 3, live: 1536 MiB sent, 1024 MiB in all"
        );
    }

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

    #[test]
    fn a_failed_move_names_its_kind() {
        use mosix_core::client::MoveFailure;
        let lost = ClientError::Move(MoveFailure::LinkLost {
            node: mosix_core::NodeId::new(3).unwrap(),
            detail: "connection reset".into(),
        });
        assert_eq!(failure_kind(&lost), Some("link-lost"));
        assert_eq!(lost.to_string(), "link to node 3 lost: connection reset");
        let refused = ClientError::Refused("node 2 is down".into());
        assert_eq!(failure_kind(&refused), Some("refused"));
        assert_eq!(failure_kind(&ClientError::NoAnswer(300)), None);
    }
}
