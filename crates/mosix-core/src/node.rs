//! Node identities, status flags and the units every tool speaks.
//!
//! A node number is 1..=65535; `0` names "home" wherever a node is expected, so it is not a
//! [`NodeId`]. Speeds are in units where 10000 is the standard ("yardstick") CPU; loads are in
//! units where 100 is one standard CPU fully busy.

use std::fmt;
use std::num::NonZeroU16;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The speed of the standard ("yardstick") CPU.
pub const STD_SPEED: u32 = 10_000;

/// The load of one standard CPU kept fully busy.
pub const STD_LOAD: u32 = 100;

/// A node number, 1..=65535.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct NodeId(NonZeroU16);

impl NodeId {
    /// The largest node number.
    pub const MAX: u16 = u16::MAX;

    /// Makes a node id, or `None` for 0 (which means "home", not a node).
    pub const fn new(n: u16) -> Option<NodeId> {
        match NonZeroU16::new(n) {
            Some(n) => Some(NodeId(n)),
            None => None,
        }
    }

    /// The node number.
    pub const fn get(self) -> u16 {
        self.0.get()
    }
}

impl TryFrom<u16> for NodeId {
    type Error = NodeIdError;
    fn try_from(n: u16) -> Result<Self, Self::Error> {
        NodeId::new(n).ok_or(NodeIdError::Zero)
    }
}

impl TryFrom<u32> for NodeId {
    type Error = NodeIdError;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        let n16 = u16::try_from(n).map_err(|_| NodeIdError::Range(n.into()))?;
        NodeId::new(n16).ok_or(NodeIdError::Zero)
    }
}

impl From<NodeId> for u16 {
    fn from(n: NodeId) -> u16 {
        n.get()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.get())
    }
}

impl FromStr for NodeId {
    type Err = NodeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let n: u64 = s
            .parse()
            .map_err(|_| NodeIdError::NotANumber(s.to_owned()))?;
        if n == 0 {
            return Err(NodeIdError::Zero);
        }
        let n = u16::try_from(n).map_err(|_| NodeIdError::Range(n))?;
        NodeId::new(n).ok_or(NodeIdError::Zero)
    }
}

/// Why a string or number is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    /// Not a decimal number.
    #[error("'{0}' is not a node number")]
    NotANumber(String),
    /// Zero means home, not a node.
    #[error("node number 0 means home, not a node")]
    Zero,
    /// Larger than 65535.
    #[error("node number {0} is out of range 1..65535")]
    Range(u64),
}

bitflags::bitflags! {
    /// The per-node status bitmask of the classic interface (`mosctl status`, `mon`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    #[serde(transparent)]
    pub struct Status: u32 {
        /// The node is in this node's map.
        const CONF = 1;
        /// The node is alive (recent information about it exists).
        const UP = 2;
        /// No automatic migration away from the node.
        const STAY = 4;
        /// The node's own processes stay; guests may leave.
        const LSTAY = 8;
        /// No guests may arrive.
        const BLOCK = 16;
        /// The node does not disseminate its load.
        const QUIET = 32;
        /// The node's files are not accessible through MFS.
        const NOMFS = 64;
        /// The node is closed to the grid (`mosctl closegrid`): it takes no process of another
        /// cluster and sends none to one.
        const CLOSED = 128;
    }
}

impl Status {
    /// The flags an administrator sets with `mosctl` (as opposed to CONF and UP, which are
    /// facts an observer derives).
    pub const ADMIN: Status = Status::STAY
        .union(Status::LSTAY)
        .union(Status::BLOCK)
        .union(Status::QUIET)
        .union(Status::NOMFS)
        .union(Status::CLOSED);
}

/// One of the node flags `mosctl` switches on and off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Flag {
    /// `stay` / `nostay`.
    Stay,
    /// `lstay` / `nolstay`.
    Lstay,
    /// `block` / `noblock`.
    Block,
    /// `quiet` / `noquiet`.
    Quiet,
    /// `nomfs` / `mfs` (note the inversion: the flag set means MFS is off).
    NoMfs,
    /// `closegrid` / `opengrid`.
    Closed,
}

impl Flag {
    /// The status bit of this flag.
    pub fn bit(self) -> Status {
        match self {
            Flag::Stay => Status::STAY,
            Flag::Lstay => Status::LSTAY,
            Flag::Block => Status::BLOCK,
            Flag::Quiet => Status::QUIET,
            Flag::NoMfs => Status::NOMFS,
            Flag::Closed => Status::CLOSED,
        }
    }

    /// The word `mosctl` uses to set the flag.
    pub fn set_word(self) -> &'static str {
        match self {
            Flag::Stay => "stay",
            Flag::Lstay => "lstay",
            Flag::Block => "block",
            Flag::Quiet => "quiet",
            Flag::NoMfs => "nomfs",
            Flag::Closed => "closegrid",
        }
    }
}

/// Converts a number of runnable processes (in thousandths) into MOSIX load units on a node with
/// `cpus` CPUs of `speed` each: 100 per standard CPU kept busy.
pub fn load_units(runnable_milli: u64, cpus: u32, speed: u32) -> u32 {
    let capacity = u64::from(cpus.max(1)) * u64::from(speed.max(1));
    // 100 * (R/1000) / (cpus * speed / 10000) = R * 1000 / (cpus * speed)
    let v = runnable_milli.saturating_mul(1000) / capacity;
    u32::try_from(v).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_parse_and_refuse() {
        assert_eq!("7".parse::<NodeId>().unwrap().get(), 7);
        assert_eq!("65535".parse::<NodeId>().unwrap().get(), 65535);
        assert_eq!("0".parse::<NodeId>(), Err(NodeIdError::Zero));
        assert_eq!("65536".parse::<NodeId>(), Err(NodeIdError::Range(65536)));
        assert!(matches!(
            "x".parse::<NodeId>(),
            Err(NodeIdError::NotANumber(_))
        ));
    }

    #[test]
    fn status_bits_are_the_classic_ones() {
        assert_eq!(Status::CONF.bits(), 1);
        assert_eq!(Status::UP.bits(), 2);
        assert_eq!(Status::STAY.bits(), 4);
        assert_eq!(Status::LSTAY.bits(), 8);
        assert_eq!(Status::BLOCK.bits(), 16);
        assert_eq!(Status::QUIET.bits(), 32);
        assert_eq!(Status::NOMFS.bits(), 64);
    }

    #[test]
    fn load_units_follow_the_interface_example() {
        // Two CPUs of speed 20000 and four busy processes show load 100.
        assert_eq!(load_units(4000, 2, 20_000), 100);
        // One busy process on one standard CPU is 100.
        assert_eq!(load_units(1000, 1, STD_SPEED), 100);
        // Half a standard CPU: one process is load 200.
        assert_eq!(load_units(1000, 1, 5_000), 200);
        assert_eq!(load_units(0, 4, STD_SPEED), 0);
    }
}
