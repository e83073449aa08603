//! The supervisor's side of a guest with a tree of its own (`kernel::tree`): its path calls on
//! this node's files run in its own kernel, unseen, so the supervisor learns what they did to
//! its descriptors by looking (`/proc/PID/fd`) before anything that depends on them — any call
//! it is sent, the process leaving —, makes again the calls the trap sends back, and answers
//! the `stat`s of files opened through the tree with the owner's ids.
//!
//! What the look finds, it records as if the supervisor had opened or closed the file itself:
//! a number the process opened natively is a DFSA file (home hears of it before the next thing
//! that goes home, as of any file opened here), a DFSA file or a stand-in it closed natively is
//! closed at home too. Numbers stay home's: the process's kernel gives the lowest free one, and
//! every number home uses holds a placeholder here (put there when the process arrived, kept
//! since by the forwarded calls that change home's table).

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::{debug, warn};

use super::supervisor::Supervisor;
use crate::kernel::again::{Again, make_again};
use crate::kernel::seccomp::Notif;
use crate::mfs::trap::{SendBack, Sent, Waiting};
use crate::split::iocache::{ReadPlan, WritePlan};

/// What the supervisor keeps of a guest's tree.
#[derive(Debug)]
pub(super) struct OwnTree {
    /// Where the trap leaves the process's requests.
    pub(super) waiting: Arc<Waiting>,
    /// The tree's root, as `/proc/PID/fd` links show it (stripped to give home's path).
    pub(super) root: PathBuf,
    /// The owner's uid on this node's files, and the guest's host uid: the tree's mounts swap
    /// them, so the `stat`s of files opened through it show one for the other.
    pub(super) owner_uid: u32,
    pub(super) guest_uid: u32,
    /// Which file (mount id, inode) stood at each number of a DFSA file or a stand-in of the
    /// range at the last look (a number closed and opened again natively in between is a new
    /// file).
    pub(super) seen: HashMap<i32, (u64, u64)>,
    /// Numbers of files the process opened through the tree (their `stat`s need the owner's
    /// uid put back).
    pub(super) native: HashSet<i32>,
    /// A call came since the last look at its descriptors.
    pub(super) look_due: bool,
    /// `/proc/PID/task/TID/syscall` of its threads that made a read or a write of a
    /// placeholder, kept open (one `pread` tells the next one's call).
    pub(super) calls: HashMap<i32, std::fs::File>,
    /// Whether the process has no limit on the size of the files it writes (`None`: not
    /// known; read when needed, forgotten when it sets a limit).
    pub(super) fsize_unlimited: Option<bool>,
}

impl OwnTree {
    /// The owner's id for an id the tree's mounts show, and the other way round.
    fn swapped(&self, uid: u32) -> u32 {
        if uid == self.guest_uid {
            self.owner_uid
        } else if uid == self.owner_uid {
            self.guest_uid
        } else {
            uid
        }
    }
}

/// Descriptor `fd`'s status flags and which file it is (its mount's id and its inode), from
/// `/proc/PID/fdinfo/FD`: asks nothing of the file's file system (a `stat` of a stand-in
/// would be a request to the trap).
fn fd_info(pid: i32, fd: i32) -> Option<(i32, (u64, u64))> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .map(str::to_owned)
    };
    let flags = i32::from_str_radix(&field("flags:")?, 8).ok()?;
    let mnt: u64 = field("mnt_id:")?.parse().ok()?;
    let ino: u64 = field("ino:")?.parse().ok()?;
    Some((flags, (mnt, ino)))
}

impl Supervisor {
    /// Answers what the trap sent back: a plain read or write of home's descriptor that the
    /// bytes read ahead or kept behind can answer, here ([`Supervisor::answer_io`]); every
    /// other call is made again, notified (as root: it traces the process).
    pub(super) fn sent_back(&mut self) {
        let Some(t) = &self.tree else {
            return;
        };
        crate::kernel::creds::root_again();
        for s in t.waiting.take() {
            // Answered here or made again, the kernel counted its native try: home's data.
            if matches!(s.request, Sent::Read { .. } | Sent::Write { .. })
                && let Some(d) = &mut self.dfsa
            {
                d.native_not_here();
            }
            let Some(s) = self.answer_io(s) else {
                continue;
            };
            let (pid, request) = (s.pid, s.request);
            match make_again(pid, mosix_core::syscalls::tree_native, move || {
                request.fail()
            }) {
                Ok(Again::Made) => {}
                Ok(Again::NotInCall) => {
                    debug!(
                        "{} ({}): a request of its trap outside its calls",
                        self.h.comm, pid
                    );
                }
                Err(e) => debug!("{} ({}): making a call again: {e}", self.h.comm, pid),
            }
        }
    }

