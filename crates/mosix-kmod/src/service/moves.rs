//! Carrying out moves: `mosrun` registering a process (and placing it), `migrate PID TARGET`,
//! `mosctl expel`/`bring`, and the balancer's round once a second. The decisions are
//! [`super::policy`]'s; this file gathers the facts they need (`/proc`, the registry, the
//! gossip view) and starts the threads that move processes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::client::{DecayMode, Response, Target};
use mosix_core::gossip::Millis;
use mosix_core::moves::MoveFailure;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::node::Node;
use super::policy::{self, MovePlan, ProcFacts, StartPlan};
use crate::split::deputy::Live;
use crate::split::handle::{MoveAsk, MoveDone};
use crate::split::procs::{self, Home, Procs};

/// How `mosrun` asked a process to be started ([`Request::Register`](mosix_core::client::Request::Register)).
pub(super) struct Start {
    pub lock: bool,
    pub decay: DecayMode,
    pub placement: Option<NodeId>,
    pub fallback_home: bool,
    pub checkpoint: Option<mosix_core::client::CheckpointSpec>,
    pub best: bool,
}

impl Node {
    /// When a move is live by size (`[moves] live_above_mib`).
    pub(super) fn live_above(&self) -> Live {
        match self.loaded.tunables.moves.live_above_mib {
            0 => Live::Never,
            mib => Live::Above(mib << 20),
        }
    }

    /// `mosrun`: makes process `pid` a MOSIX process, and with a placement, moves it there
    /// right after its `execve`. Answers when it is registered (and seized for the move).
    /// `Register` from the local user `uid` through its process `pid` (`caller`).
    pub(super) fn register(
        &mut self,
        (uid, pid): (u32, i32),
        Start {
            lock,
            decay,
            mut placement,
            mut fallback_home,
            checkpoint,
            best,
        }: Start,
        reply: oneshot::Sender<Response>,
    ) -> bool {
        let answer = |r: Result<(), MoveFailure>| match r {
            Ok(()) => Response::Registered,
            Err(f) => Response::MoveFailed(f),
        };
        if pid <= 0 {
            let _ = reply.send(Response::Error(
                "cannot tell which process is asking".into(),
            ));
            return false;
        }
        if let Err(e) = policy::may_register(uid, pid, owner(pid)) {
            let _ = reply.send(Response::Error(e));
            return false;
        }
        if let Err(e) = self.procs.register(pid, lock, decay) {
            let _ = reply.send(Response::Error(format!(
                "cannot make process {pid} a MOSIX process: {e}"
            )));
            return false;
        }
        if let Some(spec) = checkpoint {
            self.procs.update_home(pid, |h| {
                h.ckpt = Some(crate::split::procs::CkptPlan {
                    spec,
                    taken: 0,
                    since: std::time::Instant::now(),
                });
            });
        }
        if best && placement.is_none() {
            // The balancer's choice for a new process now; at home if none is better, or if
            // the node cannot take it after all (`-b` never fails for want of a node).
            placement = self.start_target(pid);
            fallback_home = true;
            if let Some(n) = placement {
                info!("process {pid} starts on node {n}, the best now (mosrun -b)");
            }
        }
        let plan = policy::plan_start(self.loaded.me, placement, fallback_home, |n| {
            self.can_take(n)
        });
        match plan {
            Err(f) => {
                let _ = reply.send(answer(Err(f)));
            }
            Ok((StartPlan::Home, why)) => {
                if let Some(why) = why {
                    info!("process {pid} starts at home: {why}");
                }
                let _ = reply.send(Response::Registered);
            }
            Ok((StartPlan::At(node), _)) => crate::split::deputy::migrate_at_exec(
                pid,
                node,
                fallback_home,
                self.home_env(),
                Box::new(move |r| {
                    let _ = reply.send(answer(r));
                }),
            ),
        }
        false
    }

