//! A guest leaving: frozen again (a call it was stopped in runs again wherever it goes) and
//! sent home over its connection to home, or shipped on to another node directly, reporting
//! `Moved` (or `MoveFailed`, thawing it here) to home.

use mosix_core::metrics;
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::moves::MoveFailure;
use mosix_core::proto::ProcMsg;
use tracing::{info, warn};

use super::supervisor::{End, Supervisor};
use super::{ERESTARTNOINTR, MOVE_ON_ANSWER};
use crate::freezer::freeze::{self, FreezeOptions};
use crate::kernel::ptrace;
use crate::kernel::seccomp::Notif;
use crate::link;
use crate::split::failure;
use crate::split::live::Precopy;
use crate::split::ship;

impl Supervisor {
    /// Freezes the process and sends it home. With `pending`, the process is stopped in that
    /// notification: the call is answered "restart" and so runs again, natively, at home.
    /// Returns whether home took it.
    pub(super) fn go_home(&mut self, pending: Option<Notif>) -> Result<bool, End> {
        let pid = self.pid();
        if let Some(d) = &mut self.dfsa {
            d.count_native();
        }
        self.stopped();
        let mut pending = pending;
        let early = self
            .stop_early(&mut pending)
            .map_err(|e| End::HomeLost(format!("stopping it to go home failed: {e}")))?;
        // Writes behind go, bytes read ahead go back: home's descriptors are as the process
        // left them.
        // The offsets of its files here go home: the deputy's descriptors are the ones that
        // stay (not on an exit, where they close).
        self.offsets_home()?;
        self.settle_io()?;
        self.report_unheard()?;
        let begun = Instant::now();
        let mut precopy = if early.is_some() {
            None
        } else {
            self.precopy_home(&mut pending)?
        };
        let stopped_at = Instant::now();
        let frozen = self
            .freeze_after(early, pending)
            .map_err(|e| End::HomeLost(format!("freezing it to go home failed: {e}")))?;
        let sent = match &mut precopy {
            Some(p) => p
                .finish_sending(&frozen)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => frozen.send(&self.tx).map_err(|e| e.to_string()),
        };
        if let Err(e) = sent {
            let _ = frozen.thaw();
            return Err(End::HomeLost(format!("sending it home failed: {e}")));
        }
        if let Some(p) = &precopy {
            info!(
                "{} (pid {} at node {}): {} MiB sent home while it ran ({} rounds), the rest while stopped for {:.1} ms",
                self.h.comm,
                self.h.cached.pid,
                self.h.home,
                p.bytes >> 20,
                p.rounds + 1,
                stopped_at.elapsed().as_secs_f64() * 1e3
            );
        }
        // Signals that can no longer be delivered here: those that stopped it on the way
        // into the freeze, and those home forwards until it has the process back. Home gets
        // them back once the process runs there.
        let mut undelivered: Vec<i32> = frozen.pending.iter().map(|s| s.raw()).collect();
        // Home has every page once the image is sent; what is left is finishing its restore.
        // Should it not answer in time, the copy here is dropped as when the connection
        // breaks: home, if it does take the process, runs the one copy there is.
        let deadline = Instant::now() + ship::START_ANSWER;
        let late = || {
            End::HomeLost(format!(
                "home did not say within {} s whether it took it back",
                ship::START_ANSWER.as_secs()
            ))
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.rx.socket().set_read_timeout(Some(left)).is_err() {
                frozen.tracee.kill();
                return Err(late());
            }
            match self.rx.recv() {
                Ok(ProcMsg::Started { .. }) => {
                    metrics::global().moved(
                        metrics::Move::GuestOut,
                        frozen.header.total_bytes,
                        begun.elapsed().as_secs_f64(),
                    );
                    info!(
                        "{} (pid {pid}) went home to node {}",
                        self.h.comm, self.h.home
                    );
                    self.env.procs.move_ended(pid, Ok(()));
                    frozen.tracee.kill();
                    let _ = self.child.wait();
                    for sig in undelivered {
                        let _ = self.tx.send(&ProcMsg::Signal { sig });
                    }
                    return Ok(true);
                }
                Ok(ProcMsg::Refused { failure }) => {
                    let _ = self.rx.socket().set_read_timeout(None);
                    warn!("home did not take {} back: {failure}", self.h.comm);
                    metrics::global().move_failed(metrics::Move::GuestOut, failure.kind());
                    self.env.procs.move_ended(pid, Err(failure));
                    let _ = frozen.thaw();
                    return Ok(false);
                }
                Ok(ProcMsg::Signal { sig } | ProcMsg::OrphanedStop { sig }) => {
                    undelivered.push(sig)
                }
                Ok(ProcMsg::ComeHome { .. } | ProcMsg::MoveTo { .. } | ProcMsg::Stats { .. }) => {}
                Ok(other) => {
                    frozen.tracee.kill();
                    return Err(End::HomeLost(format!(
                        "home sent {other:?} while taking it back"
                    )));
                }
                // The deadline passed (a frame cut by it cannot be read on: give up).
                Err(mosix_core::proto::FrameError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    frozen.tracee.kill();
                    return Err(late());
                }
                Err(e) => {
                    frozen.tracee.kill();
                    return Err(End::HomeLost(format!(
                        "the connection to its home broke ({e})"
                    )));
                }
            }
        }
    }

