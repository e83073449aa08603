//! The balancer: which process should leave this node, and where to.
//!
//! Every node runs [`Balancer::decide`] once a second over what it knows: its own local load,
//! the cluster view from gossip, and the processes that run on it (its own and its guests).
//! Only the node a process runs on decides about it, as in MOSIX: that node knows its own load
//! best, and no two nodes ever decide about one process. There is no master.
//!
//! The rules, in the order they are tried (balancing-anchors §1.3–§1.7):
//!
//! 1. **Memory ushering** overrides everything else: when the node's free memory falls under
//!    its low mark, the largest movable process that fits elsewhere goes to the node with the
//!    most free memory, even a busier one; paging is worse than sharing a CPU.
//! 2. **Load balancing with hysteresis**: a process moves from here (load `L_i`) to node `j`
//!    only if the load it would see there, `L_j` plus what one process adds to `j`, plus a
//!    margin (`stab`, 30 % of one process), is still below what it sees here. The loads are
//!    normalised by speed and CPU count, and a process never sees less than one whole CPU of its
//!    node, so a slow node hands work to a fast idle one (MOSIX's second reason to migrate).
//!    The candidate must pass Harchol-Balter & Downey's test: its age, times the difference in
//!    processes between the two nodes, exceeds the migration cost (a young process is likely to
//!    end before the move pays). Among candidates, the one using most CPU goes (MOSIX-like mode:
//!    the second most, as Kerrighed does).
//! 3. **Rotation** (ours, beyond MOSIX): when the loads differ by exactly one process (2 vs 1),
//!    no move makes anyone faster, but who shares matters: K identical jobs on N nodes finish at
//!    the lower bound only if the sharing is spread over all of them. When a process here has
//!    fallen behind the cluster's fair share by more than a quantum (which is many migration
//!    costs), the process here that is furthest *ahead* moves to the less loaded node, so the
//!    one behind runs with fewer companions.
//!
//! Moves decided here are remembered: the gossip view of a destination lags, so the load a move
//! adds to it is added to the view while the move is under way and until news of that node
//! measured a whole sample after the arrival comes in ([`Balancer::settled`] tells when it
//! arrived). A process asked to move is not chosen again while its move is under way, and a
//! node that failed or refused a move is not tried again until fresher news of it arrives.
//!
//! **Consent.** Views lag, and several nodes decide at once, so the destination has the last
//! word: an automatic move carries a *ceiling* ([`Move::ceiling`]), the load the process may see
//! at its destination for the move to be worth it, and the destination, which knows its own
//! load including the guests that arrived since its last measurement, refuses the move when it
//! would exceed that ([`admits`]). No two sources can then pile onto one idle node, and a
//! stale view cannot overfill one.
//!
//! Everything is a pure function of its arguments: the node service, the simulator and the
//! tests run this very code.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::gossip::Millis;
use crate::moves::MoveFailure;
use crate::node::{NodeId, STD_LOAD, STD_SPEED, Status};

/// How the balancer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Hysteresis: the load one more process adds to a destination, in percent, must still leave
    /// it below this node's load (MOSIX: 130).
    pub stab_percent: u32,
    /// Rotate surplus processes (ours); off in MOSIX-like mode.
    pub rotate: bool,
    /// Take the second most CPU-hungry candidate rather than the most (MOSIX-like mode).
    pub second_highest: bool,
    /// Moves at most per round (MOSIX: one).
    pub max_moves: usize,
    /// A process must have run here this long before it moves automatically.
    pub min_residency_ms: u64,
    /// Free memory below this per-mille of the node's total starts memory ushering.
    pub mem_low_permille: u32,
    /// A process that wants a CPU less than this per-mille of the time is not worth moving for
    /// load.
    pub min_demand_permille: u32,
    /// Rotation quantum: how far (standard CPU milliseconds) a process must fall behind its fair
    /// share before rotation moves a companion away; at least `rotate_cost_factor` migration
    /// costs.
    pub rotate_quantum_ms: u64,
    /// The quantum is at least this many times the migration cost of the moved process.
    pub rotate_cost_factor: u64,
    /// How long a decided move counts in the view of its destination, unless fresher news of it
    /// arrive.
    pub inflight_ms: u64,
    /// A process asked to move is not chosen again for this long (its move may still be under
    /// way, or its home may have kept it).
    pub retry_ms: u64,
    /// Automatic moves carry a ceiling the destination checks ([`admits`]); off in MOSIX-like
    /// mode, where the destination takes what it is sent.
    pub consent: bool,
    /// A process that spends at least this share of its time (per-mille, decayed) on the files
    /// of one other node moves to that node ("bring the process to its data"); one that spends
    /// it on files of its own node stays for load. 0: never.
    pub data_permille: u32,
}

impl Params {
    /// Our balancer.
    pub const OURS: Params = Params {
        stab_percent: 130,
        rotate: true,
        second_highest: false,
        max_moves: 4,
        min_residency_ms: 1_000,
        mem_low_permille: 100,
        min_demand_permille: 300,
        rotate_quantum_ms: 2_000,
        rotate_cost_factor: 50,
        inflight_ms: 4_000,
        retry_ms: 10_000,
        consent: true,
        data_permille: 250,
    };

    /// MOSIX as published (§1.7 of the anchors): one move per round, second-highest candidate,
    /// no rotation.
    pub const MOSIX_LIKE: Params = Params {
        stab_percent: 130,
        rotate: false,
        second_highest: true,
        max_moves: 1,
        consent: false,
        ..Params::OURS
    };
}

impl Default for Params {
    fn default() -> Self {
        Params::OURS
    }
}

/// What the balancer knows of a node (this one or a peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    /// The node.
    pub node: NodeId,
    /// Load in MOSIX units (100 = one standard CPU busy). For this node, its local load; for a
    /// peer, what it exported.
    pub load: u32,
    /// Speed of one CPU (10000 = standard).
    pub speed: u32,
    /// CPUs.
    pub cpus: u32,
    /// Total memory, bytes.
    pub mem_total: u64,
    /// Memory available to processes, bytes.
    pub mem_free: u64,
    /// Administrative flags (STAY, LSTAY, BLOCK, QUIET).
    pub flags: Status,
    /// When the figures were measured, on this node's clock (for a peer: now minus their age).
    pub measured_at: Millis,
}

impl NodeState {
    /// The load one more CPU-bound process adds to this node.
    pub fn one(&self) -> f64 {
        let cap = f64::from(self.cpus.max(1)) * f64::from(self.speed.max(1));
        f64::from(STD_LOAD) * f64::from(STD_SPEED) / cap
    }

    /// The load a CPU-bound process sees on this node when the node's load is `load`: never
    /// less than one whole CPU of it (a process cannot use more).
    fn seen(&self, load: f64) -> f64 {
        load.max(f64::from(STD_LOAD) * f64::from(STD_SPEED) / f64::from(self.speed.max(1)))
    }

