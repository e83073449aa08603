//! The remote side of a migrated process: receiving it, rebuilding it in a stub, and supervising
//! it while it runs here — answering its forwarded calls through its home, delivering the
//! signals its home forwards, sending it home when it makes a call that only home can run or
//! when home asks for it back, and reporting its end.
//!
//! One thread per guest. It started the stub, so the stub dies with it (`PR_SET_PDEATHSIG`), and
//! it is the stub's only supervisor: it waits in `poll(2)` on the filter's listener and on the
//! connection to home.
//!
//! Rooms: this file takes an arriving process (checks, restore, rejoining home after a direct
//! move); [`supervisor`] runs it (calls, signals, stops, statistics); [`mapping`] makes its
//! mappings of home files from copies; [`dfsa`] keeps its files of this node, opened here, and
//! [`direct`] runs its calls on them; [`leave`] sends it home or on to another node.

pub mod dfsa;
mod direct;
mod here;
mod leave;
mod mapping;
mod supervisor;
mod tree;

use std::os::unix::ffi::OsStrExt;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mosix_core::NodeId;
use mosix_core::image::ImageHeader;
use mosix_core::moves::MoveFailure;
use mosix_core::proto::{LinkMsg, ProcMsg};
use tracing::{debug, info, warn};

use crate::freezer::freeze;
use crate::freezer::{pages, restore};
use crate::kernel::ptrace::{self, Mem};
use crate::kernel::seccomp::{self, Listener};
use crate::link::channel::{self, Receiver, Sender};
use crate::link::{self, SharedContext};
use crate::node::admission::{Admission, Arrival};
use crate::node::guests::GuestCgroup;
use crate::split::failure;
use crate::split::iocache::IoCache;
use crate::split::live::TakeError;
use crate::split::procs::{Guest, Procs};
use mosix_core::config::GuestTunables;
use supervisor::Supervisor;

/// What a guest's supervisor needs from its node.
#[derive(Debug, Clone)]
pub struct GuestEnv {
    /// This node.
    pub me: NodeId,
    /// The registry.
    pub procs: Arc<Procs>,
    /// The node's BLOCK flag (no guests may arrive).
    pub blocked: Arc<AtomicBool>,
    /// The node's CLOSED flag (no guests of other clusters may arrive: `mosctl closegrid`).
    pub closed: Arc<AtomicBool>,
    /// The most guests of other clusters at once (`u32::MAX`: no limit; `mosctl opengrid N`).
    pub grid_guests: Arc<std::sync::atomic::AtomicU32>,
    /// The link context (a guest moving on connects to its next node; one arriving that way
    /// connects to its home).
    pub link: SharedContext,
    /// The node's consent to automatic moves.
    pub admission: Arc<Admission>,
    /// How guests are run here (`[guests]` of mosix.toml).
    pub guests: GuestTunables,
    /// The guests' cgroup (`None`: this node takes no guests).
    pub cgroup: Option<Arc<GuestCgroup>>,
    /// Direct file access for files of this node (`None`: MFS is not running here).
    pub dfsa: Option<Arc<dfsa::DfsaNode>>,
    /// Which direct moves on to another node send the memory while the process runs.
    pub live: crate::split::live::Live,
}

/// How long the source of a direct move waits for the destination's answer once the image is
/// sent (the destination restores it and rejoins home meanwhile).
pub(super) const MOVE_ON_ANSWER: Duration = Duration::from_secs(30);
/// How long the destination of a direct move waits for home to take its connection.
pub(super) const REJOIN_ANSWER: Duration = Duration::from_secs(10);
/// How long the sender of an arriving process may stay silent before its image and between
/// the records of its image (it has frozen the process before it connects).
pub const IMAGE_SILENCE: Duration = Duration::from_secs(10);

