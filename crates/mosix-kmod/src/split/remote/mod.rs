//! The remote side of a migrated process: receiving it, rebuilding it in a stub, and supervising
//! it while it runs here — answering its forwarded calls through its home, delivering the
//! signals its home forwards, sending it home when it makes a call that only home can run or
//! when home asks for it back, and reporting its end.
//!
//! One thread per guest. It started the stub, so the stub dies with it (`PR_SET_PDEATHSIG`), and
//! it is the stub's only supervisor: it waits in `poll(2)` on the filter's listener and on the
//! connection to home.

use std::os::fd::AsRawFd;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::image::ImageHeader;
use mosix_core::proto::{LinkMsg, ProcMsg, Reply};
use mosix_core::syscalls::Class;
use tracing::{debug, info, warn};

use crate::freezer::freeze::{self, FreezeOptions};
use crate::freezer::restore;
use crate::kernel::abi::{ERESTARTNOINTR, ERESTARTSYS};
use crate::kernel::ptrace::{self, Mem, Sig};
use crate::kernel::seccomp::{self, Listener, Notif};
use crate::link::channel::{self, Receiver, Sender};
use crate::link::{self, SharedContext};
use crate::node::admission::Admission;
use crate::split::forward::{self, Marshalled};
use crate::split::iocache::{IoCache, ReadPlan, WritePlan};
use crate::split::procs::{Guest, Procs};

/// What a guest's supervisor needs from its node.
#[derive(Debug, Clone)]
pub struct GuestEnv {
    /// This node.
    pub me: NodeId,
    /// The registry.
    pub procs: Arc<Procs>,
    /// The node's BLOCK flag (no guests may arrive).
    pub blocked: Arc<AtomicBool>,
    /// The link context (a guest moving on connects to its next node; one arriving that way
    /// connects to its home).
    pub link: SharedContext,
    /// The node's consent to automatic moves.
    pub admission: Arc<Admission>,
}

/// How long the source of a direct move waits for the destination's answer once the image is
/// sent (the destination restores it and rejoins home meanwhile).
const MOVE_ON_ANSWER: Duration = Duration::from_secs(30);
/// How long the destination of a direct move waits for home to take its connection.
const REJOIN_ANSWER: Duration = Duration::from_secs(10);

/// How long after a signal a job-control stop it causes is looked for (a `SIGTSTP` handler
/// that tidies up for longer stops by a `raise`, which starts the watch again).
const STOP_WATCH: Duration = Duration::from_secs(2);
const ENOSYS: i64 = -(libc::ENOSYS as i64);
const EINVAL: i64 = -(libc::EINVAL as i64);
const EFAULT: i64 = -(libc::EFAULT as i64);

/// Takes a process arriving on `stream` from node `from` and supervises it until it ends or
/// leaves. Runs on its own thread.
pub fn accept(stream: std::net::TcpStream, from: NodeId, env: GuestEnv) {
    let (tx, mut rx) = match channel::split(stream) {
        Ok(x) => x,
        Err(e) => {
            warn!("process connection from node {from}: {e}");
            return;
        }
    };
    let h = match rx.recv() {
        Ok(ProcMsg::Image(h)) => *h,
        Ok(other) => {
            warn!("node {from} opened a process connection with {other:?}");
            return;
        }
        Err(e) => {
            warn!("receiving a process from node {from}: {e}");
            return;
        }
    };
    match take(&h, &tx, &mut rx, &env) {
        Ok((guest, listener, child, home_link)) => {
            // Arrived from another remote: from now on it talks to its home on the
            // connection it rejoined with; the one it came on has done its job.
            let (tx, rx) = match home_link {
                Some(link) => {
                    drop((tx, rx));
                    link
                }
                None => (tx, rx),
            };
            info!(
                "guest {} (pid {} at node {}) runs here as pid {}",
                h.comm,
                h.cached.pid,
                h.home,
                child.id()
            );
            env.procs.set_guest_link(child.id() as i32, tx.clone());
            env.procs.add_guest(
                child.id() as i32,
                Guest {
                    from: h.home,
                    home_pid: h.cached.pid,
                    comm: h.comm.clone(),
                    nmigs: h.nmigs,
                    lock: h.locked,
                },
            );
            let pid = child.id() as i32;
            let placeholder = match std::fs::File::open("/dev/null") {
                Ok(f) => f,
                Err(e) => {
                    warn!("/dev/null: {e}");
                    let _ = tx.send(&ProcMsg::Kill);
                    return;
                }
            };
            let mut s = Supervisor {
                env: env.clone(),
                move_to: None,
                h,
                stale_map_fd: None,
                placeholder,
                tx,
                rx,
                listener,
                child,
                mem: guest,
                come_home: false,
                watch_stop_until: None,
                conts: 0,
                io: IoCache::default(),
            };
            s.run();
            env.procs.remove_guest(pid);
        }
        Err(reason) => {
            warn!("refused process {} from node {from}: {reason}", h.comm);
            let _ = tx.send(&ProcMsg::Refused { reason });
            // The source sends the whole image before it reads the answer: closing now, with
            // its pages unread, would reset the connection and lose the answer with it (the
            // source would only see a broken pipe). Take the rest, then close.
            drain(rx.socket(), REFUSED_DRAIN);
        }
    }
}

