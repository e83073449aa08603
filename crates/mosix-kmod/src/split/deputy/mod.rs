//! The home side of a migrated process: sending it away, then standing in for it as its
//! *deputy* — the original process, still at home with its pid, parent, descriptors, cwd,
//! credentials and terminal, kept stopped under ptrace with its user memory released.
//!
//! Two threads per migrated process:
//!
//! * the **tracer** owns the ptrace relationship (ptrace requests must come from the thread that
//!   seized). While the process is away the deputy sleeps in `pause()` run from our area, with
//!   every signal unblocked and caught (a dummy handler, so that even signals whose default is
//!   to be ignored reach us): each signal sent to the home pid stops it, and the tracer forwards
//!   the signal to the remote and suppresses it here. The tracer also runs, by injection, the
//!   forwarded calls that must execute inside the deputy, and ends the deputy the way the
//!   process ended (the same exit status, or death by the same signal).
//! * the **executor** reads the connection: forwarded calls that work on descriptors run right
//!   here on duplicates of the deputy's descriptors ([`forward::exec_service`]), the others go to
//!   the tracer; the end of the process and its coming home go to the tracer too.
//!
//! A forwarded call blocked at home (a read from a terminal) when a signal for the process
//! arrives is interrupted ([`INTERRUPT_SIGNAL`] at the executor thread) and answered
//! `-ERESTARTSYS`, which the remote kernel turns into what the signal's handler asks for: a
//! restart, or `EINTR`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::image::{ImageHeader, Regs};
use mosix_core::proto::{ProcMsg, Reply};
use mosix_core::syscalls::Class;
use tracing::{debug, info, warn};

use crate::freezer::freeze::{self, FreezeOptions, Frozen};
use crate::freezer::restore;
use crate::kernel::abi::{ERESTARTSYS, RSEQ_FLAG_UNREGISTER};
use crate::kernel::inject::{self, Area, Held, Release};
use crate::kernel::ptrace::{self, Mem, Running, Sig, Stop, Stopped};
use crate::link::channel::{self, Receiver, Sender};
use crate::link::{self, SharedContext};
use crate::split::forward::{self, FdTable, Plan};
use crate::split::handle::{ComeHomeHandle, MoveAsk, MoveDone, Nudge, RejoinOffer};
use crate::split::procs::Procs;

/// The signal that interrupts an executor blocked in a forwarded call (a real-time signal the
/// C library does not use).
pub fn interrupt_signal() -> i32 {
    libc::SIGRTMIN() + 4
}

extern "C" fn on_interrupt(_: libc::c_int) {}

/// How long after forwarding a signal a forwarded call blocked at home keeps being interrupted.
const KICK_FOR_SIGNAL: Duration = Duration::from_millis(100);

/// Installs the (empty, non-restarting) handler of [`interrupt_signal`]; call once at start.
pub fn install_interrupt_handler() {
    // SAFETY: a sigaction with an empty handler that only returns (async-signal-safe), no
    // SA_RESTART, installed once before any executor thread exists.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_interrupt as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0;
        libc::sigaction(interrupt_signal(), &sa, std::ptr::null_mut());
    }
}

/// What the home side needs from its node.
#[derive(Debug, Clone)]
pub struct HomeEnv {
    /// This node.
    pub me: NodeId,
    /// The registry.
    pub procs: Arc<Procs>,
    /// The link context (for connecting to the destination).
    pub link: SharedContext,
}

/// Moves `pid` to node `to` on a new thread; `done` is called with where it went, or why not.
/// An automatic move carries its `ceiling` (see [`mosix_core::balance::admits`]): the
/// destination may refuse it.
pub fn migrate(
    pid: i32,
    to: NodeId,
    ceiling: Option<u32>,
    env: HomeEnv,
    done: Box<dyn FnOnce(Result<NodeId, String>) + Send>,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("mosix-deputy-{pid}"))
        .spawn(move || {
            let running = match ptrace::seize(pid, nix::sys::ptrace::Options::empty()) {
                Ok(r) => r,
                Err(e) => return done(Err(format!("cannot freeze process {pid}: {e}"))),
            };
            let mut sigs = Vec::new();
            let t = match running.interrupt(|s, _| sigs.push(s)) {
                Ok(t) => t,
                Err(e) => return done(Err(format!("cannot freeze process {pid}: {e}"))),
            };
            send_away(t, sigs, to, ceiling, &env, done);
        });
    if let Err(e) = spawned {
        warn!("cannot start a deputy thread: {e}");
    }
}

/// `mosrun -NODE`: seizes `pid` now (the caller answers mosrun once `ready` is called) and moves
/// it to `to` right after its next execve, from the first instruction of the new program. If the
/// move fails, the program runs at home when `fallback_home`, else it is killed.
pub fn migrate_at_exec(
    pid: i32,
    to: NodeId,
    fallback_home: bool,
    env: HomeEnv,
    ready: Box<dyn FnOnce(Result<(), String>) + Send>,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("mosix-deputy-{pid}"))
        .spawn(move || {
            let running = match ptrace::seize(pid, nix::sys::ptrace::Options::PTRACE_O_TRACEEXEC) {
                Ok(r) => r,
                Err(e) => return ready(Err(format!("cannot take process {pid}: {e}"))),
            };
            ready(Ok(()));
            // Wait for the exec (mosrun may also fail and exit instead).
            let mut r = running;
            let exec_stop = loop {
                match r.wait() {
                    Ok(s) => match s.stop {
                        Stop::Event(ev) if ev == libc::PTRACE_EVENT_EXEC => break s,
                        Stop::Signal(sig) => match s.cont(Some(sig)) {
                            Ok(r2) => r = r2,
                            Err(_) => return,
                        },
                        _ => match s.cont(None) {
                            Ok(r2) => r = r2,
                            Err(_) => return,
                        },
                    },
                    Err(_) => return,
                }
            };
            // The exec stop is inside execve: the kernel writes execve's result into rax after
            // we resume, which would clobber an injected call. Step to the syscall-exit stop,
            // where the call is over.
            let t = match exec_stop.syscall().and_then(Running::wait) {
                Ok(t) if t.stop == Stop::Syscall => t,
                Ok(t) => {
                    warn!("process {pid}: unexpected stop {:?} after its exec", t.stop);
                    let _ = t.detach(None);
                    return;
                }
                Err(_) => return,
            };
            let comm = comm_of(pid);
            send_away(
                t,
                Vec::new(),
                to,
                None,
                &env,
                Box::new(move |res| {
                    if let Err(e) = res {
                        if fallback_home {
                            warn!("{comm} (pid {pid}) runs at home: {e}");
                        } else {
                            warn!(
                                "{comm} (pid {pid}) killed: it could not start on node {to}: {e}"
                            );
                            let _ = Sig::KILL.send_to(pid);
                        }
                    }
                }),
            );
        });
    if let Err(e) = spawned {
        warn!("cannot start a deputy thread: {e}");
    }
}

