//! Live queuing at this node (`mosrun -q`, `mosq`; the rule is `mosix_core::queue`): the
//! queued processes exist — each is its `mosrun`, waiting on the control socket for its turn —
//! and this node starts the first of them when it is the first of the cluster and there is
//! room. A job whose `mosrun` went away (killed, its connection closed) leaves the queue.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mosix_core::client::{QueueChange, QueueRow, QueueView, Response};
use mosix_core::gossip::Millis;
use mosix_core::queue::{self, Queued, Recent, Situation, Wait};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use mosix_core::NodeId;
use mosix_core::balance::NodeState;
use mosix_core::client::NodeQueue;
use mosix_core::proto::{LinkMsg, QueueListing};

use crate::link::channel::{Conn, Duplex};
use crate::link::{self, LinkContext};

use super::Event;
use super::ask::cut;
use super::node::{Node, Queueing, Started, Waiting};
use super::policy;

impl Queueing {
    /// Drops the jobs whose `mosrun` is gone.
    fn prune(&mut self) {
        for pid in self.jobs.prune(|j| j.reply.reply.is_closed()) {
            info!("queue: process {pid} left the queue (its mosrun ended)");
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Whether process `pid` of this node still lives (a zombie does not: it ended).
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Sends [`Event::QueuedJobEnded`] once process `pid` has ended (its pidfd becomes readable;
/// a process that runs elsewhere is its deputy here, which ends with it). Nothing when no
/// pidfd can be had: the next sample notices the end.
fn watch_end(pid: u32, events: tokio::sync::mpsc::Sender<Event>) {
    let Ok(pidfd) = i32::try_from(pid)
        .map_err(|_| ())
        .and_then(|p| crate::kernel::seccomp::pidfd_open(p).map_err(|_| ()))
    else {
        return;
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        // SAFETY: the pidfd is an open descriptor owned by the AsyncFd, which closes it only
        // when it is dropped; nothing else closes or replaces it.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        };
        if let Ok(fd) = registered
            && fd.readable().await.is_ok()
        {
            let _ = events.send(Event::QueuedJobEnded).await;
        }
    });
}

fn go(j: Queued<Waiting>, node: Option<NodeId>) {
    let waited_ms = u64::try_from(j.reply.since.elapsed().as_millis()).unwrap_or(u64::MAX);
    let _ = j.reply.reply.send(Response::Go { waited_ms, node });
}

impl Node {
    /// `mosrun -q`: queues process `pid` of `uid`; it is answered when its turn comes.
    pub(super) fn enqueue(
        &mut self,
        (uid, pid): (u32, i32),
        priority: u16,
        mem_mb: u64,
        command: String,
        reply: oneshot::Sender<Response>,
    ) {
        self.queue.prune();
        let pid = u32::try_from(pid).unwrap_or(0);
        let job = Queued {
            pid,
            uid,
            priority,
            submitted_ms: now_ms(),
            mem_mb,
            command,
            reply: Waiting {
                reply,
                since: Instant::now(),
            },
        };
        let line = format!(
            "queue: process {pid} of uid {uid} queued with priority {priority}: {}",
            job.command
        );
        if let Err(j) = self.queue.jobs.push(job) {
            let _ = j.reply.reply.send(Response::Error(format!(
                "the queue of this node is full ({} jobs)",
                queue::MAX_QUEUED
            )));
            return;
        }
        info!("{line}");
        let now = self.now();
        self.queue_round(now);
    }

    /// Starts this node's first jobs while each is the cluster's first and there is room, each
    /// where it should begin; called every sample and when a job is queued.
    pub(super) fn queue_round(&mut self, now: Millis) {
        self.queue.prune();
        self.queue_follow(now);
        // Each start counts as busy at once: the loop ends when the room is used up.
        for _ in 0..queue::MAX_QUEUED {
            if let Err(w) = self.queue_wait(now) {
                if !self.queue.jobs.is_empty() && tracing::enabled!(tracing::Level::DEBUG) {
                    let (me, peers) = self.queue_states(now);
                    let counted: Vec<String> = std::iter::once(&me)
                        .chain(&peers)
                        .map(|n| format!("{} {:.2}", n.node, n.procs(f64::from(n.load))))
                        .collect();
                    debug!(
                        "queue: {} waiting: {w:?} (processes counted by node: {}; {} started and running)",
                        self.queue.jobs.len(),
                        counted.join(", "),
                        self.queue.started.len()
                    );
                }
                break;
            }
            let Some(pid) = self.queue.jobs.first().map(|j| j.pid) else {
                break;
            };
            let Some(j) = self.queue.jobs.take(pid) else {
                break;
            };
            let (me, peers) = self.queue_states(now);
            let node = queue::place(&me, &peers, j.mem_mb << 20);
            info!(
                "queue: process {} starts (priority {}, waited {:.1} s) on {}",
                j.pid,
                j.priority,
                j.reply.since.elapsed().as_secs_f64(),
                node.map_or("this node".to_owned(), |n| format!("node {n}"))
            );
            self.queue_started(j.pid, node, now);
            go(j, node);
        }
    }

    /// Records a start (for the figures that do not show it yet), and watches the job's end:
    /// the next job starts as soon as it ends rather than at the next sample (up to a second
    /// later, for each wave of jobs).
    fn queue_started(&mut self, pid: u32, node: Option<NodeId>, now: Millis) {
        watch_end(pid, self.events.clone());
        self.queue.started.push(Started { pid, node, at: now });
        self.queue.recent.push(Recent {
            node: node.unwrap_or(self.loaded.me),
            at: now,
            started: true,
        });
    }

    /// Follows the started jobs: where each runs now, and which ended (its CPU is free at once,
    /// where it was, before that node's figures say so).
    fn queue_follow(&mut self, now: Millis) {
        let me = self.loaded.me;
        let mut ended = Vec::new();
        self.queue.started.retain_mut(|s| {
            if alive(s.pid) {
                // A process that ended away is forgotten before its deputy is gone: it ended
                // where it was last seen, not here (counted here, the end left its node
                // looking busy until its next figures, a second's wait for every wave).
                if let Some(at) = i32::try_from(s.pid)
                    .ok()
                    .and_then(|p| self.procs.home_at(p))
                {
                    s.node = at;
                }
                true
            } else {
                debug!(
                    "queue: job {} ended on node {}",
                    s.pid,
                    s.node.unwrap_or(me)
                );
                ended.push(Recent {
                    node: s.node.unwrap_or(me),
                    at: now,
                    started: false,
                });
                false
            }
        });
        self.queue.recent.extend(ended);
        // Older changes show in every figure by now.
        let keep = queue::STARTING_MS.max(queue::SEEN_MS) * 4;
        self.queue.recent.retain(|r| now - r.at < keep);
    }

    /// The cluster as the queue counts it: peers' loads as their last second's use shows them,
    /// and every node's with the starts and ends the figures do not show yet.
    fn queue_states(&self, now: Millis) -> (NodeState, Vec<NodeState>) {
        let (mut me, mut peers) = self.node_states(now);
        queue::adjust(&mut me, &self.queue.recent, now, true);
        for p in &mut peers {
            if let Some(f) = self
                .gossip
                .diss
                .get(p.node, now)
                .and_then(|k| k.info?.figures)
            {
                p.load = queue::load_now(p, f.util);
            }
            queue::adjust(p, &self.queue.recent, now, false);
        }
        (me, peers)
    }

    /// Why this node's first job does not start now (`Ok`: it may).
    fn queue_wait(&self, now: Millis) -> Result<(), Wait> {
        let Some(head) = self.queue.jobs.head() else {
            return Ok(());
        };
        let mem = self.queue.jobs.first().map_or(0, |j| j.mem_mb << 20);
        // This node's local load falls at once when a process leaves (the exported one only
        // slowly); the jobs it started lately, which it shows only slowly, count by themselves.
        let (me, peers) = self.queue_states(now);
        let heads: Vec<_> = self
            .gossip
            .diss
            .known(now)
            .filter(|k| !k.is_self && k.up)
            .filter_map(|k| Some((k.node, k.info?.queue?)))
            .collect();
        queue::decide(&Situation {
            me: &me,
            head,
            head_mem: mem,
            peers: &peers,
            heads: &heads,
            known: u32::try_from(self.queue.started.len()).unwrap_or(u32::MAX),
        })
    }

    /// `mosq`: this node's queue, first first, and the other nodes' heads.
    pub(super) fn queue_view(&mut self) -> QueueView {
        self.queue.prune();
        let now = self.now();
        let why = match self.queue_wait(now) {
            Ok(()) => "starts at the next round".to_owned(),
            Err(Wait::Behind(n)) => format!("a job of node {n} comes first"),
            Err(Wait::NoCpu) => "no CPU to spare in the cluster".to_owned(),
            Err(Wait::NoMemory) => "no node has the memory it asked for".to_owned(),
        };
        let rows = self
            .queue
            .jobs
            .ordered()
            .iter()
            .enumerate()
            .map(|(i, j)| QueueRow {
                pid: j.pid,
                uid: j.uid,
                priority: j.priority,
                submitted_ms: j.submitted_ms,
                mem_mb: j.mem_mb,
                command: j.command.clone(),
                waits_for: if i == 0 {
                    why.clone()
                } else {
                    "jobs before it in this node's queue".to_owned()
                },
            })
            .collect();
        let others = self
            .gossip
            .diss
            .known(now)
            .filter(|k| !k.is_self && k.up)
            .filter_map(|k| Some((k.node, k.info?.queue?)))
            .filter(|(_, h)| h.queued > 0)
            .collect();
        QueueView {
            node: self.loaded.me,
            jobs: rows,
            others,
            cluster: Vec::new(),
        }
    }

    /// `mosq` (cluster-wide): this node's view, and the queue of every other node of the
    /// cluster the gossip says has jobs queued, asked over the link at once; answered from a
    /// thread when all have answered or [`LIST_TIMEOUT`] passed.
    pub(super) fn queue_view_all(&mut self, reply: oneshot::Sender<Response>) {
        let mut view = self.queue_view();
        let ask: Vec<NodeId> = view
            .others
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| self.loaded.map.contains(*n))
            .collect();
        let ctx = link::snapshot(&self.link.ctx);
        let spawned = std::thread::Builder::new()
            .name("mosix-mosq".into())
            .spawn(move || {
                view.cluster = ask_queues(&ask, &ctx);
                let _ = reply.send(Response::Queue(view));
            });
        if let Err(e) = spawned {
            warn!("cannot start a thread to ask the other nodes' queues: {e}");
        }
    }

    /// Answers a node that asks for this node's queue: nodes of this cluster only (a
    /// partner's owner sees nobody's command lines here).
    pub(super) fn list_queue_for(&mut self, from: NodeId, stream: Conn) {
        if !self.loaded.map.contains(from) {
            info!("node {from} of another cluster asked for this node's queue: not answered");
            return;
        }
        let jobs = self
            .queue_view()
            .jobs
            .into_iter()
            .map(|mut j| {
                cut(&mut j.command);
                cut(&mut j.waits_for);
                j
            })
            .collect();
        let spawned = std::thread::Builder::new()
            .name(format!("mosix-mosq-for-{from}"))
            .spawn(move || {
                let sent = Duplex::new(stream)
                    .map_err(|e| e.to_string())
                    .and_then(|mut d| {
                        let _ = d.socket().set_write_timeout(Some(LIST_TIMEOUT));
                        d.send(&QueueListing { jobs }).map_err(|e| e.to_string())
                    });
                if let Err(e) = sent {
                    debug!("sending this node's queue to node {from}: {e}");
                }
            });
        if let Err(e) = spawned {
            warn!("cannot start a thread to send the queue to node {from}: {e}");
        }
    }

    /// `mosq delete|run|pri PID`: by the job's owner or root.
    pub(super) fn queue_change(&mut self, uid: u32, pid: u32, change: QueueChange) -> Response {
        self.queue.prune();
        let Some(j) = self.queue.jobs.get_mut(pid) else {
            return Response::Error(format!("process {pid} is not queued at this node"));
        };
        if !policy::owns(uid, (j.uid, j.uid)) {
            return Response::Error(format!(
                "permission denied: process {pid} is not yours (uid {})",
                j.uid
            ));
        }
        match change {
            QueueChange::Priority(p) => {
                info!("queue: process {pid} now has priority {p} (uid {uid})");
                j.priority = p;
            }
            QueueChange::Run => {
                if let Some(j) = self.queue.jobs.take(pid) {
                    info!("queue: process {pid} started by uid {uid} ahead of its turn");
                    let now = self.now();
                    self.queue_started(j.pid, None, now);
                    go(j, None);
                }
            }
            QueueChange::Delete => {
                if let Some(j) = self.queue.jobs.take(pid) {
                    info!("queue: process {pid} deleted by uid {uid}");
                    let _ = j.reply.reply.send(Response::Error(format!(
                        "deleted from the queue by uid {uid} (mosq delete)"
                    )));
                }
            }
        }
        Response::Done
    }
}

/// How long a node has to answer for its queue.
const LIST_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks each of `nodes` for its queue.
fn ask_queues(nodes: &[NodeId], ctx: &Arc<LinkContext>) -> Vec<NodeQueue> {
    super::ask::ask_each(nodes, &LinkMsg::ListQueue, ctx, QueueListing::validate)
        .into_iter()
        .map(|(node, answer)| match answer {
            Ok(l) => NodeQueue {
                node,
                jobs: l.jobs,
                error: None,
            },
            Err(e) => NodeQueue {
                node,
                jobs: Vec::new(),
                error: Some(e),
            },
        })
        .collect()
}
