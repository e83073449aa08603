//! When a node freezes its own processes by itself, and when it brings them back (MOSIX2's red
//! and blue marks, `freeze.conf`).
//!
//! Processes that come home in bulk — their nodes closed to them (`mosctl expel`, a partner
//! cluster gone) — can leave their home with more work than its CPUs. Rather than let them all
//! crawl, the home freezes some ([`Action::Freeze`]: their memory to the freeze area, out of
//! RAM) while its demand per CPU is above the red mark, the ones that came back last first, but
//! only once they have been home a few seconds ([`SETTLE_MS`], so the balancer had its chance
//! to place them elsewhere) and not long ago ([`BULK_MS`]: a process that has been running
//! here for a while is home's own work, not a returnee). It brings them back one at a time
//! ([`Action::Continue`], at most one per [`REACTIVATE_MS`], the longest frozen first) when
//! there is room: its own demand per CPU with one more process at most the blue mark, or a
//! node that takes guests with a CPU to spare (the balancer then sends it, or another, there),
//! and home's free memory holds it (it comes back home first). Processes
//! frozen by hand (`migrate PID freeze`) are never continued by this.
//!
//! Demand is what the balancer measures: each process's decayed share of a CPU (1000 ‰ for one
//! that runs all the time), summed, per CPU of the node.

use crate::balance::NodeState;
use crate::gossip::Millis;
use crate::node::Status;

/// How long a returned process is left to the balancer before it may be frozen.
pub const SETTLE_MS: Millis = 3_000;
/// How long after its return a process still counts as returned in bulk.
pub const BULK_MS: Millis = 120_000;
/// The least time between two reactivations.
pub const REACTIVATE_MS: Millis = 3_000;

/// The marks, in processes per CPU (`[freeze] red_mark`, `blue_mark`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marks {
    /// Above this demand per CPU, returned processes are frozen (0: never).
    pub red: f64,
    /// At or below this (with the one reactivated), a frozen one is brought back.
    pub blue: f64,
}

/// A process of this node running here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Here {
    /// Its id (pid).
    pub id: u64,
    /// Its share of a CPU, ‰.
    pub demand_permille: u32,
    /// When it came home from a node that sent it back, if it did.
    pub returned_at: Option<Millis>,
    /// It may be frozen (not locked, not moving).
    pub movable: bool,
}

/// A process this node froze by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frozen {
    /// Its id (pid).
    pub id: u64,
    /// When it was frozen.
    pub since: Millis,
    /// Its memory, bytes (it comes back home first: home's free memory must hold it).
    pub bytes: u64,
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Freeze this process (home is overloaded).
    Freeze(u64),
    /// Bring this frozen process back.
    Continue(u64),
}

/// What the node knows when it decides.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// This node (its CPUs).
    pub me: &'a NodeState,
    /// The peers.
    pub peers: &'a [NodeState],
    /// Every process's demand here, guests too, ‰.
    pub all_demand_permille: u64,
    /// This node's own processes running here.
    pub here: &'a [Here],
    /// The ones this rule froze.
    pub frozen: &'a [Frozen],
    /// When one was last brought back.
    pub last_continue: Option<Millis>,
}

