//! The node's side of automatic migration: what the balancer of [`mosix_core::balance`] needs
//! to know about the processes running here, measured once a second, and carrying out its
//! decisions.
//!
//! Per process it reads `/proc/PID/schedstat` (time running plus time waiting for a CPU: how
//! much of the time it *wanted* a CPU — a task throttled by a cgroup's CPU quota is still
//! counted as waiting, so a CPU-bound process on a crowded virtual node reads as CPU-bound) and
//! `/proc/PID/stat` (CPU time, resident size): a few hundred bytes per process per second. For
//! this node's own processes it also asks [`crate::split::procs::why_not`] (status and maps: whether it
//! could move at all), which grows with the number of memory areas. Guests are not checked that
//! way: home's rules would call the remote's own read-only memfd mappings of home files shared
//! memory. What a guest did since it arrived that should keep it in place (locking memory, say)
//! is not caught yet.
//!
//! Only the node a process runs on decides about it. A process of this node that runs here
//! is moved as `migrate` would move it; a guest is handed back to its home with
//! [`mosix_core::proto::ProcMsg::Leave`], and home moves it (home itself, or directly to the
//! chosen node), unless it is locked there.
//!
//! As a destination, the node consents to automatic moves through
//! [`crate::node::admission::Admission`].

use std::collections::{HashMap, HashSet};

use mosix_core::NodeId;
use mosix_core::balance::{DataUse, Pinned, ProcState, Usage};
use mosix_core::client::DecayMode;
use mosix_core::config::DecayTunables;
use mosix_core::gossip::Millis;

use crate::split::procs::Procs;

/// What is followed of one process running here.
#[derive(Debug, Clone)]
struct Tracked {
    /// When it was first seen here (arrived, or came home).
    since: Millis,
    /// Its CPU time then, ms.
    cpu0_ms: u64,
    /// Its run + wait time at the last look, ns.
    demand_ns: u64,
    /// When that was.
    last: Millis,
    usage: Usage,
    /// The share of its time spent on each node's files, decayed like its CPU demand.
    data: HashMap<NodeId, Usage>,
}

/// What the node saw of its processes' file access since the last look.
#[derive(Debug)]
pub struct FileUse {
    /// This node.
    pub me: NodeId,
    /// Nanoseconds each process (by pid) waited for each node's files through MFS.
    pub waits: HashMap<i32, HashMap<NodeId, u64>>,
    /// Calls each guest made on files of this node directly (DFSA).
    pub dfsa_calls: HashMap<i32, u64>,
    /// Nanoseconds each guest waited for its home (the node given) on calls on home's files.
    pub home_waits: HashMap<i32, (NodeId, u64)>,
}

impl FileUse {
    /// Milliseconds `pid` spent on each node's files in the last interval.
    fn of(&self, pid: i32) -> Vec<(NodeId, u64)> {
        let mut v: Vec<(NodeId, u64)> = self
            .waits
            .get(&pid)
            .map(|w| w.iter().map(|(n, ns)| (*n, ns / 1_000_000)).collect())
            .unwrap_or_default();
        if let Some((home, ns)) = self.home_waits.get(&pid) {
            let ms = ns / 1_000_000;
            match v.iter_mut().find(|(n, _)| n == home) {
                Some(x) => x.1 += ms,
                None => v.push((*home, ms)),
            }
        }
        if let Some(c) = self.dfsa_calls.get(&pid) {
            let ms = c * crate::split::remote::dfsa::CALL_US / 1000;
            match v.iter_mut().find(|(n, _)| *n == self.me) {
                Some(x) => x.1 += ms,
                None => v.push((self.me, ms)),
            }
        }
        v
    }
}

/// What the queue knows of this node's processes that their measurements do not show.
#[derive(Debug, Default)]
pub struct QueueFacts {
    /// Queued processes: each is its `mosrun`, waiting for its turn. Not followed: a job
    /// starts its life here when it starts (its age and time here count from then).
    pub waiting: HashSet<i32>,
    /// Jobs the queue started here moments ago ([`Pinned::Placed`]).
    pub placed: HashSet<i32>,
}

/// The processes followed on this node.
#[derive(Debug, Default)]
pub struct Tracker {
    here: HashMap<i32, Tracked>,
    /// When each of this node's own processes was first seen (its age survives its moves).
    born: HashMap<i32, Millis>,
}

/// A process to consider, with how to reach it.
#[derive(Debug, Clone, Copy)]
pub struct Local {
    /// What the balancer sees.
    pub state: ProcState,
    /// A guest: its home node and pid there.
    pub guest: Option<(NodeId, u32)>,
}

/// The time `pid` has run and waited to run, in nanoseconds (`/proc/PID/schedstat`).
fn schedstat_ns(pid: i32) -> Option<u64> {
    let s = procfs::process::Process::new(pid)
        .and_then(|p| p.schedstat())
        .ok()?;
    Some(s.sum_exec_runtime + s.run_delay)
}

