//! The supervisor of a guest: waits on the filter's listener and on the connection to home,
//! answers cached calls, forwards the others home (with read-ahead and write-behind), maps home
//! files it needs, delivers signals, mirrors job-control stops, reports statistics, and sends
//! the process home for calls only home can run.

use std::os::fd::AsRawFd;
use std::process::Child;
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::image::ImageHeader;
use mosix_core::proto::{ProcMsg, Reply};
use mosix_core::syscalls::Class;
use tracing::{debug, warn};

use super::{EFAULT, EINVAL, ENOSYS, ERESTARTSYS, GuestEnv, STOP_WATCH};

/// How long, beyond the grace of a cut, a guest that ended or left waits for home to confirm
/// its last message.
const SETTLE_MORE: Duration = Duration::from_secs(5);
/// How long a process killed at home may take to send its writes behind home.
const FLUSH_AFTER_KILL: Duration = Duration::from_secs(8);
/// How long (ms) the supervisor's thread waits for the next call as the process's owner after
/// path calls, before it is root again (see `supervise`).
const STAY_MS: i32 = 1;
use crate::kernel::ptrace::{Mem, Sig};
use crate::kernel::seccomp::{Listener, Notif};
use crate::link::channel::{Receiver, Sender};
use crate::split::forward::{self, Marshalled};
use crate::split::iocache::{IoCache, ReadPlan, WritePlan};

pub(super) struct Supervisor {
    pub(super) env: GuestEnv,
    /// Home asked it to move on to this node, with this token.
    pub(super) move_to: Option<(NodeId, u64)>,
    pub(super) h: ImageHeader,
    /// The copy of the last file mapping, at the descriptor's number.
    pub(super) stale_map_fd: Option<super::mapping::StaleMap>,
    /// What replaces it.
    pub(super) placeholder: std::fs::File,
    pub(super) tx: Sender,
    pub(super) rx: Receiver,
    pub(super) listener: Listener,
    pub(super) child: Child,
    pub(super) mem: Mem,
    pub(super) come_home: bool,
    /// The move home asked for (come home or move on) was asked live (`migrate --live`): the
    /// memory goes while the process runs whatever its size.
    pub(super) live_asked: bool,
    /// After a signal, until when to look for a job-control stop (see [`Supervisor::stopped`]).
    pub(super) watch_stop_until: Option<Instant>,
    /// `SIGCONT`s from home delivered so far.
    pub(super) conts: u32,
    /// Read-ahead and write-behind.
    pub(super) io: IoCache,
    /// Bytes of home files copied here for the process's mappings so far (see
    /// `mapping::MAPPED_COPY_BUDGET`).
    pub(super) mapped_copy: u64,
    /// Its files of this node, opened here (`None`: no MFS here).
    pub(super) dfsa: Option<super::dfsa::Dfsa>,
    /// Home ended it ([`ProcMsg::Kill`]): home expects nothing more.
    pub(super) killed_by_home: bool,
    /// The filter lets reads, writes and seeks run natively on these descriptor numbers (from
    /// [`ImageHeader::native_io`]): every such number here is free or a file opened here, and
    /// a call that would put anything else there takes the process home.
    pub(super) native_from: Option<mosix_core::image::NativeIo>,
    /// The answer the call it leaves in gets when the process is stopped to leave (`None`:
    /// "restart", the call runs again where it goes). Set for a call that ran at home and
    /// whose result the process must have, but only at home.
    pub(super) leave_answer: Option<i64>,
    /// Its tree of its own, if it has one (`super::tree`).
    pub(super) tree: Option<super::tree::OwnTree>,
}

/// Why a file mapping was not made here.
pub(super) enum MapFile {
    /// The process must go home for it.
    Home,
    /// Supervision ends.
    End(End),
}

/// How supervision ended.
pub(super) enum End {
    /// The process is gone, home was told.
    Gone,
    /// Home is gone (or broke the protocol): the process was killed.
    HomeLost(String),
}