    /// A read or a write of a placeholder that is the whole of a plain `read` or `write` on
    /// home's descriptor (its thread's call, its number and its count say so), answered as
    /// [`Supervisor::forward`] answers one without going home: from the bytes read ahead, or
    /// by keeping the bytes behind. The rest (a `pread`, a `readv`, a call the kernel split
    /// into several requests, one that must go home) is returned, to be made again. Making a
    /// call again costs a stop under ptrace and several switches between threads (measured:
    /// 240–360 µs a call where a notification answered from the cache costs 15–30), so a guest
    /// that reads its input from home, or writes its output there, does not pay it per call.
    fn answer_io(&mut self, s: SendBack) -> Option<SendBack> {
        let (nr, size) = match &s.request {
            Sent::Read { size, .. } => (libc::SYS_read, u64::from(*size)),
            Sent::Write { data, .. } => (libc::SYS_write, data.len() as u64),
            Sent::Other(_) => return Some(s),
        };
        // As in `forward`: nothing from the cache while a mapped file's copy stands at its
        // number or a home file is also open here through MFS.
        if self.stale_map_fd.is_some() || self.dfsa.as_ref().is_none_or(|d| d.any_through()) {
            tracing::trace!(
                "{}: from the trap, made again (a mapped copy, or MFS)",
                self.h.comm
            );
            return Some(s);
        }
        let pid = self.pid();
        let t = self.tree.as_mut()?;
        // Each answered call moves the placeholders' offset (one open file at every number
        // of home's), and the kernel checks a write's offset against a file size limit before
        // the trap sees it: with a limit, every call is made again (the offset stays put).
        // Known from `/proc/PID/limits` (no right needed) until the process sets a limit.
        let unlimited = *t
            .fsize_unlimited
            .get_or_insert_with(|| fsize_unlimited(pid));
        if !unlimited {
            tracing::trace!(
                "{}: from the trap, made again (a file size limit)",
                self.h.comm
            );
            return Some(s);
        }
        let Some((call, args)) = in_call(&mut t.calls, pid, s.pid) else {
            return Some(s);
        };
        let fd = args[0] as i32;
        if call != nr || args[2] != size || !self.dfsa.as_ref().is_some_and(|d| d.stands_in(fd)) {
            tracing::trace!(
                "{} ({pid}): {size} bytes on {fd} from the trap in call {call} {args:x?}: \
                 made again",
                self.h.comm
            );
            return Some(s);
        }
        match s.request {
            Sent::Read { size, reply } => match self.io.read(fd, size as usize) {
                ReadPlan::Serve(bytes) => {
                    tracing::trace!("{} ({pid}): read on {fd} answered here", self.h.comm);
                    reply.data(&bytes);
                    None
                }
                ReadPlan::Forward(_) => Some(SendBack {
                    pid: s.pid,
                    request: Sent::Read { size, reply },
                }),
            },
            Sent::Write { data, reply } => {
                match self.io.write(fd, &data, std::time::Instant::now()) {
                    // What waits behind goes home from the supervisor's loop (`due`).
                    WritePlan::Behind => {
                        tracing::trace!("{} ({pid}): write on {fd} kept behind", self.h.comm);
                        reply.written(data.len() as u32);
                        None
                    }
                    WritePlan::Error(e) => {
                        reply.error(fuser::Errno::from_i32((-e) as i32));
                        None
                    }
                    WritePlan::Forward { .. } => Some(SendBack {
                        pid: s.pid,
                        request: Sent::Write { data, reply },
                    }),
                }
            }
            other => Some(SendBack {
                pid: s.pid,
                request: other,
            }),
        }
    }

    /// Records which file the supervisor itself just put at `fd` (`SECCOMP_IOCTL_NOTIF_ADDFD`),
    /// so that the next look takes it for what it is, not for a file the process opened.
    pub(super) fn tree_saw(&mut self, fd: i32) {
        let pid = self.pid();
        if let Some(t) = &mut self.tree
            && let Some((_, id)) = fd_info(pid, fd)
        {
            t.seen.insert(fd, id);
            t.native.remove(&fd);
        }
    }

    /// Looks at the process's descriptors, if a call came since the last look (see
    /// [`Supervisor::look_at_tree`]): before anything goes home, before an open here, and
    /// before a call on a descriptor of the range is judged.
    pub(super) fn look_if_due(&mut self) {
        if self.tree.as_ref().is_some_and(|t| t.look_due) {
            crate::kernel::creds::root_again();
            self.look_at_tree();
        }
    }