/// Whether process `pid` runs with root's credentials or in a set-id state.
fn root_or_setid(pid: i32) -> bool {
    procfs::process::Process::new(pid)
        .and_then(|p| p.status())
        .is_ok_and(|s| {
            mosix_core::image::Creds {
                uid: [s.ruid, s.euid, s.suid],
                gid: [s.rgid, s.egid, s.sgid],
                groups: Vec::new(),
            }
            .root_or_setid()
        })
}

impl Tracker {
    /// Measures the processes running here and returns them as the balancer sees them.
    ///
    /// A process of root (or in a set-id state) is not moved automatically unless this node's
    /// `guests.accept_root` (`accept_root`) says the cluster takes such guests: nodes refuse them
    /// by default, and each refusal would cost a whole transfer. `migrate` may still ask.
    pub fn look(
        &mut self,
        now: Millis,
        procs: &Procs,
        decay: &DecayTunables,
        accept_root: bool,
        files: &FileUse,
        queue: &QueueFacts,
    ) -> Vec<Local> {
        let ticks = procfs::ticks_per_second().max(1);
        let page = procfs::page_size();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let members: HashSet<i32> = procs
            .members()
            .into_iter()
            .filter(|p| !queue.waiting.contains(p))
            .collect();
        self.born.retain(|pid, _| members.contains(pid));
        // (pid, home of a guest and its pid there, locked, decay)
        type Candidate = (i32, Option<(NodeId, u32)>, bool, DecayMode);
        let mut candidates: Vec<Candidate> = Vec::new();
        for pid in members {
            let h = procs.home(pid);
            self.born.entry(pid).or_insert(now);
            if h.at.is_none() && !h.moving {
                candidates.push((pid, None, h.lock, h.decay));
            }
        }
        for (local, g) in procs.guests() {
            candidates.push((local, Some((g.from, g.home_pid)), g.lock, DecayMode::Slow));
        }
        for (pid, guest, lock, mode) in candidates {
            let Ok(stat) = procfs::process::Process::new(pid).and_then(|p| p.stat()) else {
                continue;
            };
            let Some(demand_ns) = schedstat_ns(pid) else {
                continue;
            };
            let cpu_ms = (stat.utime + stat.stime) * 1000 / ticks;
            let t = self.here.entry(pid).or_insert(Tracked {
                since: now,
                cpu0_ms: cpu_ms,
                demand_ns,
                last: now,
                usage: Usage::default(),
                data: HashMap::new(),
            });
            let elapsed = u64::try_from(now.saturating_sub(t.last)).unwrap_or(0);
            let wanted = demand_ns.saturating_sub(t.demand_ns) / 1_000_000;
            let keep = match mode {
                DecayMode::Slow | DecayMode::CpuBound | DecayMode::IoBound => decay.slow,
                DecayMode::Fast => decay.fast,
                DecayMode::None => 1000,
            };
            if elapsed > 0 {
                let interval = u64::from(decay.interval_s) * 1000;
                t.usage.add(wanted.min(elapsed), elapsed, keep, interval);
                let used = files.of(pid);
                for (node, ms) in &used {
                    t.data.entry(*node).or_default().add(
                        (*ms).min(elapsed),
                        elapsed,
                        keep,
                        interval,
                    );
                }
                for (node, u) in &mut t.data {
                    if !used.iter().any(|(n, _)| n == node) {
                        u.add(0, elapsed, keep, interval);
                    }
                }
                t.data.retain(|_, u| u.demand_permille() > 0);
            }
            t.demand_ns = demand_ns;
            t.last = now;
            seen.insert(pid);
            let here_ms = u64::try_from(now.saturating_sub(t.since)).unwrap_or(0);
            let age_ms = match guest {
                Some(_) => here_ms,
                None => self.born.get(&pid).map_or(here_ms, |b| {
                    u64::try_from(now.saturating_sub(*b)).unwrap_or(0)
                }),
            };
            let pinned = if lock {
                Some(Pinned::Locked)
            } else if guest.is_none() && queue.placed.contains(&pid) {
                Some(Pinned::Placed)
            } else if guest.is_none()
                && (crate::split::procs::why_not(pid).is_some()
                    || (!accept_root && root_or_setid(pid)))
            {
                Some(Pinned::CantMove)
            } else {
                None
            };
            out.push(Local {
                state: ProcState {
                    id: pid as u64,
                    guest_of: guest.map(|g| g.0),
                    pinned,
                    io_bound: mode == DecayMode::IoBound,
                    demand_permille: if mode == DecayMode::CpuBound {
                        1000
                    } else {
                        t.usage.demand_permille()
                    },
                    age_ms,
                    here_ms,
                    cpu_here_ms: cpu_ms.saturating_sub(t.cpu0_ms),
                    rss: stat.rss * page,
                    // A job declared CPU-bound (`mosrun -c`) is placed by its CPU alone.
                    data: t
                        .data
                        .iter()
                        .filter(|_| mode != DecayMode::CpuBound)
                        .map(|(n, u)| DataUse {
                            node: *n,
                            permille: u.demand_permille(),
                        })
                        .max_by_key(|d| (d.permille, std::cmp::Reverse(d.node))),
                },
                guest,
            });
        }
        self.here.retain(|pid, _| seen.contains(pid));
        out
    }
}