    /// Processes the load stands for.
    /// How many CPU-bound processes `load` is on this node.
    pub fn procs(&self, load: f64) -> f64 {
        load / self.one()
    }
}

/// Why a process may not leave automatically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pinned {
    /// Locked (`mosrun -L`, or placed by hand).
    Locked,
    /// It cannot move at all (threads, shared memory, ...).
    CantMove,
    /// The queue started it here moments ago, choosing this node with fresher knowledge than
    /// the figures show yet (`queue::STARTING_MS`): the load its start and the `mosrun`s
    /// queued beside it add for a second or two is no reason to move it.
    Placed,
}

/// What the balancer knows of a process that runs on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcState {
    /// Its id on this node (the pid).
    pub id: u64,
    /// `None` for this node's own processes; the home node of a guest.
    pub guest_of: Option<NodeId>,
    /// Why it may not move automatically, if it may not.
    pub pinned: Option<Pinned>,
    /// Declared I/O-bound (`mosrun -i`): never moved for load.
    pub io_bound: bool,
    /// How much of the time it wants a CPU (running, or runnable and waiting for one), decayed,
    /// per-mille: a CPU-bound process is 1000 however many share its CPU.
    pub demand_permille: u32,
    /// How long it has lived, as far as this node knows (since it arrived here for a guest).
    pub age_ms: u64,
    /// How long it has been on this node.
    pub here_ms: u64,
    /// CPU time it used on this node, milliseconds.
    pub cpu_here_ms: u64,
    /// Resident memory, bytes.
    pub rss: u64,
    /// The node whose files it spends the most time on, and how much of its time (per-mille,
    /// decayed): measured waiting for MFS at home, estimated from its calls on files of this
    /// node for a guest using them directly (DFSA).
    pub data: Option<DataUse>,
}

/// Where a process's data is, as far as its file access shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataUse {
    /// The node that holds the files.
    pub node: NodeId,
    /// The share of the process's time spent on them, per-mille.
    pub permille: u32,
}

/// Why a process moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// This node runs out of free memory.
    Memory,
    /// Another node gives it more CPU.
    Load,
    /// Spreading the sharing (rotation of surplus processes).
    Rotate,
    /// Its files are there (MOSIX's "bring the process to its data").
    Data,
}

impl Reason {
    /// The word for logs.
    pub fn word(self) -> &'static str {
        match self {
            Reason::Memory => "memory",
            Reason::Load => "load",
            Reason::Rotate => "rotation",
            Reason::Data => "data",
        }
    }
}

/// A decision: process `id` goes to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    /// The process.
    pub id: u64,
    /// The destination (a guest's home node means "go home").
    pub to: NodeId,
    /// Why.
    pub reason: Reason,
    /// The most load (as a process sees it, [`admits`]) the destination may have once it took
    /// the process, for the move to be worth it; `None` when load is not the point (memory
    /// ushering, a guest going home).
    pub ceiling: Option<u32>,
    /// What the decision saw: the processes counted here and at the destination before the
    /// move, in hundredths (the log says them; an operator can follow a decision).
    pub counted: [u32; 2],
}

/// The estimated cost of moving a process, as the balancer needs it.
pub trait Costs {
    /// Microseconds to move `bytes` of resident memory to `to`.
    fn migration_us(&self, to: NodeId, bytes: u64) -> u64;

    /// The part of the time a process waits for `to`'s files from here that running on `to`
    /// would save, per-mille (mfscosts(5)); all of it unless told otherwise.
    fn data_saving_permille(&self, _to: NodeId) -> u32 {
        1000
    }
}

/// A node's costs: moves (overheads(5)) and file access (mfscosts(5)).
#[derive(Debug, Clone, Copy)]
pub struct NodeCosts<'a> {
    /// The migration costs.
    pub overheads: &'a crate::overheads::Overheads,
    /// The file access costs.
    pub files: &'a crate::mfscosts::MfsCosts,
}

impl Costs for NodeCosts<'_> {
    fn migration_us(&self, to: NodeId, bytes: u64) -> u64 {
        self.overheads.migration_us(to, bytes)
    }

    fn data_saving_permille(&self, to: NodeId) -> u32 {
        self.files.saving_permille(to)
    }
}

impl Costs for crate::overheads::Overheads {
    fn migration_us(&self, to: NodeId, bytes: u64) -> u64 {
        self.migration_cost_us(to, bytes.div_ceil(4096))
    }
}

/// How long after a move arrived the destination's news may still not show it: its exported
/// load is the mean run-queue length of the second before its last sample, and the figures
/// gossiped are those of its last sample, stamped when they are sent (up to a gossip interval
/// later). News stamped two seconds after the arrival cover a whole second after it.
pub const SETTLE_MS: Millis = 2_000;

/// How long a process must have run on a node before the time it spends on other nodes' files
/// moves it there. A process that arrives at its start (the queue or `mosrun` placed it)
/// loads its libraries through home, which fills its first second with waits on home's files;
/// judged on that second, CPU-bound jobs placed by the queue were sent home onto a CPU already
/// taken (`docs/grid.md`). Five seconds dilute such a start below the threshold, and a process
/// that keeps using its data shows it as well then.
pub const DATA_EVIDENCE_MS: u64 = 5_000;

/// How long after a destination's consent the process it took starts running there (its
/// restore), as far as [`unmeasured_part`] is concerned.
pub const RESTORE_MS: i64 = 300;

/// How much of one process that arrived `before_sample` ms before a node's last sample (negative:
/// after it) that sample does not show yet: the exported load is the mean run-queue length of the
/// second before the sample, so an arrival shows in proportion to the part of that second it ran
/// (from [`RESTORE_MS`] after the consent). Summed over the arrivals, this is the `unmeasured`
/// of [`admits`].
pub fn unmeasured_part(before_sample: i64) -> f64 {
    (1.0 - (before_sample - RESTORE_MS) as f64 / 1000.0).clamp(0.0, 1.0)
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: u64,
    to: NodeId,
    at: Millis,
    /// When it should arrive (the decision plus the migration cost), until it is known.
    expected: Millis,
    /// When it did arrive, once [`Balancer::settled`] said so.
    done: Option<Millis>,
    load: f64,
    bytes: u64,
}

/// The balancer of one node: its parameters and the moves it recently decided.
#[derive(Debug, Clone)]
pub struct Balancer {
    params: Params,
    inflight: Vec<InFlight>,
    asked: HashMap<u64, Millis>,
    /// Nodes that failed or refused a move, and when: skipped until fresher news of them.
    failed: Vec<(NodeId, Millis)>,
}