/// How long a refused image is read (and thrown away) at most.
const REFUSED_DRAIN: Duration = Duration::from_secs(10);

/// Reads `s` until the peer closes, it stays silent for `limit`, or `limit` has passed.
fn drain(mut s: &std::net::TcpStream, limit: Duration) {
    use std::io::Read;
    let end = Instant::now() + limit;
    let mut buf = vec![0u8; 1 << 16];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// What [`take`] gives: the process's memory, its filter's listener, its stub, and — when it
/// came from another remote — the connection to its home it rejoined with.
type Taken = (Mem, Listener, Child, Option<(Sender, Receiver)>);

/// Rebuilds the process in a stub; on success it runs under the filter.
fn take(h: &ImageHeader, tx: &Sender, rx: &mut Receiver, env: &GuestEnv) -> Result<Taken, String> {
    if env.blocked.load(Ordering::Relaxed) {
        return Err(format!("node {} is blocked: it takes no guests", env.me));
    }
    env.admission.admit(h.ceiling)?;
    let missing = h.missing_cpu_flags(&freeze::cpu_flags());
    if !missing.is_empty() {
        return Err(format!(
            "node {}'s CPU lacks features the process may use: {}",
            env.me,
            missing.join(" ")
        ));
    }
    let mut child = crate::kernel::stub::spawn().map_err(|e| format!("starting a stub: {e}"))?;
    let pid = child.id() as i32;
    let fail = |child: &mut Child, e: String| {
        let _ = child.kill();
        let _ = child.wait();
        e
    };
    let t = match ptrace::seize(pid, ptrace::SUSPEND_SECCOMP).and_then(|r| r.interrupt(|_, _| {})) {
        Ok(t) => t,
        Err(e) => return Err(fail(&mut child, format!("seizing the stub: {e}"))),
    };
    let t0 = std::time::Instant::now();
    // On a failure the stub is killed (see `Restorer`).
    let rest = match restore::prepare(t, h, None) {
        Ok(r) => r,
        Err(e) => return Err(fail(&mut child, format!("preparing the stub: {e}"))),
    };
    let t1 = std::time::Instant::now();
    if let Err(e) = restore::receive_pages(rx, h, &rest) {
        rest.kill();
        return Err(fail(&mut child, e));
    }
    let t2 = std::time::Instant::now();
    let filter = seccomp::program_bytes(&seccomp::program());
    let (t, lfd) = match rest.finish(h, Some(&filter)) {
        Ok(x) => x,
        Err(e) => return Err(fail(&mut child, format!("restoring: {e}"))),
    };
    let listener = match lfd.map(|fd| restore::take_listener(pid, fd)) {
        Some(Ok(fd)) => Listener::from_fd(fd),
        Some(Err(e)) => {
            t.kill();
            return Err(fail(&mut child, format!("taking the listener: {e}")));
        }
        None => {
            t.kill();
            return Err(fail(&mut child, "the filter gave no listener".into()));
        }
    };
    if let Err(e) = listener.sync_wakeups() {
        debug!("SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: {e} (forwarded calls will cost more)");
    }
    let mem = match Mem::open(pid) {
        Ok(m) => m,
        Err(e) => {
            t.kill();
            return Err(fail(&mut child, e.to_string()));
        }
    };
    // From another remote: home must take us before the process runs (see
    // `Deputy::start_relay` at home).
    let home_link = match h.rejoin {
        Some(token) => match rejoin(h, token, pid, env) {
            Ok(l) => Some(l),
            Err(e) => {
                t.kill();
                return Err(fail(&mut child, e));
            }
        },
        None => None,
    };
    if let Err(e) = t.detach(None) {
        return Err(fail(&mut child, format!("starting the process: {e}")));
    }
    match tx.send(&ProcMsg::Started { pid: pid as u32 }) {
        Ok(()) => {}
        // From another remote, home decides which copy lives: if that node is gone, home takes
        // this one; if it lives on, it reports the move failed and home drops this one.
        Err(e) if home_link.is_some() => {
            debug!("telling the node it came from that it started: {e}");
        }
        Err(e) => return Err(format!("telling home: {e}")),
    }
    info!(
        "{} (pid {} at node {}) arrived as pid {pid}: {} MiB; stub ready in {:.1} ms, pages in {:.1} ms, started in {:.1} ms",
        h.comm,
        h.cached.pid,
        h.home,
        h.total_bytes >> 20,
        (t1 - t0).as_secs_f64() * 1e3,
        (t2 - t1).as_secs_f64() * 1e3,
        t2.elapsed().as_secs_f64() * 1e3
    );
    Ok((mem, listener, child, home_link))
}

/// Connects to the home of a process that arrives from another remote and has home take the
/// connection as the process's.
fn rejoin(
    h: &ImageHeader,
    token: u64,
    local_pid: i32,
    env: &GuestEnv,
) -> Result<(Sender, Receiver), String> {
    let ctx = link::snapshot(&env.link);
    let first = LinkMsg::Rejoin {
        pid: h.cached.pid,
        token,
        local_pid: local_pid as u32,
    };
    let s = link::connect_blocking(h.home, &ctx, &first)
        .map_err(|e| format!("cannot reach its home, node {}: {e}", h.home))?;
    let (tx, mut rx) =
        channel::split(s).map_err(|e| format!("connection to its home, node {}: {e}", h.home))?;
    let _ = rx.socket().set_read_timeout(Some(REJOIN_ANSWER));
    match rx.recv() {
        Ok(ProcMsg::Rejoined) => {}
        Ok(ProcMsg::Refused { reason }) => {
            return Err(format!("its home, node {}, refused it: {reason}", h.home));
        }
        Ok(other) => return Err(format!("its home answered {other:?}")),
        Err(e) => return Err(format!("its home, node {}, did not answer ({e})", h.home)),
    }
    rx.socket()
        .set_read_timeout(None)
        .map_err(|e| format!("connection to its home: {e}"))?;
    Ok((tx, rx))
}

/// Why a file mapping was not made here.
enum MapFile {
    /// The process must go home for it.
    Home,
    /// Supervision ends.
    End(End),
}

struct Supervisor {
    env: GuestEnv,
    /// Home asked it to move on to this node, with this token.
    move_to: Option<(NodeId, u64)>,
    h: ImageHeader,
    /// A descriptor number that holds the memfd of the last file mapping.
    stale_map_fd: Option<i32>,
    /// What replaces it.
    placeholder: std::fs::File,
    tx: Sender,
    rx: Receiver,
    listener: Listener,
    child: Child,
    mem: Mem,
    come_home: bool,
    /// After a signal, until when to look for a job-control stop (see [`Supervisor::stopped`]).
    watch_stop_until: Option<Instant>,
    /// `SIGCONT`s from home delivered so far.
    conts: u32,
    /// Read-ahead and write-behind.
    io: IoCache,
}

/// How supervision ended.
enum End {
    /// The process is gone, home was told.
    Gone,
    /// Home is gone (or broke the protocol): the process was killed.
    HomeLost(String),
}

impl Supervisor {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn run(&mut self) {
        let end = self.supervise();
        match end {
            End::Gone => {}
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
            ];
            let timeout = if self.watch_stop_until.is_some() {
                10
            } else if self.io.has_behind() {
                crate::split::iocache::BEHIND_MAX_AGE.as_millis() as i32
            } else {
                1000
            };
            // SAFETY: `fds` is a valid array of two pollfd structs that outlives the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if self.watch_stop_until.is_some() {
                self.stopped();
            }
            for c in self.io.due(Instant::now()) {
                if let Err(e) = self.tx.send(&ProcMsg::Call(c)) {
                    return End::HomeLost(format!("sending writes home failed ({e})"));
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
    /// `wait(WUNTRACED)` (a shell's Ctrl-Z) sees it as if the process were local.
    fn stopped(&mut self) {
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
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    use std::os::unix::process::ExitStatusExt;
                    // What it wrote is written before its parent can see it end.
                    if let Err(end) = self.settle_io() {
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

    fn send_stats(&self) {
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
        match self.rx.recv() {
            Ok(m) => self.home_msg(m),
            Err(e) => Some(End::HomeLost(format!(
                "the connection to its home broke ({e})"
            ))),
        }
    }

    fn home_msg(&mut self, m: ProcMsg) -> Option<End> {
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
            ProcMsg::ComeHome => {
                self.come_home = true;
                None
            }
            ProcMsg::MoveTo { node, token } => {
                self.move_to = Some((node, token));
                None
            }
            ProcMsg::Reply(r) if self.io.owed() > 0 => {
                self.io.on_owed_reply(&r);
                None
            }
            ProcMsg::Kill => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Some(End::Gone)
            }
            other => Some(End::HomeLost(format!("home sent {other:?} out of turn"))),
        }
    }

    fn on_call(&mut self, n: Notif) -> Option<End> {
        let nr = n.nr as u64;
        if let Some(fd) = self.stale_map_fd.take() {
            // The memfd of the last file mapping: replace it with a cheap placeholder, so that
            // an unmapped copy is freed.
            let _ = self.listener.add_fd(n.id, self.placeholder.as_raw_fd(), fd);
        }
        if let Some(r) = self.signal_to_self(&n) {
            let _ = self.listener.reply(n.id, r);
            return None;
        }
        let (class, _) = forward::shape(nr, &n.args);
        match class {
            Class::Cached => {
                let r = self.cached(&n);
                let _ = self.listener.reply(n.id, r);
                None
            }
            Class::Service | Class::Deputy => self.forward(n),
            Class::Exit => {
                let status = (n.args[0] & 0xff) as i32;
                if let Err(end) = self.settle_io() {
                    return Some(end);
                }
                // Let the stub end itself; its end reports the status home.
                let _ = self.listener.allow(n.id);
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

    fn home_only(&mut self, n: Notif) -> Option<End> {
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

    /// A private (or read-only shared) mapping of a file at home: the file's contents come
    /// from home into a memfd, which is installed into the process at the same descriptor
    /// number; the kernel then runs the `mmap` as made, mapping the copy. (The dynamic loader
    /// maps every library this way, and so does a Python `import` of a compiled module.)
    fn map_file(&mut self, n: &Notif) -> Result<(), MapFile> {
        // MAP_SHARED (1) and MAP_SHARED_VALIDATE (3) both have bit 0; MAP_PRIVATE is 2.
        const MAP_SHARED_BIT: u64 = 0x1;
        let prot = n.args[2];
        let flags = n.args[3];
        let fd = n.args[4] as i32;
        let off = n.args[5];
        let shared = flags & MAP_SHARED_BIT != 0;
        if flags & libc::MAP_ANONYMOUS as u64 != 0
            || (shared && prot & libc::PROT_WRITE as u64 != 0)
        {
            return Err(MapFile::Home);
        }
        // What file is it, and how big?
        let st = self.call(libc::SYS_fstat, [fd as u64, 1, 0, 0, 0, 0])?;
        if st.ret < 0 {
            let _ = self.listener.reply(n.id, st.ret);
            return Ok(());
        }
        let Some((_, stat)) = st.outs.first() else {
            return Err(MapFile::Home);
        };
        let word = |at: usize| {
            u64::from_le_bytes(
                stat.get(at..at + 8)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or([0; 8]),
            )
        };
        let mode = word(24) as u32;
        let size = word(48);
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(MapFile::Home);
        }
        let memfd = match nix::sys::memfd::memfd_create(
            c"mosix-map",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        ) {
            Ok(f) => std::fs::File::from(f),
            Err(_) => return Err(MapFile::Home),
        };
        if memfd.set_len(size).is_err() {
            return Err(MapFile::Home);
        }
        let end = off.saturating_add(n.args[1]).min(size);
        let mut at = off;
        while at < end {
            let want = (end - at).min(mosix_core::syscalls::MAX_IO as u64);
            let r = self.call(libc::SYS_pread64, [fd as u64, 1, want, at, 0, 0])?;
            let data = r.outs.first().map(|o| o.1.as_slice()).unwrap_or(&[]);
            if r.ret <= 0 || data.is_empty() {
                break;
            }
            use std::os::unix::fs::FileExt;
            if memfd.write_all_at(data, at).is_err() {
                return Err(MapFile::Home);
            }
            at += data.len() as u64;
        }
        if let Err(e) = self.listener.add_fd(n.id, memfd.as_raw_fd(), fd) {
            debug!("installing the copy of a mapped file: {e}");
            return Err(MapFile::Home);
        }
        let _ = self.listener.allow(n.id);
        // Once the mmap has run, the copy needs no descriptor of its own in the process.
        self.stale_map_fd = Some(fd);
        Ok(())
    }

    /// A call home made by the supervisor itself (not by the process).
    fn call(&mut self, nr: i64, args: [u64; 6]) -> Result<Reply, MapFile> {
        let m = Marshalled {
            call: mosix_core::proto::Call {
                nr: nr as u32,
                args,
                bufs: Vec::new(),
                ahead: 0,
            },
            outs: Vec::new(),
        };
        self.call_home(&m).map_err(MapFile::End)
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
        if nr == libc::SYS_read {
            match self.io.read(fd, m.call.args[2] as usize) {
                ReadPlan::Serve(bytes) => {
                    let r = Reply {
                        ret: bytes.len() as i64,
                        outs: vec![(1, bytes)],
                        io: 0,
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
        } else if nr == libc::SYS_write {
            let data = m.call.bufs.first().map_or(&[][..], |b| &b.1[..]);
            match self.io.write(fd, data, Instant::now()) {
                WritePlan::Behind => {
                    let _ = self.listener.reply(n.id, data.len() as i64);
                    for c in self.io.due(Instant::now()) {
                        if let Err(e) = self.tx.send(&ProcMsg::Call(c)) {
                            return Some(End::HomeLost(format!(
                                "sending writes home failed ({e})"
                            )));
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
        loop {
            let mut reply = match self.call_home(&m) {
                Ok(r) => r,
                Err(end) => return Some(end),
            };
            if nr == libc::SYS_read && m.call.ahead > 0 {
                self.io.after_read(fd, &mut reply);
            } else if nr == libc::SYS_write && m.call.ahead > 0 {
                self.io.after_write(fd, &reply);
            }
            self.io.after_call(&m.call, reply.ret);
            if (nr == libc::SYS_fsync || nr == libc::SYS_fdatasync || nr == libc::SYS_close)
                && let Some(e) = self.io.take_error(fd)
            {
                // A write behind failed at home: the process hears it here, as from NFS.
                reply.ret = e;
            }
            if reply.ret == -i64::from(ERESTARTSYS) && self.come_home {
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
            if reply.ret == -i64::from(ERESTARTSYS)
                && let Some((to, token)) = self.move_to.take()
            {
                // Interrupted because home wants it elsewhere: likewise.
                return match self.move_on(to, token, Some(n)) {
                    Ok(true) => Some(End::Gone),
                    Ok(false) => None,
                    Err(e) => Some(e),
                };
            }
            if reply.ret == -i64::from(ERESTARTSYS) && !self.signal_deliverable() {
                // Interrupted at home for a signal this process will not take: run it again.
                continue;
            }
            if let Err(e) = forward::write_back(&m, &reply, &self.mem) {
                warn!("{}: bad reply from home: {e}", self.h.comm);
                let _ = self.listener.reply(n.id, EFAULT);
                return None;
            }
            if reply.ret == 0 && self.limits_itself(&n) {
                // Set at home; this kernel enforces it here: the call runs here too.
                let _ = self.listener.allow(n.id);
                return None;
            }
            let _ = self.listener.reply(n.id, reply.ret);
            return None;
        }
    }

    /// Sends home what waits behind and gives back what was read ahead, and waits until home
    /// has done it: before the process exits or leaves.
    fn settle_io(&mut self) -> Result<(), End> {
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

    /// Sends a call home and waits for its reply, handling signals that arrive meanwhile.
    fn call_home(&mut self, m: &Marshalled) -> Result<Reply, End> {
        let (_, shape) = forward::shape(u64::from(m.call.nr), &m.call.args);
        for c in self.io.before_call(&m.call, &shape) {
            if let Err(e) = self.tx.send(&ProcMsg::Call(c)) {
                return Err(End::HomeLost(format!("sending a call home failed ({e})")));
            }
        }
        if let Err(e) = self.tx.send(&ProcMsg::Call(m.call.clone())) {
            return Err(End::HomeLost(format!("sending a call home failed ({e})")));
        }
        loop {
            match self.rx.recv() {
                Ok(ProcMsg::Reply(r)) if self.io.owed() > 0 => self.io.on_owed_reply(&r),
                Ok(ProcMsg::Reply(r)) => return Ok(r),
                Ok(other) => {
                    if let Some(end) = self.home_msg(other) {
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

    /// Freezes the process and sends it home. With `pending`, the process is stopped in that
    /// notification: the call is answered "restart" and so runs again, natively, at home.
    /// Returns whether home took it.
    fn go_home(&mut self, pending: Option<Notif>) -> Result<bool, End> {
        let pid = self.pid();
        // Writes behind go, bytes read ahead go back: home's descriptors are as the process
        // left them.
        self.settle_io()?;
        let frozen = self
            .freeze_to_leave(pending)
            .map_err(|e| End::HomeLost(format!("freezing it to go home failed: {e}")))?;
        if let Err(e) = frozen.send(&self.tx) {
            let _ = frozen.thaw();
            return Err(End::HomeLost(format!("sending it home failed: {e}")));
        }
        // Signals that can no longer be delivered here: those that stopped it on the way
        // into the freeze, and those home forwards until it has the process back. Home gets
        // them back once the process runs there.
        let mut undelivered: Vec<i32> = frozen.pending.iter().map(|s| s.raw()).collect();
        loop {
            match self.rx.recv() {
                Ok(ProcMsg::Started { .. }) => {
                    info!(
                        "{} (pid {pid}) went home to node {}",
                        self.h.comm, self.h.home
                    );
                    self.env.procs.move_ended(pid, true);
                    frozen.tracee.kill();
                    let _ = self.child.wait();
                    for sig in undelivered {
                        let _ = self.tx.send(&ProcMsg::Signal { sig });
                    }
                    return Ok(true);
                }
                Ok(ProcMsg::Refused { reason }) => {
                    warn!("home refused {} back: {reason}", self.h.comm);
                    self.env.procs.move_ended(pid, false);
                    let _ = frozen.thaw();
                    return Ok(false);
                }
                Ok(ProcMsg::Signal { sig }) => undelivered.push(sig),
                Ok(ProcMsg::ComeHome | ProcMsg::MoveTo { .. } | ProcMsg::Stats { .. }) => {}
                Ok(other) => {
                    frozen.tracee.kill();
                    return Err(End::HomeLost(format!(
                        "home sent {other:?} while taking it back"
                    )));
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
    fn freeze_to_leave(&mut self, pending: Option<Notif>) -> Result<freeze::Frozen, String> {
        let running = ptrace::seize(self.pid(), ptrace::SUSPEND_SECCOMP)
            .map_err(|e| format!("cannot seize it: {e}"))?;
        running
            .request_interrupt()
            .map_err(|e| format!("cannot stop it: {e}"))?;
        if let Some(n) = pending {
            let _ = self.listener.reply(n.id, -i64::from(ERESTARTNOINTR));
        }
        let mut sigs = Vec::new();
        let t = running
            .wait_interrupt(|s, _| sigs.push(s))
            .map_err(|e| format!("cannot stop it: {e}"))?;
        let opts = FreezeOptions {
            home: self.h.home,
            nmigs: self.h.nmigs,
            locked: self.h.locked,
            under_filter: true,
            cached: Some(self.h.cached.clone()),
            creds: Some(self.h.creds.clone()),
        };
        freeze::freeze_stopped(t, sigs, &opts).map_err(|e| e.to_string())
    }

    /// Home asked it to move on to node `to` directly (see `Deputy::start_relay` at home):
    /// freezes it, ships it there with `token`, and once it runs there reports `Moved` to home
    /// and ends; on any failure before that, thaws it here and reports `MoveFailed`.
    /// Returns whether it left.
    fn move_on(&mut self, to: NodeId, token: u64, pending: Option<Notif>) -> Result<bool, End> {
        let comm = self.h.comm.clone();
        let ceiling = self.env.procs.take_ceiling(self.pid(), to);
        let failed = |s: &mut Self, reason: String| {
            warn!("{comm} stays here: the move to node {to} failed: {reason}");
            s.env.procs.move_ended(s.pid(), false);
            match s.tx.send(&ProcMsg::MoveFailed { reason }) {
                Ok(()) => Ok(false),
                Err(e) => Err(End::HomeLost(format!(
                    "the connection to its home broke ({e})"
                ))),
            }
        };
        if to == self.env.me || to == self.h.home {
            return failed(self, format!("node {to} is not another remote node"));
        }
        self.settle_io()?;
        let mut frozen = match self.freeze_to_leave(pending) {
            Ok(f) => f,
            Err(e) => return failed(self, format!("cannot freeze it: {e}")),
        };
        frozen.header.rejoin = Some(token);
        frozen.header.ceiling = ceiling;
        let started = Instant::now();
        match self.ship(&frozen, to) {
            Ok(rpid) => {
                self.env.procs.move_ended(self.pid(), true);
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
                let _ = frozen.thaw();
                failed(self, reason)
            }
        }
    }

    /// Sends a frozen process to node `to`; its pid there once it runs.
    fn ship(&self, frozen: &freeze::Frozen, to: NodeId) -> Result<u32, String> {
        let ctx = link::snapshot(&self.env.link);
        let s =
            link::connect_process(to, &ctx).map_err(|e| format!("cannot reach node {to}: {e}"))?;
        let (tx, mut rx) =
            channel::split(s).map_err(|e| format!("connection to node {to}: {e}"))?;
        frozen
            .send(&tx)
            .map_err(|e| format!("the transfer to node {to} broke off ({e})"))?;
        let _ = rx.socket().set_read_timeout(Some(MOVE_ON_ANSWER));
        match rx.recv() {
            Ok(ProcMsg::Started { pid }) => Ok(pid),
            Ok(ProcMsg::Refused { reason }) => Err(format!("node {to} refused it: {reason}")),
            Ok(other) => Err(format!("node {to} answered {other:?}")),
            Err(e) => Err(format!("node {to} did not answer ({e})")),
        }
    }
}
