//! Helpers every tool of the suite shares: naming nodes on the command line (by number, address
//! or host name, through the running map), exit codes, and reporting errors the same way.

use std::error::Error;
use std::net::Ipv4Addr;
use std::process::ExitCode;

use crate::client::RunningConfig;
use crate::map::{ClusterMap, MapErrors};
use crate::node::{NodeId, NodeIdError};

/// Exit status for "the request failed" (the tool could not do what was asked).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a usage error (as clap uses).
pub const EXIT_USAGE: u8 = 2;

/// A command line the tool cannot use (an unknown selector, a missing program, options that
/// contradict each other): [`report`] exits with [`EXIT_USAGE`] for it, as clap does for what
/// it finds itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Returns `Err(Usage(..))`, formatted: `return usage!("no program given")`.
#[macro_export]
macro_rules! usage {
    ($($t:tt)*) => {
        Err($crate::cli::Usage(format!($($t)*)).into())
    };
}

/// Prints an error chain to stderr as `tool: message: cause: cause` and returns exit status 1
/// ([`EXIT_USAGE`] when the chain holds a [`Usage`] error), except that a broken pipe
/// (`mps | head`) is a quiet success, as Unix tools do.
pub fn report(tool: &str, err: &(dyn Error + 'static)) -> ExitCode {
    let mut cur: Option<&(dyn Error + 'static)> = Some(err);
    let mut code = EXIT_FAILURE;
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return ExitCode::SUCCESS;
        }
        if e.downcast_ref::<Usage>().is_some() {
            code = EXIT_USAGE;
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
    ExitCode::from(code)
}

/// Whether the user asked for no colour (`NO_COLOR` set and not empty, as no-color.org
/// says): the screens of `mon` and `mtop` then keep their bold and reversed text only.
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// What a NODE argument names where home makes sense (`migrate PID 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeArg {
    /// `0` or `home`: the home node.
    Home,
    /// A node of the map.
    Node(NodeId),
}

/// Why a NODE argument names no node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeArgError {
    /// A number that is no node number (0, or above 65535).
    #[error(transparent)]
    Number(#[from] NodeIdError),
    /// A node number the map does not define.
    #[error("node {0} is not in the map")]
    NotInMap(NodeId),
    /// A host name the resolver does not know.
    #[error("cannot resolve host '{arg}': {reason}")]
    Unresolved {
        /// The argument.
        arg: String,
        /// The resolver's answer.
        reason: String,
    },
    /// An address (given, or of a host name) that belongs to no node.
    #[error("{arg} ({addr}) is not an address of any node in the map")]
    NotInCluster {
        /// The argument.
        arg: String,
        /// Its address.
        addr: Ipv4Addr,
    },
    /// The service's running map does not read back (a fault of the service).
    #[error("the running map of the MOSIX service: {0}")]
    RunningMap(#[from] MapErrors),
}

/// Turns a NODE argument — a node number, an address of the map (main or alias) or a host name
/// that `resolver` turns into one — into a node of `map`. `0` is not a node (see
/// [`resolve_node_or_home`]).
pub fn resolve_node(
    arg: &str,
    map: &ClusterMap,
    resolver: &dyn Fn(&str) -> Result<Ipv4Addr, String>,
) -> Result<NodeId, NodeArgError> {
    if arg.chars().all(|c| c.is_ascii_digit()) {
        let n: NodeId = arg.parse()?;
        return if map.contains(n) {
            Ok(n)
        } else {
            Err(NodeArgError::NotInMap(n))
        };
    }
    let addr = match arg.parse::<Ipv4Addr>() {
        Ok(a) => a,
        Err(_) => resolver(arg).map_err(|reason| NodeArgError::Unresolved {
            arg: arg.to_owned(),
            reason,
        })?,
    };
    map.node_of(addr).ok_or_else(|| NodeArgError::NotInCluster {
        arg: arg.to_owned(),
        addr,
    })
}

/// As [`resolve_node`], but `0` and `home` name the home node.
pub fn resolve_node_or_home(
    arg: &str,
    map: &ClusterMap,
    resolver: &dyn Fn(&str) -> Result<Ipv4Addr, String>,
) -> Result<NodeArg, NodeArgError> {
    if arg == "home" || (!arg.is_empty() && arg.chars().all(|c| c == '0')) {
        return Ok(NodeArg::Home);
    }
    resolve_node(arg, map, resolver).map(NodeArg::Node)
}

/// The nodes a tool may name: the map the node service runs with, and which node this is.
/// NODE arguments are resolved against it, host names through the system resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningNodes {
    /// The running map.
    pub map: ClusterMap,
    /// This node.
    pub me: NodeId,
    /// The nodes of the partner clusters (named after the map's own).
    pub partners: Option<ClusterMap>,
}

impl RunningNodes {
    /// Reads the running map out of the service's configuration (its addresses are resolved
    /// already: a host name in it is an error).
    pub fn new(cfg: &RunningConfig) -> Result<RunningNodes, NodeArgError> {
        let no_names = |h: &str| Err(format!("unexpected host name {h} in the running map"));
        let map = crate::map::parse_and_resolve("running map", &cfg.map_text, &no_names)?;
        let partners = if cfg.partner_map_text.trim().is_empty() {
            None
        } else {
            Some(crate::map::parse_and_resolve(
                "partners' running map",
                &cfg.partner_map_text,
                &no_names,
            )?)
        };
        Ok(RunningNodes {
            map,
            me: cfg.node,
            partners,
        })
    }

    /// The node a NODE argument names (see [`resolve_node`]): of this cluster, or else of a
    /// partner cluster.
    pub fn node(&self, arg: &str) -> Result<NodeId, NodeArgError> {
        let own = resolve_node(arg, &self.map, &crate::map::system_resolver);
        match (&own, &self.partners) {
            (Err(NodeArgError::NotInMap(_) | NodeArgError::NotInCluster { .. }), Some(p)) => {
                resolve_node(arg, p, &crate::map::system_resolver).or(own)
            }
            _ => own,
        }
    }

    /// The node a NODE argument names, `0` and `home` being home (see
    /// [`resolve_node_or_home`]).
    pub fn node_or_home(&self, arg: &str) -> Result<NodeArg, NodeArgError> {
        if arg == "home" || (!arg.is_empty() && arg.chars().all(|c| c == '0')) {
            return Ok(NodeArg::Home);
        }
        self.node(arg).map(NodeArg::Node)
    }
}

/// The peers a measuring tool (`tune`, `mtune`) works on: those `names` names (never this
/// node: `tool` says so), or every other node `view` shows up.
pub fn peers_to_measure(
    tool: &str,
    names: &[String],
    nodes: &RunningNodes,
    view: &crate::client::ClusterView,
) -> Result<Vec<NodeId>, String> {
    if names.is_empty() {
        return Ok(view
            .nodes
            .iter()
            .filter(|v| !v.is_self && v.up)
            .map(|v| v.node)
            .collect());
    }
    let mut out = Vec::new();
    for name in names {
        let n = nodes.node(name).map_err(|e| e.to_string())?;
        if n == nodes.me {
            return Err(format!(
                "node {n} is this node: {tool} measures the links to other nodes"
            ));
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// Writes `text` to `path` through a temporary file in the same directory, so that a reader
/// (the node service) never sees half a file.
pub fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.new-{}",
        path.file_name()
            .map_or("file".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    std::fs::write(&tmp, text)
        .map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display()))
    })
}