impl Balancer {
    /// A balancer with these parameters.
    pub fn new(params: Params) -> Balancer {
        Balancer {
            params,
            inflight: Vec::new(),
            asked: HashMap::new(),
            failed: Vec::new(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Forgets that process `id` was asked to move (the request could not even be made).
    pub fn forget(&mut self, id: u64) {
        self.asked.remove(&id);
        self.inflight.retain(|f| f.id != id);
    }

    /// The move of process `id` decided here ended at `at`: it arrived (`Ok`), or it failed and
    /// the process is still here (or gone). An arrival keeps the destination's view corrected
    /// until news of it measured [`SETTLE_MS`] later arrive. What a failure means depends on its
    /// kind:
    /// - the destination refused it, or the link to it broke: the process is free for another
    ///   round, and the destination is skipped until fresher news of it arrive;
    /// - the process is gone: it is forgotten, and nothing is held against the destination;
    /// - anything else (a kernel error here, a refusal by this node): the destination is not to
    ///   blame, and the process is not asked again before the retry interval, so a fault here
    ///   is not repeated every round.
    pub fn settled(&mut self, id: u64, outcome: Result<(), &MoveFailure>, at: Millis) {
        let Err(failure) = outcome else {
            for f in self.inflight.iter_mut().filter(|f| f.id == id) {
                f.done = Some(at);
            }
            return;
        };
        let blamed = |to: NodeId| match failure {
            MoveFailure::Refused { by, .. } => *by == to,
            MoveFailure::LinkLost { node, .. } => *node == to,
            MoveFailure::Gone { .. } | MoveFailure::Kernel { .. } => false,
        };
        let mut destination_failed = false;
        for f in self.inflight.iter().filter(|f| f.id == id) {
            if blamed(f.to) {
                self.failed.push((f.to, at));
                destination_failed = true;
            }
        }
        if destination_failed || matches!(failure, MoveFailure::Gone { .. }) {
            self.forget(id);
        } else {
            // Not under way any more, but still asked until the retry interval.
            self.inflight.retain(|f| f.id != id);
        }
    }

    /// Decides the moves of this round. `me` is this node with its local load; `peers` what the
    /// gossip view says of the others (nodes down or quiet are left out by the caller);
    /// `procs` the processes running here.
    pub fn decide(
        &mut self,
        now: Millis,
        me: &NodeState,
        peers: &[NodeState],
        procs: &[ProcState],
        costs: &dyn Costs,
    ) -> Vec<Move> {
        let p = self.params;
        let keep = Millis::try_from(p.inflight_ms).unwrap_or(Millis::MAX);
        let retry = Millis::try_from(p.retry_ms).unwrap_or(Millis::MAX);
        self.inflight.retain(|f| {
            f.at <= now && now.saturating_sub(f.done.unwrap_or(f.expected)) < keep.max(SETTLE_MS)
        });
        self.asked
            .retain(|_, at| now.saturating_sub(*at) < retry && *at <= now);
        self.failed
            .retain(|(_, at)| *at <= now && now.saturating_sub(*at) < keep.max(SETTLE_MS));
        if me.flags.contains(Status::STAY) {
            return Vec::new();
        }

        // The view, with the moves under way added to their destinations (until news of the
        // destination measured after the move arrives) and taken off this node (until this
        // node has measured itself without them).
        let mut here = f64::from(me.load);
        let mut mem_here = me.mem_free;
        let failed = &self.failed;
        let mut view: Vec<Peer> = peers
            .iter()
            .filter(|n| n.node != me.node && !n.flags.contains(Status::QUIET))
            .filter(|n| {
                !failed
                    .iter()
                    .any(|(to, at)| *to == n.node && n.measured_at < at.saturating_add(SETTLE_MS))
            })
            .map(|n| Peer {
                node: *n,
                load: f64::from(n.load),
                free: n.mem_free,
            })
            .collect();
        for f in &self.inflight {
            // Under way (or not reported), it counts at the destination whatever its news say;
            // arrived, until its news show it.
            let unseen = |v: &Peer| {
                f.done
                    .is_none_or(|d| v.node.measured_at < d.saturating_add(SETTLE_MS))
            };
            if let Some(v) = view.iter_mut().find(|v| v.node.node == f.to)
                && unseen(v)
            {
                v.load += f.load * v.node.one() / me.one();
                v.free = v.free.saturating_sub(f.bytes);
            }
            // A process on its way is still measured here until it has left (a slow move
            // may take longer than a sample), and for a second after, until a sample without it.
            let left = f.done.unwrap_or(Millis::MAX);
            if me.measured_at < left.saturating_add(1_000) {
                here = (here - f.load).max(0.0);
                mem_here = mem_here.saturating_add(f.bytes).min(me.mem_total);
            }
        }
        // This node knows its own processes first-hand, while its exported load is smoothed
        // and climbs for seconds after processes start: the load is at least what the
        // processes here that are not leaving want (what else runs here only adds to it). Without
        // this floor, 8 jobs started at once left in rounds of three, the first after a second,
        // as the smoothed load crept up, and the other nodes idled meanwhile.
        let first_hand: f64 = procs
            .iter()
            .filter(|q| {
                !self
                    .inflight
                    .iter()
                    .any(|f| f.id == q.id && f.done.is_none())
            })
            .map(|q| f64::from(q.demand_permille.min(1000)) / 1000.0 * me.one())
            .sum();
        here = here.max(first_hand);

        let mut movable: Vec<&ProcState> = procs
            .iter()
            .filter(|q| q.pinned.is_none() && !self.asked.contains_key(&q.id))
            .filter(|q| q.here_ms >= p.min_residency_ms)
            .filter(|q| q.guest_of.is_some() || !me.flags.contains(Status::LSTAY))
            .collect();
        movable.sort_by_key(|q| q.id);

        // Memory ushering: the largest process that fits goes where most memory is free.
        let low = me.mem_total / 1000 * u64::from(p.mem_low_permille);
        if me.mem_total > 0 && mem_here < low {
            let mut by_size = movable.clone();
            by_size.sort_by(|a, b| b.rss.cmp(&a.rss).then(a.id.cmp(&b.id)));
            let found = by_size.into_iter().find_map(|q| {
                view.iter()
                    .enumerate()
                    .filter(|(_, v)| accepts(&v.node, q))
                    .filter(|(_, v)| {
                        let reserve = v.node.mem_total / 1000 * u64::from(p.mem_low_permille);
                        v.free >= q.rss.saturating_add(reserve)
                    })
                    .max_by(|a, b| a.1.free.cmp(&b.1.free).then(b.0.cmp(&a.0)))
                    .map(|(k, _)| (q, k))
            });
            if let Some((q, k)) = found {
                return vec![self.record(
                    now,
                    me,
                    &mut view[k],
                    q,
                    &mut here,
                    costs,
                    (Reason::Memory, None),
                )];
            }
        }

        // Bring the process to its data: one that waits on the files of another node for a
        // good part of its time goes there, if that node takes it and is not busier than this
        // one by more than the process itself, and the time it would save pays for the move.
        if p.data_permille > 0 {
            let seen_here = me.seen(here);
            let found = movable.iter().find_map(|q| {
                if q.here_ms < DATA_EVIDENCE_MS {
                    return None;
                }
                let d = q.data.filter(|d| d.node != me.node)?;
                // The part of its time the move would save (mfscosts(5)).
                let saving = u64::from(costs.data_saving_permille(d.node).min(1000));
                let saved = u64::from(d.permille) * saving / 1000;
                if saved < u64::from(p.data_permille) {
                    return None;
                }
                let k = view.iter().position(|v| v.node.node == d.node)?;
                let v = &view[k];
                let fits = accepts(&v.node, q) && v.free >= q.rss;
                let not_busier = v.node.seen(v.load + v.node.one()) <= seen_here + v.node.one();
                let cost_ms = costs.migration_us(v.node.node, q.rss) as f64 / 1000.0;
                let saved_ms = q.age_ms as f64 * saved as f64 / 1000.0;
                (fits && not_busier && saved_ms > cost_ms).then_some((*q, k))
            });
            if let Some((q, k)) = found {
                return vec![self.record(
                    now,
                    me,
                    &mut view[k],
                    q,
                    &mut here,
                    costs,
                    (Reason::Data, None),
                )];
            }
        }

        // With its data here, a process stays for load and rotation: its file access would
        // cross the network.
        if p.data_permille > 0 {
            movable.retain(|q| {
                !q.data
                    .is_some_and(|d| d.node == me.node && d.permille >= p.data_permille)
            });
        }

        // Load balancing.
        let mut moves = Vec::new();
        let stab = f64::from(p.stab_percent) / 100.0;
        while moves.len() < p.max_moves {
            let mut cands: Vec<&ProcState> = movable
                .iter()
                .copied()
                .filter(|q| !q.io_bound && q.demand_permille >= p.min_demand_permille)
                .filter(|q| !moves.iter().any(|m: &Move| m.id == q.id))
                .collect();
            cands.sort_by(|a, b| {
                b.demand_permille
                    .cmp(&a.demand_permille)
                    .then(a.age_ms.cmp(&b.age_ms))
                    .then(a.id.cmp(&b.id))
            });
            if p.second_highest && cands.len() > 1 {
                // MOSIX tries one candidate: the second most demanding.
                cands.swap(0, 1);
                cands.truncate(1);
            }
            let seen_here = me.seen(here);
            let chosen = cands.iter().find_map(|q| {
                // The destination where q would see the least load, if it is enough less.
                view.iter()
                    .enumerate()
                    .filter(|(_, v)| accepts(&v.node, q) && v.free >= q.rss)
                    .map(|(k, v)| (k, v, v.node.seen(v.load + v.node.one())))
                    .filter(|(_, v, after)| after + (stab - 1.0) * v.node.one() < seen_here)
                    .filter(|(_, v, _)| {
                        // Harchol-Balter & Downey: age × (n_here − n_there) > cost.
                        let diff = me.procs(here) - v.node.procs(v.load);
                        let cost_ms = costs.migration_us(v.node.node, q.rss) as f64 / 1000.0;
                        (q.age_ms as f64) * diff.max(0.0) > cost_ms
                    })
                    .min_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)))
                    .map(|(k, _, _)| (*q, k))
            });
            let Some((q, k)) = chosen else { break };
            // The destination must stay, with it, that margin below what it sees here.
            let ceiling = seen_here - (stab - 1.0) * view[k].node.one();
            let why = (Reason::Load, ceiling_of(&p, ceiling, q, &view[k]));
            moves.push(self.record(now, me, &mut view[k], q, &mut here, costs, why));
        }
        if !moves.is_empty() || !p.rotate {
            return moves;
        }

        // Rotation: the loads differ by one process somewhere.
        let seen_here = me.seen(here);
        let target = view
            .iter()
            .enumerate()
            .map(|(k, v)| (k, v.node.seen(v.load + v.node.one())))
            // Half a process of slack: the local load creeps up to its value and may sit a
            // little under it.
            .filter(|(k, after)| *after <= seen_here + 0.5 * view[*k].node.one().min(me.one()))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            .map(|(k, _)| k);
        let Some(k) = target else { return moves };
        let fair = fair_share(me, here, &view);
        let speed = f64::from(me.speed) / f64::from(STD_SPEED);
        // How far behind its fair share (standard CPU ms) a process here is.
        let lag = |q: &ProcState| fair * q.here_ms as f64 - q.cpu_here_ms as f64 * speed;
        let busy = |q: &&ProcState| !q.io_bound && q.demand_permille >= p.min_demand_permille;
        let Some(behind) = procs
            .iter()
            .filter(busy)
            .max_by(|a, b| lag(a).total_cmp(&lag(b)))
        else {
            return moves;
        };
        let dest = &view[k];
        let ahead = movable
            .iter()
            .copied()
            .filter(busy)
            .filter(|q| q.id != behind.id && accepts(&dest.node, q) && dest.free >= q.rss)
            .min_by(|a, b| lag(a).total_cmp(&lag(b)).then(a.id.cmp(&b.id)));
        let Some(ahead) = ahead else { return moves };
        let cost_ms = costs.migration_us(dest.node.node, ahead.rss) / 1000;
        let quantum = p
            .rotate_quantum_ms
            .max(cost_ms.saturating_mul(p.rotate_cost_factor)) as f64;
        if lag(behind) > quantum {
            let ceiling = seen_here + 0.5 * view[k].node.one().min(me.one());
            let why = (Reason::Rotate, ceiling_of(&p, ceiling, ahead, &view[k]));
            moves.push(self.record(now, me, &mut view[k], ahead, &mut here, costs, why));
        }
        moves
    }

