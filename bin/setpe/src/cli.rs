//! The command line of setpe.

use std::path::PathBuf;

use clap::{ArgGroup, Parser};
use mosix_core::NodeId;

/// Configure, check, show and stop a MOSIX node.
///
/// setpe reads the cluster map (mosix.map(5)), which gives every node of the cluster its number
/// and address, and starts this node's MOSIX service with it. The service disseminates this
/// node's load to the others, keeps the cluster view the other tools show, and listens on TCP
/// port 4249 (configurable in mosix.toml) on the node's own address.
///
/// This node is the one whose address in the map belongs to one of this machine's interfaces,
/// unless -p names it. The cluster secret (ETC/mosix/secret, mode 0600) must be the same on every
/// node: nodes with another secret are refused.
///
/// The environment variables MOSIX_ETC (default /etc) and MOSIX_RUNDIR (default /run/mosix)
/// move the configuration and the run-time files, so that several nodes can live on one machine.
#[derive(Debug, Parser)]
#[command(
    name = "setpe",
    version,
    group(ArgGroup::new("action").required(true).args(["write", "replace", "check", "read", "off", "new_secret"])),
    after_help = "Examples:\n  setpe -w -f /etc/mosix.map      start this node\n  setpe -c -f new.map             check a map (and the partners file) without changing anything\n  setpe -W -f new.map             give the running node a new map\n  setpe -r                        print the running configuration\n  setpe -off                      stop this node",
    after_long_help = "Examples:\n  setpe -w -f /etc/mosix.map      start this node\n  setpe -c -f new.map             check a map (and the partners file) without changing anything\n  setpe -W -f new.map             give the running node a new map\n  setpe -r                        print the running configuration\n  setpe -off                      stop this node\n  setpe --new-secret              make the cluster secret (then copy it to the other nodes)\n\nExit status: 0 on success, 1 when the map is wrong or the node cannot be configured, 2 on a usage error.\n\nFiles: ETC/mosix.map, ETC/mosix/secret, ETC/mosix/mosix.toml, ETC/mosix/partners (partners(5)); RUNDIR/mosix.sock (control socket), RUNDIR/checkpoint.sock (a process asks for its own checkpoint), RUNDIR/mosix.log (log of a background service), RUNDIR/mosix.pid."
)]
pub struct Cli {
    /// Configure this node from the map and start its service (in the background).
    #[arg(short = 'w')]
    pub write: bool,

    /// Like -w, but replace the configuration of a running service in place.
    #[arg(short = 'W')]
    pub replace: bool,

    /// Only check the map for consistency, and the partners file (partners(5)) against it;
    /// change nothing.
    #[arg(short = 'c')]
    pub check: bool,

    /// With -c: the partners file to check. Default: ETC/mosix/partners (if there is one).
    #[arg(long, value_name = "FILE", requires = "check")]
    pub partners: Option<PathBuf>,

    /// Print the running configuration in map format (to FILE with -f).
    #[arg(short = 'r')]
    pub read: bool,

    /// Stop this node: bring its processes home, send its guests home, then stop its service
    /// (written -off in the classic syntax). Processes that cannot move within a minute end
    /// with the node.
    #[arg(long = "off")]
    pub off: bool,

    /// Make the cluster secret, ETC/mosix/secret: 32 random bytes, mode 0600 from its
    /// creation (and ETC/mosix if there is none). Run it on one node and copy the file to the
    /// others (scp -p keeps the mode); an existing secret is never replaced.
    #[arg(long = "new-secret")]
    pub new_secret: bool,

    /// The map file; '-' reads standard input. Default: ETC/mosix.map.
    #[arg(short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// This node's number, when no address of this machine is in the map (or several are).
    #[arg(short = 'p', value_name = "NODE")]
    pub node: Option<NodeId>,

    /// With -w: keep the service in the foreground, logging to stderr (for systemd and tests).
    #[arg(long)]
    pub foreground: bool,

    /// The name of the map in messages (used when the map arrives on standard input).
    #[arg(long, hide = true)]
    pub map_name: Option<String>,
}

/// Rewrites the classic single-dash long option `-off` into `--off` before clap sees it.
pub fn classic_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|a| if a == "-off" { "--off".into() } else { a })
        .collect()
}
