//! The deputy: the original process at home, stopped under ptrace with its memory released,
//! standing in for its remote. Its tracer thread owns the ptrace relationship: it forwards the
//! signals that hit the deputy, mirrors job-control stops for the parent, runs the calls that
//! must execute inside the deputy, ends the deputy the way the process ended, and rebuilds the
//! process in it when it comes home.

use mosix_core::metrics;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::image::ImageHeader;
use mosix_core::moves::MoveFailure;
use mosix_core::proto::ProcMsg;
use tracing::{debug, info, warn};

use super::executor::{ExecShared, executor};
use super::signals::{forwarder, sigaction_bytes};
use super::state::current;
use super::state::{Deputy, Job, Outbox, Outcome, Req, TracerEnd};
use super::{HomeEnv, INTERRUPTED, KICK_FOR_SIGNAL};
use crate::freezer::freeze::Frozen;
use crate::freezer::{pages, restore};
use crate::kernel::abi::RSEQ_FLAG_UNREGISTER;
use crate::kernel::agent::Agent;
use crate::kernel::inject::{self, Held, Release};
use crate::kernel::ptrace::{self, Running, Sig, Stop, Stopped};
use crate::link::channel::{Receiver, Sender};
use crate::split::failure;
use crate::split::forward::{self, Plan};
use crate::split::handle::{ComeHomeHandle, MoveDone};
use crate::split::live::{self, TakeError};

/// How long a deputy killed at home waits for its remote to send the writes it held behind.
const FLUSH_WAIT: Duration = Duration::from_secs(10);