    /// Notes a decided move in the view and in the moves under way, and returns it.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        now: Millis,
        me: &NodeState,
        dest: &mut Peer,
        q: &ProcState,
        here: &mut f64,
        costs: &dyn Costs,
        (reason, ceiling): (Reason, Option<u32>),
    ) -> Move {
        let hundredths = |x: f64| (x * 100.0).round().clamp(0.0, f64::from(u32::MAX)) as u32;
        let counted = [
            hundredths(me.procs(*here)),
            hundredths(dest.node.procs(dest.load)),
        ];
        // A process that wants a CPU part of the time adds that part of one process's load.
        let share = f64::from(q.demand_permille.min(1000)) / 1000.0;
        let load_here = share * me.one();
        dest.load += share * dest.node.one();
        dest.free = dest.free.saturating_sub(q.rss);
        *here = (*here - load_here).max(0.0);
        let cost = costs.migration_us(dest.node.node, q.rss).div_ceil(1000);
        self.inflight.push(InFlight {
            id: q.id,
            to: dest.node.node,
            at: now,
            expected: now.saturating_add(Millis::try_from(cost).unwrap_or(Millis::MAX)),
            done: None,
            load: load_here,
            bytes: q.rss,
        });
        self.asked.insert(q.id, now);
        Move {
            id: q.id,
            to: dest.node.node,
            reason,
            ceiling,
            counted,
        }
    }
}

