//! Live queuing at this node (`mosrun -q`, `mosq`; the rule is `mosix_core::queue`): the
//! queued processes exist — each is its `mosrun`, waiting on the control socket for its turn —
//! and this node starts the first of them when it is the first of the cluster and there is
//! room. A job whose `mosrun` went away (killed, its connection closed) leaves the queue.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mosix_core::client::{QueueChange, QueueRow, QueueView, Response};
use mosix_core::gossip::Millis;
use mosix_core::queue::{self, Queued, Situation, Wait};
use tokio::sync::oneshot;
use tracing::info;

use super::node::{Node, Queueing, Waiting};
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

fn go(j: Queued<Waiting>) {
    let waited_ms = u64::try_from(j.reply.since.elapsed().as_millis()).unwrap_or(u64::MAX);
    let _ = j.reply.reply.send(Response::Go { waited_ms });
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

    /// Starts this node's first job if it is the cluster's first and there is room; called
    /// every sample and when a job is queued.
    pub(super) fn queue_round(&mut self, now: Millis) {
        self.queue.prune();
        self.queue.started.retain(|(pid, _)| alive(*pid));
        if self.queue_wait(now).is_ok()
            && let Some(pid) = self.queue.jobs.first().map(|j| j.pid)
            && let Some(j) = self.queue.jobs.take(pid)
        {
            info!(
                "queue: process {} starts (priority {}, waited {:.1} s)",
                j.pid,
                j.priority,
                j.reply.since.elapsed().as_secs_f64()
            );
            self.queue.started.push((j.pid, Instant::now()));
            go(j);
        }
    }

    /// Why this node's first job does not start now (`Ok`: it may).
    fn queue_wait(&self, now: Millis) -> Result<(), Wait> {
        let Some(head) = self.queue.jobs.head() else {
            return Ok(());
        };
        let mem = self.queue.jobs.first().map_or(0, |j| j.mem_mb << 20);
        // This node's local load falls at once when a process leaves (the exported one only
        // slowly); the jobs it started lately, which it shows only slowly, count by themselves.
        let (me, peers) = self.node_states(now);
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
            starting: u32::try_from(
                self.queue
                    .started
                    .iter()
                    .filter(|(_, t)| t.elapsed().as_millis() < queue::STARTING_MS as u128)
                    .count(),
            )
            .unwrap_or(u32::MAX),
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
                    self.queue.started.push((j.pid, Instant::now()));
                    go(j);
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