/// The command name of process `pid` (empty if it is gone).
fn comm_of(pid: i32) -> String {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map(|s| s.comm)
        .unwrap_or_default()
}

/// Freezes the stopped process, ships it to `to` and, once it runs there, becomes its deputy
/// (this thread then serves it until it ends or comes home).
fn send_away(
    t: Stopped,
    sigs: Vec<Sig>,
    to: NodeId,
    ceiling: Option<u32>,
    env: &HomeEnv,
    done: Box<dyn FnOnce(Result<NodeId, String>) + Send>,
) {
    let pid = t.pid();
    let home = env.procs.home(pid);
    let cmd = crate::split::procs::command(pid, "");
    env.procs.update_home(pid, |h| {
        h.moving = true;
        if h.command.is_none() {
            h.command = Some(cmd);
        }
    });
    let stop_moving = |env: &HomeEnv| env.procs.update_home(pid, |h| h.moving = false);
    let ctx = link::snapshot(&env.link);
    let opts = FreezeOptions {
        home: env.me,
        nmigs: home.nmigs,
        locked: home.lock,
        under_filter: false,
        cached: None,
        creds: None,
    };
    let mut frozen = match freeze::freeze_stopped(t, sigs, &opts) {
        Ok(f) => f,
        Err(e) => {
            stop_moving(env);
            return done(Err(format!("cannot freeze process {pid}: {e}")));
        }
    };
    frozen.header.ceiling = ceiling;
    let stream = match link::connect_process(to, &ctx) {
        Ok(s) => s,
        Err(e) => {
            let _ = frozen.thaw();
            stop_moving(env);
            return done(Err(format!("cannot reach node {to}: {e}")));
        }
    };
    let (tx, mut rx) = match channel::split(stream) {
        Ok(x) => x,
        Err(e) => {
            let _ = frozen.thaw();
            stop_moving(env);
            return done(Err(format!("connection to node {to}: {e}")));
        }
    };
    let started = std::time::Instant::now();
    let mut sent = started;
    let answer = frozen
        .send(&tx)
        .map_err(|e| format!("the transfer to node {to} broke off ({e})"))
        .and_then(|()| {
            sent = std::time::Instant::now();
            rx.recv()
                .map_err(|e| format!("node {to} did not answer ({e})"))
        })
        .and_then(|m| match m {
            ProcMsg::Started { pid: rpid } => Ok(rpid),
            ProcMsg::Refused { reason } => Err(reason),
            other => Err(format!("node {to} answered {other:?}")),
        });
    let rpid = match answer {
        Ok(p) => p,
        Err(e) => {
            let _ = frozen.thaw();
            stop_moving(env);
            warn!("{} (pid {pid}) stays here: {e}", comm_of(pid));
            return done(Err(format!("{e}; process {pid} goes on here")));
        }
    };
    info!(
        "{} (pid {pid}) migrated to node {to} as pid {rpid}: {} MiB in {:.0} ms",
        frozen.header.comm,
        frozen.header.total_bytes >> 20,
        started.elapsed().as_secs_f64() * 1000.0
    );
    debug!(
        "pid {pid}: image sent in {:.1} ms, started {:.1} ms later",
        (sent - started).as_secs_f64() * 1e3,
        sent.elapsed().as_secs_f64() * 1e3
    );
    let header = frozen.header.clone();
    let deputy = match Deputy::become_(frozen, tx.clone()) {
        Ok(d) => d,
        Err(e) => {
            // It runs there but we cannot stand in for it: end it there, and here.
            let _ = tx.send(&ProcMsg::Kill);
            stop_moving(env);
            let _ = Sig::KILL.send_to(pid);
            return done(Err(format!("process {pid} lost: {e}")));
        }
    };
    env.procs.update_home(pid, |h| {
        h.at = Some(to);
        h.nmigs = header.nmigs;
        h.moving = false;
        h.remote_pid = Some(rpid);
        h.remote_cpu_ms = 0;
    });
    done(Ok(to));
    deputy.serve(rx, tx, env.clone(), header);
}

/// A result and its output buffers.
type Outcome = (i64, Vec<(u8, Vec<u8>)>);

/// What the executor asks the tracer.
enum Req {
    /// Run this call inside the deputy.
    Call(Box<Plan>, mpsc::Sender<Outcome>),
    /// The process exited with this status.
    Exit(i32),
    /// The process was killed by this signal.
    Died(i32),
    /// The process comes home: its image, and the connection to read its pages from.
    Image(Box<ImageHeader>, Receiver),
    /// The connection to the remote broke.
    Lost(String),
    /// The process stopped (job control): the signal, and the `SIGCONT`s it had seen.
    Stopped(i32, u32),
    /// The process runs at the destination of the direct move; the signals it could not take
    /// on the node it left. The connection to that node ends.
    Moved(Vec<i32>),
    /// The direct move failed; the process goes on where it is.
    MoveFailed(String),
}