    /// Looks at the process's descriptors and records what its own kernel did to them since
    /// the last look (see the module). Only numbers of the native range can be closed unseen
    /// (the filter lets no other close run natively); an open takes the lowest free number,
    /// which may be one home freed below the range. Needs root.
    pub(super) fn look_at_tree(&mut self) {
        let pid = self.pid();
        let (Some(t), Some(d), Some(range)) = (&mut self.tree, &mut self.dfsa, &self.native_from)
        else {
            return;
        };
        t.look_due = false;
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return;
        };
        let present: HashSet<i32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        // Numbers of the range can change unseen; any other only by an open, landing on a
        // number home freed (its placeholder closed with it): one not known is such an open.
        let infos: HashMap<i32, (i32, (u64, u64))> = present
            .iter()
            .filter(|&&fd| range.covers(i64::from(fd)) || !d.holds(fd) && !d.stands_in(fd))
            .filter_map(|&fd| Some((fd, fd_info(pid, fd)?)))
            .collect();
        let changed = |fd: &i32| {
            !present.contains(fd)
                || t.seen
                    .get(fd)
                    .is_some_and(|was| infos.get(fd).is_some_and(|(_, id)| id != was))
        };
        // Native calls so far count as this node's if a home file through MFS is among those
        // that closed: when it closed is not known.
        if d.fds().iter().any(|fd| d.is_through(*fd) && changed(fd)) {
            d.count_native_all();
        }
        // Closed natively: DFSA files (opened through the tree or by the supervisor) and
        // stand-ins of the range; home closes them too.
        for fd in d.fds().into_iter().chain(d.standing()) {
            if !present.contains(&fd) {
                d.closed(fd);
                d.table.freed(fd);
                d.notice_close(fd);
                t.seen.remove(&fd);
                t.native.remove(&fd);
            }
        }
        for &fd in &present {
            let Some(&(flags, id)) = infos.get(&fd) else {
                continue;
            };
            if d.holds(fd) || d.stands_in(fd) {
                match t.seen.get(&fd) {
                    Some(was) if *was == id => continue,
                    None => {
                        t.seen.insert(fd, id);
                        continue;
                    }
                    Some(_) => {}
                }
                // Closed and another file opened at its number since the last look.
                d.closed(fd);
                d.table.freed(fd);
                d.notice_close(fd);
                t.native.remove(&fd);
            }
            let link = format!("/proc/{pid}/fd/{fd}");
            let (Ok(target), Ok(st)) = (
                std::fs::read_link(&link),
                nix::sys::stat::stat(link.as_str()),
            ) else {
                continue;
            };
            let mut path = target.as_os_str().as_bytes();
            if st.st_nlink == 0 {
                path = path.strip_suffix(b" (deleted)").unwrap_or(path);
            }
            let Some(home_path) = path
                .strip_prefix(t.root.as_os_str().as_bytes())
                .filter(|p| p.starts_with(b"/"))
            else {
                warn!(
                    "{} ({pid}): descriptor {fd} opened in its tree is {}, not of its data",
                    self.h.comm,
                    target.display()
                );
                continue;
            };
            let Some(local) = d.local_of(home_path) else {
                warn!(
                    "{} ({pid}): descriptor {fd} opened in its tree is {}, not a file of this node",
                    self.h.comm,
                    target.display()
                );
                continue;
            };
            d.count_here(&local);
            d.table.taken(fd);
            d.opened_alone(fd, &local, (st.st_dev, st.st_ino));
            d.notice_open(fd, home_path.to_vec(), flags);
            t.seen.insert(fd, id);
            t.native.insert(fd);
        }
    }

    /// A `stat` of a file the process opened through its tree (`fstat`, or `newfstatat` and
    /// `statx` of the descriptor itself): made here on it, with the owner's uid where the
    /// tree's mount shows the guest's. `None`: not one.
    pub(super) fn stat_through_tree(&mut self, n: &Notif) -> Option<i64> {
        let t = self.tree.as_ref()?;
        let nr = i64::from(n.nr);
        let fd = n.args[0] as i32;
        if !t.native.contains(&fd)
            || !matches!(nr, libc::SYS_fstat | libc::SYS_newfstatat | libc::SYS_statx)
        {
            return None;
        }
        const AT_EMPTY_PATH: u64 = libc::AT_EMPTY_PATH as u64;
        if nr != libc::SYS_fstat {
            let flags = if nr == libc::SYS_statx {
                n.args[2]
            } else {
                n.args[3]
            };
            let mut b = [1u8; 1];
            if flags & AT_EMPTY_PATH == 0 || self.mem.read(n.args[1], &mut b).is_err() || b[0] != 0
            {
                return None;
            }
        }
        let file = crate::kernel::seccomp::take_fd(self.pid(), fd).ok()?;
        let (at, bytes) = if nr == libc::SYS_statx {
            // SAFETY: an all-zero `statx` is a valid value of the plain C struct.
            let mut stx: libc::statx = unsafe { std::mem::zeroed() };
            let empty = c"";
            // SAFETY: statx(2) on a descriptor we own, writing one `statx`.
            let r = unsafe {
                libc::statx(
                    std::os::fd::AsRawFd::as_raw_fd(&file),
                    empty.as_ptr(),
                    libc::AT_EMPTY_PATH,
                    n.args[3] as u32,
                    &raw mut stx,
                )
            };
            if r < 0 {
                return Some(-i64::from(nix::errno::Errno::last_raw()));
            }
            stx.stx_uid = t.swapped(stx.stx_uid);
            (n.args[4], bytes_of(&stx))
        } else {
            let mut st = match nix::sys::stat::fstat(&file) {
                Ok(st) => st,
                Err(e) => return Some(-(e as i64)),
            };
            st.st_uid = t.swapped(st.st_uid);
            let at = if nr == libc::SYS_fstat {
                n.args[1]
            } else {
                n.args[2]
            };
            (at, bytes_of(&st))
        };
        Some(if self.mem.write(at, &bytes).is_ok() {
            0
        } else {
            -i64::from(libc::EFAULT)
        })
    }
}

