//! The executor: one thread per connection to a remote, reading it. Forwarded calls that work
//! on descriptors run right here, on duplicates of the deputy's descriptors; calls that must
//! run inside the deputy, the process's end, its stops and its coming home go to the tracer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use mosix_core::NodeId;
use mosix_core::proto::{ProcMsg, Reply};
use mosix_core::syscalls::{Arg, Class};
use tracing::info;

use super::INTERRUPTED;
use super::state::{AgentSlot, Req, current};
use crate::kernel::abi::{ERESTART_RESTARTBLOCK, ERESTARTNOHAND, ERESTARTSYS};
use crate::link::channel::{Receiver, Sender};
use crate::split::forward::{self, Plan};
use crate::split::handle::{ComeHomeHandle, MoveAsk};
use crate::split::procs::Procs;

/// What the executor shares with the tracer.
pub(super) struct ExecShared {
    /// The agent that makes the calls in the deputy.
    pub(super) agent: AgentSlot,
    /// It is in a call that may block.
    pub(super) in_call: Arc<AtomicBool>,
    pub(super) procs: Arc<Procs>,
    /// For the nudge that wakes a call blocked inside the deputy.
    pub(super) home_req: ComeHomeHandle,
    /// This node.
    pub(super) me: NodeId,
}

/// The most a buffer of a call run inside the deputy moves (its scratch space holds 252 KiB).
const DEPUTY_IO_MAX: u64 = 64 << 10;

pub(super) fn executor(
    pid: i32,
    mut rx: Receiver,
    tx: Sender,
    reqs: mpsc::Sender<Req>,
    shared: ExecShared,
) {
    let ExecShared {
        agent,
        in_call,
        procs,
        home_req,
        me,
    } = shared;
    loop {
        match rx.recv() {
            Ok(ProcMsg::Call(mut c)) => {
                let (mut class, shape) = forward::shape(u64::from(c.nr), &c.args);
                if class == Class::Service
                    && shape[0] == Arg::Fd
                    && forward::on_procfs(pid, c.args[0] as i32)
                {
                    class = Class::Deputy;
                    forward::clamp_for_deputy(&mut c, DEPUTY_IO_MAX);
                }
                let reply = match class {
                    Class::Service => {
                        let agent = current(&agent);
                        in_call.store(true, Ordering::SeqCst);
                        let mut r = if c.ahead > 0 {
                            forward::exec_streamed(&c, &agent)
                        } else {
                            forward::exec_service(&c, &agent)
                        };
                        in_call.store(false, Ordering::SeqCst);
                        r.ret = interrupted_as_such(r.ret);
                        r
                    }
                    Class::Deputy => match Plan::new(&c) {
                        Ok(plan) => {
                            let (otx, orx) = mpsc::channel();
                            if reqs.send(Req::Call(Box::new(plan), otx)).is_err() {
                                return;
                            }
                            // The call may block inside the deputy (wait4, the open of a FIFO);
                            // should the remote die meanwhile, wake it.
                            let mut nudged = false;
                            let done = loop {
                                match orx.recv_timeout(Duration::from_millis(100)) {
                                    Ok(x) => break Some(x),
                                    Err(mpsc::RecvTimeoutError::Timeout) => {
                                        if !nudged && tx.peer_gone() {
                                            home_req.nudge().send();
                                            nudged = true;
                                        }
                                    }
                                    Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                                }
                            };
                            match done {
                                Some((ret, outs)) => Reply {
                                    ret,
                                    outs,
                                    io: 0,
                                    room: 0,
                                },
                                None => return,
                            }
                        }
                        Err(e) => Reply {
                            ret: e,
                            outs: Vec::new(),
                            io: 0,
                            room: 0,
                        },
                    },
                    _ => Reply {
                        ret: -(libc::ENOSYS as i64),
                        outs: Vec::new(),
                        io: 0,
                        room: 0,
                    },
                };
                if tx.send(&ProcMsg::Reply(reply)).is_err() {
                    let _ = reqs.send(Req::Lost("the connection to the remote broke".into()));
                    return;
                }
            }
            Ok(ProcMsg::Exit { status }) => {
                let _ = reqs.send(Req::Exit(status));
                return;
            }
            Ok(ProcMsg::Died { sig, .. }) => {
                let _ = reqs.send(Req::Died(sig));
                return;
            }
            Ok(ProcMsg::Stats {
                utime_ms,
                stime_ms,
                state,
                rss,
            }) => procs.update_home(pid, |h| {
                h.remote_cpu_ms = utime_ms + stime_ms;
                h.remote_stats_at = Some(std::time::Instant::now());
                h.remote_state = Some(state);
                h.remote_rss = rss;
            }),
            Ok(ProcMsg::Image(h)) => {
                let _ = reqs.send(Req::Image(h, rx));
                return;
            }
            Ok(ProcMsg::Expelled) => {
                info!("process {pid}: its node sends it home (mosctl expel)");
                home_req.ask();
            }
            Ok(ProcMsg::Leave { to }) => {
                let h = procs.home(pid);
                if h.lock {
                    info!("process {pid}: its node would move it to node {to}, but it is locked");
                } else if to == me {
                    info!("process {pid}: the balancer brings it home");
                    home_req.ask();
                } else if !h.moving {
                    info!("process {pid}: the balancer moves it on to node {to}");
                    home_req.ask_move(MoveAsk {
                        node: to,
                        done: Box::new(move |r| {
                            if let Err(e) = r {
                                info!("process {pid}: balancing move to node {to}: {e}");
                            }
                        }),
                    });
                }
            }
            Ok(ProcMsg::Stopped { sig, conts }) => {
                let _ = reqs.send(Req::Stopped(sig, conts));
            }
            Ok(ProcMsg::Moved { signals }) => {
                // This connection ends; the tracer starts another executor on the new one.
                let _ = reqs.send(Req::Moved(signals));
                return;
            }
            Ok(ProcMsg::MoveFailed { failure }) => {
                let _ = reqs.send(Req::MoveFailed(failure));
            }
            Ok(other) => {
                let _ = reqs.send(Req::Lost(format!("the remote sent {other:?} out of turn")));
                return;
            }
            Err(e) => {
                let _ = reqs.send(Req::Lost(format!(
                    "the connection to the remote broke ({e})"
                )));
                return;
            }
        }
    }
}

/// A call the agent made that a signal interrupted (the tracer kept the kernel from restarting
/// it, or it was waiting and got EINTR) is answered `-ERESTARTSYS`: the remote kernel then does
/// what the signal's handler there asks, restart or `EINTR`, as for a native call.
/// `-ERESTARTNOINTR` (restart whatever happens) goes back as it is.
fn interrupted_as_such(ret: i64) -> i64 {
    let interrupted = [
        -i64::from(libc::EINTR),
        -i64::from(ERESTARTSYS),
        -i64::from(ERESTARTNOHAND),
        -i64::from(ERESTART_RESTARTBLOCK),
    ];
    if interrupted.contains(&ret) {
        INTERRUPTED
    } else {
        ret
    }
}