/// The ceiling of a move of `q` to `dest`: none without consent, nor for a guest going home
/// (home takes its own back whatever its load).
fn ceiling_of(p: &Params, ceiling: f64, q: &ProcState, dest: &Peer) -> Option<u32> {
    (p.consent && q.guest_of != Some(dest.node.node))
        .then(|| ceiling.clamp(0.0, f64::from(u32::MAX)) as u32)
}

/// The destination's consent to an automatic move (see the module's doc): `me` is this node
/// with its exported load (which rises at once), `unmeasured` the processes that arrived since
/// its last sample could show them, `ceiling` the move's [`Move::ceiling`]. The load the
/// process would see here must not exceed the ceiling; otherwise, why not.
pub fn admits(me: &NodeState, unmeasured: f64, ceiling: u32) -> Result<(), String> {
    let after = me.seen(f64::from(me.load) + (unmeasured + 1.0) * me.one());
    if after <= f64::from(ceiling) {
        Ok(())
    } else {
        // An empty f64 sum is -0.0, which prints as "-0 more just arrived"; `+ 0.0` makes it 0.
        let unmeasured = unmeasured + 0.0;
        Err(format!(
            "it would see a load of {after:.0} here (the load is {}, and {unmeasured:.0} more just \
             arrived): more than the {ceiling} that made its move worth it",
            me.load
        ))
    }
}

/// A peer as this round sees it: its figures, corrected by the moves under way.
#[derive(Debug, Clone, Copy)]
struct Peer {
    node: NodeState,
    load: f64,
    free: u64,
}

/// Where a process that runs on `at` would run fastest now, when someone asks (`migrate PID
/// balance`): the node of `nodes` where it would see the least load, if that is at least half a
/// process less than what it sees on `at` (the measurement's noise, not the automatic rule's
/// 30 % margin, and no age test: a person asked, and one move cannot start a ping-pong).
/// `home` may always be chosen (a process may go home to a blocked node); `None`
/// when it is best where it is.
pub fn best_place(
    at: &NodeState,
    nodes: &[NodeState],
    home: Option<NodeId>,
    rss: u64,
) -> Option<NodeId> {
    let seen_here = at.seen(f64::from(at.load));
    nodes
        .iter()
        .filter(|n| n.node != at.node && !n.flags.contains(Status::QUIET))
        .filter(|n| home == Some(n.node) || !n.flags.contains(Status::BLOCK))
        .filter(|n| n.mem_free >= rss)
        .map(|n| (n, n.seen(f64::from(n.load) + n.one())))
        .filter(|(n, after)| after + 0.5 * n.one().min(at.one()) < seen_here)
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.node.cmp(&b.0.node)))
        .map(|(n, _)| n.node)
}

/// Whether node `n` may receive process `q`: a guest may always go home; others only to nodes
/// that take guests.
fn accepts(n: &NodeState, q: &ProcState) -> bool {
    q.guest_of == Some(n.node) || !n.flags.contains(Status::BLOCK)
}

/// The CPU a process would get if the whole cluster's capacity were shared equally among all
/// its processes: standard CPUs per process, at most one CPU of the fastest node.
fn fair_share(me: &NodeState, here: f64, view: &[Peer]) -> f64 {
    let mut cap = 0.0;
    let mut procs = 0.0;
    let mut fastest: f64 = 0.0;
    for (n, load) in std::iter::once((me, here)).chain(view.iter().map(|v| (&v.node, v.load))) {
        let speed = f64::from(n.speed) / f64::from(STD_SPEED);
        cap += f64::from(n.cpus) * speed;
        procs += n.procs(load);
        fastest = fastest.max(speed);
    }
    if procs <= 0.0 {
        return fastest;
    }
    (cap / procs).min(fastest)
}

/// The statistics of a process that decay (`mosctl setdecay`; `mosrun -n`, `-s`, `-f`, `-c`,
/// `-i`): time it wanted a CPU and time elapsed, both multiplied by the kept portion at every
/// decay interval, so the share they give weighs recent behaviour more — slowly (975 ‰ kept
/// per interval: half-life 27 intervals) or fast (926 ‰: 9 intervals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    cpu_ms: u64,
    time_ms: u64,
    pending_cpu: u64,
    pending_time: u64,
}

impl Usage {
    /// Adds `time_ms` of wall time during which the process wanted a CPU for `cpu_ms`; `keep` is the
    /// per-mille kept at each decay (1000 for no decay) and `interval_ms` the decay interval.
    pub fn add(&mut self, cpu_ms: u64, time_ms: u64, keep: u32, interval_ms: u64) {
        self.pending_cpu += cpu_ms.min(time_ms.saturating_mul(64));
        self.pending_time += time_ms;
        if self.pending_time >= interval_ms.max(1) {
            let keep = u64::from(keep.min(1000));
            self.cpu_ms = self.cpu_ms * keep / 1000 + self.pending_cpu;
            self.time_ms = self.time_ms * keep / 1000 + self.pending_time;
            self.pending_cpu = 0;
            self.pending_time = 0;
        }
    }

    /// The decayed share of the time, per-mille, capped at 1000.
    pub fn demand_permille(&self) -> u32 {
        let cpu = self.cpu_ms + self.pending_cpu;
        let time = self.time_ms + self.pending_time;
        if time == 0 {
            return 0;
        }
        u32::try_from((cpu * 1000 / time).min(1000)).unwrap_or(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(x: u16) -> NodeId {
        NodeId::new(x).unwrap()
    }

    struct Flat(u64);
    impl Costs for Flat {
        fn migration_us(&self, _: NodeId, _: u64) -> u64 {
            self.0
        }
    }

    fn node(x: u16, procs: u32) -> NodeState {
        NodeState {
            node: n(x),
            load: procs * 100,
            speed: 10_000,
            cpus: 1,
            mem_total: 1 << 30,
            mem_free: 1 << 29,
            flags: Status::empty(),
            measured_at: 0,
        }
    }

    fn proc(id: u64) -> ProcState {
        ProcState {
            id,
            guest_of: None,
            pinned: None,
            io_bound: false,
            demand_permille: 1000,
            age_ms: 10_000,
            here_ms: 10_000,
            cpu_here_ms: 5_000,
            rss: 1 << 20,
            data: None,
        }
    }

    fn decide(b: &mut Balancer, me: NodeState, peers: &[NodeState], n: usize) -> Vec<Move> {
        let procs: Vec<ProcState> = (1..=n as u64).map(proc).collect();
        b.decide(20_000, &me, peers, &procs, &Flat(5_000))
    }

    #[test]
    fn two_against_none_moves_one_against_one_does_not() {
        let mut b = Balancer::new(Params::MOSIX_LIKE);
        let m = decide(&mut b, node(1, 2), &[node(2, 0)], 2);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].to, n(2));
        let mut b = Balancer::new(Params::MOSIX_LIKE);
        assert!(decide(&mut b, node(1, 2), &[node(2, 1)], 2).is_empty());
        assert!(decide(&mut b, node(1, 1), &[node(2, 0)], 1).is_empty());
    }

