//! moskillall: send a signal to all of a user's MOSIX processes, on every node of the cluster.

use std::process::ExitCode;
use std::str::FromStr;

use anyhow::Result;
use clap::Parser;
use mosix_core::client::Client;
use mosix_core::config::Paths;
use nix::sys::signal::Signal;

/// Send a signal (default TERM) to every MOSIX process of a user, wherever it runs.
///
/// Every node of the cluster that is up is asked for the MOSIX processes whose home it is; a
/// process that runs elsewhere gets the signal through its deputy, as with kill(1). By default
/// the user is the caller; only root may name another user with -u. moskillall itself, even if
/// it is a MOSIX process, is spared. Nodes that did not answer are named on standard error.
#[derive(Debug, Parser)]
#[command(
    name = "moskillall",
    version,
    after_long_help = "Examples:\n  moskillall            SIGTERM to all your MOSIX processes in the cluster\n  moskillall -9         SIGKILL\n  moskillall -s HUP -u alice   (root)\n\nJSON (--json): an array with one object per node: node, count (processes signalled), error (null, or why the node did not answer).\n\nExit status: 0; 1 when this node is not configured, the signal was refused, or a node that is up did not answer; 2 on a usage error."
)]
struct Cli {
    /// The signal: a name (TERM, SIGKILL) or a number; also as -NAME or -NUMBER.
    #[arg(short = 's', long, default_value = "TERM")]
    signal: String,
    /// Whose processes (a user name or uid); only root may name another user.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `moskillall -9` and `moskillall -KILL` are `-s 9` and `-s KILL`.
fn classic_args(args: impl Iterator<Item = String>) -> Vec<String> {
    args.flat_map(|a| {
        let sig = a
            .strip_prefix('-')
            .filter(|s| !s.is_empty() && !s.starts_with('-'))
            .filter(|s| {
                s.chars().all(|c| c.is_ascii_digit())
                    || (s.len() > 1 && s.chars().all(|c| c.is_ascii_uppercase()))
            });
        match sig {
            Some(s) => vec!["--signal".to_owned(), s.to_owned()],
            None => vec![a],
        }
    })
    .collect()
}

fn signal_of(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = if s.starts_with("SIG") {
        s.to_owned()
    } else {
        format!("SIG{s}")
    };
    Signal::from_str(&name.to_ascii_uppercase())
        .ok()
        .map(|s| s as i32)
}

fn uid_of_user(u: &str) -> Option<u32> {
    if let Ok(n) = u.parse() {
        return Some(n);
    }
    nix::unistd::User::from_name(u)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(classic_args(std::env::args()));
    match run(&cli) {
        Ok(code) => code,
        Err(e) => mosix_core::cli::report("moskillall", e.as_ref()),
    }
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let Some(sig) = signal_of(&cli.signal) else {
        return mosix_core::usage!(
            "'{}' is not a signal (a name such as TERM, or 1..64)",
            cli.signal
        );
    };
    let uid = match &cli.user {
        Some(u) => match uid_of_user(u) {
            Some(uid) => uid,
            None => return mosix_core::usage!("no user '{u}'"),
        },
        None => nix::unistd::getuid().as_raw(),
    };
    let nodes = Client::connect(&Paths::from_env())?.signal_all(uid, sig)?;
    let mut failed = false;
    for n in &nodes {
        if let Some(e) = &n.error {
            eprintln!("moskillall: node {} did not answer: {e}", n.node);
            failed = true;
        }
    }
    if cli.json {
        let v: Vec<_> = nodes
            .iter()
            .map(
                |n| serde_json::json!({ "node": n.node.get(), "count": n.count, "error": n.error }),
            )
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        let total: u32 = nodes.iter().map(|n| n.count).sum();
        let answered = nodes.iter().filter(|n| n.error.is_none()).count();
        println!(
            "signal {sig} sent to {total} MOSIX process{} of uid {uid} ({answered} node{} answered)",
            if total == 1 { "" } else { "es" },
            if answered == 1 { "" } else { "s" }
        );
    }
    Ok(if failed {
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
    fn signals_by_name_number_and_the_classic_dash_form() {
        assert_eq!(signal_of("KILL"), Some(9));
        assert_eq!(signal_of("SIGHUP"), Some(1));
        assert_eq!(signal_of("term"), Some(15));
        assert_eq!(signal_of("9"), Some(9));
        assert_eq!(signal_of("0"), None);
        assert_eq!(signal_of("NOPE"), None);
        let c = Cli::parse_from(classic_args(
            ["moskillall", "-9", "-u", "alice"]
                .map(String::from)
                .into_iter(),
        ));
        assert_eq!(c.signal, "9");
        assert_eq!(c.user.as_deref(), Some("alice"));
        let c = Cli::parse_from(classic_args(
            ["moskillall", "-HUP"].map(String::from).into_iter(),
        ));
        assert_eq!(c.signal, "HUP");
        assert!(
            Cli::try_parse_from(classic_args(
                ["moskillall", "-x"].map(String::from).into_iter()
            ))
            .is_err()
        );
    }

    #[test]
    fn cli_man_page_and_completions_are_current() {
        mosix_core::cli::docgen::check_tool(env!("CARGO_MANIFEST_DIR"), Cli::command(), "1")
            .unwrap();
    }
}
