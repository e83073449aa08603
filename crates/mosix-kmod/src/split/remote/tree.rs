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
use crate::mfs::trap::Waiting;

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
    /// Makes again, notified, every call the trap sent back (as root: it traces the process).
    pub(super) fn sent_back(&mut self) {
        let Some(t) = &self.tree else {
            return;
        };
        crate::kernel::creds::root_again();
        for s in t.waiting.take() {
            match make_again(s.pid, mosix_core::syscalls::tree_native, s.fail) {
                Ok(Again::Made) => {}
                Ok(Again::NotInCall) => {
                    debug!(
                        "{} ({}): a request of its trap outside its calls",
                        self.h.comm, s.pid
                    );
                }
                Err(e) => debug!("{} ({}): making a call again: {e}", self.h.comm, s.pid),
            }
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

fn bytes_of<T>(v: &T) -> Vec<u8> {
    // SAFETY: `v` is a plain C struct of `size_of::<T>()` initialized bytes.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}
