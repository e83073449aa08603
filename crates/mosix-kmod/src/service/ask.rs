//! Questions about the processes of the whole cluster: `mps -A` (every node's MOSIX
//! processes) and `moskillall` (a user's processes signalled everywhere), asked of every node of
//! this cluster that is up over the link ([`LinkMsg::Ask`], one sealed [`Answer`]), and
//! answered by each node for the processes whose home it is — the deputy of a process that runs
//! elsewhere passes a signal on, as for any `kill`. And `migrate PID lock|unlock`.
//!
//! A node answers only nodes of its own cluster: a partner's owner sees no command lines here
//! and signals nothing. The asking node has checked its caller (root, or the owner); the node
//! that signals trusts that check, as it trusts the asking node with its processes' memory.

use std::sync::Arc;
use std::time::Duration;

use mosix_core::NodeId;
use mosix_core::client::{NodeProcs, NodeSignalled, ProcRow, Response};
use mosix_core::proto::{
    Answer, Ask, LinkMsg, MAX_LISTED_PROCS, MAX_LISTING_FRAME, MAX_QUEUE_COMMAND,
};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::link::channel::{Conn, Duplex};
use crate::link::{self, LinkContext};

use super::node::Node;
use super::policy;

/// How long a node's answer may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// How many nodes are asked at once.
const ASK_AT_ONCE: usize = 16;

impl Node {
    /// This node's own processes as `mps` lists them, their texts cut to what an answer may
    /// carry.
    fn own_rows(&self) -> Vec<ProcRow> {
        let mut rows = self.procs.rows(false);
        rows.truncate(MAX_LISTED_PROCS);
        for r in &mut rows {
            cut(&mut r.command);
            if let Some(c) = &mut r.cantmove {
                cut(c);
            }
            if let Some(f) = &mut r.frozen {
                cut(f);
            }
        }
        rows
    }

