//! vcluster: a virtual MOSIX cluster on one machine (the library of this package does the work).

mod cli;
mod demo;

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use vcluster::{Cluster, Spec};

use cli::{Cli, Cmd};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(code) => code,
        Err(e) => mosix_core::cli::report("vcluster", e.as_ref()),
    }
}

fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Up(u) => {
            let mut spec = Spec::new(&u.name.name, u.nodes, vcluster::tools_dir());
            spec.base = u.base;
            spec.cpus_per_node = u.cpus;
            spec.mem_per_node = u.mem;
            spec.private_dirs = u.private;
            spec.start_services = !u.no_start;
            if let Some(g) = &u.grid {
                spec.grid = vcluster::grid::parts(g, &u.priority, &u.terms)?;
                spec.nodes = spec.grid.iter().map(|p| p.count).sum();
            }
            let mut tun = String::new();
            if let Some(f) = &u.tunables {
                tun = std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?;
            }
            if u.interval_ms.is_some() || u.dead_after_ms.is_some() {
                if tun.contains("[gossip]") {
                    return mosix_core::usage!(
                        "give the gossip settings either in --tunables or as options, not both"
                    );
                }
                tun.push_str("\n[gossip]\n");
                if let Some(i) = u.interval_ms {
                    tun.push_str(&format!("interval_ms = {i}\n"));
                }
                if let Some(d) = u.dead_after_ms {
                    tun.push_str(&format!("dead_after_ms = {d}\n"));
                }
            }
            spec.tunables = tun;
            let c = vcluster::up(&spec)?;
            print_status(&c, false)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down { name, all } => {
            vcluster::preflight()?;
            let names = if all {
                vcluster::list()
            } else {
                vec![name.name]
            };
            for n in names {
                let done = vcluster::down(&n)?;
                if done.is_empty() {
                    println!("virtual cluster '{n}': nothing to remove");
                } else {
                    println!("virtual cluster '{n}' removed ({})", done.join("; "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { name, json } => {
            let c = Cluster::load(&name.name)?;
            print_status(&c, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::List => {
            for n in vcluster::list() {
                println!("{n}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Exec {
            name,
            node,
            nobody,
            command,
        } => {
            vcluster::preflight()?;
            let c = Cluster::load(&name.name)?;
            let (prog, args) = command.split_first().context("no program given")?;
            if nobody {
                let mut cmd = c.user_command(node, prog, args)?;
                Err(anyhow::Error::new(cmd.exec())
                    .context(format!("cannot run {}", prog.to_string_lossy())))
            } else {
                Err(c.exec(node, prog, args))
            }
        }
        Cmd::Env { name, node } => {
            let c = Cluster::load(&name.name)?;
            if node == 0 || node > c.nodes {
                bail!("cluster '{}' has nodes 1..{}, not {node}", c.name, c.nodes);
            }
            let p = c.paths(node);
            println!(
                "export MOSIX_ETC={} MOSIX_RUNDIR={}",
                p.etc.display(),
                p.rundir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Start { name, node } => {
            vcluster::preflight()?;
            let c = Cluster::load(&name.name)?;
            let pid = c.start_node(node)?;
            println!("node {node} of '{}': service pid {pid}", c.name);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Stop { name, node, kill } => {
            vcluster::preflight()?;
            let c = Cluster::load(&name.name)?;
            match c.stop_node(node, kill)? {
                Some(pid) => println!(
                    "node {node} of '{}': service (pid {pid}) {}",
                    c.name,
                    if kill { "killed" } else { "stopped" }
                ),
                None => println!("node {node} of '{}': no service was running", c.name),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo(d) => demo::run(&d),
    }
}

fn print_status(c: &Cluster, json: bool) -> Result<()> {
    let nodes: Vec<_> = (1..=c.nodes).map(|n| c.node(n)).collect();
    if json {
        let v = serde_json::json!({
            "name": c.name,
            "nodes": nodes,
            "cpus_per_node": c.cpus_per_node,
            "mem_per_node": c.mem_per_node,
            "speed": c.speed,
            "cgroup_version": c.cgroup_version,
            "private_dirs": c.private_dirs,
            "grid": c.grid,
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "virtual cluster '{}': {} nodes, {:.2} CPUs and {} MiB each, speed {} per CPU{}",
        c.name,
        c.nodes,
        c.cpus_per_node,
        c.mem_per_node >> 20,
        c.speed,
        if c.private_dirs.is_empty() {
            String::new()
        } else {
            format!(
                ", private {}",
                c.private_dirs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    );
    for p in &c.grid {
        println!(
            "  cluster {}: nodes {}..{}{}",
            p.name,
            p.first,
            p.first + p.count - 1,
            if p.priorities.is_empty() {
                String::new()
            } else {
                format!(
                    ", priorities {}",
                    p.priorities
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        );
    }
    for n in nodes {
        println!(
            "  node {:<3} {:<15} netns {:<10} service {}",
            n.node,
            n.addr,
            n.netns,
            n.service_pid
                .map_or_else(|| "not running".to_owned(), |p| format!("pid {p}"))
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn sizes_parse() {
        assert_eq!(cli::parse_size("512M"), Ok(512 << 20));
        assert_eq!(cli::parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(cli::parse_size("4096"), Ok(4096));
        assert!(cli::parse_size("12Q").is_err());
        assert!(cli::parse_size("x").is_err());
    }

    #[test]
    fn exec_takes_the_rest_of_the_line() {
        let c = Cli::try_parse_from(["vcluster", "exec", "2", "--", "mosctl", "getload", "--json"])
            .unwrap();
        match c.cmd {
            Cmd::Exec {
                node,
                nobody,
                command,
                ..
            } => {
                assert_eq!(node, 2);
                assert!(!nobody);
                assert_eq!(command, vec!["mosctl", "getload", "--json"]);
            }
            _ => panic!("not exec"),
        }
        let c = Cli::try_parse_from(["vcluster", "exec", "1", "--nobody", "mosrun", "-2", "sort"])
            .unwrap();
        match c.cmd {
            Cmd::Exec {
                nobody, command, ..
            } => {
                assert!(nobody);
                assert_eq!(command, vec!["mosrun", "-2", "sort"]);
            }
            _ => panic!("not exec"),
        }
    }

    #[test]
    fn cli_man_page_and_completions_are_current() {
        mosix_core::cli::docgen::check_tool(env!("CARGO_MANIFEST_DIR"), Cli::command(), "1")
            .unwrap();
    }
}
