//! The deputy's signals and job control: the signals that stop it are forwarded to the remote
//! (or taken as our own nudges), a stop of the process is mirrored by a stop of the deputy by
//! the same signal, and a `SIGCONT` that wakes it puts it back to sleep, catching again.

use std::time::Instant;

use tracing::{debug, warn};

use mosix_core::proto::ProcMsg;

use super::KICK_FOR_SIGNAL;
use super::state::{Deputy, Job, Outbox, TracerEnd};
use crate::kernel::inject::{self, Held, Release};
use crate::kernel::ptrace::{self, Sig, Stop, Stopped};
use crate::split::handle::Nudge;

/// What to do with a signal that stops the deputy while we wait for something else (an
/// interrupt, an injected call): forward it, unless it is our own nudge.
pub(super) fn forwarder<'a>(
    out: &'a mut Outbox,
    nudge: &'a Nudge,
) -> impl FnMut(Sig, &Stopped) + 'a {
    move |s, st| {
        if !nudge.is(s, st) {
            out.forward(s);
        }
    }
}

/// A `struct sigaction` (kernel layout: handler, flags, restorer, mask) with this handler and
/// nothing else; 0 is the default action.
pub(super) fn sigaction_bytes(handler: u64) -> [u8; 32] {
    let mut sa = [0u8; 32];
    sa[..8].copy_from_slice(&handler.to_le_bytes());
    sa
}

impl Deputy {
    /// Forwards signals that stopped the deputy; notices its death.
    pub(super) fn poll_signals(&mut self) -> Option<TracerEnd> {
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
                        self.forward_signal(sig);
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

    /// Forwards a signal that hit the deputy to the remote. A stop signal of job control for a
    /// process whose group is orphaned at home goes as [`ProcMsg::OrphanedStop`]: the kernel
    /// would have discarded it here had the deputy not caught it.
    pub(super) fn forward_signal(&mut self, sig: Sig) {
        let stop = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig.raw());
        if stop && group_orphaned(self.pid) {
            self.out.forward_orphaned_stop(sig);
        } else {
            self.out.forward(sig);
        }
    }

    /// The deputy vanished under us: the process ends everywhere.
    pub(super) fn deputy_lost(&mut self) -> TracerEnd {
        let _ = self.out.tx.send(&ProcMsg::Kill);
        TracerEnd::Gone
    }

    /// The process stopped (job control) by `sig`: the deputy stops by the same signal, so
    /// its parent's `wait(WUNTRACED)` reports it and a shell prints "Stopped". The deputy
    /// catches every signal, so the signal's default action is put back for the stop, and
    /// the catching handler again when `SIGCONT` wakes it ([`Deputy::catch_again`]). The stop
    /// itself is a group stop that we leave in place with `PTRACE_LISTEN`.
    pub(super) fn job_stop(&mut self, sig: Sig) -> ptrace::Result<()> {
        debug!("deputy {}: its process stopped by {sig}", self.pid);
        let t = self.stop()?;
        let t = if sig.raw() == libc::SIGSTOP {
            t
        } else {
            self.set_action(t, sig, 0)?
        };
        self.sleep(t)?;
        self.job = Job::Stopping(sig);
        let pid = self.pid;
        sig.send_to(pid).map_err(|e| ptrace::Error::Unexpected {
            pid,
            what: format!("sending it {sig}: {e}"),
        })
    }

    /// Puts back the catching handler of `sig` in a deputy woken from a job-control stop, and
    /// puts it back to sleep.
    fn catch_again(&mut self, t: Stopped, sig: Sig) -> ptrace::Result<()> {
        let t = if sig.raw() == libc::SIGSTOP {
            t
        } else {
            self.set_action(t, sig, self.area.start)?
        };
        self.sleep(t)
    }

    /// Sets the handler of `sig` in the deputy (0: the default action).
    pub(super) fn set_action(
        &mut self,
        t: Stopped,
        sig: Sig,
        handler: u64,
    ) -> ptrace::Result<Stopped> {
        if let Err(e) = self
            .mem
            .write(self.area.scratch(), &sigaction_bytes(handler))
        {
            self.running = Some(t.cont(None)?);
            return Err(e);
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
            Ok(_) => held.disarm(),
            Err(e) => {
                if let Some(t) = held.into_inner() {
                    self.running = t.cont(None).ok();
                }
                Err(e)
            }
        }
    }
}

/// Whether the process group of `pid` is orphaned: no member has a parent in another group of
/// the same session (POSIX; the kernel then discards default-action stop signals sent to it).
/// In doubt (its `/proc` cannot be read), not orphaned: the signal is forwarded as it is.
fn group_orphaned(pid: i32) -> bool {
    let Ok(me) = procfs::process::Process::new(pid).and_then(|p| p.stat()) else {
        return false;
    };
    let Ok(all) = procfs::process::all_processes() else {
        return false;
    };
    let stats: Vec<procfs::process::Stat> = all.flatten().filter_map(|p| p.stat().ok()).collect();
    let by_pid: std::collections::HashMap<i32, &procfs::process::Stat> =
        stats.iter().map(|s| (s.pid, s)).collect();
    !stats.iter().filter(|s| s.pgrp == me.pgrp).any(|s| {
        by_pid
            .get(&s.ppid)
            .is_some_and(|p| p.pgrp != me.pgrp && p.session == me.session)
    })
}