    #[test]
    fn eight_on_one_of_four_spread_in_one_round_without_overshoot() {
        let mut b = Balancer::new(Params::OURS);
        let peers = [node(2, 0), node(3, 0), node(4, 0)];
        let m = decide(&mut b, node(1, 8), &peers, 8);
        let mut count = [0; 5];
        for x in &m {
            count[x.to.get() as usize] += 1;
        }
        // At most max_moves a round, never two to a node while others are emptier.
        assert_eq!(m.len(), 4);
        assert!(count[2..].iter().all(|c| (1..=2).contains(c)), "{count:?}");
        // The next round (the view not yet updated) does not send the same processes again,
        // nor overload the destinations.
        let m2 = decide(&mut b, node(1, 8), &peers, 8);
        for x in &m2 {
            assert!(!m.iter().any(|y| y.id == x.id));
        }
        assert!(m.len() + m2.len() <= 6, "{m:?} {m2:?}");
    }

    #[test]
    fn processes_still_leaving_do_not_count_here_however_fresh_the_load() {
        // Four of eight left in the first round; a second later none has arrived (slow moves)
        // and the local load, measured after the decision, still counts all eight: the second
        // round must see four here, not eight, and send at most two more.
        let mut b = Balancer::new(Params::OURS);
        let peers = [node(2, 0), node(3, 0), node(4, 0)];
        let m = decide(&mut b, node(1, 8), &peers, 8);
        assert_eq!(m.len(), 4);
        let mut me = node(1, 8);
        me.measured_at = 21_500;
        let procs: Vec<ProcState> = (1..=8).map(proc).collect();
        let m2 = b.decide(21_500, &me, &peers, &procs, &Flat(5_000));
        assert!(m.len() + m2.len() <= 6, "{m:?} {m2:?}");
        // Arrived at 22 s: the samples of the next second may still show them...
        for x in &m {
            b.settled(x.id, Ok(()), 22_000);
        }
        me.measured_at = 22_500;
        let left: Vec<ProcState> = procs
            .iter()
            .copied()
            .filter(|q| !m.iter().chain(&m2).any(|x| x.id == q.id))
            .collect();
        let m3 = b.decide(22_500, &me, &peers, &left, &Flat(5_000));
        assert!(m.len() + m2.len() + m3.len() <= 6, "{m3:?}");
    }

    #[test]
    fn the_processes_here_count_before_the_smoothed_load_shows_them() {
        // Four CPU-bound processes just started: the smoothed load still says one. With the
        // node's first-hand count they are four, and some leave for the idle peer at once.
        // (None has fallen behind its fair share, so rotation has no say.)
        let peers = [node(2, 0)];
        let mut procs: Vec<ProcState> = (1..=4).map(proc).collect();
        for q in &mut procs {
            q.cpu_here_ms = q.here_ms;
        }
        let m =
            Balancer::new(Params::OURS).decide(20_000, &node(1, 1), &peers, &procs, &Flat(5_000));
        assert!(
            !m.is_empty() && m.iter().all(|x| x.reason == Reason::Load),
            "{m:?}"
        );
        // Processes that want little CPU do not raise it: one busy, three idle stay.
        for q in &mut procs[1..] {
            q.demand_permille = 0;
        }
        let m =
            Balancer::new(Params::OURS).decide(20_000, &node(1, 1), &peers, &procs, &Flat(5_000));
        assert!(m.is_empty(), "{m:?}");
    }

    #[test]
    fn an_arrived_move_counts_at_its_destination_until_news_measured_after_it() {
        let mut b = Balancer::new(Params::OURS);
        let m = decide(&mut b, node(1, 3), &[node(2, 0)], 3);
        assert_eq!(m.len(), 1);
        let moved = m[0].id;
        let procs: Vec<ProcState> = (1..=3).map(proc).filter(|q| q.id != moved).collect();
        let at = |t: Millis, load: u32, news: Millis| {
            let mut me = node(1, load);
            me.measured_at = t;
            let mut p = node(2, 0);
            p.measured_at = news;
            (me, [p])
        };
        // Under way: it counts at node 2 however fresh the news (that still show node 2 idle).
        let (me, peers) = at(23_000, 2, 22_900);
        assert!(
            b.decide(23_000, &me, &peers, &procs, &Flat(5_000))
                .is_empty()
        );
        // It arrived at 23.5 s: news measured before 25.5 s may not show it yet.
        b.settled(moved, Ok(()), 23_500);
        let (me, peers) = at(25_000, 2, 24_900);
        assert!(
            b.decide(25_000, &me, &peers, &procs, &Flat(5_000))
                .is_empty()
        );
        // News measured after that which still say node 2 is idle are believed.
        let (me, peers) = at(26_000, 2, 25_600);
        assert_eq!(b.decide(26_000, &me, &peers, &procs, &Flat(5_000)).len(), 1);
    }

    fn refused_by(node: u16) -> MoveFailure {
        MoveFailure::Refused {
            by: n(node),
            reason: "busy".into(),
        }
    }

    #[test]
    fn only_a_failure_of_the_destination_keeps_it_out() {
        let peers = [node(2, 0), node(3, 1)];
        let all: Vec<ProcState> = (1..=3).map(proc).collect();
        for (failure, skipped, again) in [
            (refused_by(2), true, true),
            (
                MoveFailure::LinkLost {
                    node: n(2),
                    detail: "reset".into(),
                },
                true,
                true,
            ),
            // A kernel error here does not make node 2 a bad destination, and the process
            // is not retried before the retry interval.
            (
                MoveFailure::Kernel {
                    detail: "ptrace: EPERM".into(),
                },
                false,
                false,
            ),
            // Refused by this node (it would not let the process go): the same.
            (refused_by(1), false, false),
            // Gone: nothing to blame, nothing to retry; its id may be reused by a new process.
            (
                MoveFailure::Gone {
                    pid: 1,
                    detail: "exited".into(),
                },
                false,
                true,
            ),
        ] {
            let mut b = Balancer::new(Params::OURS);
            let m = decide(&mut b, node(1, 3), &peers, 3);
            assert_eq!((m.len(), m[0].to), (1, n(2)));
            let id = m[0].id;
            b.settled(id, Err(&failure), 20_000);
            let m2 = b.decide(20_100, &node(1, 3), &peers, &all, &Flat(5_000));
            assert_eq!(
                m2.iter().all(|x| x.to != n(2)),
                skipped,
                "{failure}: {m2:?}"
            );
            assert_eq!(m2.iter().any(|x| x.id == id), again, "{failure}: {m2:?}");
        }
    }