/// How long home waits for the destination of a direct move to rejoin after losing the node
/// the process left (the destination may hold the whole image by then).
const REJOIN_GRACE: Duration = Duration::from_secs(10);

/// A direct move under way (see [`Deputy::start_relay`]).
struct Relay {
    node: NodeId,
    token: u64,
    done: Option<MoveDone>,
    /// The destination's connection, once it rejoined: sender, receiver, its pid there.
    pending: Option<(Sender, Receiver, u32)>,
    /// When the connection to the node the process leaves broke.
    source_lost: Option<Instant>,
}

impl Relay {
    fn finish(&mut self, r: Result<NodeId, String>) {
        if let Some(done) = self.done.take() {
            done(r);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some((tx, _, _)) = self.pending.take() {
            // The copy at the destination never became the process: it is ended there.
            tx.shutdown();
        }
        self.finish(Err(format!(
            "the move to node {} was abandoned: the process ended or was lost",
            self.node
        )));
    }
}

/// The deputy's part in job control (see [`Deputy::job_stop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// Not stopped.
    Running,
    /// The stop signal has been sent to the deputy, with its default action.
    Stopping(Sig),
    /// Stopped for its parent; `SIGCONT` wakes it.
    Stopped(Sig),
}

/// The connection to the remote, and where the signals that hit the deputy go: to the
/// remote, or held while a direct move is under way (they then go to wherever the process
/// ends up).
struct Outbox {
    tx: Sender,
    /// `SIGCONT`s forwarded to the remote (a stop it reports before it saw the latest one is
    /// stale).
    conts: u32,
    /// Signals held during a direct move.
    held: Option<Vec<Sig>>,
}

impl Outbox {
    fn forward(&mut self, sig: Sig) {
        if let Some(h) = &mut self.held {
            h.push(sig);
            return;
        }
        if sig.raw() == libc::SIGCONT {
            self.conts = self.conts.wrapping_add(1);
        }
        let _ = self.tx.send(&ProcMsg::Signal { sig: sig.raw() });
    }

    /// Stops holding signals and forwards those held, after `first`.
    fn release(&mut self, first: impl IntoIterator<Item = Sig>) {
        let held = self.held.take().unwrap_or_default();
        for s in first.into_iter().chain(held) {
            self.forward(s);
        }
    }
}

/// What to do with a signal that stops the deputy while we wait for something else (an
/// interrupt, an injected call): forward it, unless it is our own nudge.
fn forwarder<'a>(out: &'a mut Outbox, nudge: &'a Nudge) -> impl FnMut(Sig, &Stopped) + 'a {
    move |s, st| {
        if !nudge.is(s, st) {
            out.forward(s);
        }
    }
}

/// A `struct sigaction` (kernel layout: handler, flags, restorer, mask) with this handler and
/// nothing else; 0 is the default action.
fn sigaction_bytes(handler: u64) -> [u8; 32] {
    let mut sa = [0u8; 32];
    sa[..8].copy_from_slice(&handler.to_le_bytes());
    sa
}

/// A deputy: the stopped original process, sleeping in pause() run from our area.
struct Deputy {
    pid: i32,
    running: Option<Running>,
    area: Area,
    pause: Regs,
    mem: Mem,
    out: Outbox,
    executor_tid: Arc<AtomicI32>,
    in_call: Arc<AtomicBool>,
    /// Until when a forwarded call blocked at home is to be interrupted (see [`Deputy::kick`]).
    kick_until: Option<Instant>,
    /// Requests to come home.
    home_req: ComeHomeHandle,
    /// Home has asked the process back: calls are no longer run here.
    homing: bool,
    /// Job control.
    job: Job,
    /// A direct move under way.
    relay: Option<Relay>,
    /// For the executors this tracer starts (one per connection to a remote).
    reqs: Option<mpsc::Sender<Req>>,
}

