//! The command line of vcluster.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A virtual MOSIX cluster on one machine.
///
/// Every node is a network namespace with its own address on a private bridge, its own cgroup
/// (a CPU quota and a memory limit, so that the nodes behave like small separate machines), its
/// own MOSIX_ETC and MOSIX_RUNDIR, optionally its own mount namespace with private directories,
/// and its own node service. Nothing of the machine's network is touched: the bridge lives in a
/// namespace of its own. `vcluster down` removes every namespace, cgroup, mount and process of a
/// cluster, also after a crash.
///
/// Needs root and iproute2.
#[derive(Debug, Parser)]
#[command(
    name = "vcluster",
    version,
    after_long_help = "Examples:\n  vcluster demo                    build 4 nodes: gossip, processes moving, a crash and a rejoin; tear down\n  vcluster up -n 4                 build a cluster 'mvc' of 4 nodes and start their services\n  vcluster exec 2 -- mon           run mon on node 2\n  vcluster exec 3 -- mosctl status 1\n  eval $(vcluster env 2); mosctl getload   talk to node 2 from this shell\n  vcluster stop 3 --kill           crash node 3's service; vcluster start 3 brings it back\n  vcluster down                    remove everything\n\nState: /run/mosix-vc/NAME/ (node I's MOSIX_ETC is nodeI/etc, its MOSIX_RUNDIR nodeI/run). Network namespaces NAME-nI (node I at BASE+I) and NAME-sw (the bridge). Cgroups mosix-vc.NAME/nodeI."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The name of the cluster.
#[derive(Debug, Args)]
pub struct Name {
    /// The cluster's name.
    #[arg(long, default_value = "mvc")]
    pub name: String,
}

/// The verbs of vcluster.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Build a cluster and start its node services.
    Up(Up),
    /// Remove a cluster: processes, namespaces, cgroups, mounts, files.
    Down {
        #[command(flatten)]
        name: Name,
        /// Remove every virtual cluster on this machine.
        #[arg(long)]
        all: bool,
    },
    /// Show the nodes of a cluster.
    Status {
        #[command(flatten)]
        name: Name,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the virtual clusters on this machine.
    List,
    /// Run a program inside a node (its namespaces, cgroup and MOSIX environment).
    #[command(alias = "run")]
    Exec {
        #[command(flatten)]
        name: Name,
        /// The node.
        node: u16,
        /// Run it as nobody (uid and gid 65534, no supplementary groups), as a user's job: a
        /// node takes no process of root as a guest unless its mosix.toml says
        /// guests.accept_root.
        #[arg(long)]
        nobody: bool,
        /// The program and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Print shell commands that point the tools at a node (eval $(vcluster env 2)).
    Env {
        #[command(flatten)]
        name: Name,
        /// The node.
        node: u16,
    },
    /// Start a node's service.
    Start {
        #[command(flatten)]
        name: Name,
        /// The node.
        node: u16,
    },
    /// Stop a node's service (politely with setpe -off, or with SIGKILL as a crash would).
    Stop {
        #[command(flatten)]
        name: Name,
        /// The node.
        node: u16,
        /// Kill the service with SIGKILL instead of stopping it.
        #[arg(long)]
        kill: bool,
    },
    /// Build a 4-node cluster and show it at work, then remove it.
    Demo(Demo),
}

/// Options of `up`.
#[derive(Debug, Args)]
pub struct Up {
    #[command(flatten)]
    pub name: Name,
    /// Number of nodes (1..250).
    #[arg(short = 'n', long, default_value_t = 4)]
    pub nodes: u16,
    /// CPUs per node (the cgroup's quota). Default: this machine's CPUs divided among the nodes.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Memory per node (bytes, or with K, M, G). Default: this machine's memory divided by nodes + 1.
    #[arg(long, value_parser = parse_size)]
    pub mem: Option<u64>,
    /// A directory that each node has privately (its own mount namespace); may be repeated.
    #[arg(long = "private", value_name = "DIR")]
    pub private: Vec<PathBuf>,
    /// Node I gets BASE + I; BASE must end in .0.
    #[arg(long, default_value = "10.77.0.0")]
    pub base: Ipv4Addr,
    /// Milliseconds between two gossip messages of a node.
    #[arg(long)]
    pub interval_ms: Option<u64>,
    /// Information older than this marks a node down (milliseconds).
    #[arg(long)]
    pub dead_after_ms: Option<u64>,
    /// A mosix.toml fragment for every node.
    #[arg(long, value_name = "FILE")]
    pub tunables: Option<PathBuf>,
    /// Build the nodes but do not start their services.
    #[arg(long)]
    pub no_start: bool,
    /// Cut the nodes into a grid of MOSIX clusters named a, b, c…, partners of each other:
    /// their sizes, e.g. 2,2 (nodes 1-2 are cluster a, 3-4 cluster b). Each has its own map,
    /// secret and partners file (partners(5)), a secret per partnership. Sets the number of
    /// nodes.
    #[arg(long, value_name = "SIZES")]
    pub grid: Option<String>,
    /// With --grid: cluster X gives cluster Y priority P (1..65534, lower is better; default
    /// 10). May be repeated.
    #[arg(long, value_name = "X:Y=P", requires = "grid")]
    pub priority: Vec<String>,
    /// With --grid: cluster X's options for cluster Y, joined by '+': nogo, notake, idle
    /// (partners(5)). May be repeated.
    #[arg(long, value_name = "X:Y=OPTS", requires = "grid")]
    pub terms: Vec<String>,
}

/// Options of `demo`.
#[derive(Debug, Args)]
pub struct Demo {
    /// Number of nodes.
    #[arg(short = 'n', long, default_value_t = 4)]
    pub nodes: u16,
    /// Leave the cluster running at the end.
    #[arg(long)]
    pub keep: bool,
}

/// Parses 512M, 2G, 1048576.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size unit '{c}' (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 512M, 2G)"))?;
    if v < 0.0 {
        return Err(format!("'{s}' is negative"));
    }
    Ok((v * mult as f64) as u64)
}
