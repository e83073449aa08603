//! The rows of `mon --once`: one per node, as a table or as JSON.

use std::io::Write;
use std::net::Ipv4Addr;

use mosix_core::client::{ClusterView, NodeView};
use mosix_core::{NodeId, Status};
use serde::Serialize;

/// One node, raw values (null when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Node number.
    pub node: NodeId,
    /// Address.
    pub addr: Ipv4Addr,
    /// Up or down.
    pub up: bool,
    /// The node mon runs on.
    pub is_self: bool,
    /// Age of the information, ms.
    pub age_ms: Option<u64>,
    /// Load units.
    pub load: Option<u32>,
    /// Speed per CPU.
    pub speed: Option<u32>,
    /// CPUs.
    pub cpus: Option<u32>,
    /// Total memory, bytes.
    pub mem_total: Option<u64>,
    /// Available memory, bytes.
    pub mem_free: Option<u64>,
    /// Free memory, bytes.
    pub mem_rawfree: Option<u64>,
    /// Utilisation, percent.
    pub util: Option<u32>,
    /// Status bitmask.
    pub status: u32,
    /// The cluster of the node (partners(5)): this node's own, or a partner's.
    pub cluster: String,
}

impl Row {
    /// The row of one node; `own` is the name of this node's cluster.
    pub fn of(v: &NodeView, own: &str) -> Row {
        let f = v.figures.filter(|_| v.up);
        Row {
            node: v.node,
            addr: v.addr,
            up: v.up,
            is_self: v.is_self,
            age_ms: v.age_ms,
            load: f.map(|f| f.load),
            speed: f.map(|f| f.speed),
            cpus: f.map(|f| f.cpus),
            mem_total: f.map(|f| f.mem_total),
            mem_free: f.map(|f| f.mem_free),
            mem_rawfree: f.map(|f| f.mem_rawfree),
            util: f.map(|f| f.util),
            status: v.status.bits(),
            cluster: v.cluster.clone().unwrap_or_else(|| own.to_owned()),
        }
    }
}

/// All rows of a view.
pub fn rows(view: &ClusterView) -> Vec<Row> {
    view.nodes
        .iter()
        .map(|v| Row::of(v, &view.cluster))
        .collect()
}

/// Bytes in binary units, three significant digits.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else if v < 10.0 {
        format!("{v:.2}{}", UNITS[u])
    } else if v < 100.0 {
        format!("{v:.1}{}", UNITS[u])
    } else {
        format!("{v:.0}{}", UNITS[u])
    }
}

/// The status bits in words.
pub fn flags(status: u32) -> String {
    let s = Status::from_bits_truncate(status);
    let mut v = Vec::new();
    for (b, n) in [
        (Status::STAY, "stay"),
        (Status::LSTAY, "lstay"),
        (Status::BLOCK, "block"),
        (Status::QUIET, "quiet"),
        (Status::NOMFS, "nomfs"),
        (Status::CLOSED, "closed"),
    ] {
        if s.contains(b) {
            v.push(n);
        }
    }
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join(",")
    }
}

/// Prints the table.
pub fn print_table(view: &ClusterView, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>5}  {:<15} {:<5} {:>6} {:>6} {:>4} {:>9} {:>9} {:>5}  FLAGS",
        "NODE", "ADDRESS", "STATE", "LOAD", "SPEED", "CPUS", "MEM", "FREE", "UTIL"
    )?;
    let dash = || "-".to_owned();
    let grid = !view.partners.is_empty();
    for r in rows(view) {
        let state = if !r.up {
            "down"
        } else if r.load.is_none() {
            "quiet"
        } else {
            "up"
        };
        writeln!(
            out,
            "{:>5}  {:<15} {:<5} {:>6} {:>6} {:>4} {:>9} {:>9} {:>5}  {}{}",
            r.node,
            r.addr,
            state,
            r.load.map_or_else(dash, |x| x.to_string()),
            r.speed.map_or_else(dash, |x| x.to_string()),
            r.cpus.map_or_else(dash, |x| x.to_string()),
            r.mem_total.map_or_else(dash, bytes),
            r.mem_free.map_or_else(dash, bytes),
            r.util.map_or_else(dash, |x| format!("{x}%")),
            flags(r.status),
            match (r.is_self, grid) {
                (true, false) => "  (this node)".to_owned(),
                (true, true) => format!("  (this node, cluster {})", r.cluster),
                (false, true) => format!("  (cluster {})", r.cluster),
                (false, false) => String::new(),
            }
        )?;
    }
    Ok(())
}

/// Prints the JSON array.
pub fn print_json(view: &ClusterView, out: &mut impl Write) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, &rows(view))?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_short() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.50KiB");
        assert_eq!(bytes(24 << 30), "24.0GiB");
        assert_eq!(bytes(500 << 20), "500MiB");
    }

    #[test]
    fn flags_in_words() {
        assert_eq!(flags(3), "-");
        assert_eq!(flags(3 | 16 | 32), "block,quiet");
    }
}