impl Deputy {
    /// Turns a frozen process that now runs elsewhere into its deputy: releases its memory,
    /// catches every signal, and puts it to sleep.
    fn become_(f: Frozen, tx: Sender) -> Result<Deputy, String> {
        let pid = f.tracee.pid();
        let area = f.area;
        let base = f.original_regs;
        // On a failure the deputy is left as it is, stopped.
        let mut t = Held::new(f.tracee, Release::Keep);
        let inj = |t: &mut Held, nr: i64, args: [u64; 6]| {
            inject::syscall(t, area.site(), &base, nr, args).map_err(|e| e.to_string())
        };
        if let Some(rs) = f.header.rseq {
            // The kernel would go on writing into the rseq area we are about to unmap.
            inj(
                &mut t,
                libc::SYS_rseq,
                [
                    rs.ptr,
                    u64::from(rs.len),
                    RSEQ_FLAG_UNREGISTER,
                    u64::from(rs.sig),
                    0,
                    0,
                ],
            )?;
        }
        // Release the user memory: the point of moving a process is that home gets it back.
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for v in &f.header.vmas {
            match ranges.last_mut() {
                Some(l) if l.1 == v.start => l.1 = v.end,
                _ => ranges.push((v.start, v.end)),
            }
        }
        for (s, e) in ranges {
            inj(&mut t, libc::SYS_munmap, [s, e - s, 0, 0, 0, 0])?;
        }
        // Catch every signal: a handler address (never run: we suppress the signal at its
        // delivery stop) keeps the kernel from discarding signals whose default is to ignore.
        f.mem
            .write(area.scratch(), &sigaction_bytes(area.start))
            .map_err(|e| e.to_string())?;
        for sig in 1..=64u64 {
            if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
                continue;
            }
            inj(
                &mut t,
                libc::SYS_rt_sigaction,
                [sig, area.scratch(), 0, 8, 0, 0],
            )?;
        }
        let t = t.disarm().map_err(|e| e.to_string())?;
        t.set_sigmask(0).map_err(|e| e.to_string())?;
        let pause = base.for_syscall(area.site(), libc::SYS_pause as u64, [0; 6]);
        t.set_regs(&pause).map_err(|e| e.to_string())?;
        let running = t.cont(None).map_err(|e| e.to_string())?;
        // Signals that came while it was frozen belong to the process, which is there now.
        let mut out = Outbox {
            tx,
            conts: 0,
            held: None,
        };
        out.release(f.pending.iter().copied());
        Ok(Deputy {
            pid,
            running: Some(running),
            area,
            pause,
            mem: f.mem,
            out,
            executor_tid: Arc::new(AtomicI32::new(0)),
            in_call: Arc::new(AtomicBool::new(false)),
            kick_until: None,
            home_req: ComeHomeHandle::new(pid),
            homing: false,
            job: Job::Running,
            relay: None,
            reqs: None,
        })
    }

    /// Serves the process until it ends or comes home.
    fn serve(mut self, rx: Receiver, tx: Sender, env: HomeEnv, header: ImageHeader) {
        let (req_tx, req_rx) = mpsc::channel::<Req>();
        let pid = self.pid;
        self.reqs = Some(req_tx);
        if let Err(e) = self.start_executor(rx, tx, &env) {
            warn!("cannot start the executor of process {pid}: {e}");
            let _ = self.out.tx.send(&ProcMsg::Kill);
            self.kill_deputy();
            env.procs.forget_home(pid);
            return;
        }
        env.procs.register_deputy(pid, self.home_req.clone());
        let end = self.tracer(req_rx, &env, &header);
        env.procs.unregister_deputy(pid);
        // A move asked while the process ended or came home is answered now.
        if let Some(ask) = self.home_req.take_move() {
            (ask.done)(Err(format!(
                "process {pid} is no longer away (it ended or came home)"
            )));
        }
        for o in self.home_req.take_offers() {
            o.refuse(format!("process {pid} is no longer away"));
        }
        match end {
            TracerEnd::Home => env.procs.update_home(pid, |h| {
                h.at = None;
                h.remote_pid = None;
                h.nmigs += 1;
                h.away_cpu_ms += h.remote_cpu_ms;
                h.remote_cpu_ms = 0;
                h.command = None;
            }),
            TracerEnd::Gone => env.procs.forget_home(pid),
        }
    }

    /// Starts the thread that reads the connection to the remote (one per connection: a
    /// direct move brings a new one).
    fn start_executor(&self, rx: Receiver, tx: Sender, env: &HomeEnv) -> std::io::Result<()> {
        let pid = self.pid;
        let reqs = self
            .reqs
            .clone()
            .ok_or_else(|| std::io::Error::other("the tracer has no request channel"))?;
        self.executor_tid.store(0, Ordering::Relaxed);
        let shared = ExecShared {
            tid: Arc::clone(&self.executor_tid),
            in_call: Arc::clone(&self.in_call),
            procs: Arc::clone(&env.procs),
            home_req: self.home_req.clone(),
            me: env.me,
        };
        std::thread::Builder::new()
            .name(format!("mosix-exec-{pid}"))
            .spawn(move || executor(pid, rx, tx, reqs, shared))
            .map(|_| ())
    }

    /// Stops the sleeping deputy, forwarding signals that arrive meanwhile.
    fn stop(&mut self) -> Result<Stopped, String> {
        let r = self.running.take().ok_or("the deputy is not running")?;
        r.request_interrupt().map_err(|e| e.to_string())?;
        r.wait_interrupt(forwarder(&mut self.out, self.home_req.nudge()))
            .map_err(|e| e.to_string())
    }

    /// Puts a stopped deputy back to sleep.
    fn sleep(&mut self, t: Stopped) -> Result<(), String> {
        t.set_regs(&self.pause).map_err(|e| e.to_string())?;
        self.running = Some(t.cont(None).map_err(|e| e.to_string())?);
        Ok(())
    }

    fn kill_deputy(&mut self) {
        if let Some(r) = self.running.take() {
            r.kill();
        }
    }

    fn tracer(
        &mut self,
        reqs: mpsc::Receiver<Req>,
        env: &HomeEnv,
        header: &ImageHeader,
    ) -> TracerEnd {
        let pid = self.pid;
        loop {
            // A move under way finishes before the process is asked home.
            if self.relay.is_none() && self.home_req.take() {
                self.start_homing();
            }
            if let Some(ask) = self.home_req.take_move() {
                self.start_relay(ask, env);
            }
            for o in self.home_req.take_offers() {
                self.on_offer(o);
            }
            if let Some(end) = self.relay_tick(env, header) {
                return end;
            }
            // A call blocked here must not outlive the remote: the executor would never learn
            // that nobody waits for the answer.
            if self.in_call.load(Ordering::Relaxed) && self.out.tx.peer_gone() {
                self.kick_until = Some(Instant::now() + KICK_FOR_SIGNAL);
            }
            self.kick();
            match reqs.recv_timeout(Duration::from_millis(5)) {
                Ok(Req::Call(plan, reply)) => {
                    // Home wants the process back: the call runs again at home after the move.
                    self.home_req.set_in_deputy_call(true);
                    if self.relay.is_none() && self.home_req.take() {
                        self.start_homing();
                    }
                    if self.homing || self.relay.is_some() {
                        self.home_req.set_in_deputy_call(false);
                        let _ = reply.send((-i64::from(ERESTARTSYS), Vec::new()));
                        continue;
                    }
                    let out = match self.stop() {
                        Ok(t) => {
                            let (t, (ret, outs)) = self.run_in_deputy(t, *plan);
                            match t {
                                Some(t) => {
                                    if let Err(e) = self.sleep(t) {
                                        warn!("deputy {pid}: {e}");
                                    }
                                }
                                None => warn!("deputy {pid} lost during a forwarded call"),
                            }
                            (ret, outs)
                        }
                        Err(e) => {
                            warn!("deputy {pid}: {e}");
                            (-(libc::EIO as i64), Vec::new())
                        }
                    };
                    self.home_req.set_in_deputy_call(false);
                    // ComeHome (or MoveTo) goes out before the reply, so the remote knows why
                    // a call was interrupted.
                    if self.relay.is_none() && self.home_req.take() {
                        self.start_homing();
                    }
                    if let Some(ask) = self.home_req.take_move() {
                        self.start_relay(ask, env);
                    }
                    let _ = reply.send(out);
                }
                Ok(Req::Exit(status)) => {
                    self.end_with_exit(status);
                    return TracerEnd::Gone;
                }
                Ok(Req::Died(sig)) => {
                    self.end_with_signal(sig);
                    return TracerEnd::Gone;
                }
                Ok(Req::Stopped(sig, conts)) => {
                    debug!(
                        "deputy {pid}: stop by {sig} reported after {conts} SIGCONTs ({} sent), {:?}",
                        self.out.conts, self.job
                    );
                    if conts == self.out.conts
                        && self.job == Job::Running
                        && let Some(sig) = Sig::new(sig)
                        && let Err(e) = self.job_stop(sig)
                    {
                        warn!("deputy {pid} could not stop as its process did: {e}");
                    }
                }
                Ok(Req::Lost(why)) if self.relay.is_some() => {
                    if let Some(r) = &mut self.relay {
                        warn!(
                            "process {pid}: connection to node {} lost during its move to node {} ({why}); waiting for node {} to rejoin",
                            env.procs.home(pid).at.map_or(0, NodeId::get),
                            r.node,
                            r.node
                        );
                        r.source_lost = Some(Instant::now());
                    }
                }
                Ok(Req::Moved(signals)) => {
                    if let Some(end) = self.commit_relay(signals, env, header) {
                        return end;
                    }
                }
                Ok(Req::MoveFailed(reason)) => self.relay_failed(reason, env),
                Ok(Req::Lost(why)) => {
                    warn!(
                        "process {pid} ({}) on node {} lost: {why}; it is killed at home",
                        header.comm,
                        env.procs.home(pid).at.map_or(0, NodeId::get)
                    );
                    self.kill_deputy();
                    return TracerEnd::Gone;
                }
                Ok(Req::Image(h, rx)) => {
                    // It left for home on its own before it saw the move.
                    if self.relay.is_some() {
                        self.relay_failed("it came home first".into(), env);
                    }
                    return match self.come_home(&h, rx) {
                        Ok(()) => TracerEnd::Home,
                        Err(e) => {
                            warn!("process {pid} could not come home: {e}; it is lost");
                            let _ = self.out.tx.send(&ProcMsg::Refused { reason: e });
                            self.kill_deputy();
                            TracerEnd::Gone
                        }
                    };
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(end) = self.poll_signals() {
                        return end;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.kill_deputy();
                    return TracerEnd::Gone;
                }
            }
        }
    }

    /// Asks the remote to move on to another node directly: the deputy is re-pointed, the
    /// memory does not pass through home.
    ///
    /// Home is the arbiter of which copy is the process: the one whose connection home
    /// listens to. Home sends `MoveTo{node, token}`; the remote freezes the process and ships
    /// it to `node` with the token; `node` rebuilds it and, before it lets it run, connects to
    /// home (`Rejoin`) — home takes that connection aside ([`Deputy::on_offer`]); then `node`
    /// tells the remote it started, and the remote drops its copy and reports `Moved` on the
    /// old connection, whereupon home switches over ([`Deputy::commit_relay`]). Until then
    /// home reads nothing from the new copy, so it cannot touch anything; if the remote
    /// reports `MoveFailed` (it thawed its copy), home closes the new connection and the copy
    /// there dies. Signals are held at home meanwhile and go to the copy that wins.
    fn start_relay(&mut self, ask: MoveAsk, env: &HomeEnv) {
        let pid = self.pid;
        let why_not = if self.homing {
            Some(format!("process {pid} is on its way home"))
        } else if self.relay.is_some() {
            Some(format!("process {pid} is already moving"))
        } else if self.job != Job::Running {
            Some(format!(
                "process {pid} is stopped (job control): it can move once it runs again"
            ))
        } else {
            None
        };
        if let Some(why) = why_not {
            return (ask.done)(Err(why));
        }
        let token = match getrandom::u64() {
            Ok(t) => t,
            Err(e) => return (ask.done)(Err(format!("no random token for the move: {e}"))),
        };
        if let Err(e) = self.out.tx.send(&ProcMsg::MoveTo {
            node: ask.node,
            token,
        }) {
            return (ask.done)(Err(format!("the connection to its node broke ({e})")));
        }
        debug!("process {pid}: asked to move on to node {}", ask.node);
        env.procs.update_home(pid, |h| h.moving = true);
        self.out.held = Some(Vec::new());
        // A forwarded call blocked here would hold the move up: interrupt it (the remote
        // then moves with the call to be made again at the destination).
        self.kick_until = Some(Instant::now() + Duration::from_secs(3600));
        self.relay = Some(Relay {
            node: ask.node,
            token,
            done: Some(ask.done),
            pending: None,
            source_lost: None,
        });
    }

    /// The destination of a direct move connected: if it is the one home asked for, its
    /// connection is kept aside until the source reports the move done.
    fn on_offer(&mut self, o: RejoinOffer) {
        let pid = self.pid;
        let from = o.from;
        let Some(r) = self
            .relay
            .as_mut()
            .filter(|r| r.node == from && r.pending.is_none())
        else {
            return o.refuse(format!(
                "no move of process {pid} to node {from} is under way"
            ));
        };
        if r.token != o.token {
            return o.refuse(format!("wrong token for the move of process {pid}"));
        }
        let local_pid = o.local_pid;
        match channel::split(o.stream) {
            Ok((tx, rx)) => {
                if tx.send(&ProcMsg::Rejoined).is_ok() {
                    debug!("process {pid}: node {} rejoined as pid {local_pid}", r.node);
                    r.pending = Some((tx, rx, local_pid));
                }
            }
            Err(e) => warn!("process {pid}: taking node {}'s connection: {e}", r.node),
        }
    }

    /// Between two things the tracer does: a move whose source was lost is committed as soon
    /// as the destination has rejoined, or given up after [`REJOIN_GRACE`].
    fn relay_tick(&mut self, env: &HomeEnv, header: &ImageHeader) -> Option<TracerEnd> {
        let r = self.relay.as_ref()?;
        let lost_at = r.source_lost?;
        if r.pending.is_some() {
            return self.commit_relay(Vec::new(), env, header);
        }
        if lost_at.elapsed() < REJOIN_GRACE {
            return None;
        }
        let node = r.node;
        warn!(
            "process {} ({}) lost: its node went away during its move to node {node}, which never rejoined; it is killed at home",
            self.pid, header.comm
        );
        self.relay = None;
        self.kill_deputy();
        Some(TracerEnd::Gone)
    }

    /// The source reports the process runs at the destination (or was lost while the
    /// destination had rejoined): home switches to the destination's connection.
    fn commit_relay(
        &mut self,
        signals: Vec<i32>,
        env: &HomeEnv,
        header: &ImageHeader,
    ) -> Option<TracerEnd> {
        let pid = self.pid;
        let Some(mut relay) = self.relay.take() else {
            warn!("process {pid}: its node says it moved, but no move was asked; it is killed");
            self.kill_deputy();
            return Some(TracerEnd::Gone);
        };
        let node = relay.node;
        let Some((tx, rx, rpid)) = relay.pending.take() else {
            warn!(
                "process {pid} ({}) lost: it left for node {node}, which never rejoined; it is killed at home",
                header.comm
            );
            relay.finish(Err(format!(
                "process {pid} was lost on its way to node {node}"
            )));
            let _ = self.out.tx.send(&ProcMsg::Kill);
            self.kill_deputy();
            return Some(TracerEnd::Gone);
        };
        let from = env.procs.home(pid).at.map_or(0, NodeId::get);
        self.out.tx.shutdown();
        self.out.tx = tx.clone();
        // The new remote counts the SIGCONTs it delivers from zero.
        self.out.conts = 0;
        self.out.release(signals.into_iter().filter_map(Sig::new));
        self.kick_until = None;
        if let Err(e) = self.start_executor(rx, tx, env) {
            warn!("process {pid} lost: cannot start its executor: {e}");
            relay.finish(Err(format!("process {pid} lost: {e}")));
            let _ = self.out.tx.send(&ProcMsg::Kill);
            self.kill_deputy();
            return Some(TracerEnd::Gone);
        }
        env.procs.update_home(pid, |h| {
            h.at = Some(node);
            h.remote_pid = Some(rpid);
            h.nmigs += 1;
            h.moving = false;
            h.away_cpu_ms += h.remote_cpu_ms;
            h.remote_cpu_ms = 0;
            h.remote_state = None;
        });
        info!(
            "{} (pid {pid}) moved from node {from} to node {node} directly, as pid {rpid}",
            header.comm
        );
        relay.finish(Ok(node));
        None
    }

    /// The direct move failed; the process goes on where it was.
    fn relay_failed(&mut self, reason: String, env: &HomeEnv) {
        let pid = self.pid;
        let Some(mut relay) = self.relay.take() else {
            return;
        };
        if let Some((tx, _, _)) = relay.pending.take() {
            let _ = tx.send(&ProcMsg::Kill);
            tx.shutdown();
        }
        self.out.release([]);
        if !self.homing {
            self.kick_until = None;
        }
        env.procs.update_home(pid, |h| h.moving = false);
        let at = env.procs.home(pid).at.map_or(0, NodeId::get);
        warn!(
            "process {pid} stays on node {at}: the move to node {} failed: {reason}",
            relay.node
        );
        relay.finish(Err(format!("{reason}; process {pid} goes on at node {at}")));
    }

    /// Tells the remote to come home. Until the image arrives (or the process dies), forwarded
    /// calls are interrupted or refused with `-ERESTARTSYS`: one blocked here would hold the
    /// move up for as long as it blocks.
    fn start_homing(&mut self) {
        let _ = self.out.tx.send(&ProcMsg::ComeHome);
        self.homing = true;
        self.kick_until = Some(Instant::now() + Duration::from_secs(3600));
    }

    /// Interrupts the executor if it is blocked in a forwarded call and [`Deputy::kick_until`]
    /// says so. The interrupted call is answered `-ERESTARTSYS`. Sent again at every turn of
    /// the tracer's loop while it applies: a signal that lands just before the executor enters
    /// its blocking call is lost (the handler runs, then the call blocks), so one is not
    /// enough. An extra interrupt costs at most a re-sent call.
    fn kick(&mut self) {
        let Some(until) = self.kick_until else { return };
        if Instant::now() > until {
            self.kick_until = None;
            return;
        }
        let tid = self.executor_tid.load(Ordering::Relaxed);
        if self.in_call.load(Ordering::Relaxed) && tid > 0 {
            // SAFETY: tgkill sends a signal to one of our own threads, whose handler is
            // installed and empty.
            unsafe {
                libc::syscall(
                    libc::SYS_tgkill,
                    std::process::id(),
                    tid,
                    interrupt_signal(),
                );
            }
        }
    }

    /// Forwards signals that stopped the deputy; notices its death.
    fn poll_signals(&mut self) -> Option<TracerEnd> {
        loop {
            let r = self.running.take()?;
            match r.try_wait() {
                Err(r) => {
                    self.running = Some(r);
                    return None;
                }
                Ok(Ok(s)) => {
                    match (self.job, s.stop) {
                        // Our own stop signal: deliver it, the deputy stops for its parent.
                        (Job::Stopping(want), Stop::Signal(sig)) if sig == want => {
                            match s.cont(Some(sig)) {
                                Ok(r) => self.running = Some(r),
                                Err(_) => return Some(self.deputy_lost()),
                            }
                            continue;
                        }
                        (_, Stop::Group(sig)) => {
                            self.job = Job::Stopped(sig);
                            match s.listen() {
                                Ok(r) => self.running = Some(r),
                                Err(_) => return Some(self.deputy_lost()),
                            }
                            continue;
                        }
                        // SIGCONT woke it: catch the stop signal again, and back to sleep (the
                        // SIGCONT itself is then delivered, and forwarded, as any signal).
                        (Job::Stopped(sig), Stop::Event(_)) => {
                            self.job = Job::Running;
                            let r = self.catch_again(s, sig);
                            match r {
                                Ok(()) => {}
                                Err(e) => {
                                    warn!("deputy {}: {e}", self.pid);
                                    return Some(self.deputy_lost());
                                }
                            }
                            continue;
                        }
                        _ => {}
                    }
                    if let Stop::Signal(sig) = s.stop
                        && !self.home_req.nudge().is(sig, &s)
                    {
                        self.out.forward(sig);
                        // A forwarded call blocked at home must not hold the signal up.
                        let soon = Instant::now() + KICK_FOR_SIGNAL;
                        if self.kick_until.is_none_or(|k| k < soon) {
                            self.kick_until = Some(soon);
                        }
                        self.kick();
                    }
                    match s.cont(None) {
                        Ok(r) => self.running = Some(r),
                        Err(_) => return Some(self.deputy_lost()),
                    }
                }
                Ok(Err(_)) => {
                    // The deputy died (SIGKILL at home): the process dies everywhere.
                    let _ = self.out.tx.send(&ProcMsg::Kill);
                    return Some(TracerEnd::Gone);
                }
            }
        }
    }

    /// The deputy vanished under us: the process ends everywhere.
    fn deputy_lost(&mut self) -> TracerEnd {
        let _ = self.out.tx.send(&ProcMsg::Kill);
        TracerEnd::Gone
    }

    /// The process stopped (job control) by `sig`: the deputy stops by the same signal, so
    /// its parent's `wait(WUNTRACED)` reports it and a shell prints "Stopped". The deputy
    /// catches every signal, so the signal's default action is put back for the stop, and
    /// the catching handler again when `SIGCONT` wakes it ([`Deputy::catch_again`]). The stop
    /// itself is a group stop that we leave in place with `PTRACE_LISTEN`.
    fn job_stop(&mut self, sig: Sig) -> Result<(), String> {
        debug!("deputy {}: its process stopped by {sig}", self.pid);
        let t = self.stop()?;
        let t = if sig.raw() == libc::SIGSTOP {
            t
        } else {
            self.set_action(t, sig, 0)?
        };
        self.sleep(t)?;
        self.job = Job::Stopping(sig);
        sig.send_to(self.pid).map_err(|e| e.to_string())
    }

    /// Puts back the catching handler of `sig` in a deputy woken from a job-control stop, and
    /// puts it back to sleep.
    fn catch_again(&mut self, t: Stopped, sig: Sig) -> Result<(), String> {
        let t = if sig.raw() == libc::SIGSTOP {
            t
        } else {
            self.set_action(t, sig, self.area.start)?
        };
        self.sleep(t)
    }

    /// Sets the handler of `sig` in the deputy (0: the default action).
    fn set_action(&mut self, t: Stopped, sig: Sig, handler: u64) -> Result<Stopped, String> {
        if let Err(e) = self
            .mem
            .write(self.area.scratch(), &sigaction_bytes(handler))
        {
            self.running = Some(t.cont(None).map_err(|e| e.to_string())?);
            return Err(e.to_string());
        }
        // Signals that arrive meanwhile (the SIGCONT that woke it) are the process's.
        let mut held = Held::new(t, Release::Keep);
        match inject::syscall_for_process(
            &mut held,
            self.area.site(),
            &self.pause,
            libc::SYS_rt_sigaction,
            [sig.raw() as u64, self.area.scratch(), 0, 8, 0, 0],
            forwarder(&mut self.out, self.home_req.nudge()),
        ) {
            Ok(_) => held.disarm().map_err(|e| e.to_string()),
            Err(e) => {
                if let Some(t) = held.into_inner() {
                    self.running = t.cont(None).ok();
                }
                Err(e.to_string())
            }
        }
    }

    fn run_in_deputy(&mut self, t: Stopped, plan: Plan) -> (Option<Stopped>, Outcome) {
        let placed = match forward::place(&plan, self.area.scratch(), self.area.scratch_len()) {
            Ok(p) => p,
            Err(e) => return (Some(t), (e, Vec::new())),
        };
        for (i, addr, _) in &placed.at {
            if let Some(b) = &plan.bufs[*i]
                && self.mem.write(*addr, b).is_err()
            {
                return (Some(t), (-(libc::EIO as i64), Vec::new()));
            }
        }
        let mut held = Held::new(t, Release::Keep);
        let ret = match inject::syscall_for_process(
            &mut held,
            self.area.site(),
            &self.pause,
            plan.nr as i64,
            placed.args,
            forwarder(&mut self.out, self.home_req.nudge()),
        ) {
            Ok(x) => x,
            Err(e) => {
                warn!("deputy {}: {e}", self.pid);
                return (held.into_inner(), (-(libc::EIO as i64), Vec::new()));
            }
        };
        let t = held.into_inner();
        let mut plan = plan;
        for (i, addr, len) in &placed.at {
            let mut b = vec![0u8; *len];
            if self.mem.read(*addr, &mut b).is_ok() {
                plan.bufs[*i] = Some(b);
            }
        }
        let outs = plan.outputs(ret);
        (t, (ret, outs))
    }

    fn end_with_exit(&mut self, status: i32) {
        let Ok(t) = self.stop() else { return };
        // exit_group does not come back: the wait sees the exit.
        let regs = self.pause.for_syscall(
            self.area.site(),
            libc::SYS_exit_group as u64,
            [status as u64, 0, 0, 0, 0, 0],
        );
        if t.set_regs(&regs).is_err() {
            return;
        }
        if let Ok(r) = t.cont(None) {
            let _ = r.wait();
        }
    }

    fn end_with_signal(&mut self, sig: i32) {
        let Some(s) = Sig::new(sig) else {
            self.kill_deputy();
            return;
        };
        let Ok(t) = self.stop() else { return };
        // Default action for that signal, then deliver it: the deputy dies the same death.
        let t = match self.set_action(t, s, 0) {
            Ok(t) => t,
            Err(_) => {
                self.kill_deputy();
                return;
            }
        };
        let _ = t.set_regs(&self.pause);
        if let Ok(r) = t.cont(Some(s)) {
            let mut r = r;
            // Deliver it until the deputy is gone (a stop on the way gets the signal again).
            while let Ok(st) = r.wait() {
                match st.cont(Some(s)) {
                    Ok(r2) => r = r2,
                    Err(_) => break,
                }
            }
        }
    }

    fn come_home(&mut self, h: &ImageHeader, mut rx: Receiver) -> Result<(), String> {
        let t = self.stop()?;
        // On a failure the deputy is killed (see `Restorer`).
        let rest = restore::prepare(t, h, Some(self.area)).map_err(|e| e.to_string())?;
        if let Err(e) = restore::receive_pages(&mut rx, h, &rest) {
            rest.kill();
            return Err(e);
        }
        let (t, _) = rest.finish(h, None).map_err(|e| e.to_string())?;
        t.detach(None).map_err(|e| e.to_string())?;
        let _ = self.out.tx.send(&ProcMsg::Started {
            pid: self.pid as u32,
        });
        info!("{} (pid {}) is home again", h.comm, self.pid);
        // Signals the remote could no longer deliver come back, then the connection ends.
        let _ = rx.socket().set_read_timeout(Some(Duration::from_secs(5)));
        while let Ok(m) = rx.recv() {
            if let ProcMsg::Signal { sig } = m
                && let Some(s) = Sig::new(sig)
            {
                let _ = s.send_to(self.pid);
            }
        }
        self.out.tx.shutdown();
        Ok(())
    }
}