    /// `migrate PID TARGET` by the local user `uid`.
    pub(super) fn migrate(
        &mut self,
        uid: u32,
        pid: u32,
        target: Target,
        wait: bool,
        live: bool,
        reply: oneshot::Sender<Response>,
    ) -> bool {
        let facts = self.facts(pid);
        // From here: asked, or by this node's size rule. A process away goes by the size rule
        // of the node it runs on, or live if asked (`live` goes with the request).
        let from_here = if live {
            Live::Always
        } else {
            self.live_above()
        };
        let home = self.procs.home(pid as i32);
        let plan = policy::plan_move(
            self.loaded.me,
            self.flags,
            uid,
            target,
            &facts,
            || self.balance_target(pid as i32, &home),
            |n| self.can_take(n),
        );
        let pid = pid as i32;
        let procs = Arc::clone(&self.procs);
        match plan {
            Err(f) => {
                let _ = reply.send(Response::MoveFailed(f));
            }
            Ok(MovePlan::Stay { node }) => {
                let _ = reply.send(Response::Migrated { node, done: true });
            }
            Ok(MovePlan::Freeze) => {
                let me = self.loaded.me;
                crate::split::deputy::freeze(
                    pid,
                    self.freeze_area(),
                    "migrate freeze".into(),
                    self.home_env(),
                    answer_when(pid, me, wait, reply),
                );
            }
            Ok(MovePlan::SendAway { to }) => crate::split::deputy::migrate(
                pid,
                to,
                None,
                from_here,
                self.home_env(),
                answer_when(pid, to, wait, reply),
            ),
            Ok(MovePlan::MoveOn { to }) => {
                let done = answer_when(pid, to, wait, reply);
                if let Err(ask) = procs.ask_move(
                    pid,
                    MoveAsk {
                        node: to,
                        live,
                        done,
                    },
                ) {
                    let me = self.loaded.me;
                    (ask.done)(Err(MoveFailure::Refused {
                        by: me,
                        reason: format!("process {pid} is between nodes; try again"),
                    }));
                }
            }
            Ok(MovePlan::HomeThenFreeze) => {
                if !procs.ask_come_home(pid, false) {
                    let _ = reply.send(Response::MoveFailed(MoveFailure::Refused {
                        by: self.loaded.me,
                        reason: format!("process {pid} is between nodes; try again"),
                    }));
                    return false;
                }
                let (area, env, me) = (self.freeze_area(), self.home_env(), self.loaded.me);
                let spawned = std::thread::Builder::new()
                    .name(format!("mosix-move-{pid}"))
                    .spawn(move || {
                        if wait_home(&procs, pid) {
                            crate::split::deputy::freeze(
                                pid,
                                area,
                                "migrate freeze".into(),
                                env,
                                answer_when(pid, me, wait, reply),
                            );
                        } else {
                            let _ = reply.send(Response::Error(format!(
                                "process {pid} did not come home to be frozen"
                            )));
                        }
                    });
                if let Err(e) = spawned {
                    warn!("cannot start a thread: {e}");
                }
            }
            Ok(MovePlan::BringHome) => {
                if !procs.ask_come_home(pid, live) {
                    let _ = reply.send(Response::MoveFailed(MoveFailure::Refused {
                        by: self.loaded.me,
                        reason: format!("process {pid} is between nodes; try again"),
                    }));
                    return false;
                }
                let spawned = std::thread::Builder::new()
                    .name(format!("mosix-move-{pid}"))
                    .spawn(move || {
                        let _ = reply.send(if wait_home(&procs, pid) {
                            Response::Migrated {
                                node: 0,
                                done: true,
                            }
                        } else {
                            Response::Error(format!("process {pid} did not come home"))
                        });
                    });
                if let Err(e) = spawned {
                    warn!("cannot start a thread: {e}");
                }
            }
        }
        false
    }

    /// What `migrate` weighs about process `pid`.
    pub(super) fn facts(&self, pid: u32) -> ProcFacts {
        let owner = owner(pid as i32);
        let h = self.procs.home(pid as i32);
        let mosix = owner.is_some() && self.procs.is_mosix(pid as i32);
        ProcFacts {
            pid,
            owner,
            mosix,
            at: h.at,
            moving: h.moving,
            locked: h.lock,
            cantmove: if mosix && h.at.is_none() {
                procs::why_not(pid as i32)
            } else {
                None
            },
            frozen: h.frozen.is_some(),
        }
    }

