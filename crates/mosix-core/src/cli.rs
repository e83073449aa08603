//! Helpers every tool of the suite shares: naming nodes on the command line, exit codes, and
//! reporting errors the same way.

use std::error::Error;
use std::net::Ipv4Addr;
use std::process::ExitCode;

use crate::map::ClusterMap;
use crate::node::NodeId;

/// Exit status for "the request failed" (the tool could not do what was asked).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a usage error (as clap uses).
pub const EXIT_USAGE: u8 = 2;

/// Prints an error chain to stderr as `tool: message: cause: cause` and returns exit status 1,
/// except that a broken pipe (`mps | head`) is a quiet success, as Unix tools do.
pub fn report(tool: &str, err: &(dyn Error + 'static)) -> ExitCode {
    let mut cur: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return ExitCode::SUCCESS;
        }
        cur = e.source();
    }
    let mut msg = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = e.source();
    }
    eprintln!("{tool}: {msg}");
    ExitCode::from(EXIT_FAILURE)
}

/// Turns a NODE argument — a node number, an address of the map or a host name — into a node.
pub fn node_arg(arg: &str, map: &ClusterMap) -> Result<NodeId, String> {
    if arg.chars().all(|c| c.is_ascii_digit()) {
        let n: NodeId = arg.parse().map_err(|e| format!("{e}"))?;
        return if map.contains(n) {
            Ok(n)
        } else {
            Err(format!("node {n} is not in the map"))
        };
    }
    let addr = match arg.parse::<Ipv4Addr>() {
        Ok(a) => a,
        Err(_) => crate::map::system_resolver(arg)
            .map_err(|e| format!("cannot resolve host '{arg}': {e}"))?,
    };
    map.node_of(addr)
        .ok_or_else(|| format!("{arg} ({addr}) is not an address of any node in the map"))
}

/// The owner of process `pid` of this machine, if it exists.
pub fn uid_of(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// The name of user `uid` (through the system's user database), or the number.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// A terminal's name from the kernel's `tty_nr` (`?` for none), as ps writes it.
pub fn tty_name(tty_nr: i32) -> String {
    if tty_nr == 0 {
        return "?".into();
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match major {
        136..=143 => format!("pts/{}", minor + (major - 136) * 256),
        4 => format!("tty{minor}"),
        _ => format!("{major}:{minor}"),
    }
}

/// CPU time as ps writes it: minutes:seconds.
pub fn cpu_time(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}", s / 60, s % 60)
}

/// Man pages and shell completions, generated from the tools' clap definitions and checked in
/// under `man/` and `etc/completions/`. Each tool has a test that regenerates its files and fails
/// when the checked-in copy differs; run the tests with `MOSIX_BLESS=1` to rewrite them.
#[cfg(feature = "docgen")]
pub mod docgen {
    use std::path::{Path, PathBuf};

    /// The workspace root, from a crate's manifest directory two levels down.
    pub fn workspace_root(manifest_dir: &str) -> PathBuf {
        Path::new(manifest_dir)
            .ancestors()
            .find(|p| p.join("Cargo.lock").exists() || p.join("ARCHITECTURE.md").exists())
            .map_or_else(|| PathBuf::from(manifest_dir), Path::to_path_buf)
    }

    /// Renders a command's man page.
    pub fn man_page(cmd: clap::Command) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = clap_mangen::Man::new(cmd).render(&mut out);
        out
    }

    /// Renders a command's completion script for a shell.
    pub fn completion(mut cmd: clap::Command, shell: clap_complete::Shell) -> Vec<u8> {
        let name = cmd.get_name().to_owned();
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, name, &mut out);
        out
    }

    /// Where the completion file of a tool for a shell lives, relative to the workspace root.
    pub fn completion_path(tool: &str, shell: clap_complete::Shell) -> PathBuf {
        use clap_complete::Shell;
        let (dir, file) = match shell {
            Shell::Bash => ("bash", tool.to_owned()),
            Shell::Zsh => ("zsh", format!("_{tool}")),
            Shell::Fish => ("fish", format!("{tool}.fish")),
            _ => ("other", tool.to_owned()),
        };
        PathBuf::from("etc/completions").join(dir).join(file)
    }

    /// Compares `content` with the file at `root/rel`; with `MOSIX_BLESS=1` writes it instead.
    /// Returns a description of the difference, if any.
    pub fn check(root: &Path, rel: &Path, content: &[u8]) -> Result<(), String> {
        let path = root.join(rel);
        if std::env::var_os("MOSIX_BLESS").is_some_and(|v| v == "1") {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            return std::fs::write(&path, content).map_err(|e| format!("{}: {e}", path.display()));
        }
        match std::fs::read(&path) {
            Ok(old) if old == content => Ok(()),
            Ok(_) => Err(format!(
                "{} is stale; regenerate with: MOSIX_BLESS=1 cargo test --workspace",
                rel.display()
            )),
            Err(e) => Err(format!(
                "{}: {e}; generate with: MOSIX_BLESS=1 cargo test --workspace",
                rel.display()
            )),
        }
    }

    /// Checks a tool's command line for inconsistencies (clap's `debug_assert`), then checks (or
    /// writes) its man page in section `section` and its bash, zsh and fish completions.
    pub fn check_tool(manifest_dir: &str, cmd: clap::Command, section: &str) -> Result<(), String> {
        cmd.clone().debug_assert();
        let root = workspace_root(manifest_dir);
        let name = cmd.get_name().to_owned();
        let mut problems = Vec::new();
        let man = man_page(cmd.clone());
        if let Err(e) = check(
            &root,
            &PathBuf::from("man").join(format!("{name}.{section}")),
            &man,
        ) {
            problems.push(e);
        }
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let c = completion(cmd.clone(), shell);
            if let Err(e) = check(&root, &completion_path(&name, shell), &c) {
                problems.push(e);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::parse_and_resolve;

    #[test]
    fn terminals_times_and_users() {
        assert_eq!(tty_name(0), "?");
        assert_eq!(tty_name((136 << 8) | 3), "pts/3");
        assert_eq!(tty_name((4 << 8) | 1), "tty1");
        assert_eq!(cpu_time(125_000), "2:05");
        assert_eq!(user_name(0), "root");
        assert_eq!(user_name(4_000_000_000), "4000000000");
        assert_eq!(
            uid_of(std::process::id()),
            Some(nix::unistd::getuid().as_raw())
        );
    }

    #[test]
    fn nodes_are_named_by_number_or_address() {
        let m = parse_and_resolve("m", "1 10.0.0.1 4\n", &|_| Err("no".into())).unwrap();
        assert_eq!(node_arg("3", &m).unwrap().get(), 3);
        assert_eq!(node_arg("10.0.0.4", &m).unwrap().get(), 4);
        assert!(node_arg("5", &m).unwrap_err().contains("not in the map"));
        assert!(
            node_arg("10.0.0.9", &m)
                .unwrap_err()
                .contains("not an address")
        );
        assert!(node_arg("0", &m).unwrap_err().contains("home"));
    }
}
