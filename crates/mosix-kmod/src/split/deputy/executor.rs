//! The executor: one thread per connection to a remote, reading it. Forwarded calls that work
//! on descriptors run right here, on duplicates of the deputy's descriptors; calls that must
//! run inside the deputy, the process's end, its stops and its coming home go to the tracer.

use mosix_core::metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use mosix_core::NodeId;
use mosix_core::proto::{IO_STREAM, ProcMsg, Reply, WRITTEN_BEHIND};
use mosix_core::syscalls::{Arg, Class};
use tracing::{info, warn};

use super::INTERRUPTED;
use super::dfsa;
use super::state::{AgentSlot, Req, current};
use crate::kernel::abi::{ERESTART_RESTARTBLOCK, ERESTARTNOHAND, ERESTARTSYS};
use crate::kernel::agent::Agent;
use crate::link::channel::{Receiver, Sender};
use crate::split::forward::{self, Plan};
use crate::split::handle::{ComeHomeHandle, MoveAsk};
use crate::split::keeper::Keeper;
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
    /// The node of the remote at the other end, and where MFS is mounted here (for the files
    /// that remote holds for home: `MOUNT/.held/NODE/TOKEN`).
    pub(super) at: NodeId,
    pub(super) mount: std::path::PathBuf,
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
        at,
        mount,
    } = shared;
    // Duplicates of the descriptors written behind, to finish their writes should the deputy
    // die first.
    let mut keeper = Keeper::default();
    // Files the process opened at its node that home holds a placeholder for.
    let mut twins = dfsa::Twins::new(pid);
    loop {
        match rx.recv() {
            Ok(ProcMsg::Call(mut c)) => {
                let arrived = std::time::Instant::now();
                let written_behind = c.ahead == WRITTEN_BEHIND;
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
                        let nr = i64::from(c.nr);
                        let fd = c.args[0] as i32;
                        let kept = nr == libc::SYS_write && keeper.keeps(fd);
                        let behind = nr == libc::SYS_write && c.ahead == WRITTEN_BEHIND;
                        if behind {
                            c.ahead = 0;
                        }
                        let before = kept.then(|| keeper.offset(fd)).flatten();
                        in_call.store(true, Ordering::SeqCst);
                        let mut r = if c.ahead > 0 {
                            forward::exec_streamed(&c, &agent)
                        } else {
                            forward::exec_service(&c, &agent)
                        };
                        in_call.store(false, Ordering::SeqCst);
                        if kept && !agent.alive() {
                            // The deputy is gone, and these are bytes the program was told
                            // were written: what the agent did not write is written here.
                            let data = c.bufs.iter().find(|(i, _)| *i == 1).map(|(_, b)| &b[..]);
                            let data = data.unwrap_or(&[]);
                            let done = match (before, keeper.offset(fd)) {
                                (Some(b), Some(a)) if a >= b => ((a - b) as usize).min(data.len()),
                                _ => 0,
                            };
                            let more = keeper.write(fd, &data[done..]);
                            if more < 0 || (more as usize) < data.len() - done {
                                // No call of the program will hear it: its home's log does.
                                let why = if more < 0 {
                                    nix::errno::Errno::from_raw(-more as i32).to_string()
                                } else {
                                    "a short write".to_owned()
                                };
                                warn!(
                                    "process {pid}, killed at home: a write to {} it was told was done failed ({why}); {} of its {} bytes are not in the file",
                                    keeper.path(fd),
                                    data.len() - done - more.max(0) as usize,
                                    data.len()
                                );
                            }
                            r.ret = if more < 0 && done == 0 {
                                more
                            } else {
                                (done as i64) + more.max(0)
                            };
                        }
                        if kept && behind && agent.alive() {
                            // Bytes written behind: the program was told all were written, so
                            // a short write is finished, and what stops it is the error.
                            r.ret = finish_behind(&c, r.ret, &agent);
                        }
                        if nr == libc::SYS_write && r.io & IO_STREAM != 0 {
                            keeper.grant(pid, fd);
                        }
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
                                        // Killed at home meanwhile (kill -9): the tracer waits
                                        // for the deputy, whose death shows only once its
                                        // agent, which died with it, is reaped. The tracer
                                        // cannot do it while it waits: it is done here.
                                        let a = current(&agent);
                                        if a.alive()
                                            && crate::kernel::ptrace::reap_if_ended(a.tid())
                                        {
                                            a.mark_dead();
                                        }
                                    }
                                    Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                                }
                            };
                            if let Some((ret, _)) = &done {
                                keeper.after_deputy_call(u64::from(c.nr), &c.args, *ret);
                            }
                            match done {
                                Some((ret, outs)) => Reply {
                                    ret,
                                    outs,
                                    io: 0,
                                    room: 0,
                                    file: 0,
                                },
                                None => return,
                            }
                        }
                        Err(e) => Reply {
                            ret: e,
                            outs: Vec::new(),
                            io: 0,
                            room: 0,
                            file: 0,
                        },
                    },
                    _ => Reply {
                        ret: -(libc::ENOSYS as i64),
                        outs: Vec::new(),
                        io: 0,
                        room: 0,
                        file: 0,
                    },
                };
                if tx.send(&ProcMsg::Reply(reply)).is_err() {
                    let _ = reqs.send(Req::Lost("the connection to the remote broke".into()));
                    return;
                }
                let answered_by = match class {
                    _ if written_behind => metrics::CallClass::WriteBehind,
                    Class::Deputy => metrics::CallClass::Deputy,
                    _ => metrics::CallClass::Service,
                };
                metrics::global().call_answered(answered_by, arrived.elapsed().as_secs_f64());
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
                let _ = reqs.send(Req::Image(h, rx, false));
                return;
            }
            Ok(ProcMsg::Precopy(h)) => {
                let _ = reqs.send(Req::Image(h, rx, true));
                return;
            }
            Ok(ProcMsg::Expelled { why }) => {
                info!("process {pid}: its node sends it home ({why})");
                procs.update_home(pid, |h| h.returned_at = Some(std::time::Instant::now()));
                home_req.ask(false);
            }
            Ok(ProcMsg::Leave { to }) => {
                let h = procs.home(pid);
                if h.lock {
                    info!("process {pid}: its node would move it to node {to}, but it is locked");
                } else if to == me {
                    info!("process {pid}: the balancer brings it home");
                    home_req.ask(false);
                } else if !h.moving {
                    info!("process {pid}: the balancer moves it on to node {to}");
                    home_req.ask_move(MoveAsk {
                        node: to,
                        live: false,
                        done: Box::new(move |r| {
                            if let Err(e) = r {
                                info!("process {pid}: balancing move to node {to}: {e}");
                            }
                        }),
                    });
                }
            }
            Ok(ProcMsg::WriteFailed { fd, errno }) => {
                let path = std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                    .map_or_else(|_| format!("descriptor {fd}"), |p| p.display().to_string());
                warn!(
                    "process {pid}: a write to {path} failed ({}) after the program was told it was done; it ended, left or closed the descriptor before it could hear it",
                    nix::errno::Errno::from_raw(errno)
                );
            }
            Ok(ProcMsg::Stopped { sig, conts }) => {
                let _ = reqs.send(Req::Stopped(sig, conts));
            }
            Ok(ProcMsg::Describe { fd, fresh }) => {
                if tx.send(&dfsa::describe(pid, fd, fresh)).is_err() {
                    return;
                }
            }
            Ok(ProcMsg::Table) => {
                if tx.send(&dfsa::table(pid)).is_err() {
                    return;
                }
            }
            Ok(ProcMsg::OpenedHere { fd, path, flags }) => {
                twins.opened(&current(&agent), fd, path, flags);
            }
            Ok(ProcMsg::ClosedHere { fd }) => twins.closed(&current(&agent), fd),
            Ok(ProcMsg::Twin { fd, pos, held }) => {
                let held = held.map(|t| {
                    mount
                        .join(".held")
                        .join(at.get().to_string())
                        .join(t.to_string())
                });
                let errno = twins.twin(&current(&agent), fd, pos, held.as_deref());
                if tx.send(&ProcMsg::TwinIs { fd, errno }).is_err() {
                    return;
                }
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

/// Finishes a write behind that the kernel cut short (`done` of its bytes written): writes the
/// rest, until all is written or an error says why not. Returns the bytes written in all, or
/// the error when it stopped the write before its end (the remote reports it to the program).
fn finish_behind(c: &mosix_core::proto::Call, done: i64, agent: &Agent) -> i64 {
    let Some(data) = c.bufs.iter().find(|(i, _)| *i == 1).map(|(_, b)| b) else {
        return done;
    };
    let mut done = match usize::try_from(done) {
        Ok(d) => d,
        Err(_) => return done,
    };
    while done < data.len() {
        let rest = mosix_core::proto::Call {
            nr: c.nr,
            args: [c.args[0], 0, (data.len() - done) as u64, 0, 0, 0],
            bufs: vec![(1, data[done..].to_vec())],
            ahead: 0,
        };
        let r = forward::exec_service(&rest, agent);
        match r.ret {
            n if n > 0 => done += n as usize,
            0 => return -i64::from(libc::EIO),
            e => return e,
        }
    }
    done as i64
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