    /// Where `migrate PID balance` sends a process (`None`: it is best where it is): the
    /// balancer's choice for it now, from this node's view.
    fn balance_target(&self, pid: i32, home: &Home) -> Option<NodeId> {
        let (me, mut nodes) = self.node_states(self.now());
        match home.at {
            None => mosix_core::balance::best_place(&me, &nodes, None, rss_of(pid)),
            Some(at) => {
                let k = nodes.iter().position(|n| n.node == at)?;
                let there = nodes.swap_remove(k);
                nodes.push(me);
                mosix_core::balance::best_place(&there, &nodes, Some(me.node), home.remote_rss)
            }
        }
    }

    /// Where a process about to start (`mosrun -b`) runs best now: as for `migrate PID
    /// balance`, with the process counted here too (it is not running yet, so this node's
    /// load does not show it).
    ///
    /// Starts decided in the last second (the queue's and earlier `-b`s) count where they go,
    /// and this one is recorded so that the next counts it: ten `mosrun -b` in a row spread.
    fn start_target(&mut self, pid: i32) -> Option<NodeId> {
        use mosix_core::queue::{Recent, adjust};
        let now = self.now();
        let (mut me, mut nodes) = self.node_states(now);
        // The exported load (it rises at once, as the peers see it) rather than the local one
        // (slow to believe this node busy: right for moving processes away, late for a start
        // a second after another).
        me.load = me.load.max(self.load.figures.load);
        adjust(&mut me, &self.queue.recent, now, true);
        for n in &mut nodes {
            adjust(n, &self.queue.recent, now, false);
        }
        me.load = me.load.saturating_add(me.one().round() as u32);
        let best = mosix_core::balance::best_place(&me, &nodes, None, rss_of(pid));
        self.queue.recent.push(Recent {
            node: best.unwrap_or(me.node),
            at: now,
            started: true,
        });
        best
    }