    #[test]
    fn a_node_that_refused_is_skipped_until_fresher_news_of_it() {
        let mut b = Balancer::new(Params::OURS);
        let peers = [node(2, 0), node(3, 1)];
        let m = decide(&mut b, node(1, 3), &peers, 3);
        assert_eq!((m.len(), m[0].to), (1, n(2)));
        b.settled(m[0].id, Err(&refused_by(2)), 20_000);
        // The same stale view: node 2 is not tried again, and the process is free to go
        // elsewhere (node 3 has one: 2 there against 3 here is worth it).
        let m2 = decide(&mut b, node(1, 3), &peers, 3);
        assert!(m2.iter().all(|x| x.to != n(2)), "{m2:?}");
        assert!(m2.iter().any(|x| x.id == m[0].id), "{m2:?}");
        // Fresh news of node 2 make it a candidate again.
        let mut b = Balancer::new(Params::OURS);
        let m = decide(&mut b, node(1, 3), &peers, 3);
        b.settled(m[0].id, Err(&refused_by(2)), 20_000);
        let mut fresh = peers;
        fresh[0].measured_at = 22_400;
        let m3 = b.decide(
            23_000,
            &node(1, 3),
            &fresh,
            &(1..=3).map(proc).collect::<Vec<_>>(),
            &Flat(5_000),
        );
        assert_eq!(m3.first().map(|x| x.to), Some(n(2)), "{m3:?}");
    }

    #[test]
    fn the_destination_refuses_a_move_that_would_no_longer_pay() {
        // Nodes 1 and 2 run two each and both see node 3 idle: each sends one there.
        let peers = |me: u16| {
            [node(1, 2), node(2, 2), node(3, 0)]
                .into_iter()
                .filter(|x| x.node != n(me))
                .collect::<Vec<_>>()
        };
        let a = decide(&mut Balancer::new(Params::OURS), node(1, 2), &peers(1), 2);
        let b = decide(&mut Balancer::new(Params::OURS), node(2, 2), &peers(2), 2);
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!((a[0].to, b[0].to), (n(3), n(3)));
        let (ca, cb) = (a[0].ceiling.unwrap(), b[0].ceiling.unwrap());
        // Node 3 takes the first; the second would share a CPU there, no better than at home.
        assert_eq!(admits(&node(3, 0), 0.0, ca), Ok(()));
        let no = admits(&node(3, 0), 1.0, cb).unwrap_err();
        assert!(no.contains("1 more just arrived"), "{no}");
        // Once measured, the arrival is in the load itself.
        assert!(admits(&node(3, 1), 0.0, cb).is_err());
        // A guest going home carries no ceiling: home takes its own back.
        let mut g = proc(5);
        g.guest_of = Some(n(3));
        let m = Balancer::new(Params::OURS).decide(
            20_000,
            &node(1, 2),
            &[node(3, 0)],
            &[g, proc(6)],
            &Flat(0),
        );
        assert_eq!(m.iter().find(|x| x.id == 5).map(|x| x.ceiling), Some(None));
    }

    #[test]
    fn stay_lstay_block_and_locks_are_respected() {
        let peers = [node(2, 0)];
        let mut me = node(1, 3);
        me.flags = Status::STAY;
        assert!(decide(&mut Balancer::new(Params::OURS), me, &peers, 3).is_empty());
        me.flags = Status::LSTAY;
        assert!(decide(&mut Balancer::new(Params::OURS), me, &peers, 3).is_empty());
        // Under lstay, guests may leave.
        let mut g = proc(7);
        g.guest_of = Some(n(3));
        let m = Balancer::new(Params::OURS).decide(20_000, &me, &peers, &[g], &Flat(0));
        assert_eq!(m.iter().map(|m| m.id).collect::<Vec<_>>(), vec![7]);
        let mut procs: Vec<ProcState> = (1..=3).map(proc).collect();
        procs[2].guest_of = Some(n(3));
        let m = Balancer::new(Params::OURS).decide(20_000, &me, &peers, &procs, &Flat(0));
        assert_eq!(m.iter().map(|m| m.id).collect::<Vec<_>>(), vec![3]);
        let mut blocked = node(2, 0);
        blocked.flags = Status::BLOCK;
        let me = node(1, 3);
        assert!(decide(&mut Balancer::new(Params::OURS), me, &[blocked], 3).is_empty());
        // ...but a guest may go home to a blocked node.
        let mut g = proc(9);
        g.guest_of = Some(n(2));
        let m = Balancer::new(Params::OURS).decide(20_000, &me, &[blocked], &[g], &Flat(0));
        assert_eq!(m.len(), 1);
        let mut locked: Vec<ProcState> = (1..=3).map(proc).collect();
        for q in &mut locked {
            q.pinned = Some(Pinned::Locked);
        }
        let m = Balancer::new(Params::OURS).decide(20_000, &me, &peers, &locked, &Flat(0));
        assert!(m.is_empty());
    }

    #[test]
    fn young_processes_do_not_pay_for_an_expensive_move() {
        let mut q = proc(1);
        q.age_ms = 1_500;
        let procs = [q, proc(2)];
        // 2 vs 0: age × 2 must exceed the cost.
        let cheap = Balancer::new(Params::OURS).decide(
            20_000,
            &node(1, 2),
            &[node(2, 0)],
            &procs[..1],
            &Flat(1_000_000),
        );
        assert!(!cheap.is_empty(), "1.5 s × 2 > 1 s");
        let dear = Balancer::new(Params::OURS).decide(
            20_000,
            &node(1, 2),
            &[node(2, 0)],
            &procs[..1],
            &Flat(5_000_000),
        );
        assert!(dear.is_empty(), "1.5 s × 2 < 5 s");
    }

    #[test]
    fn a_slow_node_hands_work_to_a_fast_idle_one() {
        let mut me = node(1, 0);
        me.speed = 5_000;
        me.load = 200; // one process on a half-speed CPU
        let fast = node(2, 0);
        let m = decide(&mut Balancer::new(Params::OURS), me, &[fast], 1);
        assert_eq!(m.len(), 1);
        // A fast node with one process does not send it to an idle slow one.
        let mut slow = node(2, 0);
        slow.speed = 5_000;
        assert!(decide(&mut Balancer::new(Params::OURS), node(1, 1), &[slow], 1).is_empty());
    }