    /// Stops the process and freezes it for leaving. With `pending`, the process is stopped in
    /// that notification, answered "restart": the call runs again wherever it goes (or here,
    /// should it stay).
    pub(super) fn freeze_to_leave(
        &mut self,
        pending: Option<Notif>,
    ) -> Result<freeze::Frozen, MoveFailure> {
        let pid = self.pid();
        let (t, sigs) = self.stop_to_leave(pending)?;
        freeze::freeze_stopped(t, sigs, &self.leave_options())
            .map_err(|e| failure::traced(pid, "freezing it", &e))
    }

    /// Stops the process now if it may not run on while it leaves ([`Self::may_run_while_sent`]):
    /// the offsets of its native files are carried home after this, and then cannot move.
    fn stop_early(
        &mut self,
        pending: &mut Option<Notif>,
    ) -> Result<Option<(ptrace::Stopped, Vec<ptrace::Sig>)>, MoveFailure> {
        if self.may_run_while_sent() {
            return Ok(None);
        }
        self.stop_to_leave(pending.take()).map(Some)
    }

    /// Freezes the process to leave: stopped already by [`Self::stop_early`], or now.
    fn freeze_after(
        &mut self,
        early: Option<(ptrace::Stopped, Vec<ptrace::Sig>)>,
        pending: Option<Notif>,
    ) -> Result<freeze::Frozen, MoveFailure> {
        match early {
            Some((t, sigs)) => {
                let pid = self.pid();
                freeze::freeze_stopped(t, sigs, &self.leave_options())
                    .map_err(|e| failure::traced(pid, "freezing it", &e))
            }
            None => self.freeze_to_leave(pending),
        }
    }

    /// Stops the process (traced with its filter suspended, so that calls made in it do not
    /// come to us), with `pending` answered "restart"; the signals that arrived meanwhile.
    fn stop_to_leave(
        &mut self,
        pending: Option<Notif>,
    ) -> Result<(ptrace::Stopped, Vec<ptrace::Sig>), MoveFailure> {
        let pid = self.pid();
        // A call its trap sent back is made again first (the process sleeps in the trap's
        // request until then, and would not stop).
        self.sent_back();
        let running = ptrace::seize(pid, ptrace::SUSPEND_SECCOMP)
            .map_err(|e| failure::traced(pid, "seizing it", &e))?;
        running
            .request_interrupt()
            .map_err(|e| failure::traced(pid, "stopping it", &e))?;
        if let Some(n) = pending {
            // "Restart": the call runs again where the process goes; or the result of a call
            // that already ran at home, which the process takes with it (the interrupt asked
            // for above stops it before its next instruction).
            let answer = self.leave_answer.take().unwrap_or(ERESTARTNOINTR);
            let _ = self.listener.reply(n.id, answer);
        }
        let mut sigs = Vec::new();
        let t = running
            .wait_interrupt(|s, _| sigs.push(s))
            .map_err(|e| failure::traced(pid, "stopping it", &e))?;
        let mem = &self.mem;
        let at_syscall = |rip: u64| {
            let mut b = [0u8; 2];
            mem.read(rip, &mut b).is_ok() && b == [0x0f, 0x05]
        };
        unmark(&t, at_syscall).map_err(|e| failure::traced(pid, "reading its registers", &e))?;
        Ok((t, sigs))
    }

    /// How its image is made here.
    fn leave_options(&self) -> FreezeOptions {
        FreezeOptions {
            home: self.h.home,
            nmigs: self.h.nmigs,
            locked: self.h.locked,
            under_filter: true,
            cached: Some(self.h.cached.clone()),
            creds: Some(self.h.creds.clone()),
        }
    }

