//! The command line of mosctl.

use clap::{Parser, Subcommand};

/// Administer this MOSIX node and query the cluster.
///
/// The switches (stay, lstay, block, quiet, mfs and their opposites) change how this node takes
/// part in the cluster; every node sees them in `mosctl status`. The queries ask this node's
/// service what it knows about any node; they need no privileges, the changes need root.
///
/// A NODE is a node number, an address of the map or a host name; without one, a query is about
/// this node.
#[derive(Debug, Parser)]
#[command(
    name = "mosctl",
    version,
    after_long_help = "Units: load 100 = one standard CPU fully busy; speed 10000 = the standard CPU; memory in bytes; utilisation in percent of the node's CPU capacity.\n\nWith --raw, the get verbs print a negative errno instead of failing: -101 (ENETUNREACH) for a node that is down, -61 (ENODATA) for a quiet node, -22 (EINVAL) for a node not in the map.\n\nExit status: 0 on success (isup: the node is up), 1 on failure (isup: the node is down), 2 on a usage error, 3 (isup only) when no MOSIX service answers on this node.\n\nClassic spellings -stay, -lstay, -block, -quiet are accepted for nostay, nolstay, noblock, noquiet."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub verb: Verb,
}

/// The verbs of mosctl.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// No automatic migration of processes away from this node.
    Stay,
    /// Allow automatic migration away from this node again.
    Nostay,
    /// This node's own processes stay; guests may still leave.
    Lstay,
    /// Allow this node's own processes to leave again.
    Nolstay,
    /// No guest processes may arrive.
    Block,
    /// Accept guest processes again.
    Noblock,
    /// Send every guest process home and block new ones; returns when none is left (or after
    /// a minute), saying how many were sent; on a terminal it shows how many are still here.
    /// Interrupting it only stops the waiting.
    Expel(Waiting),
    /// Bring every process of this node home and keep them here (lstay); returns when all are
    /// home (or after a minute), saying how many came; on a terminal it shows how many are
    /// still away. Interrupting it only stops the waiting.
    Bring(Waiting),
    /// Close this node to the grid of partner clusters (partners(5)): no process of another
    /// cluster arrives, none of this cluster's leaves for another cluster, and every guest of
    /// another cluster here leaves now — for a node of its own cluster that has room, or home,
    /// where it is frozen if home has no room. Nobody is killed. Shows the guests still here
    /// until none is left; gives up waiting after a minute (exit status 1).
    Closegrid(Json),
    /// Close the whole cluster to the grid (every node of it, as closegrid; the nodes hear of it
    /// by gossip, from this node's cluster only). Shows, until none is left (or a minute has
    /// passed: exit status 1), the nodes that are not closed yet or still run guests of other
    /// clusters.
    Isolate(Json),
    /// Open the whole cluster to the grid again (every node, as opengrid).
    Rejoin,
    /// Open this node to the grid again; with MAXGUESTS, run at most that many guests of
    /// other clusters at once (those over it leave; without it, no limit).
    Opengrid {
        /// The most guests of other clusters at once.
        maxguests: Option<u32>,
    },
    /// Change the priority this node gives partner clusters (1..65534, lower is better; this
    /// cluster's own processes are 0): `cngpri PARTNER PRI [PARTNER PRI]...`. Guests of a
    /// partner that falls behind another make room at once. Lasts until the service restarts
    /// or `setpe -W` reads the partners file again.
    Cngpri {
        /// Pairs of a partner's name and its new priority.
        #[arg(required = true, num_args = 2.., value_name = "PARTNER PRI")]
        pairs: Vec<String>,
    },
    /// Stop disseminating this node's load (the node still says it is alive).
    Quiet,
    /// Disseminate this node's load again.
    Noquiet,
    /// Allow access to this node's files through MFS.
    Mfs,
    /// Refuse access to this node's files through MFS.
    Nomfs,
    /// Show a node's state: up or down, and its switches, in words; for this node also its
    /// cluster, its partner clusters and the guests here by cluster.
    Status(NodeQuery),
    /// Print yes if a node is up, no if it is down (exit status 0 / 1; 3 when no service
    /// answers here).
    Isup(NodeRequired),
    /// Without an argument: this node's number. With a node number: its address. With an
    /// address or host name: its node number.
    Whois(Whois),
    /// A node's load (100 = one standard CPU fully busy).
    Getload(NodeQuery),
    /// A node's speed per CPU (10000 = standard).
    Getspeed(NodeQuery),
    /// A node's memory available to processes (free plus reclaimable cache), in bytes.
    Getmem(NodeQuery),
    /// A node's physically free memory, in bytes.
    Getfree(NodeQuery),
    /// A node's CPU utilisation, in percent of its capacity.
    Getutil(NodeQuery),
    /// A node's number of CPUs.
    Getcpus(NodeQuery),
    /// Set this node's speed per CPU (10000 = standard); a slower node receives less work.
    Setspeed {
        /// The new speed.
        speed: u32,
    },
    /// Show the decay of per-process statistics: interval in seconds, per-mille kept for slow-
    /// and fast-decaying processes.
    Getdecay(Json),
    /// Set the decay of per-process statistics.
    Setdecay {
        /// Seconds between decays (1..3600).
        interval: u32,
        /// Per-mille kept at each decay for slow-decaying processes (default 975).
        slow: Option<u32>,
        /// Per-mille kept for fast-decaying processes (default 926).
        fast: Option<u32>,
    },
    /// Show the migration and remote-call costs the balancer uses (overheads(5)), or with
    /// --files the costs of reaching each node's files (mfscosts(5)).
    Gettune(Tune),
}

/// What `gettune` shows.
#[derive(Debug, clap::Args)]
pub struct Tune {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// The file access costs (mfscosts(5), written by mtune) instead of the migration costs.
    #[arg(long)]
    pub files: bool,
}

/// A query about a node, this node by default.
#[derive(Debug, clap::Args)]
pub struct NodeQuery {
    /// The node (number, address or host name); this node if omitted.
    pub node: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Print a negative errno instead of failing when there is no value.
    #[arg(long)]
    pub raw: bool,
}

/// A query that needs a node.
#[derive(Debug, clap::Args)]
pub struct NodeRequired {
    /// The node (number, address or host name).
    pub node: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The argument of whois.
#[derive(Debug, clap::Args)]
pub struct Whois {
    /// A node number, an address or a host name.
    pub what: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Just --json.
#[derive(Debug, clap::Args)]
pub struct Json {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--json` and how long to wait.
#[derive(Debug, clap::Args)]
pub struct Waiting {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Give up waiting after SECS seconds (0: no limit); the moves go on.
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    pub timeout: u64,
}

/// Rewrites the classic `-stay`, `-lstay`, `-block`, `-quiet` into their `no` verbs.
pub fn classic_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some("-stay") => "nostay".into(),
            Some("-lstay") => "nolstay".into(),
            Some("-block") => "noblock".into(),
            Some("-quiet") => "noquiet".into(),
            _ => a,
        })
        .collect()
}