    /// `mosctl expel` (every guest goes home) or `bring` (every process of ours comes home):
    /// asks them all at once, answers when none is left or after a minute, with the counts.
    pub(super) fn move_all(&mut self, expel: bool, reply: oneshot::Sender<Response>) -> bool {
        let procs = Arc::clone(&self.procs);
        let (asked, what) = if expel {
            (procs.expel_guests(), "guests sent home")
        } else {
            (procs.bring_all(), "processes brought home")
        };
        info!("{}: {asked} {what}", if expel { "expel" } else { "bring" });
        let left = move |p: &Procs| {
            if expel {
                p.guests().len() as u32
            } else {
                p.away()
            }
        };
        let spawned = std::thread::Builder::new()
            .name("mosix-move-all".into())
            .spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while left(&procs) > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = reply.send(Response::Moved {
                    asked,
                    left: left(&procs),
                });
            });
        if let Err(e) = spawned {
            warn!("cannot start a thread: {e}");
        }
        false
    }

    /// One round of automatic migration: measure the processes running here, ask the balancer,
    /// carry out its moves.
    pub(super) fn balance(&mut self) {
        if !self.procs.enabled() {
            return;
        }
        let now = self.now();
        for e in self.procs.take_ended_moves() {
            let ago = Millis::try_from(e.at.elapsed().as_millis()).unwrap_or(Millis::MAX);
            if let Err(f) = &e.outcome {
                info!("balancing: the move of process {} ended: {f}", e.pid);
            }
            self.balancing.balancer.settled(
                e.pid as u64,
                e.outcome.as_ref().map(|_| ()),
                now.saturating_sub(ago),
            );
        }
        let accept_root = self.loaded.tunables.guests.accept_root;
        let files = super::balancing::FileUse {
            me: self.loaded.me,
            waits: self
                .mfs
                .as_ref()
                .map(|m| m.stats.take_waits())
                .unwrap_or_default(),
            dfsa_calls: self
                .dfsa
                .as_ref()
                .map(|d| d.take_calls())
                .unwrap_or_default(),
            home_waits: self
                .dfsa
                .as_ref()
                .map(|d| d.take_home_waits())
                .unwrap_or_default(),
        };
        let queue = super::balancing::QueueFacts {
            waiting: self
                .queue
                .jobs
                .ordered()
                .iter()
                .filter_map(|j| i32::try_from(j.pid).ok())
                .collect(),
            placed: self
                .queue
                .started
                .iter()
                .filter(|s| s.node.is_none() && now - s.at < mosix_core::queue::STARTING_MS)
                .filter_map(|s| i32::try_from(s.pid).ok())
                .collect(),
        };
        let b = &mut self.balancing;
        let locals = b
            .tracker
            .look(now, &self.procs, &b.decay, accept_root, &files, &queue);
        let (me, mut peers) = self.node_states(now);
        // The queue's starts elsewhere (and its jobs' ends) the figures do not show yet: the
        // balancer's own moves are counted by the balancer.
        for p in &mut peers {
            mosix_core::queue::adjust(p, &self.queue.recent, now, false);
        }
        let mut frozen_now = self.auto_freeze(now, &me, &peers, &locals);
        frozen_now.extend(self.grid_round(now, &locals, &me));
        if locals.is_empty() {
            return;
        }
        let states: Vec<_> = locals
            .iter()
            .map(|l| l.state)
            .filter(|s| !frozen_now.contains(&s.id))
            .collect();
        let b = &mut self.balancing;
        let costs = mosix_core::balance::NodeCosts {
            overheads: &b.overheads,
            files: &b.mfscosts,
        };
        let moves = b.balancer.decide(now, &me, &peers, &states, &costs);
        for m in moves {
            let Some(l) = locals.iter().find(|l| l.state.id == m.id) else {
                continue;
            };
            let pid = m.id as i32;
            let why = m.reason.word();
            if let Some(d) = peers.iter().find(|p| p.node == m.to) {
                debug!(
                    "balancing: here load {} ({} processes here), node {} load {} in news {} ms old",
                    me.load,
                    states.len(),
                    m.to,
                    d.load,
                    now - d.measured_at
                );
            }
            match l.guest {
                Some((home, home_pid)) => {
                    info!(
                        "balancing ({why}): guest {pid} (pid {home_pid} of node {home}) should run on node {} ({})",
                        m.to,
                        counted(&m)
                    );
                    if !self.procs.ask_guest_leave(pid, m.to, m.ceiling) {
                        self.balancing.balancer.forget(m.id);
                    }
                }
                None => {
                    info!(
                        "balancing ({why}): process {pid} goes to node {} ({})",
                        m.to,
                        counted(&m)
                    );
                    let procs = Arc::clone(&self.procs);
                    crate::split::deputy::migrate(
                        pid,
                        m.to,
                        m.ceiling,
                        self.live_above(),
                        self.home_env(),
                        Box::new(move |r| procs.move_ended(pid, r.map(|_| ()))),
                    );
                }
            }
        }
    }
}