    /// Whether the process may run on here while its memory is sent (a live move). Not with
    /// files whose I/O runs natively (their offsets went home before the move began, and would
    /// move on here), nor with the result of a call home that made a descriptor at K or above
    /// (a native call on it here would not reach it): it leaves stopped.
    fn may_run_while_sent(&self) -> bool {
        self.leave_answer.is_none()
            && (self.native_from.is_none() || self.dfsa.as_ref().is_none_or(|d| d.fds().is_empty()))
    }

    /// Going home live, when the process is large enough (`[moves] live_above_mib`): its first
    /// image and rounds of what it writes go home over its own connection while it runs (as
    /// [`Supervisor::precopy_to`]; home keeps the deputy stopped meanwhile). `None`: it goes
    /// the plain way (small, or this node cannot track writes). A failure once something was
    /// sent ends the connection, as a plain move home cut in the middle does.
    fn precopy_home(&mut self, pending: &mut Option<Notif>) -> Result<Option<Precopy>, End> {
        if !std::mem::take(&mut self.live_asked) && !self.env.live.wanted(self.pid())
            || !self.may_run_while_sent()
        {
            return Ok(None);
        }
        let home = self.h.home;
        let (t, sigs) = self
            .stop_to_leave(pending.take())
            .map_err(|e| End::HomeLost(format!("stopping it to go home failed: {e}")))?;
        let mut sent = false;
        let opts = self.leave_options();
        match Precopy::start_over(t, sigs, &opts, home, self.tx.clone(), &mut sent) {
            Ok(p) => Ok(Some(p)),
            Err(e) if !sent && matches!(e, MoveFailure::Kernel { .. }) => {
                info!("{}: no live move home ({e}); it goes stopped", self.h.comm);
                Ok(None)
            }
            Err(e) => Err(End::HomeLost(format!(
                "sending it home while it ran failed: {e}"
            ))),
        }
    }