/// The call thread `tid` of process `pid` is in, and its first three arguments, from
/// `/proc/PID/task/TID/syscall` (kept open in `files`: one `pread` a call). `None`: not in a
/// call, or not known.
fn in_call(files: &mut HashMap<i32, std::fs::File>, pid: i32, tid: i32) -> Option<(i64, [u64; 3])> {
    use std::os::unix::fs::FileExt;
    if !files.contains_key(&tid) {
        if files.len() >= 64 {
            files.clear();
        }
        let f = std::fs::File::open(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
        files.insert(tid, f);
    }
    let mut b = [0u8; 256];
    let n = match files.get(&tid)?.read_at(&mut b, 0) {
        Ok(n) => n,
        Err(_) => {
            files.remove(&tid);
            return None;
        }
    };
    parse_syscall(b.get(..n)?)
}

/// Whether process `pid` may write files of any size (`Max file size` of
/// `/proc/PID/limits` is `unlimited`); not known is no.
fn fsize_unlimited(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/limits")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Max file size"))
            .and_then(|rest| rest.split_whitespace().next())
            == Some("unlimited")
    })
}

/// `NR ARG0 ARG1 ARG2 …` as `/proc/PID/syscall` shows a call (the number in decimal, the
/// arguments in hex); `running`, `-1 …` (not in a call) and anything else are `None`.
fn parse_syscall(b: &[u8]) -> Option<(i64, [u64; 3])> {
    let s = std::str::from_utf8(b).ok()?;
    let mut it = s.split_ascii_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 3];
    for a in &mut args {
        *a = u64::from_str_radix(it.next()?.strip_prefix("0x")?, 16).ok()?;
    }
    Some((nr, args))
}

fn bytes_of<T>(v: &T) -> Vec<u8> {
    // SAFETY: `v` is a plain C struct of `size_of::<T>()` initialized bytes.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_read_from_proc_syscall_and_anything_else_is_not_one() {
        let line = b"0 0x3 0x7f24d61eb2f0 0x40 0x0 0x0 0x0 0x7ffe1c726938 0x7f24d65143d3\n";
        assert_eq!(parse_syscall(line), Some((0, [3, 0x7f24d61eb2f0, 0x40])));
        assert_eq!(parse_syscall(b"running\n"), None);
        assert_eq!(parse_syscall(b"-1 0x7ffe1c726938 0x7f24d65143d3\n"), None);
        assert_eq!(parse_syscall(b"1 0x1 0x2\n"), None);
        assert_eq!(parse_syscall(b"1 1 2 3\n"), None);
        // This thread, now, in the `pread` that reads the file.
        let mut files = HashMap::new();
        let me = std::process::id() as i32;
        // SAFETY: gettid(2) takes no arguments.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        let (nr, args) = in_call(&mut files, me, tid).unwrap();
        assert_eq!(nr, libc::SYS_pread64);
        assert_eq!(args[2], 256);
        assert!(files.contains_key(&tid));
        // This process has no limit on its files' size, or it has one.
        let mut lim = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit64(2) on this process, writing one rlimit64, a valid local.
        unsafe { libc::prlimit64(0, libc::RLIMIT_FSIZE, std::ptr::null(), &raw mut lim) };
        assert_eq!(fsize_unlimited(me), lim.rlim_cur == libc::RLIM64_INFINITY);
        assert!(!fsize_unlimited(-1));
    }
}
