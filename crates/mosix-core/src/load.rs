//! The load vector a node disseminates, and the smoothing that turns raw run-queue samples into
//! MOSIX load.
//!
//! Every second the node service hands [`LoadSmoother::update`] the mean number of runnable
//! processes of the last second. Two smoothed values come out, as in MOSIX (Kerrighed's
//! `mosix_probe.c`, balancing-anchors §1.1):
//!
//! * the **local** load rises slowly and falls at once (`mean = (5·mean + 3·R)/8` when rising,
//!   `mean = R` when falling), so the node is slow to believe it is overloaded and never keeps
//!   work it no longer has;
//! * the **exported** load rises at once and falls slowly (`up = R` when rising,
//!   `up = (7·up + R)/8` when falling), so a node that has just emptied does not attract a
//!   flood of processes from every other node at once.
//!
//! Both are kept in thousandths of a process, and converted to load units (100 = one standard
//! CPU busy) with the node's CPU count and speed.

use serde::{Deserialize, Serialize};

use crate::node::{Status, load_units};

/// What a node says about itself in every gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The administrator's flags (STAY, LSTAY, BLOCK, QUIET, NOMFS). CONF and UP are not sent:
    /// each receiver derives them.
    pub flags: Status,
    /// The node's figures; `None` when the node is quiet and keeps its load to itself.
    pub figures: Option<Figures>,
    /// The head of the node's queue of jobs (`mosrun -q`), if it has queued jobs.
    pub queue: Option<crate::queue::Head>,
    /// The last `mosctl isolate` or `rejoin` of the node's cluster it knows: when (ms since
    /// the Unix epoch, the newest wins) and whether the cluster is isolated. Only nodes of the
    /// same cluster take it from each other.
    pub isolation: Option<(u64, bool)>,
}

/// The measured figures of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// Exported load, in MOSIX units (100 = one standard CPU busy).
    pub load: u32,
    /// Speed of one CPU (10000 = standard).
    pub speed: u32,
    /// Number of CPUs.
    pub cpus: u32,
    /// Total memory, bytes.
    pub mem_total: u64,
    /// Memory available for processes (free plus reclaimable cache), bytes.
    pub mem_free: u64,
    /// Memory that is free right now, without reclaiming cache, bytes.
    pub mem_rawfree: u64,
    /// Percentage of the node's CPU capacity used over the last interval.
    pub util: u32,
    /// The part of `load` that guests of other clusters make: what a process of the node's
    /// own cluster may displace (partners(5)).
    pub foreign: u32,
    /// How many guests of other clusters the node runs.
    pub foreign_guests: u32,
    /// The load the node's own cluster's processes make by what they want of the CPUs (their
    /// demand, as the node's admission counts them against partners' guests): what a partner's
    /// process sent here would have to give way to. Measured the same way as `foreign`, not
    /// derived from `load`, which is smoothed and lags for seconds after a guest leaves.
    pub own: u32,
}

/// One second's raw measurement of a node, before smoothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Mean number of runnable processes over the second, in thousandths.
    pub runnable_milli: u64,
    /// CPUs of the node.
    pub cpus: u32,
    /// Speed of one CPU.
    pub speed: u32,
    /// Total memory, bytes.
    pub mem_total: u64,
    /// Available memory, bytes.
    pub mem_free: u64,
    /// Free memory, bytes.
    pub mem_rawfree: u64,
    /// CPU utilisation, percent of capacity.
    pub util: u32,
}

/// The two smoothed run-queue lengths of MOSIX: local (slow up, fast down) and exported (fast up,
/// slow down), in thousandths of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadSmoother {
    mean: u64,
    upper: u64,
}

impl LoadSmoother {
    /// Folds in one second's mean run-queue length (thousandths of a process).
    pub fn update(&mut self, r_milli: u64) {
        self.mean = if r_milli > self.mean {
            (5 * self.mean + 3 * r_milli) / 8
        } else {
            r_milli
        };
        self.upper = if r_milli >= self.upper {
            r_milli
        } else {
            (7 * self.upper + r_milli) / 8
        };
    }

    /// The local run-queue length (slow up, fast down), thousandths.
    pub fn local_milli(&self) -> u64 {
        self.mean
    }

    /// The exported run-queue length (fast up, slow down), thousandths.
    pub fn exported_milli(&self) -> u64 {
        self.upper
    }

    /// Folds in a sample and returns the figures to disseminate.
    pub fn figures(&mut self, s: &Sample) -> Figures {
        self.update(s.runnable_milli);
        Figures {
            load: load_units(self.upper, s.cpus, s.speed),
            speed: s.speed,
            cpus: s.cpus,
            mem_total: s.mem_total,
            mem_free: s.mem_free.min(s.mem_total),
            mem_rawfree: s.mem_rawfree.min(s.mem_total),
            util: s.util.min(100),
            foreign: 0,
            foreign_guests: 0,
            own: 0,
        }
    }

    /// The local load in MOSIX units, for the node's own decisions.
    pub fn local_load(&self, cpus: u32, speed: u32) -> u32 {
        load_units(self.mean, cpus, speed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_load_rises_slowly_and_falls_at_once() {
        let mut s = LoadSmoother::default();
        let mut seconds = 0;
        while s.local_milli() < 900 {
            s.update(1000);
            seconds += 1;
        }
        // (5/8)^n < 0.1 takes 5 steps: a step reaches 90 % after about 5 s.
        assert_eq!(seconds, 5);
        s.update(0);
        assert_eq!(s.local_milli(), 0);
    }

    #[test]
    fn exported_load_rises_at_once_and_falls_slowly() {
        let mut s = LoadSmoother::default();
        s.update(2000);
        assert_eq!(s.exported_milli(), 2000);
        let mut seconds = 0;
        while s.exported_milli() > 200 {
            s.update(0);
            seconds += 1;
        }
        // (7/8)^n < 0.1 takes 18 steps.
        assert_eq!(seconds, 18);
    }

    #[test]
    fn figures_are_normalised_by_cpus_and_speed() {
        let mut s = LoadSmoother::default();
        let f = s.figures(&Sample {
            runnable_milli: 4000,
            cpus: 2,
            speed: 20_000,
            mem_total: 100,
            mem_free: 150,
            mem_rawfree: 10,
            util: 130,
        });
        assert_eq!(f.load, 100);
        assert_eq!(f.mem_free, 100, "free memory never exceeds the total");
        assert_eq!(f.util, 100);
    }
}
