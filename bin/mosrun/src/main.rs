//! mosrun: register the process with the node service as a MOSIX process, then become the
//! program (execve), so that the program keeps mosrun's pid, parent, descriptors and all.

mod cli;

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use clap::Parser;
use mosix_core::NodeId;
use mosix_core::client::{Client, DecayMode, Registration};
use mosix_core::config::Paths;

use cli::Cli;

fn main() -> ExitCode {
    let args = cli::classic_args(std::env::args_os().collect());
    let cli = Cli::parse_from(args);
    match run(cli) {
        Ok(code) => code,
        Err(e) => mosix_core::cli::report("mosrun", e.as_ref()),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Some(dir) = &cli.install_links {
        return install_links(dir);
    }
    let Some((prog, args)) = cli.command.split_first() else {
        bail!("no program given (usage: mosrun [options] program [args...])");
    };
    let placement = match (&cli.node, &cli.jobs) {
        (Some(n), _) => Some(NodeId::new(*n).ok_or_else(|| anyhow!("node 0 means home; use -h"))?),
        (None, Some(list)) => {
            let nodes = cli::parse_list(list).map_err(|e| anyhow!("-j{list}: {e}"))?;
            let i = (getrandom::u64().unwrap_or(0) % nodes.len() as u64) as usize;
            NodeId::new(nodes[i])
        }
        (None, None) => None,
    };
    let placed = placement.is_some() || cli.home;
    let lock = if cli.unlock {
        false
    } else {
        cli.lock || placed
    };
    let decay = if cli.cpu {
        DecayMode::CpuBound
    } else if cli.io {
        DecayMode::IoBound
    } else if cli.no_decay {
        DecayMode::None
    } else if cli.fast {
        DecayMode::Fast
    } else {
        DecayMode::Slow
    };
    let mut client = Client::connect(&Paths::from_env())?;
    client.register(Registration {
        lock,
        decay,
        placement,
        fallback_home: cli.force,
    })?;
    drop(client);
    let err = std::process::Command::new(prog).args(args).exec();
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    eprintln!("mosrun: {}: {err}", prog.to_string_lossy());
    Ok(ExitCode::from(code))
}

fn install_links(dir: &std::path::Path) -> Result<ExitCode> {
    let me = std::env::current_exe()?;
    for (name, _) in cli::WRAPPERS {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&me, &link).map_err(|e| anyhow!("{}: {e}", link.display()))?;
        println!("{} -> {}", link.display(), me.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::ffi::OsString;

    fn parse(a: &[&str]) -> Cli {
        Cli::try_parse_from(cli::classic_args(a.iter().map(OsString::from).collect())).unwrap()
    }

    #[test]
    fn classic_placement_and_the_program_s_own_options() {
        let c = parse(&["mosrun", "-3", "-L", "gzip", "-9", "-c", "x"]);
        assert_eq!(c.node, Some(3));
        assert!(c.lock);
        assert_eq!(c.command, vec!["gzip", "-9", "-c", "x"]);
        let c = parse(&["mosrun", "-j2-4,7", "-F", "sort"]);
        assert_eq!(c.jobs.as_deref(), Some("2-4,7"));
        assert!(c.force);
        let c = parse(&["/usr/bin/runon", "2", "prog", "-1"]);
        assert_eq!(c.node, Some(2));
        assert_eq!(c.command, vec!["prog", "-1"]);
        let c = parse(&["cpujob", "prog"]);
        assert!(c.cpu);
        let c = parse(&["mosrun", "--", "-weird-name"]);
        assert_eq!(c.command, vec!["-weird-name"]);
        assert!(
            Cli::try_parse_from(cli::classic_args(vec![
                "mosrun".into(),
                "-h".into(),
                "-2".into(),
                "x".into()
            ]))
            .is_err()
        );
    }

    #[test]
    fn node_lists() {
        assert_eq!(cli::parse_list("2-4,7").unwrap(), vec![2, 3, 4, 7]);
        assert!(cli::parse_list("4-2").is_err());
        assert!(cli::parse_list("x").is_err());
        assert!(cli::parse_list("0").is_err());
    }

    #[test]
    fn cli_man_page_and_completions_are_current() {
        mosix_core::cli::docgen::check_tool(env!("CARGO_MANIFEST_DIR"), Cli::command(), "1")
            .unwrap();
    }
}