/// Decides at `now` (see the module).
pub fn decide(now: Millis, s: &Situation<'_>, marks: Marks) -> Vec<Action> {
    let Situation {
        me,
        peers,
        all_demand_permille,
        here,
        frozen,
        last_continue,
    } = *s;
    if marks.red <= 0.0 {
        return Vec::new();
    }
    let cpus = f64::from(me.cpus.max(1));
    let mut per_cpu = all_demand_permille as f64 / 1000.0 / cpus;
    if per_cpu > marks.red {
        let mut returnees: Vec<&Here> = here
            .iter()
            .filter(|h| h.movable)
            .filter(|h| {
                h.returned_at
                    .is_some_and(|t| (SETTLE_MS..=BULK_MS).contains(&now.saturating_sub(t)))
            })
            .collect();
        // The last to come back go first.
        returnees.sort_by_key(|h| std::cmp::Reverse(h.returned_at));
        let mut out = Vec::new();
        for h in returnees {
            if per_cpu <= marks.red {
                break;
            }
            per_cpu -= f64::from(h.demand_permille) / 1000.0 / cpus;
            out.push(Action::Freeze(h.id));
        }
        return out;
    }
    let Some(oldest) = frozen.iter().min_by_key(|f| (f.since, f.id)) else {
        return Vec::new();
    };
    if me.mem_free < oldest.bytes {
        return Vec::new();
    }
    if last_continue.is_some_and(|t| now.saturating_sub(t) < REACTIVATE_MS) {
        return Vec::new();
    }
    let room_here = per_cpu + 1.0 / cpus <= marks.blue;
    // A node that takes guests and would run one more process on a CPU of its own (a quarter
    // of a CPU's load is left for noise: information decays).
    let room_there = peers.iter().any(|p| {
        !p.flags.contains(Status::BLOCK)
            && p.procs(f64::from(p.load)) + 1.0 <= f64::from(p.cpus.max(1)) + 0.25
    });
    if room_here || room_there {
        vec![Action::Continue(oldest.id)]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;

    fn node(n: u16, load: u32, flags: Status) -> NodeState {
        NodeState {
            node: NodeId::new(n).unwrap(),
            load,
            speed: crate::node::STD_SPEED,
            cpus: 1,
            mem_total: 1 << 30,
            mem_free: 1 << 29,
            flags,
            measured_at: 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn d(
        now: Millis,
        me: &NodeState,
        peers: &[NodeState],
        all_demand_permille: u64,
        here: &[Here],
        frozen: &[Frozen],
        marks: Marks,
        last_continue: Option<Millis>,
    ) -> Vec<Action> {
        let s = Situation {
            me,
            peers,
            all_demand_permille,
            here,
            frozen,
            last_continue,
        };
        decide(now, &s, marks)
    }

    const MARKS: Marks = Marks {
        red: 1.5,
        blue: 1.0,
    };

    fn back(id: u64, at: Millis) -> Here {
        Here {
            id,
            demand_permille: 1000,
            returned_at: Some(at),
            movable: true,
        }
    }

    #[test]
    fn returnees_are_frozen_last_first_until_the_red_mark_and_not_before_they_settle() {
        let me = node(1, 0, Status::empty());
        let here = [
            back(1, 0),
            back(2, 1000),
            back(3, 2000),
            Here {
                id: 4,
                demand_permille: 1000,
                returned_at: None,
                movable: true,
            },
        ];
        // Too soon after their return: the balancer may still place them.
        assert!(d(2500, &me, &[], 4000, &here, &[], MARKS, None).is_empty());
        // 4 per CPU: freeze three, the last back first; the one never away stays.
        let a = d(6000, &me, &[], 4000, &here, &[], MARKS, None);
        assert_eq!(
            a,
            vec![Action::Freeze(3), Action::Freeze(2), Action::Freeze(1)]
        );
        // Long back: home's own work.
        assert!(d(200_000, &me, &[], 4000, &here, &[], MARKS, None).is_empty());
        // Off.
        let off = Marks {
            red: 0.0,
            blue: 0.0,
        };
        assert!(d(6000, &me, &[], 4000, &here, &[], off, None).is_empty());
    }

    #[test]
    fn frozen_ones_come_back_one_at_a_time_when_there_is_room() {
        let me = node(1, 0, Status::empty());
        let frozen = [
            Frozen {
                id: 7,
                since: 10,
                bytes: 1 << 20,
            },
            Frozen {
                id: 5,
                since: 20,
                bytes: 1 << 20,
            },
        ];
        let busy = node(2, 100, Status::empty());
        let idle = node(3, 0, Status::empty());
        let closed = node(3, 0, Status::BLOCK);
        // One process here, no room anywhere: stay frozen.
        assert!(
            d(
                50_000,
                &me,
                &[busy, closed],
                1000,
                &[],
                &frozen,
                MARKS,
                None
            )
            .is_empty()
        );
        // A node with a CPU to spare: the longest frozen comes back.
        let a = d(50_000, &me, &[busy, idle], 1000, &[], &frozen, MARKS, None);
        assert_eq!(a, vec![Action::Continue(7)]);
        // Not twice within REACTIVATE_MS.
        assert!(
            d(
                50_000,
                &me,
                &[idle],
                1000,
                &[],
                &frozen,
                MARKS,
                Some(49_000)
            )
            .is_empty()
        );
        // Room at home.
        let a = d(50_000, &me, &[busy], 0, &[], &frozen, MARKS, None);
        assert_eq!(a, vec![Action::Continue(7)]);
        // Not while home's free memory cannot hold it.
        let full = NodeState {
            mem_free: 1 << 19,
            ..me
        };
        assert!(d(50_000, &full, &[idle], 0, &[], &frozen, MARKS, None).is_empty());
    }
}
