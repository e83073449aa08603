//! Live queuing (`mosrun -q`, `mosq`): jobs that wait until the cluster has room for them, in
//! priority then submission order, cluster-wide, with no master.
//!
//! Every node keeps its own queue of the jobs submitted there; the head of each node's queue
//! (its priority and submission time) travels in the gossip. Each round a node starts its own
//! head if that head is the first of every head it knows — priority (lower first), then
//! submission time, then node number — and the cluster as it sees it has a CPU to spare and a
//! node with the memory the job asked for. Two nodes that both believe they are first (their
//! news of each other is a few intervals old) both start one: the conflict is bounded by the age
//! of the information and settled by the same order at the next round. Jobs started in the last
//! few seconds count as occupying a CPU, since the load figures show them only later.
//!
//! Pure: times and views are arguments.

use serde::{Deserialize, Serialize};

use crate::balance::NodeState;
use crate::node::{NodeId, Status};

/// The priority `mosrun -q` gives without a number (lower is better).
pub const DEFAULT_PRIORITY: u16 = 50;
/// How long a started job counts as occupying a CPU before the figures show it.
pub const STARTING_MS: i64 = 3_000;
/// The most jobs one node queues at once.
pub const MAX_QUEUED: usize = 4096;

/// The head of a node's queue, as it travels in the gossip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Its priority (lower first).
    pub priority: u16,
    /// When it was submitted, milliseconds since the Unix epoch (the nodes' clocks are assumed
    /// close; a skew only reorders jobs of equal priority).
    pub submitted_ms: u64,
    /// How many jobs the node has queued.
    pub queued: u32,
}

impl Head {
    /// The order of heads: priority, then submission time, then node.
    pub fn key(&self, node: NodeId) -> (u16, u64, NodeId) {
        (self.priority, self.submitted_ms, node)
    }
}

/// What a node knows when it decides whether to start its head.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    /// This node.
    pub me: &'a NodeState,
    /// Its own head and the memory that job asked for (MiB; 0: nothing declared).
    pub head: Head,
    /// The memory the head job declared, bytes.
    pub head_mem: u64,
    /// The live peers (their figures).
    pub peers: &'a [NodeState],
    /// The heads of the peers' queues.
    pub heads: &'a [(NodeId, Head)],
    /// Jobs this node started within [`STARTING_MS`].
    pub starting: u32,
    /// Jobs this node started from its queue that still run, wherever they are: a floor under
    /// what the loads say (a process on its way between nodes shows in no load).
    pub known: u32,
}

/// One queued job; `R` is how its submitter is answered (the service's reply channel).
#[derive(Debug)]
pub struct Queued<R> {
    /// Its pid.
    pub pid: u32,
    /// Its owner.
    pub uid: u32,
    /// Lower first.
    pub priority: u16,
    /// When it was submitted, ms since the Unix epoch.
    pub submitted_ms: u64,
    /// The memory it declared, MiB.
    pub mem_mb: u64,
    /// Its command line.
    pub command: String,
    /// How its submitter is answered.
    pub reply: R,
}

/// A node's queue: the jobs, first first by priority, submission time and pid.
#[derive(Debug)]
pub struct Queue<R> {
    jobs: Vec<Queued<R>>,
}

impl<R> Default for Queue<R> {
    fn default() -> Self {
        Queue { jobs: Vec::new() }
    }
}

impl<R> Queue<R> {
    /// Adds a job; `Err` gives it back when the queue holds [`MAX_QUEUED`] already.
    pub fn push(&mut self, job: Queued<R>) -> Result<(), Queued<R>> {
        if self.jobs.len() >= MAX_QUEUED {
            return Err(job);
        }
        self.jobs.push(job);
        Ok(())
    }

    /// The first job.
    pub fn first(&self) -> Option<&Queued<R>> {
        self.jobs
            .iter()
            .min_by_key(|j| (j.priority, j.submitted_ms, j.pid))
    }

    /// The first job, as it travels in the gossip.
    pub fn head(&self) -> Option<Head> {
        self.first().map(|j| Head {
            priority: j.priority,
            submitted_ms: j.submitted_ms,
            queued: u32::try_from(self.jobs.len()).unwrap_or(u32::MAX),
        })
    }

    /// Takes job `pid` out.
    pub fn take(&mut self, pid: u32) -> Option<Queued<R>> {
        let i = self.jobs.iter().position(|j| j.pid == pid)?;
        Some(self.jobs.remove(i))
    }

    /// Job `pid`, to change it.
    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Queued<R>> {
        self.jobs.iter_mut().find(|j| j.pid == pid)
    }

    /// Drops the jobs `gone` says are gone; returns their pids.
    pub fn prune(&mut self, gone: impl Fn(&Queued<R>) -> bool) -> Vec<u32> {
        let out: Vec<u32> = self
            .jobs
            .iter()
            .filter(|j| gone(j))
            .map(|j| j.pid)
            .collect();
        self.jobs.retain(|j| !out.contains(&j.pid));
        out
    }

    /// The jobs, first first.
    pub fn ordered(&self) -> Vec<&Queued<R>> {
        let mut v: Vec<&Queued<R>> = self.jobs.iter().collect();
        v.sort_by_key(|j| (j.priority, j.submitted_ms, j.pid));
        v
    }

    /// How many jobs wait.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

/// Why the head does not start now (for `mosq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// A job of another node comes first.
    Behind(NodeId),
    /// No CPU to spare in the cluster.
    NoCpu,
    /// No node has the memory it asked for.
    NoMemory,
}

