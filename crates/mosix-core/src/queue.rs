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
use crate::gossip::Millis;
use crate::node::{NodeId, Status};

/// The priority `mosrun -q` gives without a number (lower is better).
pub const DEFAULT_PRIORITY: u16 = 50;
/// How long a job started at this node counts as occupying a CPU before its local load shows
/// it (that load rises slowly: 90 % after about 5 s).
pub const STARTING_MS: Millis = 3_000;
/// How long after a job starts or ends on a peer news of that peer show it: the second its
/// load is measured over must have passed, and news are stamped when sent, up to a gossip
/// interval after the measurement (the balancer's [`SETTLE_MS`](crate::balance::SETTLE_MS)).
pub const SEEN_MS: Millis = crate::balance::SETTLE_MS;
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
    /// Jobs this node started from its queue that still run, wherever they are: a floor under
    /// what the loads say (a process on its way between nodes shows in no load).
    pub known: u32,
}

/// One queued job, as `mosq` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRow {
    /// Its pid (it exists, waiting in mosrun).
    pub pid: u32,
    /// Its owner.
    pub uid: u32,
    /// Lower first.
    pub priority: u16,
    /// When it was submitted, ms since the Unix epoch.
    pub submitted_ms: u64,
    /// The memory it declared, MiB (0: none).
    pub mem_mb: u64,
    /// Its command line.
    pub command: String,
    /// Why it waits now, in words.
    pub waits_for: String,
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
    let busy = busy.max(f64::from(s.known));
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

/// A peer's load as the queue counts it. Its exported load falls slowly after processes end
/// (MOSIX's rule, so that nobody floods a node that was busy a moment ago), which would keep a
/// queue waiting seconds for CPUs that are free; its utilisation over the last second shows an
/// idle CPU at once: the whole processes the load counts beyond what the CPUs did in that
/// second have ended. Only whole ones: a node whose processes get less than their CPUs (its
/// machine is shared, or they wait for I/O) still runs them all.
pub fn load_now(p: &NodeState, util: u32) -> u32 {
    if util >= 90 {
        return p.load;
    }
    let procs = p.procs(f64::from(p.load));
    let used = f64::from(p.cpus.max(1)) * f64::from(util) / 100.0;
    let gone = (procs - used + 0.25).max(0.0).floor();
    let load = ((procs - gone).max(0.0) * p.one()).round();
    load.min(f64::from(u32::MAX)) as u32
}

/// A change this node knows of before the figures show it: a job it started (`started`) or
/// one that ended (not `started`), on `node`, at `at` (the dissemination's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recent {
    /// Where the job runs or ran (this node included).
    pub node: NodeId,
    /// When it started or ended.
    pub at: Millis,
    /// Started (one more process there) or ended (one fewer).
    pub started: bool,
}

/// Node `n`'s figures with what this node knows that they do not show yet: one process more
/// for each job sent there, one fewer for each that ended there, when the figures were
/// measured before a second had passed since. For this node (`is_me`), whose local load is
/// the mean of the last second and rises slowly, a start counts for [`STARTING_MS`], an end for
/// [`SEEN_MS`].
pub fn adjust(n: &mut NodeState, recent: &[Recent], now: Millis, is_me: bool) {
    let unseen = |r: &&Recent| {
        r.node == n.node
            && if is_me {
                now - r.at < if r.started { STARTING_MS } else { SEEN_MS }
            } else {
                n.measured_at < r.at + SEEN_MS
            }
    };
    let count = |started: bool| {
        recent
            .iter()
            .filter(unseen)
            .filter(|r| r.started == started)
            .count() as f64
    };
    // An end takes off only a process the figures still show (they may show the end already:
    // the end is seen here up to a second late), then the starts are added.
    let load = (f64::from(n.load) - count(false) * n.one()).max(0.0) + count(true) * n.one();
    n.load = load.min(f64::from(u32::MAX)).round() as u32;
}

