//! The command line of mon.

use clap::Parser;

/// Monitor the MOSIX cluster: a bar chart of every node's load, speed, memory or utilisation.
///
/// mon shows what this node knows about every node of its map; the numbers come from the
/// information the nodes disseminate, so they are a second or two old. Interactive keys switch
/// what is shown: l load (default), L load on a log scale, s speed (with the number of CPUs), m
/// memory (used solid, free as '+' up to the total), r raw memory (the same, not counting
/// reclaimable cache as free), u utilisation, d show dead nodes too, t totals; w, v, V, a choose
/// the numbering layout (wide, vertical, tight, automatic); the arrow keys, Home and End scroll;
/// q quits.
///
/// With --once, mon prints the same data once as a table (or JSON with --json) and exits.
#[derive(Debug, Parser)]
#[command(
    name = "mon",
    version,
    disable_version_flag = true,
    after_long_help = "Units: load 100 = one standard CPU fully busy; speed 10000 = the standard CPU; memory in bytes (JSON) or binary units (table); utilisation in percent of the node's CPU capacity.\n\nPrometheus (--once --prometheus): write to a file the textfile collector reads, e.g. mon --once --prometheus > /var/lib/prometheus/node-exporter/mosix.prom.$$ && mv -f /var/lib/prometheus/node-exporter/mosix.prom.$$ /var/lib/prometheus/node-exporter/mosix.prom (from cron or a timer).\n\nJSON (--once --json): an array with one object per node of the map and of the partner clusters: node, addr, up, is_self, age_ms, load, speed, cpus, mem_total, mem_free, mem_rawfree, util (null when unknown: a node that is down or quiet), status (the classic bitmask: CONF=1 UP=2 STAY=4 LSTAY=8 BLOCK=16 QUIET=32 NOMFS=64 CLOSED=128), cluster (its cluster's name).\n\nExit status: 0, or 1 when this node is not configured (no MOSIX service answers).\n\nEnvironment: NO_COLOR (set and not empty) draws the screen without colours, keeping bold and reversed text."
)]
pub struct Cli {
    /// Print the data once as a table and exit.
    #[arg(long)]
    pub once: bool,

    /// With --once: print JSON.
    #[arg(long, requires = "once", conflicts_with = "prometheus")]
    pub json: bool,

    /// Serve the cluster as a web page at ADDR (e.g. 127.0.0.1:8249) instead of drawing it
    /// here: the nodes as mon shows them and every MOSIX process of the cluster, updated every
    /// second; read-only. Runs until interrupted.
    #[arg(long, value_name = "ADDR", conflicts_with = "once")]
    pub web: Option<std::net::SocketAddr>,

    /// With --once: print the Prometheus text format (every node of the view labelled by
    /// number: mosix_node_up, mosix_node_age_seconds, mosix_node_load, ...), for node_exporter's
    /// textfile collector. The node service serves its own counters on [metrics] listen.
    #[arg(long, requires = "once")]
    pub prometheus: bool,

    /// Start showing the load (default).
    #[arg(short = 'l', group = "mode")]
    pub load: bool,

    /// Start showing the load on a logarithmic scale.
    #[arg(short = 'L', group = "mode")]
    pub log_load: bool,

    /// Start showing speed and CPUs.
    #[arg(short = 's', group = "mode")]
    pub speed: bool,

    /// Start showing memory.
    #[arg(short = 'm', group = "mode")]
    pub memory: bool,

    /// Start showing raw memory.
    #[arg(short = 'r', group = "mode")]
    pub raw_memory: bool,

    /// Start showing utilisation.
    #[arg(short = 'u', group = "mode")]
    pub util: bool,

    /// Wide layout: node numbers written across.
    #[arg(short = 'w', group = "layout")]
    pub wide: bool,

    /// Vertical layout: node numbers written downwards, two columns a node.
    #[arg(short = 'v', group = "layout")]
    pub vertical: bool,

    /// Tight layout: one column a node.
    #[arg(short = 'V', group = "layout")]
    pub tight: bool,

    /// Automatic layout (default): the widest that shows all nodes.
    #[arg(short = 'a', group = "layout")]
    pub auto: bool,

    /// Show dead nodes too.
    #[arg(short = 'd')]
    pub dead: bool,

    /// Show the totals of nodes and CPUs.
    #[arg(short = 't')]
    pub totals: bool,

    /// Start the display at this node (classic: +NODE).
    #[arg(long, value_name = "NODE")]
    pub start: Option<u16>,

    /// Print version.
    #[arg(long, action = clap::ArgAction::Version)]
    pub version: Option<bool>,

    /// Milliseconds between refreshes.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub interval: u64,
}

/// Rewrites the classic `+NODE` into `--start NODE`.
pub fn classic_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    for a in args {
        match a.to_str().and_then(|s| s.strip_prefix('+')) {
            Some(n) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
                out.push("--start".into());
                out.push(n.into());
            }
            _ => out.push(a),
        }
    }
    out
}