    /// Sends `sig` to this node's MOSIX processes owned by `uid` (a process's real or
    /// effective uid, as kill(2) judges), but `spare`; returns how many.
    fn signal_own(&self, uid: u32, sig: i32, spare: Option<i32>) -> u32 {
        let Ok(signal) = nix::sys::signal::Signal::try_from(sig) else {
            return 0;
        };
        let mut n = 0;
        for pid in self.procs.members() {
            if Some(pid) == spare || pid == std::process::id() as i32 {
                continue;
            }
            if super::moves::owner(pid).is_some_and(|(r, e)| r == uid || e == uid)
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// The nodes of this cluster that are up, but this one.
    fn others_up(&self) -> Vec<NodeId> {
        let now = self.now();
        self.gossip
            .diss
            .known(now)
            .filter(|k| !k.is_self && k.up && self.loaded.map.contains(k.node))
            .map(|k| k.node)
            .collect()
    }

    /// `mps -A`: this node's processes, then every other node's that is up, asked at once;
    /// answered from a thread when all have answered or [`ASK_TIMEOUT`] passed.
    pub(super) fn procs_all(&mut self, reply: oneshot::Sender<Response>) {
        let mine = NodeProcs {
            node: self.loaded.me,
            rows: self.own_rows(),
            error: None,
        };
        let others = self.others_up();
        let ctx = link::snapshot(&self.link.ctx);
        spawn("mosix-mps-all", move || {
            let mut all = vec![mine];
            for (node, answer) in
                ask_each(&others, &LinkMsg::Ask(Ask::Procs), &ctx, Answer::validate)
            {
                all.push(match answer {
                    Ok(Answer::Procs(rows)) => NodeProcs {
                        node,
                        rows,
                        error: None,
                    },
                    Ok(other) => NodeProcs {
                        node,
                        rows: Vec::new(),
                        error: Some(refusal(other)),
                    },
                    Err(e) => NodeProcs {
                        node,
                        rows: Vec::new(),
                        error: Some(e),
                    },
                });
            }
            let _ = reply.send(Response::ProcsAll(all));
        });
    }

    /// `moskillall`: `sig` to every MOSIX process of `uid` here and on every other node that
    /// is up, asked by the local user `caller` (root, or `uid` itself) through process `pid`
    /// (which is spared).
    pub(super) fn signal_all(
        &mut self,
        (caller, pid): (u32, i32),
        uid: u32,
        sig: i32,
        reply: oneshot::Sender<Response>,
    ) {
        if !policy::owns(caller, (uid, uid)) {
            let _ = reply.send(Response::Error(format!(
                "permission denied: only root may signal the processes of another user (uid {uid})"
            )));
            return;
        }
        if !(1..=64).contains(&sig) {
            let _ = reply.send(Response::Error(format!("{sig} is not a signal")));
            return;
        }
        let here = self.signal_own(uid, sig, Some(pid));
        info!(
            "moskillall: signal {sig} to the MOSIX processes of uid {uid} (asked by uid {caller}): {here} here"
        );
        let mine = NodeSignalled {
            node: self.loaded.me,
            count: here,
            error: None,
        };
        let others = self.others_up();
        let ctx = link::snapshot(&self.link.ctx);
        spawn("mosix-killall", move || {
            let mut all = vec![mine];
            for (node, answer) in ask_each(
                &others,
                &LinkMsg::Ask(Ask::Signal { uid, sig }),
                &ctx,
                Answer::validate,
            ) {
                all.push(match answer {
                    Ok(Answer::Signalled(count)) => NodeSignalled {
                        node,
                        count,
                        error: None,
                    },
                    Ok(other) => NodeSignalled {
                        node,
                        count: 0,
                        error: Some(refusal(other)),
                    },
                    Err(e) => NodeSignalled {
                        node,
                        count: 0,
                        error: Some(e),
                    },
                });
            }
            let _ = reply.send(Response::Signalled(all));
        });
    }

    /// Answers node `from`'s question on `stream`: nodes of this cluster only.
    pub(super) fn answer_ask(&mut self, from: NodeId, ask: Ask, stream: Conn) {
        let answer = if !self.loaded.map.contains(from) {
            info!("node {from} of another cluster asked {ask:?} of this node's processes: refused");
            Answer::Refused(format!(
                "node {} answers only nodes of its own cluster",
                self.loaded.me
            ))
        } else {
            match ask {
                Ask::Procs => Answer::Procs(self.own_rows()),
                Ask::Signal { uid, sig } => {
                    let n = self.signal_own(uid, sig, None);
                    info!(
                        "moskillall from node {from}: signal {sig} to the MOSIX processes of uid {uid}: {n}"
                    );
                    Answer::Signalled(n)
                }
            }
        };
        spawn(&format!("mosix-answer-{from}"), move || {
            let sent = Duplex::new(stream)
                .map_err(|e| e.to_string())
                .and_then(|mut d| {
                    let _ = d.socket().set_write_timeout(Some(ASK_TIMEOUT));
                    d.send(&answer).map_err(|e| e.to_string())
                });
            if let Err(e) = sent {
                debug!("answering node {from}: {e}");
            }
        });
    }

    /// `migrate PID lock|unlock`, by the process's owner or root. A process that runs
    /// elsewhere asks home before it leaves its node by the balancer's choice, and home
    /// refuses while it is locked.
    pub(super) fn lock(&mut self, uid: u32, pid: u32, on: bool) -> Response {
        let facts = self.facts(pid);
        let Some(owner) = facts.owner else {
            return Response::Error(format!("no process {pid} here"));
        };
        if !facts.mosix {
            return Response::Error(format!(
                "process {pid} is not a MOSIX process (start it with mosrun)"
            ));
        }
        if !policy::owns(uid, owner) {
            return Response::Error(format!(
                "permission denied: process {pid} is not yours (uid {})",
                owner.0
            ));
        }
        self.procs.update_home(pid as i32, |h| h.lock = on);
        info!(
            "process {pid} {} by uid {uid}",
            if on {
                "locked: no automatic moves"
            } else {
                "unlocked: automatic moves allowed"
            }
        );
        Response::Done
    }
}

/// Asks each of `nodes` the same question `msg`, [`ASK_AT_ONCE`] at a time, each answer one
/// sealed frame of `T` checked by `validate`, or why there is none.
pub(super) fn ask_each<T>(
    nodes: &[NodeId],
    msg: &LinkMsg,
    ctx: &Arc<LinkContext>,
    validate: fn(&T) -> Result<(), mosix_core::proto::FrameError>,
) -> Vec<(NodeId, Result<T, String>)>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    let mut out = Vec::new();
    for chunk in nodes.chunks(ASK_AT_ONCE) {
        let asks: Vec<_> = chunk
            .iter()
            .map(|&n| {
                let (ctx, msg) = (Arc::clone(ctx), msg.clone());
                (
                    n,
                    std::thread::spawn(move || ask_one(n, &msg, &ctx, validate)),
                )
            })
            .collect();
        for (node, h) in asks {
            let answer = h
                .join()
                .unwrap_or_else(|_| Err("the thread that asked it failed".into()));
            out.push((node, answer));
        }
    }
    out
}

/// Node `n`'s answer to `msg`.
fn ask_one<T: serde::de::DeserializeOwned>(
    n: NodeId,
    msg: &LinkMsg,
    ctx: &LinkContext,
    validate: fn(&T) -> Result<(), mosix_core::proto::FrameError>,
) -> Result<T, String> {
    let conn = link::connect_blocking(n, ctx, msg).map_err(|e| format!("cannot reach it: {e}"))?;
    let mut d = Duplex::new(conn).map_err(|e| e.to_string())?;
    d.socket()
        .set_read_timeout(Some(ASK_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let a: T = d
        .recv(MAX_LISTING_FRAME)
        .map_err(|e| format!("no answer: {e}"))?;
    validate(&a).map_err(|e| format!("a bad answer: {e}"))?;
    Ok(a)
}

fn refusal(a: Answer) -> String {
    match a {
        Answer::Refused(why) => why,
        other => format!("an answer to another question ({other:?})"),
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.to_owned()).spawn(f) {
        warn!("cannot start thread {name}: {e}");
    }
}

/// Cuts `s` to [`MAX_QUEUE_COMMAND`] bytes at a character boundary.
pub(super) fn cut(s: &mut String) {
    if s.len() > MAX_QUEUE_COMMAND {
        let mut at = MAX_QUEUE_COMMAND;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}