impl Supervisor {
    pub(super) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub(super) fn run(&mut self) {
        let end = self.supervise();
        // Whatever ended it, the end is handled as root (killing the guest needs it).
        crate::kernel::creds::root_again();
        match end {
            End::Gone if self.killed_by_home => {}
            End::Gone => {
                // Its last message (its end, or its move) must reach home, through a cut if
                // need be: home acknowledges it.
                let grace = crate::link::snapshot(&self.env.link).resume_grace;
                if !self.rx.settle(grace + SETTLE_MORE) {
                    warn!(
                        "guest {} from node {}: its home did not confirm its last message",
                        self.h.comm, self.h.home
                    );
                }
            }
            End::HomeLost(why) => {
                warn!(
                    "guest {} from node {} killed: {why}",
                    self.h.comm, self.h.home
                );
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        self.tx.shutdown();
    }

    fn supervise(&mut self) -> End {
        // Home shows the process's state from these: the first one right away.
        self.send_stats();
        let mut last_stats = Instant::now();
        loop {
            // The thread may have been left as the process's owner by its last path calls
            // (`creds::as_user_staying`): root again for anything but the next call.
            if self.come_home || self.move_to.is_some() || self.rx.has_buffered() {
                crate::kernel::creds::root_again();
            }
            if self.come_home {
                match self.go_home(None) {
                    Ok(true) => return End::Gone,
                    Ok(false) => self.come_home = false,
                    Err(e) => return e,
                }
            }
            if let Some((to, token)) = self.move_to.take() {
                match self.move_on(to, token, None) {
                    Ok(true) => return End::Gone,
                    Ok(false) => {}
                    Err(e) => return e,
                }
            }
            // Home's messages first if some are already buffered.
            if self.rx.has_buffered()
                && let Some(end) = self.read_home()
            {
                return end;
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.listener.fd().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.rx.socket().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                // Requests its trap sends back (a tree of its own); -1: none, ignored.
                libc::pollfd {
                    fd: self
                        .tree
                        .as_ref()
                        .map_or(-1, |t| t.waiting.fd().as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let timeout = if self.watch_stop_until.is_some() {
                10
            } else if self.io.has_behind() {
                crate::split::iocache::BEHIND_MAX_AGE.as_millis() as i32
            } else {
                1000
            };
            // The owner's ids stay on this thread only within a burst of calls: a call that
            // comes within `STAY_MS` finds them still there (a program that opens, reads and
            // closes a file runs that fast between its calls; switching back and forth cost
            // it six credential calls a file); after that the thread is root again before it
            // waits longer. (While it is the user, that user may renice this thread or set its
            // CPUs, as for any thread of theirs: it serves their process only. Its /proc
            // entries stay root's: the service is not dumpable, `creds`.)
            let mut n = 0;
            if crate::kernel::creds::staying() {
                // SAFETY: as below, with a short wait.
                n = unsafe { libc::poll(fds.as_mut_ptr(), 3, STAY_MS.min(timeout)) };
                if n == 0 {
                    crate::kernel::creds::root_again();
                }
            }
            if n == 0 {
                // SAFETY: `fds` is a valid array of three pollfd structs that outlives the call.
                n = unsafe { libc::poll(fds.as_mut_ptr(), 3, timeout) };
            }
            let call_only = n == 1
                && fds[0].revents == libc::POLLIN
                && self.watch_stop_until.is_none()
                && !self.io.has_behind()
                && last_stats.elapsed() < Duration::from_secs(1);
            if !call_only {
                crate::kernel::creds::root_again();
            }
            if self.watch_stop_until.is_some() {
                self.stopped();
            }
            for c in self.io.due(Instant::now()) {
                if let Err(end) = self.send_home(&ProcMsg::Call(c)) {
                    return end;
                }
            }
            if n < 0 {
                continue;
            }
            if last_stats.elapsed() >= Duration::from_secs(1) {
                last_stats = Instant::now();
                self.send_stats();
            }
            if fds[1].revents != 0
                && let Some(end) = self.read_home()
            {
                return end;
            }
            if fds[2].revents != 0 {
                self.sent_back();
            }
            if fds[0].revents & libc::POLLIN != 0 {
                match self.listener.recv() {
                    Ok(n) => {
                        if let Some(end) = self.on_call(n) {
                            return end;
                        }
                    }
                    Err(_) => {
                        if let Some(end) = self.check_end() {
                            return end;
                        }
                    }
                }
            } else if fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0
                && let Some(end) = self.check_end()
            {
                return end;
            }
        }
    }

    /// Looks for a job-control stop for a while: every stop signal passes through us (from
    /// home, or sent by the process to itself, as a `SIGTSTP` handler does once it has tidied
    /// up), but it may take effect later, when the process leaves a forwarded call.
    fn watch_stop(&mut self) {
        self.watch_stop_until = Some(Instant::now() + STOP_WATCH);
    }

    /// Reports a job-control stop home, which stops the deputy the same way: the parent's
    /// `wait(WUNTRACED)` (a shell's Ctrl-Z) sees it as if the process were local. Also called
    /// before the process leaves: a stop not reported yet would be lost on the way (the image
    /// carries no job state; home stops the deputy on the report, before it takes the image).
    pub(super) fn stopped(&mut self) {
        if self.watch_stop_until.is_some_and(|u| Instant::now() > u) {
            self.watch_stop_until = None;
        }
        // SAFETY: waitid(2) writes one siginfo_t, a valid zeroed local. WSTOPPED without
        // WEXITED only reports stops, so the exit is still reaped by Child::try_wait.
        let info = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                self.pid() as libc::id_t,
                &raw mut info,
                libc::WSTOPPED | libc::WNOHANG,
            );
            if r != 0 || info.si_pid() == 0 {
                return;
            }
            info
        };
        // SAFETY: for a CLD_STOPPED report si_status is the stop signal.
        let sig = unsafe { info.si_status() };
        debug!("{} stopped by signal {sig}", self.h.comm);
        self.watch_stop_until = None;
        let _ = self.tx.send(&ProcMsg::Stopped {
            sig,
            conts: self.conts,
        });
    }

    /// Has the process ended? If so, tell home how.
    fn check_end(&mut self) -> Option<End> {
        // Its last native file calls count for this node (readable until it is reaped).
        if let Some(d) = &mut self.dfsa {
            d.count_native();
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    use std::os::unix::process::ExitStatusExt;
                    // What it wrote is written before its parent can see it end, and an error of
                    // it that the program never heard is logged at home.
                    if let Err(end) = self.settle_io().and_then(|()| self.report_unheard()) {
                        return Some(end);
                    }
                    let msg = match (st.code(), st.signal()) {
                        (Some(c), _) => ProcMsg::Exit { status: c },
                        (None, Some(sig)) => ProcMsg::Died {
                            sig,
                            core: st.core_dumped(),
                        },
                        _ => ProcMsg::Died {
                            sig: libc::SIGKILL,
                            core: false,
                        },
                    };
                    let _ = self.tx.send(&msg);
                    return Some(End::Gone);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => return None,
            }
        }
    }

    pub(super) fn send_stats(&mut self) {
        crate::kernel::creds::root_again();
        // With a tree of its own, files it closed natively since are closed first (a home file
        // through MFS still thought open would keep its native calls from being counted).
        self.look_at_tree();
        if let Some(d) = &mut self.dfsa {
            d.count_native();
            d.report_calls();
        }
        let Ok(stat) = procfs::process::Process::new(self.pid()).and_then(|p| p.stat()) else {
            return;
        };
        let ticks = procfs::ticks_per_second().max(1);
        let page = procfs::page_size();
        let _ = self.tx.send(&ProcMsg::Stats {
            utime_ms: stat.utime * 1000 / ticks,
            stime_ms: stat.stime * 1000 / ticks,
            state: stat.state as u8,
            rss: stat.rss * page,
        });
    }

    /// Handles one message from home (not a reply). `Some` ends supervision.
    fn read_home(&mut self) -> Option<End> {
        match self.rx.try_recv() {
            Ok(Some(m)) => self.home_msg(m),
            Ok(None) => None,
            Err(e) => Some(End::HomeLost(format!(
                "the connection to its home broke ({e})"
            ))),
        }
    }

    fn home_msg(&mut self, m: ProcMsg) -> Option<End> {
        // (It may come while a path call run as the owner waits for home: signals and kills
        // are sent as root.)
        crate::kernel::creds::root_again();
        match m {
            ProcMsg::Signal { sig } => {
                if let Some(s) = Sig::new(sig) {
                    if sig == libc::SIGCONT {
                        self.conts = self.conts.wrapping_add(1);
                    }
                    let _ = s.send_to(self.pid());
                    self.watch_stop();
                }
                None
            }
            ProcMsg::OrphanedStop { sig } => {
                if let Some(s) = Sig::new(sig) {
                    if catches(self.pid(), sig) {
                        let _ = s.send_to(self.pid());
                        self.watch_stop();
                    } else {
                        debug!(
                            "{}: {s} not delivered: its process group at home is orphaned",
                            self.h.comm
                        );
                    }
                }
                None
            }
            ProcMsg::ComeHome { live } => {
                self.come_home = true;
                self.live_asked = live;
                None
            }
            ProcMsg::MoveTo { node, token, live } => {
                self.move_to = Some((node, token));
                self.live_asked = live;
                None
            }
            ProcMsg::Reply(r) if self.io.owed() > 0 => {
                self.io.on_owed_reply(&r);
                None
            }
            ProcMsg::Kill => {
                self.killed_by_home = true;
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.flush_after_kill();
                Some(End::Gone)
            }
            other => Some(End::HomeLost(format!("home sent {other:?} out of turn"))),
        }
    }

    fn on_call(&mut self, n: Notif) -> Option<End> {
        let nr = n.nr as u64;
        if let Some(t) = &mut self.tree {
            // What its own kernel did to its descriptors since the last call is looked at
            // before anything depends on it (`look_if_due`).
            t.look_due = true;
        }
        // Only a path call run here, or a close, may find the thread still as the process's
        // owner (see `supervise`): everything else is done as root.
        let path_or_close =
            i64::from(n.nr) == libc::SYS_close || super::here::path_args(i64::from(n.nr)).is_some();
        if !path_or_close || self.stale_map_fd.is_some() {
            crate::kernel::creds::root_again();
        }
        self.put_back_stale(&n);
        if let Some(r) = self.signal_to_self(&n) {
            let _ = self.listener.reply(n.id, r);
            return None;
        }
        let (class, shape) = forward::shape(nr, &n.args);
        if self.dfsa.is_some() {
            match self.dfsa_call(&n, &shape) {
                Ok(true) => return None,
                Ok(false) => {}
                Err(end) => return Some(end),
            }
            crate::kernel::creds::root_again();
        }
        match class {
            Class::Cached => {
                let r = self.cached(&n);
                let _ = self.listener.reply(n.id, r);
                None
            }
            Class::Service | Class::Deputy => self.forward(n),
            Class::Exit => {
                let status = (n.args[0] & 0xff) as i32;
                // What it wrote is at home before it ends, and an error of it that the program
                // never heard is logged there (as when it ends any other way, `check_end`).
                if let Err(end) = self.settle_io().and_then(|()| self.report_unheard()) {
                    return Some(end);
                }
                // Let the stub end itself; its end reports the status home.
                let _ = self.listener.allow(&n);
                let _ = self.child.wait();
                let _ = self.tx.send(&ProcMsg::Exit { status });
                Some(End::Gone)
            }
            Class::Local if i64::from(n.nr) == libc::SYS_mmap => match self.map_file(&n) {
                Ok(()) => None,
                Err(MapFile::Home) => {
                    debug!("mmap{:x?} cannot be made here", n.args);
                    self.home_only(n)
                }
                Err(MapFile::End(e)) => Some(e),
            },
            Class::Local | Class::HomeOnly => self.home_only(n),
        }
    }

    pub(super) fn home_only(&mut self, n: Notif) -> Option<End> {
        debug!(
            "{} ({}) calls {}: going home",
            self.h.comm,
            self.pid(),
            mosix_core::syscalls::name(n.nr as u64)
        );
        match self.go_home(Some(n)) {
            Ok(true) => Some(End::Gone),
            Ok(false) => {
                // Home would not take it back: it cannot go on.
                let _ = self.child.kill();
                let _ = self.child.wait();
                let _ = self.tx.send(&ProcMsg::Died {
                    sig: libc::SIGKILL,
                    core: false,
                });
                Some(End::Gone)
            }
            Err(e) => Some(e),
        }
    }

    fn forward(&mut self, n: Notif) -> Option<End> {
        let mut m = match forward::marshal(n.nr as u64, n.args, &self.mem) {
            Ok(m) => m,
            Err(e) => {
                let _ = self.listener.reply(n.id, e);
                return None;
            }
        };
        let nr = i64::from(m.call.nr);
        let fd = m.call.args[0] as i32;
        // While a home file is also open here through MFS, nothing is read ahead or written
        // behind: the same file's bytes must not wait here while native calls reach it.
        let cached_io = self.dfsa.as_ref().is_none_or(|d| !d.any_through());
        if nr == libc::SYS_read && cached_io {
            match self.io.read(fd, m.call.args[2] as usize) {
                ReadPlan::Serve(bytes) => {
                    let r = Reply {
                        ret: bytes.len() as i64,
                        outs: vec![(1, bytes)],
                        io: 0,
                        room: 0,
                        file: 0,
                    };
                    let ret = match forward::write_back(&m, &r, &self.mem) {
                        Ok(()) => r.ret,
                        Err(_) => EFAULT,
                    };
                    let _ = self.listener.reply(n.id, ret);
                    return None;
                }
                ReadPlan::Forward(ahead) => m.call.ahead = ahead,
            }
        } else if nr == libc::SYS_write && cached_io {
            let data = m.call.bufs.first().map_or(&[][..], |b| &b.1[..]);
            match self.io.write(fd, data, Instant::now()) {
                WritePlan::Behind => {
                    let _ = self.listener.reply(n.id, data.len() as i64);
                    for c in self.io.due(Instant::now()) {
                        if let Err(end) = self.send_home(&ProcMsg::Call(c)) {
                            return Some(end);
                        }
                    }
                    return None;
                }
                WritePlan::Error(e) => {
                    let _ = self.listener.reply(n.id, e);
                    return None;
                }
                WritePlan::Forward { probe } => m.call.ahead = u32::from(probe),
            }
        }
        // A descriptor about to be replaced or closed by a call that cannot report its errors:
        // home logs them.
        for (fd, errno) in self.io.errors_lost_by(&m.call) {
            if let Err(end) = self.send_home(&ProcMsg::WriteFailed { fd, errno }) {
                return Some(end);
            }
        }
        // Calls on home's files (its regular files, by path or descriptor) are file access of
        // home's data, for the balancer: a process that spends its time on them is better home.
        let (class, shape) = forward::shape(u64::from(m.call.nr), &m.call.args);
        // Plain reads and writes count once home said the descriptor is a regular file; the
        // calls that only make sense on files (positioned I/O, seeks, syncs) always do.
        let file_call = matches!(
            nr,
            libc::SYS_pread64
                | libc::SYS_pwrite64
                | libc::SYS_preadv
                | libc::SYS_pwritev
                | libc::SYS_preadv2
                | libc::SYS_pwritev2
                | libc::SYS_lseek
                | libc::SYS_fsync
                | libc::SYS_fdatasync
                | libc::SYS_ftruncate
                | libc::SYS_fallocate
        );
        let on_home_file = self.dfsa.is_some()
            && (shape[0] == mosix_core::syscalls::Arg::Fd && (file_call || self.io.is_file(fd))
                || class == Class::Deputy && shape.contains(&mosix_core::syscalls::Arg::Path));
        loop {
            let t0 = on_home_file.then(Instant::now);
            let mut reply = match self.call_home(&m) {
                Ok(r) => r,
                Err(end) => return Some(end),
            };
            if let (Some(t0), Some(d)) = (t0, &mut self.dfsa) {
                d.waited_home(t0.elapsed());
            }
            if nr == libc::SYS_read && m.call.ahead > 0 {
                self.io.after_read(fd, &mut reply);
            } else if nr == libc::SYS_write && m.call.ahead > 0 {
                self.io.after_write(fd, &reply);
            }
            let unheard =
                if nr == libc::SYS_fsync || nr == libc::SYS_fdatasync || nr == libc::SYS_close {
                    self.io.take_error(fd)
                } else {
                    None
                };
            self.io.after_call(&m.call, reply.ret);
            if let Some(e) = unheard {
                // A write behind failed at home: the process hears it here, as from NFS.
                reply.ret = e;
            }
            if reply.ret == ERESTARTSYS && self.come_home {
                // Interrupted at home because home wants the process back: it goes now, and
                // the call runs again there.
                return match self.go_home(Some(n)) {
                    Ok(true) => Some(End::Gone),
                    Ok(false) => {
                        self.come_home = false;
                        None
                    }
                    Err(e) => Some(e),
                };
            }
            if reply.ret == ERESTARTSYS
                && let Some((to, token)) = self.move_to.take()
            {
                // Interrupted because home wants it elsewhere: likewise.
                return match self.move_on(to, token, Some(n)) {
                    Ok(true) => Some(End::Gone),
                    Ok(false) => None,
                    Err(e) => Some(e),
                };
            }
            if reply.ret == ERESTARTSYS && !self.signal_deliverable() {
                // Interrupted at home for a signal this process will not take: run it again.
                continue;
            }
            // What the call did to home's descriptor numbers, whatever becomes of its answer.
            if let Some(d) = &mut self.dfsa {
                d.numbers_changed(nr, &m.call.args, reply.ret);
                d.table.after(nr, &m.call.args, reply.ret);
                if matches!(nr, libc::SYS_prlimit64 | libc::SYS_setrlimit) {
                    d.limits_changed();
                }
            }
            if let Err(e) = forward::write_back(&m, &reply, &self.mem) {
                warn!("{}: bad reply from home: {e}", self.h.comm);
                if reply.ret >= 0 && !matches!(self.made_in(nr, &m.call.args, reply.ret), Ok(false))
                {
                    // It made a descriptor of home in the native range all the same.
                    self.leave_answer = Some(EFAULT);
                    return self.home_only(n);
                }
                let _ = self.listener.reply(n.id, EFAULT);
                return None;
            }
            if reply.ret == 0 && self.limits_itself(&n) {
                let resource = if nr == libc::SYS_setrlimit {
                    n.args[0]
                } else {
                    n.args[1]
                };
                if resource == libc::RLIMIT_FSIZE as u64 {
                    self.placeholder_offset_back();
                }
                if n.args[0] == 0 {
                    // Set at home; this kernel enforces it here: the call runs here too.
                    let _ = self.listener.allow(&n);
                    return None;
                }
                // prlimit64 naming the process by its home pid, which here is someone else's
                // (or no one's): the supervisor sets the limit on the process's pid here.
                self.set_limit_here(&n);
            }
            if reply.ret >= 0 {
                match self.made_in(nr, &m.call.args, reply.ret) {
                    Ok(false) => self.placeholder_for_home(&n, nr, &m.call.args, reply.ret),
                    Ok(true)
                        if matches!(
                            nr,
                            libc::SYS_open | libc::SYS_openat | libc::SYS_openat2 | libc::SYS_creat
                        ) && self.represent(n.id, reply.ret as i32).unwrap_or(false) =>
                    {
                        // A home file, opened here too at that number.
                        let _ = self.listener.reply(n.id, reply.ret);
                        return None;
                    }
                    Ok(true) => {
                        // Home made a descriptor at a number of the native range, where
                        // native calls here would not reach it: the process takes the result
                        // home and goes on there.
                        debug!(
                            "{} ({}): {} made a descriptor of home in the native range: going home",
                            self.h.comm,
                            self.pid(),
                            mosix_core::syscalls::name(nr as u64)
                        );
                        self.leave_answer = Some(reply.ret);
                        return self.home_only(n);
                    }
                    Err(end) => return Some(end),
                }
            }
            if nr == libc::SYS_close_range
                && reply.ret == 0
                && let Some(d) = &mut self.dfsa
            {
                // Closed at home: what stands at those numbers here goes too (DFSA files,
                // placeholders), by the same call.
                d.closed_range(m.call.args[0], m.call.args[1], m.call.args[2]);
                let _ = self.listener.allow(&n);
                return None;
            }
            if nr == libc::SYS_umask && self.tree.is_some() {
                // Its own kernel makes the files of its tree: it takes the umask too.
                let _ = self.listener.allow(&n);
                return None;
            }
            if nr == libc::SYS_close && reply.ret == 0 && self.closes_here(fd) {
                // Closed at home: the descriptor here (DFSA, or its placeholder) goes too.
                let _ = self.listener.allow(&n);
                return None;
            }
            let _ = self.listener.reply(n.id, reply.ret);
            return None;
        }
    }

    /// Whether a call that ran at home and returned `ret` made a descriptor of home at a
    /// number of the native range (never without one). A call whose effect on the table is
    /// not known is judged from home's table, fetched again (a number there in the range that
    /// is not a file opened here).
    fn made_in(&mut self, nr: i64, args: &[u64; 6], ret: i64) -> Result<bool, End> {
        use mosix_core::syscalls::{FdEffect, fd_effect};
        let Some(range) = &self.native_from else {
            return Ok(false);
        };
        match fd_effect(nr as u64, args) {
            FdEffect::None | FdEffect::Closes => Ok(false),
            FdEffect::Returns | FdEffect::Replaces => Ok(range.covers(ret)),
            FdEffect::Unknown if nr == libc::SYS_close_range => Ok(false),
            FdEffect::Unknown => {
                if !self.table_known()? {
                    // Home could not say: in doubt, home.
                    return Ok(true);
                }
                let (Some(range), Some(d)) = (&self.native_from, &self.dfsa) else {
                    return Ok(false);
                };
                // With a tree of its own, any new number of home's: the process's kernel would
                // give it to the next file it opens.
                let tree = self.tree.is_some();
                Ok(d.table.numbers().into_iter().any(|fd| {
                    (tree || range.covers(i64::from(fd))) && !d.holds(fd) && !d.stands_in(fd)
                }))
            }
        }
    }

    /// With a tree of its own: a descriptor a forwarded call made at home outside the native
    /// range (a number home had freed) gets a placeholder here too, so that the process's own
    /// kernel does not give that number to the next file it opens.
    fn placeholder_for_home(&mut self, n: &Notif, nr: i64, args: &[u64; 6], ret: i64) {
        use mosix_core::syscalls::{FdEffect, fd_effect};
        if self.tree.is_none()
            || !matches!(
                fd_effect(nr as u64, args),
                FdEffect::Returns | FdEffect::Replaces
            )
        {
            return;
        }
        let Ok(fd) = i32::try_from(ret) else {
            return;
        };
        if let Some(d) = &mut self.dfsa
            && !d.holds(fd)
            && !d.stands_in(fd)
            && self
                .listener
                .add_fd(n.id, self.placeholder.as_raw_fd(), fd)
                .is_ok()
        {
            d.home_holds(fd);
            self.tree_saw(fd);
        }
    }

    /// Sends home what waits behind and gives back what was read ahead, and waits until home
    /// has done it: before the process exits or leaves.
    /// The process was killed at home (its copy here is dead too): the writes it was told were
    /// done and that still wait here go home, where the deputy's executor writes them on its
    /// duplicates; home shows the death only then. Bounded by [`FLUSH_AFTER_KILL`].
    fn flush_after_kill(&mut self) {
        let writes = self.io.all_behind();
        if writes.is_empty() && self.io.owed() == 0 {
            return;
        }
        for c in writes {
            if self.tx.send(&ProcMsg::Call(c)).is_err() {
                return;
            }
        }
        let deadline = Instant::now() + FLUSH_AFTER_KILL;
        while self.io.owed() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.rx.socket().set_read_timeout(Some(left)).is_err() {
                break;
            }
            match self.rx.recv() {
                Ok(ProcMsg::Reply(r)) => self.io.on_owed_reply(&r),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if self.io.owed() > 0 {
            warn!(
                "{} (pid {} of node {}), killed at home: {} writes behind were not confirmed",
                self.h.comm,
                self.h.cached.pid,
                self.h.home,
                self.io.owed()
            );
        }
    }

    /// Sends home the errors of writes behind the program has not heard and now will not (it
    /// ends, or goes home, where no call of it passes here): home logs each with its file.
    pub(super) fn report_unheard(&mut self) -> Result<(), End> {
        for (fd, errno) in self.io.take_errors() {
            self.send_home(&ProcMsg::WriteFailed { fd, errno })?;
        }
        Ok(())
    }

    /// Sends home the notices of opens and closes made here (DFSA) that it has not had yet:
    /// before anything else goes home, so that home's descriptor numbers are the process's
    /// whenever it runs something for it.
    pub(super) fn flush_notices(&mut self) -> Result<(), End> {
        self.look_if_due();
        let Some(d) = &mut self.dfsa else {
            return Ok(());
        };
        for m in d.take_notices() {
            self.tx
                .send(&m)
                .map_err(|e| End::HomeLost(format!("the connection to its home broke ({e})")))?;
        }
        Ok(())
    }

    pub(super) fn send_home(&mut self, m: &ProcMsg) -> Result<(), End> {
        self.flush_notices()?;
        self.tx
            .send(m)
            .map_err(|e| End::HomeLost(format!("the connection to its home broke ({e})")))
    }

    pub(super) fn settle_io(&mut self) -> Result<(), End> {
        self.flush_notices()?;
        for c in self.io.settle() {
            if let Err(e) = self.tx.send(&ProcMsg::Call(c)) {
                return Err(End::HomeLost(format!("sending writes home failed ({e})")));
            }
        }
        while self.io.owed() > 0 {
            match self.rx.recv() {
                Ok(m) => {
                    if let Some(end) = self.home_msg(m) {
                        return Err(end);
                    }
                }
                Err(e) => {
                    return Err(End::HomeLost(format!(
                        "the connection to its home broke ({e})"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Asks home what descriptor `fd` is ([`ProcMsg::Describe`]) and waits for the answer,
    /// handling what else arrives meanwhile.
    pub(super) fn describe(&mut self, fd: i32, fresh: bool) -> Result<ProcMsg, End> {
        self.send_home(&ProcMsg::Describe { fd, fresh })?;
        self.answer_from_home(|m| matches!(m, ProcMsg::Described { .. }))
    }

    /// Waits for the message from home that `wanted` picks, handling every other one (replies
    /// owed for writes behind, signals, requests) as it comes.
    pub(super) fn answer_from_home(
        &mut self,
        wanted: impl Fn(&ProcMsg) -> bool,
    ) -> Result<ProcMsg, End> {
        loop {
            match self.rx.recv() {
                Ok(ProcMsg::Reply(r)) if self.io.owed() > 0 => self.io.on_owed_reply(&r),
                Ok(m) if wanted(&m) => return Ok(m),
                Ok(other) => {
                    if let Some(end) = self.home_msg(other) {
                        return Err(end);
                    }
                }
                Err(e) => {
                    crate::kernel::creds::root_again();
                    return Err(End::HomeLost(format!(
                        "the connection to its home broke ({e})"
                    )));
                }
            }
        }
    }

    /// Sends a call home and waits for its reply, handling signals that arrive meanwhile.
    pub(super) fn call_home(&mut self, m: &Marshalled) -> Result<Reply, End> {
        self.flush_notices()?;
        let (_, shape) = forward::shape(u64::from(m.call.nr), &m.call.args);
        for c in self.io.before_call(&m.call, &shape) {
            if let Err(e) = self.tx.send(&ProcMsg::Call(c)) {
                return Err(End::HomeLost(format!("sending a call home failed ({e})")));
            }
        }
        let sent = Instant::now();
        if let Err(e) = self.tx.send(&ProcMsg::Call(m.call.clone())) {
            return Err(End::HomeLost(format!("sending a call home failed ({e})")));
        }
        match self.answer_from_home(|m| matches!(m, ProcMsg::Reply(_)))? {
            ProcMsg::Reply(r) => {
                mosix_core::metrics::global()
                    .call_round_trip
                    .observe(sent.elapsed().as_secs_f64());
                Ok(r)
            }
            other => Err(End::HomeLost(format!("home answered {other:?} to a call"))),
        }
    }

    /// `prlimit64(home pid, resource, new, old)` made at home: sets `new` on the process here
    /// too, never above the hard limit it has here (another process's limit: the service's
    /// rights do it; where a container denies them, the limit is not enforced here).
    fn set_limit_here(&self, n: &Notif) {
        let mut b = [0u8; 16];
        if self.mem.read(n.args[2], &mut b).is_err() {
            return;
        }
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let resource = n.args[1] as libc::__rlimit_resource_t;
        let mut old = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit64(2) reads nothing (NULL) and writes one rlimit64, a valid local.
        if unsafe { libc::prlimit64(self.pid(), resource, std::ptr::null(), &raw mut old) } != 0 {
            return;
        }
        // Never above the hard limit the guest has here (this node's): the service's rights
        // must not raise what the guest could not.
        let max = word(8).min(old.rlim_max);
        let new = libc::rlimit64 {
            rlim_cur: word(0).min(max),
            rlim_max: max,
        };
        // SAFETY: prlimit64(2) reads one rlimit64, a valid local, and writes nothing (NULL).
        let r =
            unsafe { libc::prlimit64(self.pid(), resource, &raw const new, std::ptr::null_mut()) };
        if r != 0 {
            debug!(
                "{}: limit {} set at home, not here: {}",
                self.h.comm,
                n.args[1],
                std::io::Error::last_os_error()
            );
        }
    }

    /// The placeholders' offset back to 0, for a process that sets a limit on the size of the
    /// files it writes: the reads and writes the supervisor answers through the trap
    /// (`answer_io`) move it, and the kernel checks a write's offset against the limit before
    /// the trap sees it. Done only while the process has one thread, which is in this call: a
    /// thread in a read or a write of a placeholder holds the offset's lock, and the `lseek`
    /// would wait for a reply only this thread gives.
    fn placeholder_offset_back(&mut self) {
        let pid = self.pid();
        let Some(t) = &mut self.tree else {
            return;
        };
        // Read again at the next read or write of a placeholder.
        t.fsize_unlimited = None;
        // The open files at its numbers of home's (the stub's, and ours put there since).
        let Some(d) = &self.dfsa else {
            return;
        };
        let moved: Vec<std::fs::File> = d
            .standing()
            .into_iter()
            .filter_map(|fd| crate::kernel::seccomp::take_fd(pid, fd).ok())
            .map(std::fs::File::from)
            .filter(|f| offset_of(f) != 0)
            .collect();
        if moved.is_empty() {
            return;
        }
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count());
        if threads.ok() == Some(1) {
            for f in &moved {
                let _ = nix::unistd::lseek(f, 0, nix::unistd::Whence::SeekSet);
            }
        } else {
            warn!(
                "{} ({pid}): a limit on its files' size set while it has threads: a write \
                 on a descriptor of home's may fail (EFBIG) after {} bytes read or written \
                 on those",
                self.h.comm,
                moved.iter().map(offset_of).max().unwrap_or(0)
            );
        }
    }

    /// Whether a call sets one of the process's own resource limits: what it sets at home
    /// must bind it here too, where it runs.
    fn limits_itself(&self, n: &Notif) -> bool {
        let nr = i64::from(n.nr);
        nr == libc::SYS_setrlimit
            || (nr == libc::SYS_prlimit64
                && n.args[2] != 0
                && (n.args[0] == 0 || n.args[0] == u64::from(self.h.cached.pid)))
    }

    /// A signal the process sends itself (raise, abort, kill(getpid())) must be pending before
    /// the call returns, as it is natively: deliver it here instead of going round through home.
    fn signal_to_self(&mut self, n: &Notif) -> Option<i64> {
        let me = u64::from(self.h.cached.pid);
        let nr = i64::from(n.nr);
        let (target_is_me, sig) = if nr == libc::SYS_kill {
            (n.args[0] as i64 == me as i64, n.args[1])
        } else if nr == libc::SYS_tgkill {
            (n.args[0] == me && n.args[1] == me, n.args[2])
        } else if nr == libc::SYS_tkill {
            (n.args[0] == me, n.args[1])
        } else {
            return None;
        };
        if !target_is_me {
            return None;
        }
        if sig == 0 {
            return Some(0);
        }
        let Some(s) = i32::try_from(sig).ok().and_then(Sig::new) else {
            return Some(EINVAL);
        };
        self.watch_stop();
        Some(match s.send_to(self.pid()) {
            Ok(()) => 0,
            Err(e) => -i64::from(e.raw_os_error().unwrap_or(libc::EPERM)),
        })
    }

    /// Whether the process has a signal pending that it will take (not blocked, not ignored).
    fn signal_deliverable(&self) -> bool {
        let Ok(s) = procfs::process::Process::new(self.pid()).and_then(|p| p.status()) else {
            return false;
        };
        let pending = s.sigpnd | s.shdpnd;
        pending & !s.sigblk & !s.sigign != 0
    }

    fn cached(&self, n: &Notif) -> i64 {
        let c = &self.h.cached;
        let cr = &self.h.creds;
        let nr = i64::from(n.nr);
        let w32 = |addr: u64, v: u32| self.mem.write(addr, &v.to_le_bytes()).is_ok();
        match nr {
            libc::SYS_getpid | libc::SYS_gettid => i64::from(c.pid),
            libc::SYS_getppid => i64::from(c.ppid),
            libc::SYS_getpgrp => i64::from(c.pgrp),
            libc::SYS_getuid => i64::from(cr.uid[0]),
            libc::SYS_geteuid => i64::from(cr.uid[1]),
            libc::SYS_getgid => i64::from(cr.gid[0]),
            libc::SYS_getegid => i64::from(cr.gid[1]),
            libc::SYS_getresuid | libc::SYS_getresgid => {
                let ids = if nr == libc::SYS_getresuid {
                    cr.uid
                } else {
                    cr.gid
                };
                if (0..3).all(|i| w32(n.args[i], ids[i])) {
                    0
                } else {
                    EFAULT
                }
            }
            libc::SYS_getgroups => {
                let count = cr.groups.len() as u64;
                if n.args[0] == 0 {
                    return count as i64;
                }
                if n.args[0] < count {
                    return EINVAL;
                }
                let bytes: Vec<u8> = cr.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
                if self.mem.write(n.args[1], &bytes).is_ok() {
                    count as i64
                } else {
                    EFAULT
                }
            }
            libc::SYS_uname => {
                let mut buf = vec![0u8; 65 * 6];
                for (i, f) in c.uname.iter().enumerate() {
                    let b = f.as_bytes();
                    let k = b.len().min(64);
                    buf[i * 65..i * 65 + k].copy_from_slice(&b[..k]);
                }
                if self.mem.write(n.args[0], &buf).is_ok() {
                    0
                } else {
                    EFAULT
                }
            }
            _ => ENOSYS,
        }
    }
}

/// The offset of our own descriptor `f`, from `/proc/self/fdinfo` (which takes no lock).
fn offset_of(f: &std::fs::File) -> u64 {
    std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("pos:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Whether process `pid` has a handler for signal `sig` (`SigCgt` of its status).
fn catches(pid: i32, sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| sig >= 1 && mask & (1u64 << (sig - 1)) != 0)
}