    /// A direct move to `to` that sends the memory while the process runs (as from home, see
    /// [`crate::split::live`]), when it is large enough (`[moves] live_above_mib`): the first
    /// image and rounds of what it writes go to `to` now; `None` when it moves the plain way
    /// (small, or this node cannot track writes). While the rounds go, this thread serves no
    /// call: the process computes on, and waits at its first call that needs us until the
    /// final image is sent (no longer than a plain move stops it). `Err`: the move failed,
    /// the process runs on here.
    fn precopy_to(
        &mut self,
        to: NodeId,
        token: u64,
        pending: &mut Option<Notif>,
    ) -> Result<Option<Precopy>, MoveFailure> {
        if !std::mem::take(&mut self.live_asked) && !self.env.live.wanted(self.pid())
            || !self.may_run_while_sent()
        {
            return Ok(None);
        }
        let (t, sigs) = self.stop_to_leave(pending.take())?;
        let ctx = link::snapshot(&self.env.link);
        match Precopy::start(t, sigs, &self.leave_options(), to, &ctx, None, Some(token)) {
            Ok(p) => Ok(Some(p)),
            Err(e @ MoveFailure::Kernel { .. }) => {
                info!("{}: no live move ({e}); it moves stopped", self.h.comm);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Home asked it to move on to node `to` directly (see `Deputy::start_relay` at home):
    /// freezes it, ships it there with `token`, and once it runs there reports `Moved` to home
    /// and ends; on any failure before that, thaws it here and reports `MoveFailed`.
    /// Returns whether it left.
    pub(super) fn move_on(
        &mut self,
        to: NodeId,
        token: u64,
        pending: Option<Notif>,
    ) -> Result<bool, End> {
        let comm = self.h.comm.clone();
        // Its last native file calls here count for this node (as on the way home).
        if let Some(d) = &mut self.dfsa {
            d.count_native();
        }
        self.stopped();
        let ceiling = self.env.procs.take_ceiling(self.pid(), to);
        let failed = |s: &mut Self, failure: MoveFailure| {
            warn!("{comm} stays here: the move to node {to} failed: {failure}");
            metrics::global().move_failed(metrics::Move::GuestOut, failure.kind());
            s.env.procs.move_ended(s.pid(), Err(failure.clone()));
            match s.tx.send(&ProcMsg::MoveFailed { failure }) {
                Ok(()) => Ok(false),
                Err(e) => Err(End::HomeLost(format!(
                    "the connection to its home broke ({e})"
                ))),
            }
        };
        if to == self.env.me || to == self.h.home {
            let me = self.env.me;
            return failed(
                self,
                failure::refused(me, format!("node {to} is not another remote node")),
            );
        }
        let mut pending = pending;
        let early = match self.stop_early(&mut pending) {
            Ok(e) => e,
            Err(e) => return failed(self, e),
        };
        // The offsets of its files here go home: the deputy's descriptors are the ones that
        // stay (not on an exit, where they close).
        self.offsets_home()?;
        self.settle_io()?;
        let started = Instant::now();
        let precopy = if early.is_some() {
            None
        } else {
            match self.precopy_to(to, token, &mut pending) {
                Ok(p) => p,
                Err(e) => return failed(self, e),
            }
        };
        let live = precopy.as_ref().map(|p| (p.rounds, p.bytes));
        let stopped_at = Instant::now();
        let mut frozen = match self.freeze_after(early, pending) {
            Ok(f) => f,
            Err(e) => return failed(self, e),
        };
        frozen.header.rejoin = Some(token);
        // Errors of writes behind the program has not heard go with it.
        frozen.header.write_errors = self.io.take_errors();
        frozen.header.ceiling = ceiling;
        // A process that did its file I/O natively here may do so at the next node too, on
        // the numbers home does not use now.
        frozen.header.native_io = None;
        if self.native_from.is_some() && matches!(self.table_known(), Ok(true)) {
            frozen.header.native_io = self.dfsa.as_ref().map(|d| {
                mosix_core::image::NativeIo::of_table(&d.table.numbers(), 1, d.table.umask())
            });
        }
        let ctx = link::snapshot(&self.env.link);
        let shipped = match precopy {
            Some(p) => p.finish(&frozen),
            None => ship::ship(&frozen, to, &ctx, Some(MOVE_ON_ANSWER), None),
        };
        match shipped {
            Ok(shipped) => {
                let m = metrics::global();
                m.moved(
                    metrics::Move::GuestOut,
                    shipped.bytes + live.map_or(0, |(_, b)| b),
                    started.elapsed().as_secs_f64(),
                );
                if let Some((rounds, bytes)) = live {
                    m.live_migrations.inc();
                    info!(
                        "{comm} (pid {} at node {}): {} MiB sent to node {to} while it ran ({} rounds), {} KiB while stopped; stopped {:.1} ms",
                        self.h.cached.pid,
                        self.h.home,
                        bytes >> 20,
                        rounds + 1,
                        shipped.bytes >> 10,
                        stopped_at.elapsed().as_secs_f64() * 1e3
                    );
                }
                let rpid = shipped.pid;
                self.env.procs.move_ended(self.pid(), Ok(()));
                frozen.tracee.kill();
                let _ = self.child.wait();
                let signals = frozen.pending.iter().map(|s| s.raw()).collect();
                let _ = self.tx.send(&ProcMsg::Moved { signals });
                info!(
                    "{comm} (pid {} at node {}) moved on to node {to} as pid {rpid}: {} MiB in {:.0} ms",
                    self.h.cached.pid,
                    self.h.home,
                    frozen.header.total_bytes >> 20,
                    started.elapsed().as_secs_f64() * 1e3
                );
                // Home switches to the new node's connection and closes this one: wait for
                // that, so that `Moved` is read before the connection goes.
                self.tx.close_write();
                let _ = self
                    .rx
                    .socket()
                    .set_read_timeout(Some(Duration::from_secs(5)));
                while self.rx.recv().is_ok() {}
                Ok(true)
            }
            Err(reason) => {
                self.io.put_errors(&frozen.header.write_errors);
                let _ = frozen.thaw();
                failed(self, reason)
            }
        }
    }
}

/// A call made again ([`crate::kernel::again`]) that the stop cut short is restarted where the
/// process goes as the plain call: the mark (the x32 bit) comes off its number, which only a
/// tree's filter reads (elsewhere it would be an x32 call). The number is in `orig_rax` when the
/// call was under way, and in `rax` when the process stopped just before making it again (its
/// `rip` then on the `syscall` instruction itself; `at_syscall` reads it).
fn unmark(t: &ptrace::Stopped, at_syscall: impl Fn(u64) -> bool) -> ptrace::Result<()> {
    use crate::kernel::seccomp::AGAIN;
    use mosix_core::image::Regs;
    let marked = |v: u64| {
        v <= u64::from(u32::MAX)
            && v & u64::from(AGAIN) != 0
            && mosix_core::syscalls::tree_native(v & !u64::from(AGAIN))
    };
    let mut r = t.regs()?;
    let mut changed = false;
    if marked(r.0[Regs::ORIG_RAX]) {
        r.0[Regs::ORIG_RAX] &= !u64::from(AGAIN);
        changed = true;
    }
    if marked(r.0[Regs::RAX]) && at_syscall(r.0[Regs::RIP]) {
        r.0[Regs::RAX] &= !u64::from(AGAIN);
        changed = true;
    }
    if changed {
        t.set_regs(&r)?;
    }
    Ok(())
}