impl Deputy {
    /// Turns a frozen process that now runs elsewhere into its deputy: releases its memory,
    /// catches every signal, and puts it to sleep.
    pub(super) fn become_(
        f: Frozen,
        tx: Sender,
        me: NodeId,
        at: NodeId,
        (agent, agent_run): (Arc<Agent>, Running),
    ) -> ptrace::Result<Deputy> {
        let pid = f.tracee.pid();
        let area = f.area;
        let base = f.original_regs;
        // On a failure the deputy is left as it is, stopped.
        let mut t = Held::new(f.tracee, Release::Keep);
        let inj = |t: &mut Held, nr: i64, args: [u64; 6]| {
            inject::syscall(t, area.site(), &base, nr, args)
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
        f.mem.write(area.scratch(), &sigaction_bytes(area.start))?;
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
        let t = t.disarm()?;
        t.set_sigmask(0)?;
        let pause = base.for_syscall(area.site(), libc::SYS_pause as u64, [0; 6]);
        t.set_regs(&pause)?;
        let running = t.cont(None)?;
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
            agent: Arc::new(RwLock::new(agent)),
            agent_run: Some(agent_run),
            in_call: Arc::new(AtomicBool::new(false)),
            kick_until: None,
            home_req: ComeHomeHandle::new(pid, me),
            me,
            at,
            homing: false,
            job: Job::Running,
            relay: None,
            reqs: None,
        })
    }

    /// Serves the process until it ends or comes home. The move that made it a deputy (to
    /// `node`, where it runs as `rpid`) is reported done once the deputy answers requests: a
    /// `migrate PID home` right after it finds the deputy registered.
    pub(super) fn serve(
        mut self,
        rx: Receiver,
        tx: Sender,
        env: HomeEnv,
        header: ImageHeader,
        (node, rpid, done): (NodeId, u32, MoveDone),
    ) {
        let (req_tx, req_rx) = mpsc::channel::<Req>();
        let pid = self.pid;
        self.reqs = Some(req_tx);
        if let Err(e) = self.start_executor(rx, tx, node, &env) {
            warn!("cannot start the executor of process {pid}: {e}");
            let _ = self.out.tx.send(&ProcMsg::Kill);
            self.kill_deputy();
            env.procs.forget_home(pid);
            return done(Err(failure::kernel(format!(
                "process {pid} lost: cannot start its executor: {e}"
            ))));
        }
        if let Err(e) = self.unblock_agent() {
            warn!("deputy {pid}: its agent: {e}");
        }
        env.procs.register_deputy(pid, self.home_req.clone());
        env.procs.update_home(pid, |h| {
            h.at = Some(node);
            if h.frozen.is_none() {
                h.nmigs = header.nmigs;
            }
            h.moving = false;
            h.sending = None;
            h.remote_pid = Some(rpid);
            h.remote_cpu_ms = 0;
        });
        done(Ok(node));
        let end = self.tracer(req_rx, &env, &header);
        env.procs.unregister_deputy(pid);
        // A move asked while the process ended or came home is answered now.
        if let Some(ask) = self.home_req.take_move() {
            (ask.done)(Err(match end {
                TracerEnd::Home => failure::refused(
                    env.me,
                    format!("process {pid} came home meanwhile; ask again"),
                ),
                TracerEnd::Gone => MoveFailure::Gone {
                    pid: pid.unsigned_abs(),
                    detail: "it ended while the move was asked".into(),
                },
            }));
        }
        for o in self.home_req.take_offers() {
            o.refuse(env.me, format!("process {pid} is no longer away"));
        }
        match end {
            TracerEnd::Home => env.procs.update_home(pid, |h| {
                h.at = None;
                h.remote_pid = None;
                h.frozen_at = None;
                if h.frozen.take().is_none() {
                    h.nmigs += 1;
                }
                h.away_cpu_ms += h.remote_cpu_ms;
                h.remote_cpu_ms = 0;
                h.command = None;
            }),
            TracerEnd::Gone => env.procs.forget_home(pid),
        }
    }

    /// Starts the thread that reads the connection to the remote at `node` (one per
    /// connection: a direct move brings a new one). From now on a cut of that connection is
    /// waited out for `[link] resume_grace_s` (the remote reconnects).
    pub(super) fn start_executor(
        &self,
        rx: Receiver,
        tx: Sender,
        node: NodeId,
        env: &HomeEnv,
    ) -> std::io::Result<()> {
        let pid = self.pid;
        tx.resume_by_waiting(node, crate::link::snapshot(&env.link).resume_grace);
        let reqs = self
            .reqs
            .clone()
            .ok_or_else(|| std::io::Error::other("the tracer has no request channel"))?;
        let shared = ExecShared {
            agent: Arc::clone(&self.agent),
            in_call: Arc::clone(&self.in_call),
            procs: Arc::clone(&env.procs),
            home_req: self.home_req.clone(),
            me: env.me,
            at: node,
            mount: env.files.0.clone(),
        };
        std::thread::Builder::new()
            .name(format!("mosix-exec-{pid}"))
            .spawn(move || executor(pid, rx, tx, reqs, shared))
            .map(|_| ())
    }

    /// Stops the sleeping deputy, forwarding signals that arrive meanwhile.
    pub(super) fn stop(&mut self) -> ptrace::Result<Stopped> {
        let r = self
            .running
            .take()
            .ok_or_else(|| ptrace::Error::Unexpected {
                pid: self.pid,
                what: "the deputy is not running".into(),
            })?;
        r.request_interrupt()?;
        r.wait_interrupt(forwarder(&mut self.out, self.home_req.nudge()))
    }

    /// Puts a stopped deputy back to sleep.
    pub(super) fn sleep(&mut self, t: Stopped) -> ptrace::Result<()> {
        t.set_regs(&self.pause)?;
        self.running = Some(t.cont(None)?);
        Ok(())
    }

    pub(super) fn kill_deputy(&mut self) {
        if let Some(r) = self.running.take() {
            // The leader is reaped only after its other thread, the agent.
            let _ = Sig::KILL.send_to(self.pid);
            self.reap_agent();
            r.kill();
        }
    }

    /// Waits until the agent thread has ended (the process is ending) and forgets it. The
    /// deputy itself cannot be reaped before: a traced thread group leader waits for its
    /// traced threads.
    pub(super) fn reap_agent(&mut self) {
        if let Some(mut r) = self.agent_run.take() {
            while let Ok(s) = r.wait() {
                match s.cont(None) {
                    Ok(next) => r = next,
                    Err(_) => break,
                }
            }
        }
        current(&self.agent).mark_dead();
    }

    /// Lets the agent take signals: the deputy serves from now on.
    fn unblock_agent(&mut self) -> ptrace::Result<()> {
        if let Some(r) = self.agent_run.take() {
            self.agent_run = Some(Agent::unblock(r)?);
        }
        Ok(())
    }

    /// Forwards the signals that stopped the agent (they are the process's, or our nudges),
    /// keeping a call they interrupted from being restarted here: it ends `-ERESTARTSYS` and
    /// the remote kernel decides, as for a native call. Notices the agent's end.
    fn poll_agent(&mut self) -> bool {
        loop {
            let Some(r) = self.agent_run.take() else {
                return false;
            };
            if r.has_ended() {
                // Not reaped: see `Deputy::killed_at_home`.
                self.agent_run = Some(r);
                return true;
            }
            let s = match r.try_wait() {
                Err(r) => {
                    self.agent_run = Some(r);
                    return false;
                }
                Ok(Ok(s)) => s,
                Ok(Err(_)) => {
                    current(&self.agent).mark_dead();
                    return false;
                }
            };
            let resumed = match s.stop {
                // Our own job-control stop landed on the agent: deliver it, the whole deputy
                // stops for its parent.
                Stop::Signal(sig) if self.job == Job::Stopping(sig) => s.cont(Some(sig)),
                Stop::Signal(sig) => {
                    if !self.home_req.nudge().is(sig, &s) {
                        self.forward_signal(sig);
                    }
                    let _ = inject::dont_restart(&s);
                    s.cont(None)
                }
                // In the deputy's group stop with the rest of it, until SIGCONT.
                Stop::Group(_) => s.listen(),
                Stop::Event(_) | Stop::Syscall => s.cont(None),
            };
            match resumed {
                Ok(r) => self.agent_run = Some(r),
                Err(_) => current(&self.agent).mark_dead(),
            }
        }
    }

    /// The deputy was killed at home (`kill -9`: its agent ended without being asked, which only
    /// a death of the whole process does). Its end is not seen by anyone yet: the leader of a
    /// thread group is reaped only after its traced threads, and the agent waits, unreaped,
    /// here. Meanwhile the remote is told, kills its copy and sends the writes it still held
    /// behind; the executor writes them on its duplicates ([`crate::split::keeper`]). Once the
    /// remote is done (its connection ends) or [`FLUSH_WAIT`] has passed, the agent is reaped
    /// and the process's death shows: its parent sees it only after every byte the program
    /// was told it wrote is in its file.
    fn killed_at_home(&mut self, reqs: &mpsc::Receiver<Req>) -> TracerEnd {
        let pid = self.pid;
        current(&self.agent).mark_dead();
        let _ = self.out.tx.send(&ProcMsg::Kill);
        let deadline = Instant::now() + FLUSH_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match reqs.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(Req::Call(_, reply)) => {
                    let _ = reply.send((-i64::from(libc::EIO), Vec::new()));
                }
                Ok(Req::Lost(_) | Req::Exit(_) | Req::Died(_) | Req::Image(..)) => break,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    warn!(
                        "process {pid} killed at home: its node did not finish its writes within {} s",
                        FLUSH_WAIT.as_secs()
                    );
                    break;
                }
            }
        }
        self.reap_agent();
        if let Some(r) = self.running.take() {
            // Its agent ended alone (a filter of the process's own killed the thread that made
            // a call for it): the process, which cannot go on without it, ends too.
            let _ = Sig::KILL.send_to(pid);
            let _ = r.wait();
        }
        info!("process {pid} was killed at home; its writes are in");
        TracerEnd::Gone
    }

    /// After a call run inside the deputy: if it changed the deputy's credentials (a forwarded
    /// `setuid`; they are per thread), the agent's are stale, and a new agent takes over. `t` is
    /// the deputy, stopped; the agent is idle (its executor waits for this call).
    fn renew_agent_if_needed(&mut self, t: Stopped) -> Option<Stopped> {
        let agent = current(&self.agent);
        if !agent.alive() || agent.creds_match() {
            return Some(t);
        }
        debug!(
            "deputy {}: its credentials changed; a new agent takes over",
            self.pid
        );
        if let Some(r) = self.agent_run.take() {
            let out = &mut self.out;
            let nudge = self.home_req.nudge();
            agent.end(r, |sig, st| {
                if !nudge.is(sig, st) {
                    out.forward(sig);
                }
            });
        }
        let mut held = Held::new(t, Release::Keep);
        if let Err(e) = agent.unmap(&mut held, self.area.site(), &self.pause) {
            warn!("deputy {}: unmapping its old agent's region: {e}", self.pid);
        }
        let started = Agent::spawn(&mut held, &self.area, &self.pause, &self.mem).and_then(|a| {
            let r = Agent::unblock(a.trace()?)?;
            Ok((a, r))
        });
        match started {
            Ok((a, r)) => {
                *self.agent.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(a);
                self.agent_run = Some(r);
            }
            // Forwarded calls then fail (EIO) rather than run with stale rights.
            Err(e) => warn!("deputy {}: no new agent: {e}", self.pid),
        }
        held.into_inner()
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
            if self.relay.is_none()
                && let Some(live) = self.home_req.take()
            {
                self.start_homing(live);
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
                    if self.relay.is_none()
                        && let Some(live) = self.home_req.take()
                    {
                        self.start_homing(live);
                    }
                    if self.homing || self.relay.is_some() {
                        self.home_req.set_in_deputy_call(false);
                        let _ = reply.send((INTERRUPTED, Vec::new()));
                        continue;
                    }
                    let mut lost = false;
                    let out = match self.stop() {
                        Ok(t) => {
                            let (t, (ret, outs)) = self.run_in_deputy(t, *plan);
                            let t = t.and_then(|t| self.renew_agent_if_needed(t));
                            match t {
                                Some(t) => {
                                    if let Err(e) = self.sleep(t) {
                                        warn!("deputy {pid}: {e}");
                                    }
                                }
                                None => lost = true,
                            }
                            (ret, outs)
                        }
                        Err(e) => {
                            lost = matches!(e, ptrace::Error::Died(_));
                            if !lost {
                                warn!("deputy {pid}: {e}");
                            }
                            (-(libc::EIO as i64), Vec::new())
                        }
                    };
                    if lost {
                        // Killed at home while the call ran there (kill -9 of a process
                        // blocked in accept, say): every write it made before the call is
                        // done (they went first); its copy away must die too.
                        self.home_req.set_in_deputy_call(false);
                        let _ = reply.send(out);
                        info!("process {pid} was killed at home during a call it made there");
                        return self.killed_at_home(&reqs);
                    }
                    self.home_req.set_in_deputy_call(false);
                    // ComeHome (or MoveTo) goes out before the reply, so the remote knows why
                    // a call was interrupted.
                    if self.relay.is_none()
                        && let Some(live) = self.home_req.take()
                    {
                        self.start_homing(live);
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
                    metrics::global().lost(metrics::Lost::Link);
                    warn!(
                        pid,
                        reason = "link-lost",
                        "process {pid} ({}) on node {} lost: {why}; it is killed at home",
                        header.comm,
                        env.procs.home(pid).at.map_or(0, NodeId::get)
                    );
                    self.kill_deputy();
                    return TracerEnd::Gone;
                }
                Ok(Req::Image(h, rx, live)) => {
                    // It left for home on its own before it saw the move.
                    if self.relay.is_some() {
                        self.relay_failed(failure::refused(env.me, "it came home first"), env);
                    }
                    let begun = std::time::Instant::now();
                    return match self.come_home(&h, rx, live) {
                        Ok(()) => {
                            // A frozen process continuing is no move between nodes.
                            if self.at != env.me {
                                metrics::global().moved(
                                    metrics::Move::Home,
                                    h.total_bytes,
                                    begun.elapsed().as_secs_f64(),
                                );
                            }
                            TracerEnd::Home
                        }
                        Err(failure) => {
                            let m = metrics::global();
                            m.move_failed(metrics::Move::Home, failure.kind());
                            m.lost(metrics::Lost::ComingHome);
                            warn!("process {pid} could not come home: {failure}; it is lost");
                            let _ = self.out.tx.send(&ProcMsg::Refused { failure });
                            self.kill_deputy();
                            TracerEnd::Gone
                        }
                    };
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.poll_agent() {
                        return self.killed_at_home(&reqs);
                    }
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

    /// Tells the remote to come home. Until the image arrives (or the process dies), forwarded
    /// calls are interrupted or refused with `-ERESTARTSYS`: one blocked here would hold the
    /// move up for as long as it blocks.
    pub(super) fn start_homing(&mut self, live: bool) {
        let _ = self.out.tx.send(&ProcMsg::ComeHome { live });
        self.homing = true;
        self.kick_until = Some(Instant::now() + Duration::from_secs(3600));
    }

    /// Interrupts the executor if it is blocked in a forwarded call and [`Deputy::kick_until`]
    /// says so. The interrupted call is answered `-ERESTARTSYS`. Sent again at every turn of
    /// the tracer's loop while it applies: a signal that lands just before the executor enters
    /// its blocking call is lost (the handler runs, then the call blocks), so one is not
    /// enough. An extra interrupt costs at most a re-sent call.
    pub(super) fn kick(&mut self) {
        let Some(until) = self.kick_until else { return };
        if Instant::now() > until {
            self.kick_until = None;
            return;
        }
        let agent = current(&self.agent);
        if self.in_call.load(Ordering::Relaxed) && agent.alive() {
            self.home_req.nudge().send_to(agent.tid());
        }
    }

    fn run_in_deputy(&mut self, t: Stopped, plan: Plan) -> (Option<Stopped>, Outcome) {
        let placed = match forward::place(&plan, self.area.scratch(), self.area.scratch_len(), 16) {
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
            self.reap_agent();
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
            self.reap_agent();
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

    /// Takes the process back into the deputy: its image `h` and its pages from `rx`. A live
    /// move (`live`: `h` is the first image) sends rounds of pages and then the final image
    /// meanwhile; the deputy is stopped all along (the remote serves no call while it sends).
    fn come_home(
        &mut self,
        h: &ImageHeader,
        mut rx: Receiver,
        live: bool,
    ) -> Result<(), MoveFailure> {
        let pid = self.pid;
        // Stopped by job control while away (or being stopped as it was asked home): it must be
        // stopped at home too. A group stop survives the detach below; a stop signal still on
        // its way into the deputy may not (the stop that follows takes it), so it is sent again
        // after the detach: to a process already stopped it only waits, and the SIGCONT that
        // wakes it discards it.
        let job_stop = match self.job {
            Job::Stopping(sig) | Job::Stopped(sig) => Some(sig),
            Job::Running => None,
        };
        // The agent goes first (its region goes with the rest of the deputy's mappings): the
        // process comes back with its own threads only.
        if let Some(r) = self.agent_run.take() {
            let out = &mut self.out;
            let nudge = self.home_req.nudge();
            current(&self.agent).end(r, |sig, st| {
                if !nudge.is(sig, st) {
                    out.forward(sig);
                }
            });
        }
        let t = self
            .stop()
            .map_err(|e| failure::kernel(format!("stopping the deputy: {e}")))?;
        // On a failure the deputy is killed (see `Restorer`).
        let mut rest = restore::prepare(t, h, Some(self.area))
            .map_err(|e| failure::traced(pid, "preparing the deputy", &e))?;
        let last;
        let h = if live {
            match live::take_rounds(&mut rx, h, &mut rest) {
                Ok((now, _)) => {
                    last = now;
                    &*last
                }
                Err(TakeError::Reshape(e)) => {
                    rest.kill();
                    return Err(failure::traced(pid, "reshaping the deputy", &e));
                }
                Err(TakeError::Pages(e)) => {
                    rest.kill();
                    return Err(failure::pages(self.me, self.at, e));
                }
            }
        } else {
            h
        };
        if let Err(e) = pages::receive(&mut rx, h, rest.pages()) {
            rest.kill();
            return Err(failure::pages(self.me, self.at, e));
        }
        let (t, _) = rest
            .finish(h, None)
            .map_err(|e| failure::traced(pid, "restoring", &e))?;
        t.detach(None)
            .map_err(|e| failure::traced(pid, "letting it run", &e))?;
        if let Some(sig) = job_stop {
            let _ = sig.send_to(self.pid);
        }
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
