//! Migration and remote-call costs the balancer weighs against the benefit of a move
//! (`/etc/overheads`, written by `tune`).
//!
//! The classic cost model: moving a process costs a fixed part (setting up the remote) plus a
//! part per page of memory; a forwarded system call costs one round trip on the link. Until `tune`
//! has measured a link, the built-in defaults below are used; they are the order of magnitude
//! measured on the development machines (ptrace injection ≈ 50 µs, loopback round trip ≈ 45 µs,
//! bulk copy ≈ 1 GB/s per page stream).

use serde::{Deserialize, Serialize};

use crate::node::NodeId;

/// Costs towards one peer (or the default for every peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overhead {
    /// The peer, or `None` for the default row.
    pub peer: Option<NodeId>,
    /// Fixed cost of a migration, microseconds.
    pub mig_fixed_us: u64,
    /// Cost per 4 KiB page moved, nanoseconds.
    pub mig_page_ns: u64,
    /// Round trip of a forwarded system call, microseconds.
    pub call_rtt_us: u64,
}

/// The overheads in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overheads {
    /// Where they come from: "built-in defaults" or the file.
    pub source: String,
    /// The rows; the default row has `peer: None`.
    pub rows: Vec<Overhead>,
}

/// The default row used until `tune` measures the links.
pub const BUILTIN_DEFAULT: Overhead = Overhead {
    peer: None,
    mig_fixed_us: 5_000,
    mig_page_ns: 4_000,
    call_rtt_us: 100,
};

impl Overheads {
    /// The built-in defaults.
    pub fn builtin() -> Overheads {
        Overheads {
            source: "built-in defaults (no overheads file measured by tune)".to_owned(),
            rows: vec![BUILTIN_DEFAULT],
        }
    }

    /// The costs towards `peer`: its own row, or the default row.
    pub fn towards(&self, peer: NodeId) -> Overhead {
        self.rows
            .iter()
            .find(|r| r.peer == Some(peer))
            .or_else(|| self.rows.iter().find(|r| r.peer.is_none()))
            .copied()
            .unwrap_or(BUILTIN_DEFAULT)
    }

    /// Estimated cost of moving `pages` pages to `peer`, microseconds.
    pub fn migration_cost_us(&self, peer: NodeId, pages: u64) -> u64 {
        let o = self.towards(peer);
        o.mig_fixed_us
            .saturating_add(pages.saturating_mul(o.mig_page_ns) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_rows_override_the_default() {
        let n = |x| NodeId::new(x).unwrap();
        let mut o = Overheads::builtin();
        o.rows.push(Overhead {
            peer: Some(n(3)),
            mig_fixed_us: 1,
            mig_page_ns: 1000,
            call_rtt_us: 1,
        });
        assert_eq!(o.migration_cost_us(n(3), 10), 11);
        assert_eq!(
            o.migration_cost_us(n(2), 1000),
            BUILTIN_DEFAULT.mig_fixed_us + 4000
        );
    }
}