enum TracerEnd {
    /// The process runs at home again.
    Home,
    /// The process is gone.
    Gone,
}

/// What the executor shares with the tracer.
struct ExecShared {
    /// Its thread id, for the tracer's interrupts.
    tid: Arc<AtomicI32>,
    /// It is in a call that may block.
    in_call: Arc<AtomicBool>,
    procs: Arc<Procs>,
    /// For the nudge that wakes a call blocked inside the deputy.
    home_req: ComeHomeHandle,
    /// This node.
    me: NodeId,
}

/// The most a read or write on a terminal moves in one call: it runs inside the deputy, through
/// its scratch area. A terminal may return less than asked, and programs loop.
const TERMINAL_IO_MAX: u64 = 64 << 10;

fn clamp_terminal_io(c: &mut mosix_core::proto::Call) {
    let nr = i64::from(c.nr);
    if (nr == libc::SYS_read || nr == libc::SYS_write) && c.args[2] > TERMINAL_IO_MAX {
        c.args[2] = TERMINAL_IO_MAX;
        for (_, b) in &mut c.bufs {
            b.truncate(TERMINAL_IO_MAX as usize);
        }
    }
}

fn executor(pid: i32, mut rx: Receiver, tx: Sender, reqs: mpsc::Sender<Req>, shared: ExecShared) {
    let ExecShared {
        tid,
        in_call,
        procs,
        home_req,
        me,
    } = shared;
    tid.store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
    let mut fds = match FdTable::new(pid) {
        Ok(f) => f,
        Err(e) => {
            let _ = reqs.send(Req::Lost(format!(
                "cannot reach the deputy's descriptors: {e}"
            )));
            return;
        }
    };
    loop {
        match rx.recv() {
            Ok(ProcMsg::Call(mut c)) => {
                let (mut class, shape) = forward::shape(u64::from(c.nr), &c.args);
                if class == Class::Service
                    && shape[0] == mosix_core::syscalls::Arg::Fd
                    && fds.is_terminal(c.args[0] as i32)
                {
                    class = Class::Deputy;
                    clamp_terminal_io(&mut c);
                }
                let reply = match class {
                    Class::Service => {
                        in_call.store(true, Ordering::Relaxed);
                        let mut r = if c.ahead > 0 {
                            forward::exec_streamed(&c, &mut fds)
                        } else {
                            forward::exec_service(&c, &mut fds)
                        };
                        in_call.store(false, Ordering::Relaxed);
                        if r.ret == -(libc::EINTR as i64) {
                            // Interrupted for a signal of the process: let its kernel decide.
                            r.ret = -i64::from(ERESTARTSYS);
                        }
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
                                Some((ret, outs)) => {
                                    fds.after_deputy_call(u64::from(c.nr), &c.args, ret);
                                    Reply { ret, outs, io: 0 }
                                }
                                None => return,
                            }
                        }
                        Err(e) => Reply {
                            ret: e,
                            outs: Vec::new(),
                            io: 0,
                        },
                    },
                    _ => Reply {
                        ret: -(libc::ENOSYS as i64),
                        outs: Vec::new(),
                        io: 0,
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
            Ok(ProcMsg::MoveFailed { reason }) => {
                let _ = reqs.send(Req::MoveFailed(reason));
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