/// How long after a signal a job-control stop it causes is looked for (a `SIGTSTP` handler
/// that tidies up for longer stops by a `raise`, which starts the watch again).
pub(super) const STOP_WATCH: Duration = Duration::from_secs(2);
/// `-ERESTARTSYS` as a call's result: interrupted, restart if the signal's handler says so.
pub(super) const ERESTARTSYS: i64 = -(crate::kernel::abi::ERESTARTSYS as i64);
/// `-ERESTARTNOINTR` as a call's result: make the call again, whatever happens.
pub(super) const ERESTARTNOINTR: i64 = -(crate::kernel::abi::ERESTARTNOINTR as i64);
pub(super) const ENOSYS: i64 = -(libc::ENOSYS as i64);
pub(super) const EINVAL: i64 = -(libc::EINVAL as i64);
pub(super) const EFAULT: i64 = -(libc::EFAULT as i64);

/// Takes a process arriving on `stream` from node `from` and supervises it until it ends or
/// leaves. Runs on its own thread.
pub fn accept(stream: link::Conn, from: NodeId, env: GuestEnv) {
    let (tx, mut rx) = match channel::split(stream) {
        Ok(x) => x,
        Err(e) => {
            warn!("process connection from node {from}: {e}");
            return;
        }
    };
    let _ = rx.socket().set_read_timeout(Some(IMAGE_SILENCE));
    let (mut h, live) = match rx.recv() {
        Ok(ProcMsg::Image(h)) => (*h, false),
        Ok(ProcMsg::Precopy(h)) => (*h, true),
        Ok(other) => {
            warn!("node {from} opened a process connection with {other:?}");
            return;
        }
        Err(e) => {
            warn!("receiving a process from node {from}: {e}");
            return;
        }
    };
    match take(&mut h, live, from, &tx, &mut rx, &env) {
        Ok((guest, listener, child, home_link, native_from, own_tree)) => {
            let _ = rx.socket().set_read_timeout(None);
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
            // From now on a cut of the connection to home is mended: this side dials home
            // again, for `[link] resume_grace_s`.
            let ctx = link::snapshot(&env.link);
            let (home, home_pid, shared) = (h.home, h.cached.pid, env.link.clone());
            tx.resume_by_dialing(
                home,
                ctx.resume_grace,
                Box::new(move |token, received| {
                    let first = LinkMsg::Resume {
                        pid: home_pid,
                        token: *token,
                        received,
                    };
                    link::connect_blocking(home, &link::snapshot(&shared), &first)
                        .map_err(|e| e.to_string())
                }),
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
            // What stands here at a number of home's. With a tree of its own, the trap's
            // placeholder: reads and writes run natively there, and the trap sends them back.
            let trap = env.dfsa.as_ref().and_then(|d| d.trap.as_ref());
            let path = match (&own_tree, trap) {
                (Some(_), Some(trap)) => trap.at().join(crate::mfs::trap::PLACEHOLDER),
                _ => std::path::PathBuf::from("/dev/null"),
            };
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .write(own_tree.is_some())
                .open(&path);
            let placeholder = match opened {
                Ok(f) => f,
                Err(e) => {
                    warn!("{}: {e}", path.display());
                    let _ = tx.send(&ProcMsg::Kill);
                    return;
                }
            };
            let io = IoCache::with_errors(&h.write_errors);
            let dfsa = env
                .dfsa
                .as_ref()
                .map(|n| dfsa::Dfsa::new(Arc::clone(n), pid, env.me, h.home, &h.creds));
            let mut s = Supervisor {
                dfsa,
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
                live_asked: false,
                watch_stop_until: None,
                conts: 0,
                io,
                mapped_copy: 0,
                killed_by_home: false,
                native_from,
                leave_answer: None,
                tree: own_tree,
            };
            if s.tree.is_some()
                && let (Some(n), Some(d)) = (&s.native_from, &mut s.dfsa)
            {
                // Home's numbers, as the range says them exactly: a placeholder stands at each
                // (0 among them), and the process's kernel gives the others.
                let used: Vec<i32> = (0..n.from as i32)
                    .chain(n.except.iter().map(|&x| x as i32))
                    .collect();
                for &fd in &used {
                    d.home_holds(fd);
                }
                d.table.set(Some(used), n.umask);
            }
            if let Some(n) = &s.native_from {
                if s.tree.is_some() {
                    info!(
                        "{} (pid {pid}): in a tree of its own, file I/O runs natively on \
                         every descriptor (home's placeholders send it home), opens and closes \
                         on those from {}{}",
                        s.h.comm,
                        n.from,
                        but(&n.except)
                    );
                } else {
                    info!(
                        "{} (pid {pid}): file I/O on descriptors from {}{} runs natively",
                        s.h.comm,
                        n.from,
                        but(&n.except)
                    );
                }
                if let Some(d) = &mut s.dfsa {
                    d.native_io();
                }
            }
            s.run();
            if let Some(trap) = env.dfsa.as_ref().and_then(|d| d.trap.as_ref()) {
                trap.forget(pid);
            }
            env.procs.remove_guest(pid);
        }
        Err(failure) => {
            mosix_core::metrics::global()
                .move_failed(mosix_core::metrics::Move::GuestIn, failure.kind());
            warn!(
                peer = from.get(),
                reason = failure.kind(),
                "did not take process {} from node {from}: {failure}",
                h.comm
            );
            let _ = tx.send(&ProcMsg::Refused { failure });
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

/// Whether this node takes a process whose home is `home` under the grid's terms
/// (partners(5)), and who it is for admission.
fn grid_consent(me: NodeId, home: NodeId, env: &GuestEnv) -> Result<Arrival, MoveFailure> {
    use mosix_core::grid::Whose;
    let ctx = crate::link::snapshot(&env.link);
    match ctx.grid.whose(&ctx.map, home) {
        Whose::Own => Ok(Arrival::Own),
        Whose::Unknown => Err(failure::refused(
            me,
            format!("node {me} knows no cluster with node {home}, the process's home"),
        )),
        Whose::Partner(p) => {
            if env.closed.load(Ordering::Relaxed) {
                Err(failure::refused(
                    me,
                    format!(
                        "node {me} is closed to the grid: it takes no process of another cluster"
                    ),
                ))
            } else if foreign_guests(&env.procs, &ctx) >= env.grid_guests.load(Ordering::Relaxed) {
                Err(failure::refused(
                    me,
                    format!(
                        "node {me} runs as many guests of other clusters as it takes ({})",
                        env.grid_guests.load(Ordering::Relaxed)
                    ),
                ))
            } else if !p.terms.take {
                Err(failure::refused(
                    me,
                    format!(
                        "node {me} takes no process of cluster '{}' (notake)",
                        p.name
                    ),
                ))
            } else if p.terms.idle_only && env.admission.own_busy() {
                Err(failure::refused(
                    me,
                    format!(
                        "node {me} takes processes of cluster '{}' only while idle, and its own want the CPU",
                        p.name
                    ),
                ))
            } else {
                Ok(Arrival::Partner(p.priority))
            }
        }
    }
}

/// How many guests here are of other clusters.
fn foreign_guests(procs: &Procs, ctx: &crate::link::LinkContext) -> u32 {
    procs
        .guests()
        .iter()
        .filter(|(_, g)| !ctx.map.contains(g.from))
        .count() as u32
}

/// What [`take`] gives: the process's memory, its filter's listener, its stub, — when it
/// came from another remote — the connection to its home it rejoined with, and the numbers
/// on which its file I/O runs natively.
type Taken = (
    Mem,
    Listener,
    Child,
    Option<(Sender, Receiver)>,
    Option<mosix_core::image::NativeIo>,
    Option<tree::OwnTree>,
);

/// Rebuilds the process, sent by node `from`, in a stub; on success it runs under the filter.
/// For a live move (`live`: `h` is the first image, [`ProcMsg::Precopy`]) rounds of pages
/// come while the process still runs at the source, then its final image, which replaces
/// `h`.
fn take(
    h: &mut ImageHeader,
    live: bool,
    from: NodeId,
    tx: &Sender,
    rx: &mut Receiver,
    env: &GuestEnv,
) -> Result<Taken, MoveFailure> {
    let me = env.me;
    let cgroup = consent(h, from, env).map_err(|(why, f)| {
        mosix_core::metrics::global().refused(why);
        f
    })?;
    let cgroup = &cgroup;
    // Everything below is this node's own doing: its failures are kernel errors here.
    let here =
        |what: &str, e: &dyn std::fmt::Display| failure::kernel(format!("node {me}: {what}: {e}"));
    let mut child = crate::kernel::stub::spawn().map_err(|e| here("starting a stub", &e))?;
    let pid = child.id() as i32;
    let fail = |child: &mut Child, e: MoveFailure| {
        let _ = child.kill();
        let _ = child.wait();
        e
    };
    // Into the guests' cgroup before anything of the guest is built: its memory is charged
    // there, under the guests' limit.
    if let Err(e) = cgroup.add(pid) {
        return Err(fail(
            &mut child,
            here("putting it in the guests' cgroup", &e),
        ));
    }
    let t = match ptrace::seize(pid, ptrace::SUSPEND_SECCOMP).and_then(|r| r.interrupt(|_, _| {})) {
        Ok(t) => t,
        Err(e) => return Err(fail(&mut child, here("seizing the stub", &e))),
    };
    let t0 = std::time::Instant::now();
    // On a failure the stub is killed (see `Restorer`).
    let rest = match restore::prepare(t, h, None) {
        Ok(r) => r,
        Err(e) => return Err(fail(&mut child, here("preparing the stub", &e))),
    };
    let mut rest = rest;
    let mut t1 = std::time::Instant::now();
    // Bytes of the rounds sent while it ran at the source (a live move).
    let mut received = 0u64;
    if live {
        match crate::split::live::take_rounds(rx, h, &mut rest) {
            Ok((now, bytes)) => {
                // The process is stopped at the source from the final image on.
                t1 = std::time::Instant::now();
                received = bytes;
                *h = *now;
            }
            Err(TakeError::Reshape(e)) => {
                return Err(fail(&mut child, here("reshaping the stub", &e)));
            }
            Err(TakeError::Pages(e)) => {
                rest.kill();
                return Err(fail(&mut child, failure::pages(me, from, e)));
            }
        }
    }
    if let Err(e) = pages::receive(rx, h, rest.pages()) {
        rest.kill();
        return Err(fail(&mut child, failure::pages(me, from, e)));
    }
    let t2 = std::time::Instant::now();
    // Native file I/O on the numbers home does not use, if the process wants it and DFSA runs
    // here. The stub's own descriptors are all closed before the filter comes; the filter's
    // listener then takes number 0 in the process (checked below): the range starts at 1.
    let native_from = h
        .native_io
        .clone()
        .filter(|_| env.dfsa.is_some())
        .map(|mut n| {
            n.from = n.from.max(1);
            n
        });
    // The guest's own host ids: no account has them, so no local user can touch it.
    let id = env.guests.id_base.saturating_add(pid.unsigned_abs());
    // A tree of its own if its range says exactly which numbers home uses and this node has a
    // trap: its opens of this node's files then run natively too.
    let tree = native_from
        .as_ref()
        .filter(|n| n.exact)
        .and_then(|n| Some((n, env.dfsa.as_ref()?)))
        .and_then(|(n, node)| {
            let trap = node.trap.as_ref()?;
            let user = dfsa::owner(&h.creds, node.trust_root);
            let spec = crate::kernel::tree::TreeSpec {
                trap: trap.at(),
                data_at: trap.dirs(),
                owner_uid: user.uid,
                guest_uid: id,
            };
            match crate::kernel::tree::build(&spec) {
                Ok(t) => {
                    let owner_uid = user.uid;
                    let join = restore::TreeJoin {
                        ns: crate::kernel::tree::ns_path(&t),
                        root: crate::kernel::tree::root_path(&t),
                        gid: user.gid,
                        groups: user.groups.clone(),
                        umask: n.umask,
                        placeholders: (1..n.from).chain(n.except.iter().copied()).collect(),
                    };
                    Some((t, join, owner_uid))
                }
                Err(e) => {
                    warn!("{}: no tree of its own here: {e}", h.comm);
                    None
                }
            }
        });
    let filter = seccomp::program_bytes(&seccomp::program(native_from.as_ref(), tree.is_some()));
    let setup = restore::StubSetup {
        filter: &filter,
        uid: id,
        gid: id,
        tree: tree.as_ref().map(|(_, j, _)| j),
    };
    let (t, lfd) = match rest.finish(h, Some(&setup)) {
        Ok(x) => x,
        Err(e) => return Err(fail(&mut child, here("restoring", &e))),
    };
    // The stub is in the tree's namespace now and holds it.
    let joined = tree.map(|(_, j, owner)| (j, owner));
    let ids = joined
        .as_ref()
        .map_or((id, Vec::new()), |(j, _)| (j.gid, j.groups.clone()));
    if let Err(why) = locked_down(pid, id, ids) {
        t.kill();
        return Err(fail(&mut child, here("locking the guest down", &why)));
    }
    if let (Some(n), Some((fd, _)), None) = (&native_from, &lfd, &joined)
        && n.covers(i64::from(*fd))
    {
        t.kill();
        return Err(fail(
            &mut child,
            here(
                "installing the filter",
                &format!("its listener is descriptor {fd}, a number of the native range {n:?}"),
            ),
        ));
    }
    let listener = match lfd {
        Some((_, fd)) => Listener::from_fd(fd),
        None => {
            t.kill();
            return Err(fail(
                &mut child,
                here("installing the filter", &"it gave no listener"),
            ));
        }
    };
    if let Err(e) = listener.sync_wakeups() {
        debug!("SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: {e} (forwarded calls will cost more)");
    }
    let mem = match Mem::open(pid) {
        Ok(m) => m,
        Err(e) => {
            t.kill();
            return Err(fail(&mut child, here("opening its memory", &e)));
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
    // Its trap's requests come to its supervisor from now on.
    let own_tree = match (&joined, env.dfsa.as_ref().and_then(|d| d.trap.as_ref())) {
        (Some((j, owner_uid)), Some(trap)) => match trap.watch(pid) {
            Ok(waiting) => Some(tree::OwnTree {
                waiting,
                root: std::path::PathBuf::from(std::ffi::OsStr::from_bytes(j.root.as_bytes())),
                owner_uid: *owner_uid,
                guest_uid: id,
                seen: std::collections::HashMap::new(),
                native: std::collections::HashSet::new(),
                look_due: true,
                calls: std::collections::HashMap::new(),
                fsize_unlimited: None,
            }),
            Err(e) => {
                t.kill();
                return Err(fail(&mut child, here("watching its trap", &e)));
            }
        },
        _ => None,
    };
    if let Err(e) = t.detach(None) {
        return Err(fail(&mut child, here("starting the process", &e)));
    }
    match tx.send(&ProcMsg::Started { pid: pid as u32 }) {
        Ok(()) => {}
        // From another remote, home decides which copy lives: if that node is gone, home takes
        // this one; if it lives on, it reports the move failed and home drops this one.
        Err(e) if home_link.is_some() => {
            debug!("telling the node it came from that it started: {e}");
        }
        Err(e) => {
            return Err(failure::link_lost(
                from,
                format!("telling it the process started: {e}"),
            ));
        }
    }
    mosix_core::metrics::global().moved(
        mosix_core::metrics::Move::GuestIn,
        received + h.total_bytes,
        t0.elapsed().as_secs_f64(),
    );
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
    Ok((mem, listener, child, home_link, native_from, own_tree))
}

/// Whether this node takes the process `h` from node `from`: the image's claims, root, the
/// guests' cgroup, block, the grid, the load, the CPU. A refusal carries a short word for the
/// metrics (`mosix_refused_moves_total{reason}`) and the failure told to the source.
fn consent(
    h: &ImageHeader,
    from: NodeId,
    env: &GuestEnv,
) -> Result<Arc<GuestCgroup>, (&'static str, MoveFailure)> {
    let me = env.me;
    // The image is checked before anything is built from it.
    if h.rejoin.is_none() && h.home != from {
        return Err((
            "not-home",
            failure::refused(
                me,
                format!(
                    "node {from} sent a process whose home it says is node {}: only a process's home, or a node it runs on moving it on, may send it",
                    h.home
                ),
            ),
        ));
    }
    if !env.guests.accept_root && h.creds.root_or_setid() {
        return Err((
            "root",
            failure::refused(
                me,
                format!(
                    "node {me} takes no processes of root or in a set-id state (guests.accept_root in its mosix.toml)"
                ),
            ),
        ));
    }
    let Some(cgroup) = env.cgroup.as_ref() else {
        return Err((
            "no-cgroup",
            failure::refused(
                me,
                format!("node {me} cannot contain guests (no cgroup of their own: see its log)"),
            ),
        ));
    };
    if env.blocked.load(Ordering::Relaxed) {
        return Err((
            "blocked",
            failure::refused(me, format!("node {me} is blocked: it takes no guests")),
        ));
    }
    let who = grid_consent(me, h.home, env).map_err(|f| ("grid", f))?;
    env.admission
        .admit(h.ceiling, who)
        .map_err(|reason| ("load", failure::refused(me, reason)))?;
    let missing = h.missing_cpu_flags(&freeze::cpu_flags());
    if !missing.is_empty() {
        return Err((
            "cpu-features",
            failure::refused(
                me,
                format!(
                    "node {me}'s CPU lacks features the process may use: {}",
                    missing.join(" ")
                ),
            ),
        ));
    }
    Ok(Arc::clone(cgroup))
}

/// Checks, from `/proc`, what the lock-down of stub `pid` must have left: every id `id`, no
/// capability in any set, no supplementary group, no_new_privs.
fn locked_down(pid: i32, id: u32, (gid, groups): (u32, Vec<u32>)) -> Result<(), String> {
    let s = procfs::process::Process::new(pid)
        .and_then(|p| p.status())
        .map_err(|e| e.to_string())?;
    let ids_ok = [s.ruid, s.euid, s.suid, s.fuid].iter().all(|x| *x == id)
        && [s.rgid, s.egid, s.sgid, s.fgid].iter().all(|x| *x == gid);
    let mut have: Vec<u32> = s.groups.clone();
    let mut want = groups;
    have.sort_unstable();
    want.sort_unstable();
    want.dedup();
    let caps_ok = [
        s.capinh,
        s.capprm,
        s.capeff,
        s.capbnd.unwrap_or(0),
        s.capamb.unwrap_or(0),
    ]
    .iter()
    .all(|c| *c == 0);
    let nnp = s.nonewprivs == Some(1);
    if ids_ok && caps_ok && have == want && nnp {
        Ok(())
    } else {
        Err(format!(
            "it kept rights: uids {}/{}/{}/{}, capabilities {:x}/{:x}/{:x}/{:x}/{:x}, groups {:?}, no_new_privs {:?}",
            s.ruid,
            s.euid,
            s.suid,
            s.fuid,
            s.capinh,
            s.capprm,
            s.capeff,
            s.capbnd.unwrap_or(0),
            s.capamb.unwrap_or(0),
            s.groups,
            s.nonewprivs
        ))
    }
}

/// Connects to the home of a process that arrives from another remote and has home take the
/// connection as the process's.
fn rejoin(
    h: &ImageHeader,
    token: u64,
    local_pid: i32,
    env: &GuestEnv,
) -> Result<(Sender, Receiver), MoveFailure> {
    let home = h.home;
    let lost = |what: String| failure::link_lost(home, format!("rejoining its home: {what}"));
    let ctx = link::snapshot(&env.link);
    let first = LinkMsg::Rejoin {
        pid: h.cached.pid,
        token,
        local_pid: local_pid as u32,
    };
    let s = link::connect_blocking(home, &ctx, &first).map_err(|e| lost(e.to_string()))?;
    let (tx, mut rx) = channel::split(s).map_err(|e| lost(e.to_string()))?;
    let _ = rx.socket().set_read_timeout(Some(REJOIN_ANSWER));
    match rx.recv() {
        Ok(ProcMsg::Rejoined) => {}
        Ok(ProcMsg::Refused { failure }) => return Err(failure),
        Ok(other) => return Err(lost(format!("it answered {other:?}"))),
        Err(e) => return Err(lost(format!("no answer ({e})"))),
    }
    rx.socket()
        .set_read_timeout(None)
        .map_err(|e| lost(e.to_string()))?;
    Ok((tx, rx))
}

/// How a native range's left-out numbers are said after its first number.
fn but(except: &[u32]) -> String {
    if except.is_empty() {
        String::new()
    } else {
        format!(" but {except:?}")
    }
}
