//! The node's side of automatic migration: what the balancer of [`mosix_core::balance`] needs
//! to know about the processes running here, measured once a second, and carrying out its
//! decisions.
//!
//! Per process it reads `/proc/PID/schedstat` (time running plus time waiting for a CPU: how
//! much of the time it *wanted* a CPU — a task throttled by a cgroup's CPU quota is still
//! counted as waiting, so a CPU-bound process on a crowded virtual node reads as CPU-bound) and
//! `/proc/PID/stat` (CPU time, resident size): a few hundred bytes per process per second. For
//! this node's own processes it also asks [`crate::procs::why_not`] (status and maps: whether it
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
//! As a destination, the node consents to automatic moves through [`Admission`]: the guest
//! thread that receives a process asks it before restoring anything.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use mosix_core::NodeId;
use mosix_core::balance::{NodeState, Pinned, ProcState, Usage, admits, unmeasured_part};
use mosix_core::client::DecayMode;
use mosix_core::config::DecayTunables;
use mosix_core::gossip::Millis;

use crate::procs::Procs;

/// This node's consent to automatic moves ([`mosix_core::balance::admits`]): its figures of
/// the last sample, and the processes that arrived which that sample does not show in full
/// ([`unmeasured_part`]). Every arrival counts, automatic or not; only automatic ones (with a
/// ceiling) are checked.
#[derive(Debug, Default)]
pub struct Admission {
    inner: Mutex<AdmitState>,
}

#[derive(Debug, Default)]
struct AdmitState {
    /// This node, its load the exported one (which rises at once); `None` before the first
    /// sample, when everything is taken.
    me: Option<NodeState>,
    /// When the last sample was taken.
    sampled: Option<Instant>,
    arrived: Vec<Instant>,
}

impl AdmitState {
    /// How many processes the last sample does not show.
    fn unmeasured(&self) -> f64 {
        let Some(s) = self.sampled else {
            return self.arrived.len() as f64;
        };
        let before = |a: &Instant| match s.checked_duration_since(*a) {
            Some(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            None => -i64::try_from(a.duration_since(s).as_millis()).unwrap_or(i64::MAX),
        };
        self.arrived
            .iter()
            .map(|a| unmeasured_part(before(a)))
            .sum()
    }
}

impl Admission {
    fn state(&self) -> std::sync::MutexGuard<'_, AdmitState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new sample, taken now: `me` with its exported load. Arrivals it shows in full are
    /// dropped.
    pub fn update(&self, me: NodeState) {
        self.updated(me, Instant::now());
    }

    fn updated(&self, me: NodeState, at: Instant) {
        let mut s = self.state();
        s.me = Some(me);
        s.sampled = Some(at);
        s.arrived.retain(|a| {
            let before = at.saturating_duration_since(*a).as_millis();
            unmeasured_part(i64::try_from(before).unwrap_or(i64::MAX)) > 0.0
        });
    }

    /// Whether a process may arrive now, its move carrying `ceiling` (`None`: not an automatic
    /// move, always taken). Counts it as arrived when it may.
    pub fn admit(&self, ceiling: Option<u32>) -> Result<(), String> {
        self.admit_at(ceiling, Instant::now())
    }

    fn admit_at(&self, ceiling: Option<u32>, now: Instant) -> Result<(), String> {
        let mut s = self.state();
        if let (Some(c), Some(me)) = (ceiling, s.me.as_ref()) {
            admits(me, s.unmeasured(), c)?;
        }
        s.arrived.push(now);
        Ok(())
    }
}

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

fn schedstat_ns(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<u64>().ok());
    let run = it.next()??;
    let wait = it.next()??;
    Some(run + wait)
}

impl Tracker {
    /// Measures the processes running here and returns them as the balancer sees them.
    pub fn look(&mut self, now: Millis, procs: &Procs, decay: &DecayTunables) -> Vec<Local> {
        let ticks = procfs::ticks_per_second().max(1);
        let page = procfs::page_size();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let members: HashSet<i32> = procs.members().into_iter().collect();
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
            });
            let elapsed = u64::try_from(now.saturating_sub(t.last)).unwrap_or(0);
            let wanted = demand_ns.saturating_sub(t.demand_ns) / 1_000_000;
            let keep = match mode {
                DecayMode::Slow | DecayMode::CpuBound | DecayMode::IoBound => decay.slow,
                DecayMode::Fast => decay.fast,
                DecayMode::None => 1000,
            };
            if elapsed > 0 {
                t.usage.add(
                    wanted.min(elapsed),
                    elapsed,
                    keep,
                    u64::from(decay.interval_s) * 1000,
                );
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
            } else if guest.is_none() && crate::procs::why_not(pid).is_some() {
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
                },
                guest,
            });
        }
        self.here.retain(|pid, _| seen.contains(pid));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosix_core::node::Status;

    fn node(load: u32) -> NodeState {
        NodeState {
            node: NodeId::new(3).unwrap(),
            load,
            speed: 10_000,
            cpus: 1,
            mem_total: 1 << 30,
            mem_free: 1 << 29,
            flags: Status::empty(),
            measured_at: 0,
        }
    }

    #[test]
    fn an_arrival_counts_until_the_samples_show_it() {
        let ms = std::time::Duration::from_millis;
        let a = Admission::default();
        let t0 = Instant::now();
        // Before the first sample, everything is taken.
        assert_eq!(a.admit_at(Some(0), t0), Ok(()));
        // A sample 100 ms later cannot show it (it was still being restored): a second process
        // would share the CPU with it, above a ceiling of 170.
        a.updated(node(0), t0 + ms(100));
        let no = a.admit_at(Some(170), t0 + ms(200)).unwrap_err();
        assert!(no.contains("1 more just arrived"), "{no}");
        // A sample 800 ms after it shows half of it in the load, and half is still unmeasured:
        // never counted twice.
        a.updated(node(50), t0 + ms(800));
        assert!(a.admit_at(Some(200), t0 + ms(900)).is_ok());
        // Taken: it counts too. A third would see three to a CPU.
        assert!(a.admit_at(Some(270), t0 + ms(950)).is_err());
        // Once samples show both, only the load counts; a move nobody checks is always taken.
        a.updated(node(200), t0 + ms(2_300));
        assert_eq!(a.admit_at(None, t0 + ms(2_400)), Ok(()));
        assert!(a.admit_at(Some(300), t0 + ms(2_400)).is_err());
        a.updated(node(300), t0 + ms(3_800));
        assert_eq!(a.admit_at(Some(400), t0 + ms(3_900)), Ok(()));
    }
}