/// Whether this node starts its head now.
pub fn decide(s: &Situation<'_>) -> Result<(), Wait> {
    let mine = s.head.key(s.me.node);
    if let Some((n, _)) = s
        .heads
        .iter()
        .filter(|(n, h)| h.queued > 0 && h.key(*n) < mine)
        .min_by_key(|(n, h)| h.key(*n))
    {
        return Err(Wait::Behind(*n));
    }
    // Room is counted over the cluster, not node by node: a node overloaded now (jobs not yet
    // spread by the balancer) uses the CPUs others have free. A node that takes no guests
    // counts only for this node's own.
    let usable = |p: &&NodeState| !p.flags.intersects(Status::BLOCK);
    let cpus: f64 = f64::from(s.me.cpus.max(1))
        + s.peers
            .iter()
            .filter(usable)
            .map(|p| f64::from(p.cpus.max(1)))
            .sum::<f64>();
    let busy: f64 = s.me.procs(f64::from(s.me.load))
        + s.peers
            .iter()
            .filter(usable)
            .map(|p| p.procs(f64::from(p.load)))
            .sum::<f64>();
    let busy = (busy + f64::from(s.starting)).max(f64::from(s.known));
    // A quarter of a CPU is the measurement's noise.
    if cpus - busy + 0.25 < 1.0 {
        return Err(Wait::NoCpu);
    }
    if s.head_mem > 0
        && s.me.mem_free < s.head_mem
        && !s.peers.iter().any(|p| p.mem_free >= s.head_mem)
    {
        return Err(Wait::NoMemory);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u16, load: u32, cpus: u32) -> NodeState {
        NodeState {
            node: NodeId::new(n).unwrap(),
            load,
            speed: 10_000,
            cpus,
            mem_total: 4 << 30,
            mem_free: 2 << 30,
            flags: Status::empty(),
            measured_at: 0,
        }
    }

    fn head(priority: u16, submitted_ms: u64) -> Head {
        Head {
            priority,
            submitted_ms,
            queued: 1,
        }
    }

    #[test]
    fn the_first_head_of_the_cluster_starts_when_a_cpu_is_free() {
        let me = node(1, 100, 1);
        let peers = [node(2, 0, 1), node(3, 100, 1)];
        let s = |h: Head, heads: &[(NodeId, Head)], starting| {
            decide(&Situation {
                me: &me,
                head: h,
                head_mem: 0,
                peers: &peers,
                heads,
                starting,
                known: 0,
            })
        };
        assert_eq!(s(head(50, 10), &[], 0), Ok(()));
        // Node 2's job comes first: by priority, then by time, then by node.
        let two = NodeId::new(2).unwrap();
        assert_eq!(
            s(head(50, 10), &[(two, head(40, 99))], 0),
            Err(Wait::Behind(two))
        );
        assert_eq!(
            s(head(50, 10), &[(two, head(50, 9))], 0),
            Err(Wait::Behind(two))
        );
        // A tie goes to the lower node number: this is node 1.
        assert_eq!(s(head(50, 10), &[(two, head(50, 10))], 0), Ok(()));
        assert_eq!(s(head(50, 10), &[(two, head(60, 1))], 0), Ok(()));
        // An empty queue's head does not count.
        let empty = Head {
            queued: 0,
            ..head(1, 1)
        };
        assert_eq!(s(head(50, 10), &[(two, empty)], 0), Ok(()));
        // One CPU is free: one start is under way, a second waits.
        assert_eq!(s(head(50, 10), &[], 1), Err(Wait::NoCpu));
        // Three processes at home (not spread yet) use the CPU node 2 has free.
        let busy_home = node(1, 300, 1);
        let r = decide(&Situation {
            me: &busy_home,
            head: head(50, 10),
            head_mem: 0,
            peers: &peers,
            heads: &[],
            starting: 0,
            known: 0,
        });
        assert_eq!(r, Err(Wait::NoCpu));
        // Three jobs of this node run (one on its way, in no load): no room on three CPUs.
        let idle = [node(2, 0, 1), node(3, 0, 1)];
        let r = decide(&Situation {
            me: &me,
            head: head(50, 10),
            head_mem: 0,
            peers: &idle,
            heads: &[],
            starting: 0,
            known: 3,
        });
        assert_eq!(r, Err(Wait::NoCpu));
    }

    #[test]
    fn memory_asked_for_must_be_somewhere() {
        let me = node(1, 0, 1);
        let peers = [node(2, 0, 1)];
        let mut sit = Situation {
            me: &me,
            head: head(50, 1),
            head_mem: 3 << 30,
            peers: &peers,
            heads: &[],
            starting: 0,
            known: 0,
        };
        assert_eq!(decide(&sit), Err(Wait::NoMemory));
        sit.head_mem = 1 << 30;
        assert_eq!(decide(&sit), Ok(()));
    }

    #[test]
    fn a_queue_orders_by_priority_then_time_then_pid() {
        let job = |pid, priority, submitted_ms| Queued {
            pid,
            uid: 1,
            priority,
            submitted_ms,
            mem_mb: 0,
            command: String::new(),
            reply: (),
        };
        let mut q = Queue::default();
        for j in [job(5, 50, 1), job(6, 10, 9), job(4, 10, 9), job(7, 10, 3)] {
            assert!(q.push(j).is_ok());
        }
        let order: Vec<u32> = q.ordered().iter().map(|j| j.pid).collect();
        assert_eq!(order, vec![7, 4, 6, 5]);
        assert_eq!(q.head().map(|h| (h.priority, h.queued)), Some((10, 4)));
        q.get_mut(5).unwrap().priority = 1;
        assert_eq!(q.first().map(|j| j.pid), Some(5));
        assert_eq!(q.prune(|j| j.pid == 7), vec![7]);
        assert!(q.take(5).is_some() && q.take(5).is_none());
        assert_eq!(q.len(), 2);
    }
}