    #[test]
    fn memory_ushering_moves_the_largest_process_even_to_a_busier_node() {
        let mut me = node(1, 1);
        me.mem_free = me.mem_total / 20;
        let mut busy = node(2, 3);
        busy.mem_free = 900 << 20;
        let mut small = node(3, 0);
        small.mem_free = 100 << 20;
        let mut procs: Vec<ProcState> = (1..=2).map(proc).collect();
        procs[1].rss = 300 << 20;
        let m = Balancer::new(Params::OURS).decide(20_000, &me, &[busy, small], &procs, &Flat(0));
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].id, m[0].to, m[0].reason, m[0].ceiling),
            (2, n(2), Reason::Memory, None)
        );
    }

    #[test]
    fn rotation_moves_the_process_ahead_when_one_falls_behind() {
        let me = node(1, 2);
        let peers = [node(2, 1), node(3, 1), node(4, 1)];
        // fair share 4 CPUs / 5 processes = 0.8; both here got 0.5 for 10 s: 3 s behind.
        let mut a = proc(1);
        a.cpu_here_ms = 5_000;
        let mut b = proc(2);
        b.cpu_here_ms = 5_000;
        let mut bal = Balancer::new(Params::OURS);
        let (mut a2, mut b2) = (a, b);
        for q in [&mut a2, &mut b2] {
            q.here_ms = 4_000;
            q.cpu_here_ms = 2_000;
        }
        assert!(
            bal.decide(20_000, &me, &peers, &[a2, b2], &Flat(1_000))
                .is_empty(),
            "1.2 s behind: less than the quantum"
        );
        b.here_ms = 4_000;
        b.cpu_here_ms = 3_000; // arrived later, ran alone for a while: ahead
        let m = bal.decide(20_000, &me, &peers, &[a, b], &Flat(1_000));
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].id, m[0].reason), (2, Reason::Rotate));
        let mut mosix = Balancer::new(Params::MOSIX_LIKE);
        assert!(
            mosix
                .decide(20_000, &me, &peers, &[a, b], &Flat(1_000))
                .is_empty()
        );
    }

    #[test]
    fn asked_to_balance_a_process_goes_where_it_would_see_less_load() {
        let nodes = [node(1, 0), node(2, 2), node(3, 1)];
        // Alone on node 1 of three: nowhere better (node 3 would be two to a CPU).
        assert_eq!(best_place(&node(1, 1), &nodes, None, 0), None);
        // Two on node 3: node 1 (idle) is better; node 2 is not.
        assert_eq!(best_place(&node(3, 2), &nodes, None, 0), Some(n(1)));
        // A blocked node is no place, unless it is the process's home.
        let mut blocked = nodes;
        blocked[0].flags = Status::BLOCK;
        assert_eq!(best_place(&node(3, 2), &blocked, None, 0), None);
        assert_eq!(best_place(&node(3, 2), &blocked, Some(n(1)), 0), Some(n(1)));
        // Nor is a node without the memory.
        assert_eq!(best_place(&node(3, 2), &nodes, None, 1 << 30), None);
    }

    #[test]
    fn usage_decays_by_the_kept_portion() {
        let mut u = Usage::default();
        for _ in 0..100 {
            u.add(1000, 1000, 975, 1000);
        }
        assert_eq!(u.demand_permille(), 1000);
        // Idle for one half-life (27 intervals at 975 ‰) after a long busy life: about half.
        let mut u = Usage::default();
        for _ in 0..2000 {
            u.add(1000, 1000, 975, 1000);
        }
        for _ in 0..27 {
            u.add(0, 1000, 975, 1000);
        }
        let s = u.demand_permille();
        assert!((480..=520).contains(&s), "{s}");
        // Fast decay forgets faster.
        let mut f = Usage::default();
        for _ in 0..2000 {
            f.add(1000, 1000, 926, 1000);
        }
        for _ in 0..27 {
            f.add(0, 1000, 926, 1000);
        }
        assert!(f.demand_permille() < 150, "{}", f.demand_permille());
        // No decay: the mean over the whole life.
        let mut z = Usage::default();
        for i in 0..100 {
            z.add(if i < 50 { 1000 } else { 0 }, 1000, 1000, 1000);
        }
        assert_eq!(z.demand_permille(), 500);
    }

    #[test]
    fn a_process_that_waits_on_another_nodes_files_goes_there_and_one_with_its_data_here_stays() {
        let mut b = Balancer::new(Params::OURS);
        let mut q = proc(1);
        q.demand_permille = 200;
        q.data = Some(DataUse {
            node: NodeId::new(3).unwrap(),
            permille: 600,
        });
        let me = node(1, 0);
        let m = b.decide(20_000, &me, &[node(2, 0), node(3, 0)], &[q], &Flat(5_000));
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].to.get(), m[0].reason), (3, Reason::Data));
        // Not on the evidence of its first seconds here (a start that loaded its libraries
        // through home looks like that), however heavy: it goes for load, if at all.
        let mut b = Balancer::new(Params::OURS);
        let mut young = q;
        young.here_ms = DATA_EVIDENCE_MS - 1;
        young.data = Some(DataUse {
            node: NodeId::new(3).unwrap(),
            permille: 900,
        });
        assert!(
            b.decide(20_000, &me, &[node(3, 0)], &[young], &Flat(5_000))
                .iter()
                .all(|m| m.reason != Reason::Data)
        );
        // Not for a little file access.
        let mut b = Balancer::new(Params::OURS);
        q.data = Some(DataUse {
            node: NodeId::new(3).unwrap(),
            permille: 100,
        });
        assert!(
            b.decide(20_000, &me, &[node(3, 0)], &[q], &Flat(5_000))
                .is_empty()
        );
        // Not to a node much busier than this one.
        let mut b = Balancer::new(Params::OURS);
        q.data = Some(DataUse {
            node: NodeId::new(3).unwrap(),
            permille: 600,
        });
        assert!(
            b.decide(20_000, &me, &[node(3, 3)], &[q], &Flat(5_000))
                .is_empty()
        );
        // With its data here, a CPU-heavy process is not moved for load.
        let mut b = Balancer::new(Params::OURS);
        let mut busy: Vec<ProcState> = (1..=2).map(proc).collect();
        for p in &mut busy {
            p.data = Some(DataUse {
                node: NodeId::new(1).unwrap(),
                permille: 500,
            });
        }
        assert!(
            b.decide(20_000, &node(1, 2), &[node(2, 0)], &busy, &Flat(5_000))
                .is_empty()
        );
    }
}