impl Node {
    /// Freezes this node's processes that came home in bulk while it is overloaded, and brings
    /// them back one at a time when there is room (`mosix_core::freezing`, `[freeze]` marks).
    /// Returns the processes it started freezing (the balancer leaves them be).
    fn auto_freeze(
        &mut self,
        now: Millis,
        me: &mosix_core::balance::NodeState,
        peers: &[mosix_core::balance::NodeState],
        locals: &[super::balancing::Local],
    ) -> Vec<u64> {
        use mosix_core::freezing::{self, Action, Marks, Situation};
        let t = &self.loaded.tunables.freeze;
        let marks = Marks {
            red: t.red_mark,
            blue: t.blue_mark,
        };
        let ms_ago = |i: Instant| {
            now.saturating_sub(Millis::try_from(i.elapsed().as_millis()).unwrap_or(Millis::MAX))
        };
        let here: Vec<freezing::Here> = locals
            .iter()
            .filter(|l| l.guest.is_none())
            .map(|l| {
                let h = self.procs.home(l.state.id as i32);
                freezing::Here {
                    id: l.state.id,
                    demand_permille: l.state.demand_permille,
                    returned_at: h.returned_at.map(ms_ago),
                    movable: l.state.pinned.is_none() && !h.moving && h.frozen.is_none(),
                }
            })
            .collect();
        let frozen: Vec<freezing::Frozen> = self
            .procs
            .frozen_for(procs::FROZEN_OVERLOADED)
            .into_iter()
            .map(|(pid, at, bytes)| freezing::Frozen {
                id: pid as u64,
                since: ms_ago(at),
                bytes,
            })
            .collect();
        let s = Situation {
            me,
            peers,
            all_demand_permille: locals
                .iter()
                .map(|l| u64::from(l.state.demand_permille))
                .sum(),
            here: &here,
            frozen: &frozen,
            last_continue: self.balancing.last_continue,
        };
        let mut started = Vec::new();
        for a in freezing::decide(now, &s, marks) {
            match a {
                Action::Freeze(id) => {
                    let pid = id as i32;
                    info!(
                        "home overloaded: process {pid}, back from a node that sent it home, is frozen"
                    );
                    self.procs.update_home(pid, |h| h.returned_at = None);
                    crate::split::deputy::freeze(
                        pid,
                        self.freeze_area(),
                        procs::FROZEN_OVERLOADED.into(),
                        self.home_env(),
                        Box::new(move |r| {
                            if let Err(e) = r {
                                warn!("process {pid} could not be frozen: {e}");
                            }
                        }),
                    );
                    started.push(id);
                }
                Action::Continue(id) => {
                    let pid = id as i32;
                    if self.procs.ask_come_home(pid, false) {
                        info!(
                            "room again: process {pid}, frozen when home was overloaded, continues"
                        );
                        self.balancing.last_continue = Some(now);
                    }
                }
            }
        }
        started
    }
}

/// Waits (at most a minute) until a process that was asked home is home.
pub(super) fn wait_home(procs: &Procs, pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let h = procs.home(pid);
        if h.at.is_none() && !h.moving {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// The answer to `migrate PID NODE`: at once ("moving"), or (`wait`) by the returned callback
/// once the move is done or failed; a failure nobody waits for is logged.
fn answer_when(pid: i32, to: NodeId, wait: bool, reply: oneshot::Sender<Response>) -> MoveDone {
    let reply = if wait {
        Some(reply)
    } else {
        let _ = reply.send(Response::Migrated {
            node: to.get(),
            done: false,
        });
        None
    };
    Box::new(move |r| match (r, reply) {
        (Ok(n), Some(reply)) => {
            let _ = reply.send(Response::Migrated {
                node: n.get(),
                done: true,
            });
        }
        (Err(e), Some(reply)) => {
            let _ = reply.send(Response::MoveFailed(e));
        }
        (Err(e), None) => warn!("moving process {pid}: {e}"),
        (Ok(_), None) => {}
    })
}

/// The real and effective uids of local process `pid`, if there is one.
pub(super) fn owner(pid: i32) -> Option<(u32, u32)> {
    procfs::process::Process::new(pid)
        .and_then(|p| p.status())
        .ok()
        .map(|s| (s.ruid, s.euid))
}

/// What a balancing decision counted, for its log line: "4.00 processes here, 1.00 there".
fn counted(m: &mosix_core::balance::Move) -> String {
    let h = |x: u32| format!("{}.{:02}", x / 100, x % 100);
    format!(
        "{} processes here, {} there",
        h(m.counted[0]),
        h(m.counted[1])
    )
}

/// The resident memory of process `pid`, in bytes (0 if it cannot be read).
fn rss_of(pid: i32) -> u64 {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map_or(0, |s| s.rss * procfs::page_size())
}