/// Whether a user who is neither owner nor in the group may run `p`: it is readable and
/// executable by others, and every directory above it searchable by others.
pub fn others_can_run(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.permissions().mode());
    mode(p) & 0o005 == 0o005 && p.ancestors().skip(1).all(|d| mode(d) & 0o001 != 0)
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

/// Runs `work` with a spinner on standard error when it is a terminal (nothing when it is
/// not: a pipe or a log stays clean): `what` and the elapsed time, and what `status` says,
/// asked every half second on a thread of its own (it may open its own connection to the
/// service; `None` keeps the last word).
pub fn with_progress<T>(
    what: &str,
    status: impl Fn() -> Option<String> + Send + 'static,
    work: impl FnOnce() -> T,
) -> T {
    use std::io::IsTerminal;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    if !std::io::stderr().is_terminal() {
        return work();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {prefix} {elapsed}: {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_prefix(what.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (bar, done) = (bar.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(s) = status() {
                    bar.set_message(s);
                }
                for _ in 0..3 {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        })
    };
    let out = work();
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    bar.finish_and_clear();
    out
}

/// A progress bar of `len` steps on standard error, drawn only when it is a terminal (hidden
/// otherwise: every call on it does nothing).
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed}: {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_owned());
    bar
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
        // One page per subcommand, `TOOL-SUB(N)`, as the tool's page refers to them; a page
        // left from a subcommand that is gone is stale too.
        let mut built = cmd.clone();
        built.build();
        let mut pages = Vec::new();
        for sub in built.get_subcommands().filter(|s| !s.is_hide_set()) {
            let page = format!("{name}-{}", sub.get_name());
            let shown: &'static str = Box::leak(page.clone().into_boxed_str());
            let bin: &'static str =
                Box::leak(format!("{name} {}", sub.get_name()).into_boxed_str());
            let rel = PathBuf::from("man").join(format!("{page}.{section}"));
            // clap's own `help` lists every subcommand again as one of its own: its page names
            // them as an argument instead of as pages of their own.
            let sub = if sub.get_name() == "help" {
                clap::Command::new(shown)
                    .about(sub.get_about().cloned().unwrap_or_default())
                    .disable_help_flag(true)
                    .arg(
                        clap::Arg::new("COMMAND")
                            .num_args(0..)
                            .help(format!("The subcommand of {name} to show the help of")),
                    )
            } else {
                sub.clone()
            };
            if let Err(e) = check(&root, &rel, &man_page(sub.name(shown).bin_name(bin))) {
                problems.push(e);
            }
            pages.push(format!("{page}.{section}"));
        }
        let prefix = format!("{name}-");
        let suffix = format!(".{section}");
        for e in std::fs::read_dir(root.join("man"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let file = e.file_name().to_string_lossy().into_owned();
            if file.starts_with(&prefix) && file.ends_with(&suffix) && !pages.contains(&file) {
                if std::env::var_os("MOSIX_BLESS").is_some_and(|v| v == "1") {
                    let _ = std::fs::remove_file(e.path());
                } else {
                    problems.push(format!("man/{file} documents no subcommand of {name}"));
                }
            }
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

    fn map() -> ClusterMap {
        parse_and_resolve(
            "m",
            "1 10.0.0.1 4\n20 10.0.1.20 1\n2 192.168.9.2 ALIAS\n",
            &|_| Err("no".into()),
        )
        .unwrap()
    }

    fn hosts(h: &str) -> Result<Ipv4Addr, String> {
        match h {
            "n3.lan" => Ok(Ipv4Addr::new(10, 0, 0, 3)),
            "gw.lan" => Ok(Ipv4Addr::new(192, 168, 9, 2)),
            "far.lan" => Ok(Ipv4Addr::new(172, 16, 0, 1)),
            _ => Err("unknown host".into()),
        }
    }

    fn node(n: u16) -> NodeId {
        NodeId::new(n).unwrap()
    }

    #[test]
    fn nodes_are_named_by_number_address_alias_or_host_name() {
        let m = map();
        assert_eq!(resolve_node("3", &m, &hosts).unwrap(), node(3));
        assert_eq!(resolve_node("20", &m, &hosts).unwrap(), node(20));
        assert_eq!(resolve_node("10.0.0.4", &m, &hosts).unwrap(), node(4));
        assert_eq!(resolve_node("192.168.9.2", &m, &hosts).unwrap(), node(2));
        assert_eq!(resolve_node("n3.lan", &m, &hosts).unwrap(), node(3));
        assert_eq!(resolve_node("gw.lan", &m, &hosts).unwrap(), node(2));
    }

    #[test]
    fn a_name_of_no_node_is_an_error_naming_it() {
        let m = map();
        let msg = |a: &str| resolve_node(a, &m, &hosts).unwrap_err().to_string();
        assert_eq!(msg("5"), "node 5 is not in the map");
        assert_eq!(
            msg("10.0.0.9"),
            "10.0.0.9 (10.0.0.9) is not an address of any node in the map"
        );
        assert_eq!(
            msg("far.lan"),
            "far.lan (172.16.0.1) is not an address of any node in the map"
        );
        assert_eq!(
            msg("nowhere"),
            "cannot resolve host 'nowhere': unknown host"
        );
        assert_eq!(msg("70000"), "node number 70000 is out of range 1..65535");
        assert_eq!(msg("0"), "node number 0 means home, not a node");
        assert!(matches!(
            resolve_node("", &m, &hosts),
            Err(NodeArgError::Number(NodeIdError::NotANumber(_)))
        ));
    }

    #[test]
    fn zero_and_home_name_home_where_home_makes_sense() {
        let m = map();
        for a in ["0", "00", "home"] {
            assert_eq!(resolve_node_or_home(a, &m, &hosts).unwrap(), NodeArg::Home);
        }
        assert_eq!(
            resolve_node_or_home("10.0.0.2", &m, &hosts).unwrap(),
            NodeArg::Node(node(2))
        );
        assert!(resolve_node_or_home("6", &m, &hosts).is_err());
        assert!(resolve_node("home", &m, &hosts).is_err());
    }

    #[test]
    fn the_running_map_names_the_nodes() {
        let cfg = RunningConfig {
            node: node(2),
            map_text: map().to_text(),
            map_name: "/etc/mosix.map".into(),
            port: 249,
            interval_ms: 1000,
            window: 16,
            dead_after_ms: 5000,
            measuring: "machine".into(),
            mfs_mount: "/mfs".into(),
            partner_map_text: "101 10.0.9.1 2\n".into(),
        };
        let nodes = RunningNodes::new(&cfg).unwrap();
        assert_eq!(nodes.node("102").unwrap(), node(102));
        assert_eq!(nodes.node("10.0.9.1").unwrap(), node(101));
        assert!(nodes.node("103").is_err());
        assert_eq!(nodes.me, node(2));
        assert_eq!(nodes.map.nodes(), map().nodes());
        assert_eq!(nodes.map.addrs_of(node(2)), map().addrs_of(node(2)));
        assert_eq!(nodes.node("10.0.1.20").unwrap(), node(20));
        assert_eq!(nodes.node_or_home("0").unwrap(), NodeArg::Home);
        let bad = RunningConfig {
            map_text: "1 somehost 2\n".into(),
            ..cfg
        };
        let e = RunningNodes::new(&bad).unwrap_err().to_string();
        assert!(e.contains("unexpected host name somehost"), "{e}");
    }

    #[test]
    fn others_can_run_needs_every_directory_above_searchable() {
        use std::os::unix::fs::PermissionsExt;
        let set = |p: &std::path::Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        let d = tempfile::tempdir().unwrap();
        set(d.path(), 0o755);
        if !others_can_run_dir(d.path()) {
            // The temporary directory itself is out of others' reach: nothing to tell here.
            return;
        }
        let inner = d.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        let prog = inner.join("prog");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        set(&prog, 0o755);
        set(&inner, 0o755);
        assert!(others_can_run(&prog));
        set(&inner, 0o700);
        assert!(!others_can_run(&prog));
        set(&inner, 0o711);
        assert!(others_can_run(&prog));
        set(&prog, 0o750);
        assert!(!others_can_run(&prog));
        assert!(!others_can_run(&inner.join("missing")));
    }

    fn others_can_run_dir(d: &std::path::Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        d.ancestors()
            .all(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
    }
}