/// Where a job the queue starts should begin: this node (`None`) when it has a CPU to spare,
/// else the peer with the most CPU to spare and the memory the job asked for (`mem`, bytes; 0:
/// none declared), `None` again when no peer has a whole CPU free (the balancer spreads it
/// later). The figures are those [`adjust`] gives. Starting the job where it will run saves it
/// the seconds it would share home's CPU before the balancer moves it.
pub fn place(me: &NodeState, peers: &[NodeState], mem: u64) -> Option<NodeId> {
    let spare = |n: &NodeState| f64::from(n.cpus.max(1)) - n.procs(f64::from(n.load));
    let fits = |n: &NodeState| mem == 0 || n.mem_free >= mem;
    // A quarter of a CPU is the measurement's noise.
    if spare(me) + 0.25 >= 1.0 && fits(me) {
        return None;
    }
    peers
        .iter()
        .filter(|p| !p.flags.intersects(Status::BLOCK) && fits(p))
        .map(|p| (spare(p), p.node))
        .filter(|(s, _)| s + 0.25 >= 1.0)
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, n)| n)
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
        let s = |h: Head, heads: &[(NodeId, Head)], starting: u32| {
            // A job starting at home: its load does not show it yet.
            let mut me = me;
            let recent: Vec<Recent> = (0..starting)
                .map(|_| Recent {
                    node: me.node,
                    at: 1_000,
                    started: true,
                })
                .collect();
            adjust(&mut me, &recent, 2_000, true);
            decide(&Situation {
                me: &me,
                head: h,
                head_mem: 0,
                peers: &peers,
                heads,
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

    #[test]
    fn an_idle_cpu_shows_at_once_in_the_load_the_queue_counts() {
        // One process ended a second ago: the exported load still says one, the last second's
        // use says nothing runs.
        let p = node(2, 100, 1);
        assert_eq!(load_now(&p, 0), 0);
        assert_eq!(load_now(&p, 100), 100);
        // Two CPUs (one process is 50 of load), one of them used: one process, not two.
        let p = node(2, 100, 2);
        assert_eq!(load_now(&p, 50), 50);
        // A process that gets 70 % of its CPU (the machine is shared) still runs.
        let p = node(2, 100, 1);
        assert_eq!(load_now(&p, 70), 100);
        // Full use: the load (which may say more processes than CPUs) stands.
        let p = node(2, 300, 1);
        assert_eq!(load_now(&p, 95), 300);
    }

    #[test]
    fn a_started_job_begins_at_home_if_home_has_room_else_where_most_is_free() {
        let id = |n| NodeId::new(n).unwrap();
        let me = node(1, 0, 1);
        let peers = [node(2, 0, 2), node(3, 100, 1)];
        assert_eq!(place(&me, &peers, 0), None);
        let me = node(1, 100, 1);
        assert_eq!(place(&me, &peers, 0), Some(id(2)));
        // Node 2 got one a moment ago: it has one CPU left, still the most.
        let sent = |k: u16| -> Vec<Recent> {
            (0..k)
                .map(|_| Recent {
                    node: id(2),
                    at: 5_000,
                    started: true,
                })
                .collect()
        };
        let mut two = node(2, 0, 2);
        two.measured_at = 4_000;
        let mut p = two;
        adjust(&mut p, &sent(1), 5_500, false);
        assert_eq!(place(&me, &[p, node(3, 100, 1)], 0), Some(id(2)));
        // And a second: none is free; the job starts at home and the balancer spreads it.
        let mut p = two;
        adjust(&mut p, &sent(2), 5_500, false);
        assert_eq!(place(&me, &[p, node(3, 100, 1)], 0), None);
        // News measured SEEN_MS and more after the starts show them: nothing is added.
        let mut p = two;
        p.measured_at = 5_000 + SEEN_MS;
        adjust(&mut p, &sent(2), 8_000, false);
        assert_eq!(p.load, 0);
        // The memory asked for rules a node out.
        let mut small = node(2, 0, 2);
        small.mem_free = 1 << 20;
        assert_eq!(place(&me, &[small, node(4, 0, 1)], 1 << 30), Some(id(4)));
        // A blocked node takes nothing.
        let mut blocked = node(2, 0, 2);
        blocked.flags = Status::BLOCK;
        assert_eq!(place(&me, &[blocked], 0), None);
    }

    #[test]
    fn a_job_that_ended_frees_its_cpu_before_the_figures_say_so() {
        let id = |n| NodeId::new(n).unwrap();
        let mut three = node(3, 100, 1);
        three.measured_at = 9_000;
        let ended = [Recent {
            node: id(3),
            at: 9_500,
            started: false,
        }];
        let mut p = three;
        adjust(&mut p, &ended, 10_000, false);
        assert_eq!(p.load, 0);
        assert_eq!(place(&node(1, 100, 1), &[p], 0), Some(id(3)));
        // Figures that show the end already, and a job started there since: one process, not
        // none.
        let mut p = node(3, 0, 1);
        p.measured_at = 9_900;
        let both = [
            ended[0],
            Recent {
                node: id(3),
                at: 10_000,
                started: true,
            },
        ];
        adjust(&mut p, &both, 10_000, false);
        assert_eq!(p.load, 100);
        // At home the end counts until the local load's next second shows it.
        let mut me = node(3, 100, 1);
        adjust(&mut me, &ended, 10_000, true);
        assert_eq!(me.load, 0);
        let mut me = node(3, 100, 1);
        adjust(&mut me, &ended, 9_500 + SEEN_MS, true);
        assert_eq!(me.load, 100);
    }
}
